"""Client assertions (RFC 7523 §2.2) and the key and certificate files behind them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from exporter import assertion
from exporter.assertion import KeyFileError
from tests.servers import keys

NOW = 1_800_000_000.25


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(token: str, public: Any, alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = jwt.decode(token, public, algorithms=[alg],
                         registry=assertion._REGISTRY)  # the quiet EdDSA registry
    return dict(decoded.header), dict(decoded.claims)


def _public(key: keys.PrivateKey) -> Any:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECKey.import_key(pem)
    return OKPKey.import_key(pem)


def _rsa_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """A private RSA JWK written out by hand, for keys joserfc would warn about."""
    numbers = key.private_numbers()

    def enc(value: int) -> str:
        return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "n": enc(numbers.public_numbers.n), "e": enc(numbers.public_numbers.e),
            "d": enc(numbers.d), "p": enc(numbers.p), "q": enc(numbers.q),
            "dp": enc(numbers.dmp1), "dq": enc(numbers.dmq1), "qi": enc(numbers.iqmp)}


def _rfc7638(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@pytest.mark.parametrize(("kind", "alg"), [
    ("RSA", "RS256"), ("RSA", "PS256"), ("EC", "ES256"), ("Ed25519", "EdDSA"),
    ("Ed25519", "Ed25519"),
])
def test_assertion_from_a_pem_key_carries_the_rfc7523_claims(
    tmp_path: Path, kind: keys.KeyType, alg: str
) -> None:
    key = keys.generate_key(kind)
    signing = assertion.load_private_key(keys.write_pem(key, tmp_path / "k.pem"), alg)
    token = assertion.make_assertion(signing, "client-1", "https://as.example/token", NOW)
    header, claims = _decode(token, _public(key), alg)
    assert header == {"alg": alg, "typ": "JWT", "kid": _rfc7638(keys.public_jwk(key))}
    assert claims["iss"] == claims["sub"] == "client-1"
    assert claims["aud"] == "https://as.example/token"
    assert claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + 60
    assert len(claims["jti"]) >= 16


def test_every_assertion_has_a_new_jti_and_the_current_time(tmp_path: Path) -> None:
    key = keys.generate_key("EC")
    signing = assertion.load_private_key(keys.write_pem(key, tmp_path / "k.pem"))
    first = _decode(assertion.make_assertion(signing, "c", "aud", NOW), _public(key), "ES256")[1]
    later = _decode(assertion.make_assertion(signing, "c", "aud", NOW + 30), _public(key),
                    "ES256")[1]
    assert first["jti"] != later["jti"]
    assert later["iat"] == first["iat"] + 30
    assert later["exp"] == later["iat"] + 60


def test_algorithm_defaults_follow_the_key_type(tmp_path: Path) -> None:
    expected = {"RSA": "RS256", "EC": "ES256", "Ed25519": "EdDSA"}
    for kind, alg in expected.items():
        path = keys.write_pem(keys.generate_key(kind), tmp_path / f"{kind}.pem")  # type: ignore[arg-type]
        assert assertion.load_private_key(path).algorithm == alg


def test_jwk_file_brings_its_own_kid_and_alg(tmp_path: Path) -> None:
    key = keys.generate_key("RSA")
    path = keys.write_private_jwk(key, tmp_path / "k.jwk", "ops-2026")
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "alg": "PS256"}))
    signing = assertion.load_private_key(path)
    assert (signing.kid, signing.algorithm) == ("ops-2026", "PS256")
    header, _ = _decode(assertion.make_assertion(signing, "c", "aud", NOW), _public(key), "PS256")
    assert header["kid"] == "ops-2026"
    # A configured kid wins over the file's.
    assert assertion.load_private_key(path, kid="other").kid == "other"


def test_jwk_without_kid_gets_its_thumbprint(tmp_path: Path) -> None:
    key = keys.generate_key("EC")
    path = keys.write_private_jwk(key, tmp_path / "k.jwk", None)
    assert assertion.load_private_key(path).kid == _rfc7638(keys.public_jwk(key))


def test_jwk_set_needs_one_key_or_a_kid(tmp_path: Path) -> None:
    one = json.loads(keys.write_private_jwk(keys.generate_key("EC"), tmp_path / "a", "a")
                     .read_text())
    two = json.loads(keys.write_private_jwk(keys.generate_key("EC"), tmp_path / "b", "b")
                     .read_text())
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"keys": [one]}))
    assert assertion.load_private_key(single).kid == "a"
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"keys": [one, two]}))
    with pytest.raises(KeyFileError, match="JWK Set with 2 matching keys"):
        assertion.load_private_key(both)
    assert assertion.load_private_key(both, kid="b").kid == "b"


@pytest.mark.parametrize(("content", "message"), [
    (b"not a key at all", "holds no PEM private key"),
    (b"{not json", "not valid JSON"),
    (b'["a"]', "not a JWK object"),
    (b'{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}', "key type 'oct' cannot sign"),
    (b'{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "holds a public JWK"),
    (b'{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}', "invalid EC JWK"),
])
def test_unusable_key_files_are_refused_clearly(tmp_path: Path, content: bytes,
                                                message: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as caught:
        assertion.load_private_key(path)
    assert str(path) in str(caught.value)


def test_encrypted_and_missing_key_files(tmp_path: Path) -> None:
    key = keys.generate_key("EC")
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(KeyFileError, match="is encrypted"):
        assertion.load_private_key(encrypted)
    with pytest.raises(KeyFileError, match=r"cannot read private key file .*missing\.pem"):
        assertion.load_private_key(tmp_path / "missing.pem")


def test_key_material_never_appears_in_an_error(tmp_path: Path) -> None:
    key = keys.generate_key("RSA")
    jwk_path = keys.write_private_jwk(key, tmp_path / "k.jwk", None)
    doc = json.loads(jwk_path.read_text())
    with pytest.raises(KeyFileError) as caught:
        assertion.load_private_key(jwk_path, "ES256")
    message = str(caught.value) + repr(assertion.load_private_key(jwk_path))
    for member in ("d", "p", "q", "n"):
        assert doc[member] not in message
        assert doc[member][:24] not in message


@pytest.mark.parametrize(("kind", "alg", "message"), [
    ("EC", "RS256", "holds an EC \\(P-256\\) key, but signing_algorithm RS256 needs an RSA key"),
    ("RSA", "ES256", "needs an EC key"),
    ("RSA", "EdDSA", "needs an OKP key"),
    ("EC", "HS256", "cannot be used with a private key"),
    ("EC", "ES512", "cannot be used with a private key"),
])
def test_key_and_algorithm_must_fit(tmp_path: Path, kind: keys.KeyType, alg: str,
                                    message: str) -> None:
    path = keys.write_pem(keys.generate_key(kind), tmp_path / "k.pem")
    with pytest.raises(KeyFileError, match=message):
        assertion.load_private_key(path, alg)


def test_weak_or_wrong_curve_keys_are_refused(tmp_path: Path) -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyFileError, match="1024-bit RSA key"):
        assertion.load_private_key(keys.write_pem(short, tmp_path / "short.pem"))
    short_jwk = {"kty": "RSA", **{k: v for k, v in _rsa_jwk(short).items() if k != "kty"}}
    (tmp_path / "short.jwk").write_text(json.dumps(short_jwk))
    with pytest.raises(KeyFileError, match="1024-bit RSA key"):
        assertion.load_private_key(tmp_path / "short.jwk")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFileError, match="on P-384; ES256 needs P-256"):
        assertion.load_private_key(keys.write_pem(p384, tmp_path / "p384.pem"), "ES256")
    ed = ed448.Ed448PrivateKey.generate()
    path = tmp_path / "ed448.pem"
    path.write_bytes(ed.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    assert assertion.load_private_key(path).algorithm == "EdDSA"
    with pytest.raises(KeyFileError, match="Ed25519 needs Ed25519"):
        assertion.load_private_key(path, "Ed25519")


def test_signing_certificate_adds_x5t_headers(tmp_path: Path) -> None:
    key = keys.generate_key("RSA")
    cert = keys.self_signed_certificate(key, tmp_path / "c.crt", "signer")
    der = cert.public_bytes(serialization.Encoding.DER)
    signing = assertion.load_private_key(keys.write_pem(key, tmp_path / "k.pem"),
                                         certificate=tmp_path / "c.crt")
    header, _ = _decode(assertion.make_assertion(signing, "c", "aud", NOW), _public(key), "RS256")
    assert header["x5t#S256"] == _b64url(hashlib.sha256(der).digest())
    assert header["x5t"] == _b64url(hashlib.sha1(der).digest())
    # The same value openssl prints as the certificate's SHA-256 fingerprint.
    out = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "c.crt"), "-noout",
                          "-fingerprint", "-sha256"], capture_output=True, text=True,
                         check=True).stdout
    hexed = out.strip().split("=", 1)[1].replace(":", "")
    assert _b64url(bytes.fromhex(hexed)) == header["x5t#S256"]


@pytest.mark.slow
def test_signing_certificate_must_certify_the_key(tmp_path: Path) -> None:
    keys.self_signed_certificate(keys.generate_key("RSA"), tmp_path / "other.crt", "other")
    path = keys.write_pem(keys.generate_key("RSA"), tmp_path / "k.pem")
    with pytest.raises(KeyFileError, match="does not certify the key"):
        assertion.load_private_key(path, certificate=tmp_path / "other.crt")
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(KeyFileError, match="holds no PEM certificate"):
        assertion.load_private_key(path, certificate=tmp_path / "junk.crt")


def test_certificate_not_after_reads_the_leaf_of_a_chain(tmp_path: Path) -> None:
    end = dt.datetime(2031, 5, 4, 3, 2, 1, tzinfo=dt.UTC)
    keys.self_signed_certificate(keys.generate_key("EC"), tmp_path / "leaf.crt", "leaf",
                                 not_after=end)
    keys.self_signed_certificate(keys.generate_key("EC"), tmp_path / "ca.crt", "ca")
    chain = tmp_path / "chain.pem"
    chain.write_text((tmp_path / "leaf.crt").read_text() + (tmp_path / "ca.crt").read_text())
    assert assertion.certificate_not_after(chain) == end.timestamp()
    with pytest.raises(KeyFileError, match="cannot read certificate file"):
        assertion.certificate_not_after(tmp_path / "nope.crt")


def test_client_secret_jwt_signs_with_the_secret() -> None:
    secret = "s3cret-of-the-client-0123456789"
    signing = assertion.secret_key(secret)
    token = assertion.make_assertion(signing, "c", "https://as/token", NOW)
    header, claims = _decode(token, OctKey.import_key(secret.encode()), "HS256")
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert (claims["iss"], claims["aud"]) == ("c", "https://as/token")
    # A different secret does not verify it.
    with pytest.raises(Exception, match="signature"):
        _decode(token, OctKey.import_key(b"another-secret-0123456789"), "HS256")


def test_client_secret_jwt_refuses_short_secrets_and_other_algorithms() -> None:
    with pytest.raises(KeyFileError, match="shorter than 14 bytes") as caught:
        assertion.secret_key("short-secret")
    assert "short-secret" not in str(caught.value)
    with pytest.raises(KeyFileError, match="cannot be used with client_secret_jwt"):
        assertion.secret_key("long-enough-secret-value", "RS256")


def test_assertion_form_fields(tmp_path: Path) -> None:
    signing = assertion.load_private_key(keys.write_pem(keys.generate_key("EC"),
                                                        tmp_path / "k.pem"))
    form = assertion.assertion_form(signing, "client-9", "https://issuer", NOW, typ="x+jwt")
    assert form["client_id"] == "client-9"
    assert form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    header = json.loads(base64.urlsafe_b64decode(form["client_assertion"].split(".")[0] + "=="))
    assert header["typ"] == "x+jwt"
    assert set(form) == {"client_id", "client_assertion_type", "client_assertion"}
