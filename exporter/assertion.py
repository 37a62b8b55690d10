"""Client authentication by signed assertion, and the key and certificate files behind it.

Owns ``private_key_jwt`` and ``client_secret_jwt`` (RFC 7523 §2.2, OpenID
Connect Core §9): loading the signing key (a PEM or JWK file, or the client
secret for HS256), choosing its ``kid``, the ``x5t#S256``/``x5t`` headers of
an optional signing certificate, and minting one assertion per token request.
Also reads certificates' ``notAfter`` for the expiry metrics.

Signing is joserfc's; nothing here touches a signature by hand. Every error
message names a file, an algorithm or a key type, never key material.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

#: ``client_assertion_type`` of a JWT client assertion (RFC 7523 §2.2).
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: An assertion is good for this long after its ``iat``: Keycloak refuses
#: anything longer, and a short window limits what a captured one is worth.
ASSERTION_LIFETIME = 60
#: Algorithms for private_key_jwt, and the key type each needs. "Ed25519" is
#: RFC 9864's fully specified name for what servers still mostly call "EdDSA".
PRIVATE_KEY_ALGORITHMS: dict[str, str] = {
    "RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP", "Ed25519": "OKP",
}
SECRET_ALGORITHMS = ("HS256",)
#: joserfc warns below 112 bits (NIST SP 800-107); below that we refuse, since
#: such a secret signs assertions anyone can forge by brute force.
MIN_SECRET_BYTES = 14
#: RSA keys shorter than this are refused (RFC 7518 §3.3).
MIN_RSA_BITS = 2048

AudienceChoice = Literal["token_endpoint", "issuer"]


class KeyFileError(ValueError):
    """A key or certificate that cannot be used; the message holds no key material.

    ``str()`` names the file; ``reason`` says the same without it, for a config
    error that already points at the key (``field``) naming the file, whose
    path may have come from the environment and must not be echoed.
    """

    def __init__(self, message: str, *, reason: str | None = None,
                 field: str = "private_key_file") -> None:
        super().__init__(message)
        self.reason = reason or message
        self.field = field


def _file_error(what: str, path: Path, reason: str, *, sep: str = " ",
                field: str = "private_key_file") -> KeyFileError:
    return KeyFileError(f"{what} {str(path)!r}{sep}{reason}", reason=reason, field=field)


class _QuietEdDSA(EdDSAAlgorithm):
    # joserfc warns on every use of "EdDSA" because RFC 9864 deprecates the
    # polymorphic name in favour of "Ed25519". Servers (oidc-provider, Keycloak)
    # still expect "EdDSA", which is what an operator configures; the warning
    # would only repeat that on every token request.
    security_warning: str | None = None  # type: ignore[assignment]


class _Registry(JWSRegistry):
    algorithms = {**JWSRegistry.algorithms, "EdDSA": _QuietEdDSA()}  # noqa: RUF012


_REGISTRY = _Registry(algorithms=[*PRIVATE_KEY_ALGORITHMS, *SECRET_ALGORITHMS])

AnyKey = RSAKey | ECKey | OKPKey | OctKey


@dataclass(frozen=True)
class SigningKey:
    """A key ready to sign assertions, with the header values that go with it."""

    #: joserfc keys compare by identity; ``fingerprint`` stands for the key instead.
    key: AnyKey = field(compare=False)
    algorithm: str
    kid: str | None = None
    #: Base64url SHA-256 and SHA-1 of the signing certificate's DER (RFC 7515 §4.1.7-8).
    x5t_s256: str | None = None
    x5t: str | None = None
    #: The key's RFC 7638 thumbprint: two loads of one key compare equal, so a
    #: config reload that keeps the key is no change.
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.key.thumbprint())

    def __repr__(self) -> str:  # never show the key
        return f"SigningKey(algorithm={self.algorithm!r}, kid={self.kid!r})"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- private keys


def _read(path: Path, what: str, field: str = "private_key_file") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KeyFileError(f"cannot read {what} {str(path)!r}: {reason}",
                           reason=f"cannot be read: {reason}", field=field) from None


def _from_pem(data: bytes, path: Path) -> AnyKey:
    try:
        native = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise _file_error("private key file", path, "is encrypted; give the exporter an "
                          "unencrypted key file") from None
    except (ValueError, Exception):
        raise _file_error("private key file", path, "holds no PEM private key (expected "
                          "PKCS#8, PKCS#1 or SEC1 PEM, or a private JWK)") from None
    pem = native.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    if isinstance(native, rsa.RSAPrivateKey):
        _check_rsa_bits(native.key_size, path)
        return RSAKey.import_key(pem)
    if isinstance(native, ec.EllipticCurvePrivateKey):
        return ECKey.import_key(pem)
    if isinstance(native, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return OKPKey.import_key(pem)
    raise _file_error("private key file", path, f"holds a {type(native).__name__}, which "
                      "cannot sign a client assertion")


def _from_jwk(data: bytes, path: Path, kid: str | None) -> AnyKey:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _file_error("private key file", path, "is not valid JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        # A JWK Set: take the one key, or the one whose kid was configured.
        candidates = [k for k in doc["keys"] if isinstance(k, dict)]
        if kid is not None:
            candidates = [k for k in candidates if k.get("kid") == kid]
        if len(candidates) != 1:
            raise _file_error("private key file", path, f"is a JWK Set with {len(candidates)} "
                              "matching keys; keep one key in it, or set private_key_id to its "
                              "kid")
        doc = candidates[0]
    if not isinstance(doc, dict):
        raise _file_error("private key file", path, "is not a JWK object")
    kinds: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
        "RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
    kty = doc.get("kty")
    if kty not in kinds:
        raise _file_error("private key file", path, f"JWK key type {kty!r} cannot sign a "
                          "client assertion (use RSA, EC or OKP)", sep=": ")
    if "d" not in doc:
        raise _file_error("private key file", path, "holds a public JWK; the exporter needs "
                          "the private key")
    if kty == "RSA":
        _check_rsa_bits(_jwk_modulus_bits(doc.get("n")), path)
    try:
        return kinds[str(kty)].import_key(doc)
    except (JoseError, ValueError, TypeError, KeyError):
        raise _file_error("private key file", path, f"holds an invalid {kty} JWK") from None


def _jwk_modulus_bits(n: object) -> int:
    if not isinstance(n, str):
        return 0
    try:
        modulus = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (ValueError, TypeError):
        return 0
    return int.from_bytes(modulus, "big").bit_length()


def _check_rsa_bits(bits: int, path: Path) -> None:
    # Checked before joserfc sees the key, which would only warn.
    if bits < MIN_RSA_BITS:
        raise _file_error("private key file", path, f"holds a {bits}-bit RSA key; "
                          f"{MIN_RSA_BITS} bits or more are needed")


def _key_type_name(key: AnyKey) -> str:
    if isinstance(key, OKPKey):
        return f"OKP ({key.curve_name})"
    if isinstance(key, ECKey):
        return f"EC ({key.curve_name})"
    return key.key_type


def _check_pair(key: AnyKey, algorithm: str, path: Path) -> None:
    """Refuse a key that cannot make ``algorithm`` signatures, before any request is sent."""
    def bad(reason: str) -> KeyFileError:
        return _file_error("private key file", path, reason)

    expected = PRIVATE_KEY_ALGORITHMS[algorithm]
    if key.key_type != expected:
        raise bad(f"holds an {_key_type_name(key)} key, but signing_algorithm {algorithm} "
                  f"needs an {expected} key")
    if isinstance(key, ECKey) and key.curve_name != "P-256":
        raise bad(f"holds an EC key on {key.curve_name}; ES256 needs P-256")
    if isinstance(key, OKPKey) and key.curve_name not in ("Ed25519", "Ed448"):
        raise bad(f"holds an OKP key on {key.curve_name}, which cannot sign")
    if algorithm == "Ed25519" and isinstance(key, OKPKey) and key.curve_name != "Ed25519":
        raise bad(f"holds an OKP key on {key.curve_name}; Ed25519 needs Ed25519")


def default_algorithm(key: AnyKey) -> str:
    """The algorithm to use when none is configured: the JWK's ``alg``, else by key type."""
    alg = key.get("alg") if not isinstance(key, OctKey) else None
    if isinstance(alg, str) and alg in PRIVATE_KEY_ALGORITHMS:
        return alg
    if isinstance(key, ECKey):
        return "ES256"
    if isinstance(key, OKPKey):
        return "EdDSA"
    return "RS256"


