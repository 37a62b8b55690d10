"""--web.config.file's tls_server_config on a real exporter web server: versions,
ciphers, handshakes, client certificates, and a renewed certificate served
without a restart."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from exporter.web import Limits
from exporter.webconfig import load_web_config
from tests.harness import running_exporter, wait_for
from tests.pki import Pki, another_server_certificate
from tests.webserving import (
    NO_PROVIDERS,
    client_context,
    raw_get,
    serving,
    serving_file,
    tls_block,
    write_web_config,
)


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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- re-reading


def served_certificate(port: int, pki: Pki) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            client_context(pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        return cert


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


@pytest.mark.slow
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
