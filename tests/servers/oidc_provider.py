"""node ``oidc-provider`` as a real client-credentials authorization server.

``oidc_provider`` (session fixture) starts ``tests/servers/oidc/server.mjs``
once for the whole run, with one registered client per client-authentication
method and the key material each needs, and stops it at the end. Its issuer is
plain HTTP on loopback; its mutual-TLS endpoint aliases are HTTPS with a
server certificate from a throwaway test CA (``tests/pki.py``). A second
issuer with the same clients lives under a path, ``<issuer>/realms/test``, as
Keycloak names a realm (``OidcProvider.realm``).

node and the npm packages are required: without them the fixture fails with
the command that installs them, it never skips.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.pki import Pki, make_pki
from tests.servers import keys
from tests.servers._process import server_process

SERVER_DIR = Path(__file__).parent / "oidc"
INSTALL = "cd tests/servers/oidc && npm ci"
#: Long enough that a fixture-driven test never sees a token expire.
ACCESS_TOKEN_TTL = 600
#: The resource indicator for which the server issues JWT access tokens.
JWT_RESOURCE = "urn:token-health-exporter:test-api"
SCOPE = "api:read"


@dataclass(frozen=True)
class Credential:
    """What an exporter config needs to authenticate as one registered client."""

    client_id: str
    auth_method: str
    client_secret: str | None = None
    private_key_file: Path | None = None
    private_key_id: str | None = None
    signing_algorithm: str | None = None
    signing_certificate_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    #: Base URL of the mutual-TLS endpoint aliases (RFC 8705 section 5).
    mtls_base: str
    #: The CA that signed the mutual-TLS listener's server certificate.
    ca_file: Path
    pki: Pki
    credentials: Mapping[str, Credential] = field(default_factory=dict)
    #: An issuer with a path (Keycloak's realm style), with the same clients.
    realm: str = ""

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/token/introspection"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/token/revocation"


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run oidc-provider for these tests; install Node.js "
                    f"(20 or later) and then: {INSTALL}")
    if not (SERVER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        pytest.fail(f"oidc-provider is not installed for the tests; run: {INSTALL}")
    return node


def _secret() -> str:
    # 32 bytes of entropy: comfortably above HS256's minimum key strength.
    return secrets.token_urlsafe(32)


def _client(credential: Credential, **metadata: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": credential.client_id,
        "token_endpoint_auth_method": credential.auth_method,
        "scope": SCOPE,
    }
    if credential.client_secret is not None:
        doc["client_secret"] = credential.client_secret
    doc.update(metadata)
    return doc


def build_clients(d: Path, pki: Pki) -> tuple[dict[str, Credential], list[dict[str, Any]]]:
    """One client per authentication method (and key type), and their registrations."""
    creds: dict[str, Credential] = {}
    clients: list[dict[str, Any]] = []

    def add(credential: Credential, **metadata: Any) -> None:
        creds[credential.client_id] = credential
        clients.append(_client(credential, **metadata))

    add(Credential("basic", "client_secret_basic", client_secret=_secret()))
    add(Credential("post", "client_secret_post", client_secret=_secret()))
    add(Credential("secret-jwt", "client_secret_jwt", client_secret=_secret()))
    add(Credential("introspector", "client_secret_basic", client_secret=_secret()))

    # RSA from PEM, no kid configured: the exporter must send the RFC 7638
    # thumbprint, which the server computed independently at registration.
    rsa = keys.generate_key("RSA")
    keys.self_signed_certificate(rsa, d / "rsa-signing.crt", "rsa-jwt signing")
    add(Credential("rsa-jwt", "private_key_jwt",
                   private_key_file=keys.write_pem(rsa, d / "rsa.pem"), signing_algorithm="RS256",
                   signing_certificate_file=d / "rsa-signing.crt"),
        jwks={"keys": [keys.public_jwk(rsa)]})
    # The same kind of key, signed with PS256 instead.
    pss = keys.generate_key("RSA")
    add(Credential("pss-jwt", "private_key_jwt",
                   private_key_file=keys.write_pem(pss, d / "pss.pem"), signing_algorithm="PS256"),
        jwks={"keys": [keys.public_jwk(pss)]})
    # EC from a JWK file that carries its own kid.
    ec = keys.generate_key("EC")
    add(Credential("ec-jwt", "private_key_jwt",
                   private_key_file=keys.write_private_jwk(ec, d / "ec.jwk", "ec-2026"),
                   signing_algorithm="ES256"),
        jwks={"keys": [{**keys.public_jwk(ec), "kid": "ec-2026"}]})
    # Ed25519 from PEM with a configured kid.
    ed = keys.generate_key("Ed25519")
    add(Credential("ed-jwt", "private_key_jwt", private_key_file=keys.write_pem(ed, d / "ed.pem"),
                   private_key_id="ed-2026", signing_algorithm="EdDSA"),
        jwks={"keys": [{**keys.public_jwk(ed), "kid": "ed-2026"}]})

    # RFC 8705: a certificate from the CA the server trusts, matched by subject.
    add(Credential("mtls", "tls_client_auth", cert_file=pki.client_cert, key_file=pki.client_key),
        tls_client_auth_subject_dn="CN=client")
    # RFC 8705 §2.2: a self-signed certificate registered as a JWK with x5c.
    own = keys.generate_key("EC")
    own_cert = keys.self_signed_certificate(own, d / "self-signed.crt", "self-signed client")
    add(Credential("self-signed", "self_signed_tls_client_auth",
                   cert_file=d / "self-signed.crt",
                   key_file=keys.write_pem(own, d / "self-signed.key")),
        jwks={"keys": [{**keys.public_jwk(own), "x5c": [keys.der_base64(own_cert)]}]})
    return creds, clients


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    node = require_node()
    d = tmp_path_factory.mktemp("oidc-provider")
    pki = make_pki(tmp_path_factory.mktemp("oidc-pki"))
    creds, clients = build_clients(d, pki)
    settings = {
        "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                "ca_file": str(pki.ca)},
        "access_token_ttl": ACCESS_TOKEN_TTL,
        "jwt_resource": JWT_RESOURCE,
        "clients": clients,
    }
    (d / "settings.json").write_text(json.dumps(settings))
    with server_process("oidc-provider", [node, "server.mjs", str(d / "settings.json")],
                        cwd=SERVER_DIR, log=d / "server.log") as info:
        yield OidcProvider(str(info["issuer"]), str(info["mtls"]), pki.ca, pki, creds,
                           str(info["realm"]))
