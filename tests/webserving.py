"""What the web-config tests share: config files beside a throwaway PKI, TLS
clients that trust its CA, and an exporter serving with a web config.

A throwaway CA, server and client certificates are made with the openssl CLI at
test time (tests/pki.py); the exporter runs on loopback through
tests/harness.py and is spoken to over real sockets.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import bcrypt
import pytest

from exporter.webconfig import load_web_config
from tests.harness import Harness, running_exporter
from tests.pki import Pki

#: One provider whose token endpoint refuses connections (the discard port on
#: loopback), tried once an hour: an empty provider list is a config error.
NO_PROVIDERS = ("providers:\n  - name: idle\n    token_url: http://127.0.0.1:9/token\n"
                "    client_id: web-test\n    client_secret: web-test-secret\n"
                "    backoff_initial: 1h\n    backoff_max: 1h\n")
PASSWORD = "correct horse battery staple"
#: Not a bcrypt hash: what a refused config must never echo.
BAD_HASH = "$2b$04$this-is-not-a-valid-bcrypt-hash"


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


def serving_file(pki: Pki, path: Path) -> AbstractContextManager[Harness]:
    """An exporter that re-reads the web config at ``path`` every 50 ms."""
    return running_exporter(NO_PROVIDERS, log_level="debug", web_config=load_web_config(path),
                            config_check_interval=0.05)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def raw_get(port: int, ctx: ssl.SSLContext) -> bytes:
    """One HTTP request over a fresh TLS connection; ssl.SSLError if refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return data


def count_bcrypt(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """From now on, the hash of every bcrypt check, in order."""
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls
