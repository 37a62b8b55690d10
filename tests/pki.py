"""Throwaway certificates for TLS tests, made with the openssl CLI at test time.

A test CA that signs a server certificate (for 127.0.0.1 and localhost) and a
client certificate, plus a rogue CA with its own client certificate.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from a CA the server does not trust
    rogue_key: Path
    encrypted_key: Path  # server_key under a passphrase


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail(
            "the openssl command is needed to make test certificates; install it: "
            "apt-get update && apt-get install -y openssl"
        )
    return path


_NEWKEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _run_openssl(d: Path, *args: str) -> None:
    proc = subprocess.run([_openssl(), *args], cwd=d, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


def _leaf(d: Path, name: str, issuer: str, section: str, serial: str) -> None:
    cnf = str(d / "openssl.cnf")
    _run_openssl(d, "req", "-config", cnf, "-new", *_NEWKEY, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _run_openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey",
                 f"{issuer}.key", "-set_serial", serial, "-days", "2", "-out", f"{name}.crt",
                 "-extfile", cnf, "-extensions", section)


def another_server_certificate(pki: Pki, name: str, serial: int) -> tuple[Path, Path]:
    """A second server certificate (and key) from the test CA, as a renewal would bring."""
    _leaf(pki.dir, name, "test-ca", "server", str(serial))
    return pki.dir / f"{name}.crt", pki.dir / f"{name}.key"


def make_pki(d: Path) -> Pki:
    cnf = d / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)

    def run(*args: str) -> None:
        _run_openssl(d, *args)

    newkey = _NEWKEY

    def ca(name: str) -> None:
        run("req", "-config", str(cnf), "-x509", *newkey, "-keyout", f"{name}.key",
            "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", "-extensions", "ca")

    def leaf(name: str, issuer: str, section: str, serial: str) -> None:
        _leaf(d, name, issuer, section, serial)

    ca("test-ca")
    ca("rogue-ca")
    leaf("server", "test-ca", "server", "2")
    leaf("client", "test-ca", "client", "3")
    leaf("rogue-client", "rogue-ca", "client", "4")
    run("pkey", "-in", "server.key", "-aes256", "-passout", "pass:sesame",
        "-out", "server.enc.key")
    return Pki(d, d / "test-ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key", d / "rogue-client.crt", d / "rogue-client.key",
               d / "server.enc.key")