def load_private_key(
    path: str | Path,
    algorithm: str | None = None,
    kid: str | None = None,
    certificate: str | Path | None = None,
) -> SigningKey:
    """Load a private_key_jwt key from a PEM or JWK file; raise KeyFileError if unusable.

    ``kid`` defaults to the JWK's own ``kid``, else the key's RFC 7638
    thumbprint, which is what servers that compute one at registration expect.
    """
    path = Path(path)
    data = _read(path, "private key file")
    looks_json = data.lstrip()[:1] in (b"{", b"[")
    key = _from_jwk(data, path, kid) if looks_json else _from_pem(data, path)
    if algorithm is None:
        algorithm = default_algorithm(key)
    if algorithm not in PRIVATE_KEY_ALGORITHMS:
        reason = (f"{algorithm} cannot be used with a private key (use one of "
                  f"{', '.join(PRIVATE_KEY_ALGORITHMS)})")
        raise KeyFileError(f"signing_algorithm {reason}", reason=reason,
                           field="signing_algorithm")
    _check_pair(key, algorithm, path)
    if kid is None:
        own = key.kid
        kid = own if isinstance(own, str) and own else key.thumbprint()
    x5t_s256 = x5t = None
    if certificate is not None:
        cert_path = Path(certificate)
        cert = load_certificate(cert_path, field="signing_certificate_file")
        if not _same_public_key(cert, key):
            raise KeyFileError(f"signing certificate {str(cert_path)!r} does not certify the "
                               f"key in private key file {str(path)!r}",
                               reason="does not certify the key in private_key_file",
                               field="signing_certificate_file")
        der = cert.public_bytes(serialization.Encoding.DER)
        x5t_s256 = _b64url(hashlib.sha256(der).digest())
        # SHA-1 here is a certificate fingerprint for lookup (Entra ID asks for
        # it), not a signature.
        x5t = _b64url(hashlib.sha1(der, usedforsecurity=False).digest())
    return SigningKey(key, algorithm, kid, x5t_s256, x5t)


