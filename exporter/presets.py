"""What each provider's own documentation says about its token endpoint.

A preset fills in what a user would otherwise have to look up in the vendor's
docs (see ``shared/seeds/``) and carries the quirks the token client and the
scheduler must honour. Anything a preset sets can be overridden per provider,
except rules the provider enforces (SmartDocumentor's fixed scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AuthMethod = Literal[
    "client_secret_post", "client_secret_basic",
    # Standards-based methods (RFC 7523, OpenID Connect Core §9, RFC 8705); no preset
    # uses them by default, any provider may choose them.
    "client_secret_jwt", "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth",
]


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` token requests per ``period`` seconds per token host."""

    requests: int
    period: float

    def __str__(self) -> str:
        return f"{self.requests}/{self.period:g}s"


@dataclass(frozen=True)
class Preset:
    name: str
    auth_method: AuthMethod = "client_secret_post"
    token_url: str | None = None
    #: Scope sent when the user sets none (None: send no scope field).
    default_scope: str | None = None
    #: The only scope the provider accepts, if it insists on one.
    required_scope: str | None = None
    #: Lifetime assumed when the response carries neither expires_in nor a JWT exp.
    default_lifetime: float | None = None
    token_rate_limit: RateLimit | None = None
    #: A new token revokes the previous one (one active token per application).
    one_active_token: bool = False
    #: Extra response fields that carry the lifetime, besides ``expires_in``.
    lifetime_fields: tuple[str, ...] = ("expires_in",)
    #: The access token is a JWT whose ``exp`` claim is worth reading.
    jwt_access_token: bool = False
    #: Headers every API request needs.
    probe_headers: tuple[tuple[str, str], ...] = ()
    #: RFC 7009 revocation endpoint, relative to the token URL's origin.
    revocation_path: str | None = None
    quirks: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="simpledocs",
            default_scope="read",
            default_lifetime=7200,
            token_rate_limit=RateLimit(10, 60.0),
            one_active_token=True,
            revocation_path="/oauth/revoke",
            quirks="10 token requests/min per IP; one active token per application; "
            "errors carry a `type` field",
        ),
        Preset(
            name="smartdocumentor",
            token_url="https://cloud.smartdocumentor.net/connect/token",
            default_scope="WebAPI",
            required_scope="WebAPI",
            default_lifetime=3600,
            quirks="scope must be WebAPI; client secrets expire",
        ),
        Preset(
            name="simplifi",
            auth_method="client_secret_basic",
            token_url="https://dev.simplifi.work/oauth/token",
            default_lifetime=3600,
            quirks="HTTP Basic client authentication; response carries __type and a "
            "refresh_token that is never kept",
        ),
        Preset(
            name="simplestore",
            token_url="https://auth.simplestore.io/connect/token",
            default_lifetime=3600,
            lifetime_fields=("expires_in", "expiries_in"),
            quirks="lifetime documented as both expires_in and expiries_in",
        ),
        Preset(
            name="dokstamp",
            token_url="https://api.dokstamp.com/oauth/token",
            default_lifetime=43200,
            jwt_access_token=True,
            probe_headers=(("Accept", "application/json"),),
            quirks="JWT access token (exp claim); API needs X-Tenant and "
            "Accept: application/json",
        ),
        Preset(name="generic", jwt_access_token=True, quirks="plain RFC 6749"),
    )
}
