"""Client authentication at an authorization server's endpoints, by auth method.

Owns what a request to the token, introspection or revocation endpoint
carries to say which client sends it (RFC 6749 §2.3):

============================  ==================================================
``client_secret_basic``       ``Authorization: Basic`` (RFC 6749 §2.3.1)
``client_secret_post``        ``client_id`` and ``client_secret`` form fields
``client_secret_jwt``         an HS256 assertion signed with the secret
``private_key_jwt``           an assertion signed with the private key
                              (RFC 7523 §2.2, OpenID Connect Core §9)
``tls_client_auth``,          ``client_id`` only: the client certificate of the
``self_signed_tls_client_auth``  TLS connection authenticates (RFC 8705 §2)
============================  ==================================================

An assertion is minted for every request, so every attempt (retries included)
carries a fresh ``jti`` and ``iat``. Nothing here reads a file or sends a
request: the key was loaded with the config (``exporter.assertion``), and the
certificate is presented by the HTTP client built for the provider's outbound
options (``exporter.http.ClientPool``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote_plus

from pydantic import SecretStr

from exporter.assertion import SigningKey, assertion_form

#: Methods whose credential is the TLS client certificate: no secret, and the
#: requests go to the server's RFC 8705 §5 mutual-TLS endpoint aliases.
MTLS_METHODS: Final = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})
#: Methods that sign an assertion (RFC 7523 §2.2).
JWT_METHODS: Final = frozenset({"client_secret_jwt", "private_key_jwt"})
#: Methods that need the client secret.
SECRET_METHODS: Final = frozenset({"client_secret_basic", "client_secret_post",
                                   "client_secret_jwt"})
#: Every method the exporter can use, in the order the docs list them.
ALL_METHODS: Final = ("client_secret_basic", "client_secret_post", "client_secret_jwt",
                      "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth")


@dataclass(frozen=True)
class ClientCredential:
    """Who a request says it is from, and what proves it."""

    client_id: str
    auth_method: str
    secret: SecretStr | None = None
    #: The key for ``client_secret_jwt`` / ``private_key_jwt``.
    signing_key: SigningKey | None = None

    def __repr__(self) -> str:  # never show the secret, even masked, nor the key
        return f"ClientCredential(client_id={self.client_id!r}, auth_method={self.auth_method!r})"


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The Authorization header value for client_secret_basic.

    RFC 6749 §2.3.1: both parts are form-urlencoded *before* Base64, so a
    secret holding ``:`` or ``%`` survives. Many clients get this wrong.
    """
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def client_auth(
    credential: ClientCredential, *, audience: str, now: float
) -> tuple[dict[str, str], dict[str, str]]:
    """Form fields and headers that authenticate ``credential``.

    ``audience`` is the ``aud`` of an assertion (unused by other methods);
    ``now`` its ``iat``.
    """
    method = credential.auth_method
    if method in MTLS_METHODS:
        # RFC 8705 §2: client_id is required, the certificate does the rest.
        return {"client_id": credential.client_id}, {}
    if method in JWT_METHODS:
        if credential.signing_key is None:
            raise ValueError(f"auth_method {method} needs a signing key")
        return assertion_form(credential.signing_key, credential.client_id, audience, now), {}
    if credential.secret is None:
        raise ValueError(f"auth_method {method} needs a client secret")
    secret = credential.secret.get_secret_value()
    if method == "client_secret_basic":
        return {}, {"Authorization": basic_credentials(credential.client_id, secret)}
    return {"client_id": credential.client_id, "client_secret": secret}, {}
