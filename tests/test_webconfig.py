"""--web.config.file: TLS, client certificates and basic auth on a real exporter web server.

A throwaway CA, server and client certificates are made with the openssl CLI at
test time; the exporter runs on loopback through tests/harness.py and is
spoken to over real sockets.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from exporter.config import ConfigError
from exporter.web import Limits
from exporter.webconfig import (
    REALM,
    BasicAuth,
    load_web_config,
    parse_basic_authorization,
)
from tests.harness import Harness, running_exporter, wait_for
from tests.pki import Pki, another_server_certificate

#: One provider whose token endpoint refuses connections (the discard port on
#: loopback), tried once an hour: an empty provider list is a config error.
NO_PROVIDERS = ("providers:\n  - name: idle\n    token_url: http://127.0.0.1:9/token\n"
                "    client_id: web-test\n    client_secret: web-test-secret\n"
                "    backoff_initial: 1h\n    backoff_max: 1h\n")
PASSWORD = "correct horse battery staple"
REPO = Path(__file__).resolve().parent.parent


def hashed(password: str = PASSWORD) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client that trusts the test CA, optionally presenting a certificate."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def write_web_config(pki: Pki, name: str, text: str) -> Path:
    """Web configs live beside the certificates so relative names are exercised."""
    path = pki.dir / name
    path.write_text(text)
    return path


def tls_block(client_auth: str = "NoClientCert", extra: str = "") -> str:
    text = ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            f"  client_auth_type: {client_auth}\n")
    if client_auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        text += "  client_ca_file: test-ca.crt\n"
    return text + extra


@contextmanager
def serving(pki: Pki, text: str) -> Iterator[Harness]:
    config = load_web_config(write_web_config(pki, "web.yml", text))
    with running_exporter(NO_PROVIDERS, log_level="debug", web_config=config) as h:
        yield h


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --------------------------------------------------------------------------- TLS


def test_tls_serves_metrics_to_a_client_that_trusts_the_ca(pki: Pki) -> None:
    with serving(pki, tls_block()) as h:
        assert h.url("/").startswith("https://")
        resp = httpx.get(h.url("/metrics"), verify=client_context(pki), timeout=10)
        assert resp.status_code == 200
        assert "oauth_exporter_build_info" in resp.text
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as sock, \
                client_context(pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.3"
        # The system trust store does not know the test CA ...
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(h.url("/metrics"), timeout=10)
        # ... and plain HTTP gets no answer from a TLS port.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{h.port}/metrics", timeout=10)
        # The server keeps serving after those failures.
        assert httpx.get(h.url("/-/healthy"), verify=client_context(pki)).status_code == 200


def test_min_version_tls13_refuses_a_tls12_client(pki: Pki) -> None:
    with serving(pki, tls_block(extra="  min_version: TLS13\n")) as h:
        old = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(h.url("/-/healthy"), verify=old, timeout=10)
        assert httpx.get(h.url("/-/healthy"), verify=client_context(pki)).status_code == 200


def test_tls12_allows_only_forward_secret_aead_ciphers(pki: Pki) -> None:
    config = load_web_config(write_web_config(pki, "ciphers.yml", tls_block()))
    assert config.ssl_context is not None
    tls12 = [c["name"] for c in config.ssl_context.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert tls12 and all(
        name.startswith("ECDHE-") and ("-GCM-" in name or "CHACHA20" in name) for name in tls12
    ), tls12
    with running_exporter(NO_PROVIDERS, log_level="info", web_config=config) as h:
        cbc = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384")
        with pytest.raises(ssl.SSLError):
            raw_get(h.port, cbc)
        gcm = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
        assert raw_get(h.port, gcm).startswith(b"HTTP/1.1 200")


def test_a_silent_client_does_not_block_the_others(pki: Pki) -> None:
    """Each handshake runs in its connection's own task, not in the accept loop."""
    with serving(pki, tls_block()) as h:
        silent = [socket.create_connection(("127.0.0.1", h.port)) for _ in range(3)]
        try:
            started = time.monotonic()
            resp = httpx.get(h.url("/-/healthy"), verify=client_context(pki), timeout=5)
            assert resp.status_code == 200
            assert time.monotonic() - started < 3
        finally:
            for s in silent:
                s.close()


