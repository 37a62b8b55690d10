"""Config keys for standards-based credentials: issuer, the four newer auth methods,
their key and certificate files, ``tls_config``, and introspection probes.

Each mistake is an error at the field to change, located (file:line:column,
provider, field), and never shows a secret or key material.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from exporter.assertion import certificate_not_after
from exporter.config import ConfigError, parse_config, summary
from tests.pki import Pki
from tests.servers import keys

ISSUER = "https://id.example.com/realms/ops"
SECRET = "client-secret-of-some-length-4x"


def text(*lines: str) -> str:
    """A provider file whose provider "a" has ``lines`` after its name."""
    return "providers:\n  - name: a\n" + "".join(f"    {line}\n" for line in lines)


def errors(source: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(source, "p.yaml", env or {})
    message = str(info.value)
    assert SECRET not in message
    return message.splitlines()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    rsa = keys.generate_key("RSA")
    ec = keys.generate_key("EC")
    keys.self_signed_certificate(rsa, d / "rsa.crt", "signing")
    keys.self_signed_certificate(ec, d / "ec.crt", "other")
    return {"rsa": keys.write_pem(rsa, d / "rsa.pem"), "rsa_crt": d / "rsa.crt",
            "ec": keys.write_pem(ec, d / "ec.pem"), "ec_crt": d / "ec.crt",
            "ec_jwk": keys.write_private_jwk(ec, d / "ec.jwk", "ec-1")}


# ------------------------------------------------------------------------- what parses


def test_private_key_jwt_with_an_issuer(files: dict[str, Path]) -> None:
    cfg = parse_config(text(f"issuer: {ISSUER}", "client_id: ops", "auth_method: private_key_jwt",
                            f"private_key_file: {files['rsa']}", "private_key_id: ops-2026",
                            "signing_algorithm: PS256",
                            f"signing_certificate_file: {files['rsa_crt']}",
                            "assertion_audience: issuer"), "p.yaml", {})
    p = cfg.providers[0]
    assert (p.issuer, p.token_url, p.client_secret) == (ISSUER, "", None)
    assert p.token_host == "id.example.com"
    assert p.signing_key is not None
    assert (p.signing_key.algorithm, p.signing_key.kid) == ("PS256", "ops-2026")
    assert p.signing_key.x5t_s256 and p.signing_key.x5t
    assert p.assertion_audience == "issuer"
    assert p.certificates == (("signing", certificate_not_after(files["rsa_crt"])),)
    assert "issuer=https://id.example.com/realms/ops auth=private_key_jwt" in summary(cfg)


def test_a_jwk_file_brings_its_own_kid_and_algorithm(files: dict[str, Path]) -> None:
    p = parse_config(text(f"issuer: {ISSUER}", "client_id: ops", "auth_method: private_key_jwt",
                          f"private_key_file: {files['ec_jwk']}"), "p.yaml", {}).providers[0]
    assert p.signing_key is not None
    assert (p.signing_key.algorithm, p.signing_key.kid) == ("ES256", "ec-1")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tls_client_auth", "self_signed_tls_client_auth"])
def test_mutual_tls_needs_no_secret(pki: Pki, method: str) -> None:
    cfg = parse_config(text("token_url: https://id.example.com/token", "client_id: ops",
                            f"auth_method: {method}", "tls_config:",
                            f"  cert_file: {pki.client_cert}", f"  key_file: {pki.client_key}",
                            f"  ca_file: {pki.ca}"), "p.yaml", {})
    p = cfg.providers[0]
    assert p.client_secret is None and p.signing_key is None
    assert p.outbound.cert_file == str(pki.client_cert)
    assert p.certificates == (("tls", certificate_not_after(pki.client_cert)),)
    assert cfg.secrets() == []


def test_client_secret_jwt_signs_with_the_secret() -> None:
    p = parse_config(text(f"issuer: {ISSUER}", "client_id: ops", f"client_secret: {SECRET}",
                          "auth_method: client_secret_jwt"), "p.yaml", {}).providers[0]
    assert p.signing_key is not None and p.signing_key.algorithm == "HS256"
    assert SECRET not in repr(p) and SECRET not in repr(p.credential)


def test_the_old_tls_key_is_read_with_a_located_warning(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    source = text("token_url: https://id.example.com/token", "client_id: ops",
                  "auth_method: tls_client_auth", "tls:", f"  cert_file: {pki.client_cert}",
                  f"  key_file: {pki.client_key}")
    with caplog.at_level(logging.WARNING, logger="exporter.config"):
        p = parse_config(source, "p.yaml", {}).providers[0]
    assert p.outbound.cert_file == str(pki.client_cert)
    assert [r.getMessage() for r in caplog.records] == [
        'p.yaml:6:5: provider "a": field "tls": tls is the old name of tls_config '
        "(Prometheus' spelling); rename it, tls is still read for now"]


def test_introspection_probes(tmp_path: Path) -> None:
    secret_file = tmp_path / "rs"
    secret_file.write_text("resource-server-secret\n")
    cfg = parse_config(text(
        f"issuer: {ISSUER}", "client_id: ops", f"client_secret: {SECRET}", "probes:",
        "  - {name: own, kind: introspection, client_id: rs, "
        f"client_secret_file: {secret_file}, auth_method: client_secret_post}}",
        "  - {name: borrowed, kind: introspection, url: 'https://rs.example.com/i'}",
        "  - {name: api, url: 'https://api.example.com/v1'}"), "p.yaml", {})
    own, borrowed, api = cfg.providers[0].probes
    assert (own.kind, own.url, own.method) == ("introspection", "", "POST")
    assert own.credential is not None
    assert (own.credential.client_id, own.credential.auth_method) == ("rs", "client_secret_post")
    assert (borrowed.url, borrowed.credential) == ("https://rs.example.com/i", None)
    assert (api.kind, api.credential) == ("http", None)
    # The probe's own secret is redacted from logs like the provider's.
    assert "resource-server-secret" in cfg.secrets()


# ------------------------------------------------------------------------- credential key


def test_a_reload_keeps_the_credential_while_key_and_certificate_are_the_same(
    files: dict[str, Path], pki: Pki, tmp_path: Path
) -> None:
    def load(key: Path) -> Any:
        return parse_config(text(f"issuer: {ISSUER}", "client_id: ops",
                                 "auth_method: private_key_jwt", f"private_key_file: {key}"),
                            "p.yaml", {}).providers[0]

    first, again = load(files["rsa"]), load(files["rsa"])
    assert first == again  # a reload that changes nothing changes nothing
    assert first.credential_key == again.credential_key
    assert load(files["ec"]).credential_key != first.credential_key

    def mtls(cert: Path, key: Path) -> Any:
        return parse_config(text("token_url: https://id.example.com/token", "client_id: ops",
                                 "auth_method: tls_client_auth", "tls_config:",
                                 f"  cert_file: {cert}", f"  key_file: {key}"),
                            "p.yaml", {}).providers[0]

    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    cert.write_bytes(pki.client_cert.read_bytes())
    key.write_bytes(pki.client_key.read_bytes())
    before = mtls(cert, key)
    # The certificate renewed in place: same token, but a new TLS client.
    own = keys.generate_key("EC")
    keys.self_signed_certificate(own, cert, "client")
    keys.write_pem(own, key)
    after = mtls(cert, key)
    assert after.credential_key == before.credential_key
    assert after.outbound != before.outbound


# ------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(("lines", "expected"), [
    (["token_url: https://id.example.com/token", f"issuer: {ISSUER}", "client_id: c",
      f"client_secret: {SECRET}"],
     ['p.yaml:4:13: provider "a": field "issuer": token_url is set too: keep one of the two '
      "(the issuer's metadata names the token endpoint)"]),
    ([f"issuer: {ISSUER}?x=1", "client_id: c", f"client_secret: {SECRET}"],
     ['p.yaml:3:13: provider "a": field "issuer": an issuer has no query or fragment '
      "(RFC 8414 section 2) (got 'https://id.example.com/realms/ops?x=1')"]),
    (["issuer: http://id.example.com", "client_id: c", f"client_secret: {SECRET}"],
     ['p.yaml:3:13: provider "a": field "issuer": plain http outside loopback would let '
      "anyone on the path choose where the credential is sent; use https or set "
      "allow_insecure_http: true"]),
    ([f"issuer: {ISSUER}", "client_id: c", "auth_method: private_key_jwt"],
     ['p.yaml:2:5: provider "a": field "private_key_file": required with auth_method '
      "private_key_jwt: the signing key, a PEM or JWK file"]),
    ([f"issuer: {ISSUER}", "client_id: c", "auth_method: tls_client_auth",
      f"client_secret: {SECRET}"],
     ['p.yaml:2:5: provider "a": field "tls_config": required with auth_method '
      "tls_client_auth: the client certificate (cert_file and key_file) is the credential",
      'p.yaml:6:20: provider "a": field "client_secret": is not used with auth_method '
      "tls_client_auth: remove it"]),
    ([f"issuer: {ISSUER}", "client_id: c", f"client_secret: {SECRET}",
      "assertion_audience: issuer", "signing_algorithm: RS256"],
     ['p.yaml:6:25: provider "a": field "assertion_audience": is for auth_method '
      "private_key_jwt or client_secret_jwt only",
      'p.yaml:7:24: provider "a": field "signing_algorithm": is for auth_method '
      "private_key_jwt or client_secret_jwt only"]),
    (["token_url: https://id.example.com/token", "client_id: c", f"client_secret: {SECRET}",
      "auth_method: client_secret_jwt", "assertion_audience: issuer",
      "signing_algorithm: RS256"],
     ['p.yaml:7:25: provider "a": field "assertion_audience": is issuer, but this provider '
      "sets no issuer",
      'p.yaml:8:24: provider "a": field "signing_algorithm": must be HS256 with '
      "client_secret_jwt (the secret is the key)"]),
    ([f"issuer: {ISSUER}", "client_id: c", f"client_secret: {SECRET}",
      "auth_method: client_secret_jwt", "assertion_audience: the token endpoint"],
     ['p.yaml:7:25: provider "a": field "assertion_audience": must be token_endpoint, '
      "issuer, or an absolute https:// URL the server expects as aud (got 'the token "
      "endpoint')"]),
    ([f"issuer: {ISSUER}", "client_id: c", "client_secret: short-secret",
      "auth_method: client_secret_jwt"],
     ['p.yaml:5:20: provider "a": field "client_secret": is shorter than 14 bytes, too short '
      "to sign an HS256 assertion safely"]),
    ([f"issuer: {ISSUER}", "client_id: c", f"client_secret: {SECRET}", "tls: {}",
      "tls_config: {}"],
     ['p.yaml:6:10: provider "a": field "tls": tls_config is set too: tls is its old name, '
      "keep tls_config"]),
])
def test_mistakes_are_errors_at_the_field(lines: list[str], expected: list[str]) -> None:
    assert errors(text(*lines)) == expected


def test_a_signing_algorithm_the_key_cannot_make(files: dict[str, Path]) -> None:
    [line] = errors(text(f"issuer: {ISSUER}", "client_id: c", "auth_method: private_key_jwt",
                         f"private_key_file: {files['ec']}", "signing_algorithm: RS256"))
    # The path written in the file is echoed (shortened), as for other file keys.
    assert line.startswith(
        'p.yaml:6:23: provider "a": field "private_key_file": holds an EC (P-256) key, but '
        "signing_algorithm RS256 needs an RSA key (got '/")


def test_a_signing_certificate_of_another_key(files: dict[str, Path]) -> None:
    assert errors(text(f"issuer: {ISSUER}", "client_id: c", "auth_method: private_key_jwt",
                       f"private_key_file: {files['rsa']}",
                       f"signing_certificate_file: {files['ec_crt']}"))[0].startswith(
        'p.yaml:7:31: provider "a": field "signing_certificate_file": does not certify the key '
        "in private_key_file")


def test_a_key_path_from_the_environment_is_not_echoed(tmp_path: Path) -> None:
    broken = tmp_path / "where-the-key-lives.pem"
    broken.write_text("not a key")
    assert errors(text(f"issuer: {ISSUER}", "client_id: c", "auth_method: private_key_jwt",
                       "private_key_file: ${KEY}"), {"KEY": str(broken)}) == [
        'p.yaml:6:23: provider "a": field "private_key_file": holds no PEM private key '
        "(expected PKCS#8, PKCS#1 or SEC1 PEM, or a private JWK) (from ${KEY}; value not "
        "shown)"]


def test_client_certificate_problems_are_config_errors(pki: Pki, tmp_path: Path) -> None:
    def tls(cert: Path, key: Path) -> list[str]:
        return errors(text("token_url: https://id.example.com/token", "client_id: c",
                           "auth_method: tls_client_auth", "tls_config:",
                           f"  cert_file: {cert}", f"  key_file: {key}"))

    # A key of another certificate: the TLS client could not be built.
    [line] = tls(pki.client_cert, pki.server_key)
    assert line.startswith('p.yaml:8:17: provider "a": field "tls_config.key_file": is not '
                           "the private key of cert_file (or not a PEM private key) (got '/")
    # An encrypted key would make OpenSSL ask for a passphrase on the terminal.
    assert "is encrypted; give the exporter an unencrypted key file" in tls(
        pki.server_cert, pki.encrypted_key)[0]
    not_a_cert = tmp_path / "x.crt"
    not_a_cert.write_text("hello")
    assert "holds no PEM certificate" in tls(not_a_cert, pki.client_key)[0]


@pytest.mark.parametrize(("probe", "expected"), [
    ("{name: i, kind: introspection}",
     'field "probes.0.url": required: an introspection probe finds its endpoint from the '
     "provider's issuer, and this provider sets none"),
    ("{name: i, kind: introspection, url: 'https://x.example/i', method: GET}",
     'field "probes.0.method": is not used by kind: introspection (it POSTs the token and '
     "judges the answer's active, exp and scope)"),
    ("{name: i, kind: introspection, url: 'https://x.example/i', client_secret: x}",
     'field "probes.0.client_secret": needs the probe\'s own client_id (without one, the '
     "probe introspects with the provider's credential)"),
    ("{name: i, kind: introspection, url: 'https://x.example/i', client_id: rs}",
     'field "probes.0.client_secret": required with the probe\'s own client_id: set '
     "client_secret or client_secret_file"),
    ("{name: i, url: 'https://x.example/i', client_id: rs}",
     'field "probes.0.client_id": is for kind: introspection only (the introspecting '
     "client's own credential)"),
    ("{name: i}", 'field "probes.0.url": required: the URL to probe'),
    ("{name: i, kind: introspection, url: 'http://x.example/i'}",
     'field "probes.0.url": plain http outside loopback would send the access token in '
     "clear; use https, set auth: none, or set allow_insecure_http: true on the provider"),
])
def test_introspection_probe_mistakes(probe: str, expected: str) -> None:
    [line] = errors(text("token_url: https://id.example.com/token", "client_id: c",
                         f"client_secret: {SECRET}", "probes:", f"  - {probe}"))
    assert line.split(": ", 2)[2] == expected, line
