"""Throwaway signing keys and self-signed certificates for client-authentication tests.

Keys are written the ways an operator hands them to the exporter: a PEM file
(PKCS#8) or a private JWK file. Certificates are self-signed over a given key,
with a chosen validity, for ``signing_certificate_file`` and for
``self_signed_tls_client_auth``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey, OKPKey, RSAKey

KeyType = Literal["RSA", "EC", "Ed25519"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def generate_key(kind: KeyType) -> PrivateKey:
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def write_pem(key: PrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)
    return path


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    """The public JWK of ``key``, without a ``kid`` (the servers under test add their own)."""
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if isinstance(key, rsa.RSAPrivateKey):
        return dict(RSAKey.import_key(pem).as_dict(private=False))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return dict(ECKey.import_key(pem).as_dict(private=False))
    return dict(OKPKey.import_key(pem).as_dict(private=False))


def write_private_jwk(key: PrivateKey, path: Path, kid: str | None) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    imported: RSAKey | ECKey | OKPKey
    if isinstance(key, rsa.RSAPrivateKey):
        imported = RSAKey.import_key(pem)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        imported = ECKey.import_key(pem)
    else:
        imported = OKPKey.import_key(pem)
    doc = dict(imported.as_dict(private=True))
    if kid is not None:
        doc["kid"] = kid
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def self_signed_certificate(
    key: PrivateKey,
    path: Path,
    common_name: str,
    *,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Write a self-signed certificate over ``key``; valid from an hour ago to ``not_after``."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, algorithm)
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def der_base64(cert: x509.Certificate) -> str:
    """The certificate as one ``x5c`` entry (standard Base64 of the DER)."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