def test_a_silent_client_is_cut_at_the_handshake_timeout(pki: Pki) -> None:
    config = load_web_config(write_web_config(pki, "hs.yml", tls_block()))
    limits = Limits(tls_handshake_timeout=0.5, read_header_timeout=30.0)
    with running_exporter(NO_PROVIDERS, log_level="debug", web_config=config,
                          limits=limits) as h, \
            socket.create_connection(("127.0.0.1", h.port), timeout=10) as silent:
        started = time.monotonic()
        with suppress(ConnectionResetError):
            assert silent.recv(1) == b""
        assert 0.4 <= time.monotonic() - started < 3.0
        wait_for(lambda: "TLS handshake with" in h.logs.getvalue(), message="the log line")


def raw_get(port: int, ctx: ssl.SSLContext) -> bytes:
    """One HTTP request over a fresh TLS connection; ssl.SSLError if refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return data


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_require_and_verify_client_cert(pki: Pki, version: ssl.TLSVersion) -> None:
    with serving(pki, tls_block("RequireAndVerifyClientCert")) as h:
        anonymous = client_context(pki, max_version=version)
        rogue = client_context(pki, pki.rogue_cert, pki.rogue_key, max_version=version)
        good = client_context(pki, pki.client_cert, pki.client_key, max_version=version)
        # Without a certificate, or with one from another CA, the handshake fails
        # (with TLS 1.3 the client learns it from the alert on its first read).
        for ctx in (anonymous, rogue):
            with pytest.raises(ssl.SSLError):  # an alert, or EOF without an HTTP response
                raw_get(h.port, ctx)
            with pytest.raises(httpx.TransportError):
                httpx.get(h.url("/metrics"), verify=ctx, timeout=10)
        assert raw_get(h.port, good).startswith(b"HTTP/1.1 200")
        resp = httpx.get(h.url("/metrics"), verify=good, timeout=10)
        assert resp.status_code == 200 and "oauth_exporter_build_info" in resp.text
        assert "TLS handshake with" in h.logs.getvalue()  # logged at debug, no traceback
        assert "Traceback" not in h.logs.getvalue()


def test_verify_client_cert_if_given(pki: Pki) -> None:
    with serving(pki, tls_block("VerifyClientCertIfGiven")) as h:
        assert raw_get(h.port, client_context(pki)).startswith(b"HTTP/1.1 200")
        good = client_context(pki, pki.client_cert, pki.client_key)
        assert raw_get(h.port, good).startswith(b"HTTP/1.1 200")
        rogue = client_context(pki, pki.rogue_cert, pki.rogue_key)
        with pytest.raises(ssl.SSLError):
            raw_get(h.port, rogue)


# --------------------------------------------------------------------------- basic auth


def test_basic_auth_over_tls(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tls_block() + (
        "basic_auth_users:\n"
        f"  prometheus: '{hashed()}'\n"
        f"  grafana: '{hashed('another password')}'\n"
        "http_server_config:\n"
        "  headers:\n"
        "    X-Frame-Options: deny\n"
        "    strict-transport-security: max-age=31536000\n"
    )
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    # One keep-alive connection throughout: a 401 must leave it usable.
    with serving(pki, text) as h, httpx.Client(verify=client_context(pki), timeout=10) as client:

        def get(path: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> httpx.Response:
            return client.request(method, h.url(path), headers=headers)

        good = basic("prometheus", PASSWORD)
        for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
            resp = get(path, good)
            assert resp.status_code == 200, path
            assert resp.headers["X-Frame-Options"] == "deny"
            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert get("/-/reload", good, "POST").status_code == 500  # reached the handler
        assert get("/metrics", basic("grafana", "another password")).status_code == 200
        # Verified once per user, then served from the cache.
        assert len(calls) == 2

        refused = {
            "no credentials": None,
            "wrong password": basic("prometheus", "wrong"),
            "another user's password": basic("grafana", PASSWORD),
            "unknown user": basic("nobody", PASSWORD),
            "empty user": basic("", PASSWORD),
            "not basic": {"Authorization": "Bearer abc"},
            "not base64": {"Authorization": "Basic %%%"},
            "no colon": {"Authorization": "Basic " + base64.b64encode(b"prometheus").decode()},
        }
        for label, headers in refused.items():
            for path in ("/metrics", "/-/healthy", "/"):
                resp = get(path, headers)
                assert resp.status_code == 401, (label, path)
                assert resp.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
                assert resp.headers["X-Frame-Options"] == "deny"
                assert "oauth_" not in resp.text
        assert get("/-/reload", None, "POST").status_code == 401
        # Failures are never cached: each one costs a bcrypt (an unknown user too).
        assert len(calls) == 2 + 4 * 3
        assert PASSWORD not in h.logs.getvalue()


def test_basic_auth_without_tls_protects_every_endpoint(pki: Pki) -> None:
    text = f"basic_auth_users:\n  prometheus: '{hashed()}'\n"
    with serving(pki, text) as h:
        assert h.url("/").startswith("http://")
        for path in ("/metrics", "/", "/-/healthy", "/-/ready", "/nope"):
            assert h.get(path).status_code == 401, path
        resp = httpx.get(h.url("/metrics"), auth=("prometheus", PASSWORD), timeout=10)
        assert resp.status_code == 200 and "oauth_exporter_build_info" in resp.text
        assert httpx.get(h.url("/metrics"), auth=("prometheus", "nope")).status_code == 401


def test_basic_auth_unit() -> None:
    auth = BasicAuth({"alice": hashed(), "bob": hashed("b")})

    def header(user: bytes, password: bytes) -> str:
        return "Basic " + base64.b64encode(user + b":" + password).decode()

    assert auth.check(header(b"alice", PASSWORD.encode()))
    assert auth.check(header(b"alice", PASSWORD.encode()))  # cached
    assert not auth.check(header(b"alice", b"x" * 100))  # beyond bcrypt's 72 bytes
    assert not auth.check(header(b"alice ", PASSWORD.encode()))
    assert not auth.check(header(b"ALICE", PASSWORD.encode()))
    assert auth.check("basic " + base64.b64encode(b"bob:b").decode())  # scheme is case-blind
    assert not auth.check(None) and not auth.check("")
    # Only salted digests are kept, never the password.
    assert all(PASSWORD.encode() not in key for key in auth._verified)
    assert parse_basic_authorization("Basic " + base64.b64encode(b"u:p:q").decode()) == (
        b"u", b"p:q")
    assert parse_basic_authorization("Basic \u00e9") is None


# --------------------------------------------------------------------------- the file


def test_empty_web_config_means_plain_http_without_auth(pki: Pki) -> None:
    config = load_web_config(write_web_config(pki, "empty.yml", ""))
    assert config.ssl_context is None and config.auth is None and config.headers == ()


def test_accepted_no_op_options_are_logged(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    text = tls_block("RequestClientCert", "  prefer_server_cipher_suites: true\n") + (
        "http_server_config:\n  http2: true\n")
    with caplog.at_level(logging.INFO, logger="exporter.webconfig"):
        config = load_web_config(write_web_config(pki, "noop.yml", text))
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_NONE
    messages = caplog.text
    assert "prefer_server_cipher_suites has no effect" in messages
    assert "http2 has no effect" in messages
    assert "RequestClientCert" in messages


def test_basic_auth_without_tls_is_warned_about(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.webconfig"):
        text = f"basic_auth_users: {{a: '{hashed()}'}}\n"
        load_web_config(write_web_config(pki, "clear.yml", text))
    assert "clear text" in caplog.text


BAD_HASH = "$2b$04$this-is-not-a-valid-bcrypt-hash"

#: (name, web config text, expected fragments of the error)
INVALID: list[tuple[str, Callable[[Pki], str], list[str]]] = [
    ("unknown top-level key", lambda p: "tls_config:\n  cert_file: server.crt\n",
     ['bad.yml:1:1: field "tls_config": unknown key']),
    ("unknown tls key", lambda p: tls_block(extra="  certfile: x\n"),
     ['bad.yml:5:3: field "tls_server_config.certfile": unknown key']),
    ("missing cert file",
     lambda p: "tls_server_config:\n  cert_file: absent.crt\n  key_file: server.key\n",
     ['bad.yml:2:14: field "tls_server_config.cert_file": cannot read',
      "absent.crt", "No such file"]),
    ("missing key_file", lambda p: "tls_server_config:\n  cert_file: server.crt\n",
     ['field "tls_server_config.key_file": Field required']),
    ("bad bcrypt hash", lambda p: f"basic_auth_users:\n  alice: '{BAD_HASH}'\n",
     ['bad.yml:2:10: field "basic_auth_users.alice": not a bcrypt hash']),
    ("plain password instead of a hash", lambda p: "basic_auth_users:\n  alice: hunter2\n",
     ['field "basic_auth_users.alice": not a bcrypt hash']),
    ("user name with a colon", lambda p: f"basic_auth_users:\n  'a:b': '{hashed()}'\n",
     ['field "basic_auth_users.a:b"', "cannot contain ':'"]),
    ("bad client_auth_type", lambda p: tls_block("RequireClientCert"),
     ['bad.yml:4:21: field "tls_server_config.client_auth_type"', "RequireAndVerifyClientCert"]),
    ("RequireAnyClientCert", lambda p: tls_block("RequireAnyClientCert"),
     ['field "tls_server_config.client_auth_type": RequireAnyClientCert is not supported']),
    ("verification without a CA",
     lambda p: tls_block("NoClientCert").replace("NoClientCert", "RequireAndVerifyClientCert"),
     ['field "tls_server_config.client_ca_file": required with client_auth_type']),
    ("CA without verification", lambda p: tls_block(extra="  client_ca_file: test-ca.crt\n"),
     ['bad.yml:5:19: field "tls_server_config.client_ca_file": client certificates are not '
      "verified"]),
    ("cipher_suites", lambda p: tls_block(extra="  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
     ['field "tls_server_config.cipher_suites": is not supported']),
    ("curve_preferences", lambda p: tls_block(extra="  curve_preferences: [X25519]\n"),
     ['field "tls_server_config.curve_preferences": is not supported']),
    ("inline key", lambda p: tls_block(extra="  key: '-----BEGIN PRIVATE KEY----- sesame'\n"),
     ['field "tls_server_config.key": (an inline key) is not supported: use key_file']),
    ("TLS 1.1", lambda p: tls_block(extra="  min_version: TLS11\n"),
     ['field "tls_server_config.min_version": TLS11 is not supported']),
    ("min above max", lambda p: tls_block(extra="  min_version: TLS13\n  max_version: TLS12\n"),
     ['field "tls_server_config.min_version": TLS13 is above max_version TLS12']),
    ("cert file holds a key",
     lambda p: "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
     ['field "tls_server_config.cert_file"', "holds no PEM certificate"]),
    ("key does not match",
     lambda p: "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
     ['field "tls_server_config.key_file"', "does not match the certificate"]),
    ("encrypted key",
     lambda p: "tls_server_config:\n  cert_file: server.crt\n  key_file: server.enc.key\n",
     ['field "tls_server_config.key_file"', "encrypted with a passphrase"]),
    ("header not allowed", lambda p: "http_server_config:\n  headers: {Server: x}\n",
     ['field "http_server_config.headers.Server": header \'Server\' cannot be set']),
    ("bad header value",
     lambda p: "http_server_config:\n  headers: {X-Frame-Options: allow}\n",
     ['field "http_server_config.headers": X-Frame-Options must be one of: deny, sameorigin']),
    ("duplicate key", lambda p: f"basic_auth_users:\n  a: '{hashed()}'\n  a: '{hashed()}'\n",
     ['bad.yml:3:3: field "basic_auth_users.a": duplicate key (first set at line 2)']),
    ("not a mapping", lambda p: "- a\n", ["bad.yml: the top level must be a mapping"]),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in INVALID],
                         ids=[name for name, _, _ in INVALID])
def test_invalid_web_config_names_file_and_field(
    pki: Pki, text: Callable[[Pki], str], expected: list[str]
) -> None:
    path = write_web_config(pki, "bad.yml", text(pki))
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in expected:
        assert fragment in message, message
    assert BAD_HASH not in message and "hunter2" not in message
    assert "sesame" not in message


def test_unreadable_web_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yml: cannot read web config file"):
        load_web_config(tmp_path / "absent.yml")


# --------------------------------------------------------------------------- command line


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd, check=False)


def test_cli_refuses_a_broken_web_config(pki: Pki, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    web = write_web_config(pki, "cli-bad.yml", f"basic_auth_users:\n  alice: '{BAD_HASH}'\n")
    proc = run_cli("--config.file", str(providers), "--web.config.file", str(web),
                   "--web.listen-address", "127.0.0.1:0", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    # A logfmt line: the message's quotes come out escaped.
    assert f'{web}:2:10: field \\"basic_auth_users.alice\\": not a bcrypt hash' in proc.stderr
    assert BAD_HASH not in proc.stderr

    check = run_cli("--check-config", "--config.file", str(providers),
                    "--web.config.file", str(web), cwd=tmp_path)
    assert check.returncode == 1
    assert 'field "basic_auth_users.alice"' in check.stderr

    missing = run_cli("--check-config", "--config.file", str(providers),
                      "--web.config.file", str(tmp_path / "nope.yml"), cwd=tmp_path)
    assert missing.returncode == 1 and "nope.yml: cannot read web config file" in missing.stderr


def test_cli_check_config_summarises_a_good_web_config(pki: Pki, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    password_hash = hashed()
    web = write_web_config(pki, "cli-good.yml", tls_block("RequireAndVerifyClientCert")
                           + f"basic_auth_users:\n  prometheus: '{password_hash}'\n")
    proc = run_cli("--check-config", "--config.file", str(providers),
                   "--web.config.file", str(web), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{web}: web config OK" in proc.stdout
    assert "client_auth_type=RequireAndVerifyClientCert" in proc.stdout
    assert "basic auth: 1 user(s)" in proc.stdout
    assert password_hash not in proc.stdout + proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_tls_and_basic_auth(pki: Pki, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    web = write_web_config(pki, "cli-serve.yml", tls_block()
                           + f"basic_auth_users:\n  prometheus: '{hashed()}'\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKEN_EXPORTER_WEB_CONFIG_FILE": str(web)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(providers),
         "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"https://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = httpx.get(url, verify=client_context(pki), timeout=5,
                                 auth=("prometheus", PASSWORD))
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "exporter did not start"
                time.sleep(0.1)
        assert resp.status_code == 200 and "oauth_exporter_build_info" in resp.text
        denied = httpx.get(url, verify=client_context(pki), timeout=5)
        assert denied.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"port {port}, https" in stderr


# --------------------------------------------------------------------------- every key


#: Every key of exporter-toolkit's web config, with a value, and whether this
#: exporter honours it (True) or refuses it by name (the error fragment).
TOOLKIT_KEYS: list[tuple[str, str | None, bool | str]] = [
    ("tls_server_config.cert_file", "cert_file: server.crt", True),
    ("tls_server_config.key_file", "key_file: server.key", True),
    ("tls_server_config.client_auth_type", "client_auth_type: NoClientCert", True),
    ("tls_server_config.client_ca_file",
     "client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: test-ca.crt", True),
    ("tls_server_config.min_version", "min_version: TLS12", True),
    ("tls_server_config.max_version", "max_version: TLS13", True),
    ("tls_server_config.prefer_server_cipher_suites", "prefer_server_cipher_suites: true", True),
    ("tls_server_config.cipher_suites", "cipher_suites: [TLS_AES_128_GCM_SHA256]",
     "is not supported"),
    ("tls_server_config.curve_preferences", "curve_preferences: [X25519]", "is not supported"),
    ("tls_server_config.client_allowed_sans", "client_allowed_sans: [a.example]",
     "is not supported"),
    ("tls_server_config.cert", "cert: inline", "(an inline certificate) is not supported"),
    ("tls_server_config.key", "key: inline", "(an inline key) is not supported"),
    ("tls_server_config.client_ca", "client_ca: inline",
     "(an inline CA certificate) is not supported: use client_ca_file"),
    ("http_server_config.http2", None, True),
    ("http_server_config.headers", None, True),
    ("basic_auth_users", None, True),
    ("rate_limit.interval", None, True),
    ("rate_limit.burst", None, True),
]


def toolkit_file(key: str, tls_line: str | None) -> str:
    tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    if tls_line is not None:
        lines = [f"  {line.strip()}" for line in tls_line.split("\n")
                 if not line.strip().startswith(("cert_file:", "key_file:"))]
        return tls + "".join(f"{line}\n" for line in lines)
    section = key.split(".")[0]
    return tls + {
        "http_server_config": "http_server_config:\n  http2: false\n"
                              "  headers: {X-Content-Type-Options: nosniff}\n",
        "basic_auth_users": f"basic_auth_users:\n  prometheus: '{hashed()}'\n",
        "rate_limit": "rate_limit:\n  interval: 1s\n  burst: 5\n",
    }[section]


@pytest.mark.parametrize(("key", "line", "outcome"), TOOLKIT_KEYS,
                         ids=[k for k, _, _ in TOOLKIT_KEYS])
def test_every_exporter_toolkit_key_is_honoured_or_refused_by_name(
    pki: Pki, key: str, line: str | None, outcome: bool | str
) -> None:
    path = write_web_config(pki, "toolkit.yml", toolkit_file(key, line))
    if outcome is True:
        assert load_web_config(path).ssl_context is not None
    else:
        with pytest.raises(ConfigError) as caught:
            load_web_config(path)
        assert f'field "{key}": {outcome}' in str(caught.value)
        assert "inline" not in str(caught.value).split(":", 1)[0]


# --------------------------------------------------------------------------- rate_limit


@pytest.mark.parametrize(("text", "expected"), [
    ("rate_limit:\n  interval: 1s\n", 'field "rate_limit.burst": must be at least 1 when '
     "interval is set"),
    ("rate_limit:\n  interval: -1\n  burst: 1\n",
     'field "rate_limit.interval": must not be negative'),
    ("rate_limit:\n  interval: soon\n  burst: 1\n", 'field "rate_limit.interval": invalid '
     "duration"),
    ("rate_limit:\n  interval: 1s\n  burst: 1\n  per_ip: true\n",
     'field "rate_limit.per_ip": unknown key'),
])
def test_bad_rate_limits_are_refused(pki: Pki, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_web_config(write_web_config(pki, "rate.yml", text))


def test_rate_limit_answers_429_before_auth(pki: Pki) -> None:
    text = (f"basic_auth_users:\n  prometheus: '{hashed()}'\n"
            "rate_limit:\n  interval: 1m\n  burst: 2\n")
    config = load_web_config(write_web_config(pki, "limited.yml", text))
    assert "rate limit: one request per 60s, bursts of 2 (429 beyond)" in config.summary()
    with running_exporter(NO_PROVIDERS, log_level="info", web_config=config) as h:
        assert httpx.get(h.url("/metrics"), auth=("prometheus", PASSWORD)).status_code == 200
        assert h.get("/metrics").status_code == 401
        refused = h.get("/metrics")  # the burst is spent; no credentials needed to see it
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert httpx.get(h.url("/metrics"), auth=("prometheus", PASSWORD)).status_code == 429


def test_zero_interval_turns_the_rate_limit_off(pki: Pki) -> None:
    config = load_web_config(write_web_config(pki, "off.yml", "rate_limit:\n  interval: 0\n"))
    assert config.rate_limit is None and "rate limit: off" in config.summary()


# --------------------------------------------------------------------------- re-reading


def serving_file(pki: Pki, path: Path) -> Any:
    return running_exporter(NO_PROVIDERS, log_level="debug", web_config=load_web_config(path),
                            config_check_interval=0.05)


def served_certificate(port: int, pki: Pki) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            client_context(pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        return cert


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_a_renewed_certificate_is_served_on_the_next_connection(
    pki: Pki, tmp_path: Path
) -> None:
    for name in ("test-ca.crt", "server.crt", "server.key"):
        shutil.copy(pki.dir / name, tmp_path / name)
    web = tmp_path / "web.yml"
    web.write_text(tls_block())
    renewed_cert, renewed_key = another_server_certificate(pki, "renewed", 90)
    with serving_file(pki, web) as h, \
            httpx.Client(verify=client_context(pki), timeout=10) as kept:
        assert served_certificate(h.port, pki) == pem_to_der(pki.server_cert)
        assert kept.get(h.url("/-/healthy")).status_code == 200
        # Renewal writes the new key, then the new certificate (cert-manager and
        # certbot replace files, not edit them in place).
        shutil.copy(renewed_key, tmp_path / "server.key.new")
        os.replace(tmp_path / "server.key.new", tmp_path / "server.key")
        shutil.copy(renewed_cert, tmp_path / "server.crt.new")
        os.replace(tmp_path / "server.crt.new", tmp_path / "server.crt")
        wait_for(lambda: served_certificate(h.port, pki) == pem_to_der(renewed_cert),
                 message="the renewed certificate")
        # A connection opened before the renewal keeps working.
        assert kept.get(h.url("/-/healthy")).status_code == 200
        # A broken rewrite is logged once, and the last good config stays in force.
        # (Files are looked at when connections come, as exporter-toolkit does.)
        web.write_text(tls_block() + "basic_auth_users:\n  x: not-a-hash\n")
        wait_for(lambda: served_certificate(h.port, pki) == pem_to_der(renewed_cert)
                 and "web config changed but cannot be used" in h.logs.getvalue(),
                 message="the error")
        assert h.logs.getvalue().count("web config changed but cannot be used") == 1
        assert httpx.get(h.url("/-/healthy"), verify=client_context(pki)).status_code == 200
        assert "not-a-hash" not in h.logs.getvalue()


def test_users_change_without_a_restart_and_tls_cannot_be_switched_off(pki: Pki) -> None:
    path = write_web_config(pki, "users.yml", f"basic_auth_users:\n  alice: '{hashed()}'\n")
    with serving_file(pki, path) as h:
        assert httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD)).status_code == 200
        path.write_text(f"basic_auth_users:\n  bob: '{hashed('b')}'\n")
        wait_for(lambda: httpx.get(h.url("/-/healthy"), auth=("bob", "b")).status_code == 200,
                 message="bob admitted")
        assert httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD)).status_code == 401
        path.write_text(tls_block() + f"basic_auth_users:\n  bob: '{hashed('b')}'\n")
        # Still plain HTTP with the previous users, and an error saying why.
        wait_for(lambda: httpx.get(h.url("/-/healthy"), auth=("bob", "b")).status_code == 200
                 and "turning TLS on or off needs a restart" in h.logs.getvalue(),
                 message="the refusal")


def test_unchanged_users_keep_their_verified_passwords(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    users = f"basic_auth_users:\n  alice: '{hashed()}'\n"
    path = write_web_config(pki, "cache.yml", users)
    with serving_file(pki, path) as h:
        assert httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD)).status_code == 200
        path.write_text(users + "http_server_config:\n  headers: {X-Frame-Options: deny}\n")
        wait_for(lambda: httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD))
                 .headers.get("X-Frame-Options") == "deny", message="the new header")
    assert len(calls) == 1  # verified once, before and after the re-read