def secret_key(secret: str, algorithm: str = "HS256", kid: str | None = None) -> SigningKey:
    """The client_secret_jwt key: the client secret itself (RFC 7523 §2.2, OIDC Core §9)."""
    if algorithm not in SECRET_ALGORITHMS:
        reason = (f"{algorithm} cannot be used with client_secret_jwt (use "
                  f"{', '.join(SECRET_ALGORITHMS)})")
        raise KeyFileError(f"signing_algorithm {reason}", reason=reason,
                           field="signing_algorithm")
    raw = secret.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        reason = (f"is shorter than {MIN_SECRET_BYTES} bytes, too short to sign an HS256 "
                  "assertion safely")
        raise KeyFileError(f"the client secret {reason}", reason=reason, field="client_secret")
    try:
        key = OctKey.import_key(raw)
    except (JoseError, ValueError):
        raise KeyFileError("the client secret cannot be used as an HMAC key",
                           reason="cannot be used as an HMAC key", field="client_secret") from None
    return SigningKey(key, algorithm, kid)


# --------------------------------------------------------------------------- certificates


def load_certificate(path: str | Path, *, field: str = "cert_file") -> x509.Certificate:
    """The first (leaf) certificate of a PEM file; KeyFileError if there is none.

    ``field`` is the config key that named the file, for the error.
    """
    path = Path(path)
    data = _read(path, "certificate file", field)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise _file_error("certificate file", path, "holds no PEM certificate", field=field)
    return certs[0]


def certificate_not_after(path: str | Path, *, field: str = "cert_file") -> float:
    """When the (leaf) certificate in ``path`` expires, as a Unix timestamp."""
    return load_certificate(path, field=field).not_valid_after_utc.timestamp()


def _same_public_key(cert: x509.Certificate, key: AnyKey) -> bool:
    native = key.private_key if not isinstance(key, OctKey) else None
    if native is None:
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    public: Any = cert.public_key()
    return bool(public.public_bytes(*spki) == native.public_key().public_bytes(*spki))


# --------------------------------------------------------------------------- assertions


def make_assertion(
    key: SigningKey,
    client_id: str,
    audience: str,
    now: float,
    *,
    typ: str = "JWT",
    jti: str | None = None,
) -> str:
    """One client assertion: ``iss`` = ``sub`` = client_id, a fresh ``jti``, ``exp`` 60 s on.

    Call it for every attempt, retries included: servers refuse a replayed
    ``jti`` (oidc-provider, Keycloak), and an old ``iat`` ages out.
    """
    issued = int(now)
    header: dict[str, Any] = {"alg": key.algorithm, "typ": typ}
    if key.kid is not None:
        header["kid"] = key.kid
    if key.x5t_s256 is not None:
        header["x5t#S256"] = key.x5t_s256
    if key.x5t is not None:
        header["x5t"] = key.x5t
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti or secrets.token_urlsafe(24),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    return jwt.encode(header, claims, key.key, algorithms=[key.algorithm], registry=_REGISTRY)


def assertion_form(
    key: SigningKey, client_id: str, audience: str, now: float, *, typ: str = "JWT"
) -> dict[str, str]:
    """The token-request form fields that authenticate the client by assertion."""
    return {
        # RFC 7521 §4.2 makes client_id optional; Entra ID requires it.
        "client_id": client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": make_assertion(key, client_id, audience, now, typ=typ),
    }
