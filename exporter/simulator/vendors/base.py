"""What a simulated vendor is: the ``Vendor`` base class and its defaults.

A subclass states a provider's facts as class attributes (token path, client
authentication method, lifetime, scopes, rate limit) and overrides the few
methods whose answers differ (token and error bodies, the 429 shape, the API
routes). The defaults are plain RFC 6749 / RFC 6750 behaviour. The engine
(``engine.py``) calls these hooks; a vendor holds no state of its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from exporter.simulator.engine import (
    NO_STORE,
    ClientAuth,
    Request,
    Response,
    json_response,
    media_type,
    parse_form,
    read_client_auth,
)

if TYPE_CHECKING:
    from exporter.simulator.engine import Client, Engine


class Vendor:
    """One provider's documented behaviour; subclasses override what differs."""

    #: The ``kind`` name: ``SimulatedProvider(kind)``, presets, thread names.
    kind: ClassVar[str]
    #: The seed document this vendor copies (SPEC.md's seed table).
    seed: ClassVar[str]
    token_path: ClassVar[str] = "/oauth/token"
    #: The one client authentication method the provider documents; the other
    #: one is refused, so a preset with the wrong method fails here as it would there.
    auth_method: ClassVar[str] = "client_secret_post"
    lifetime: ClassVar[int] = 3600
    #: The name of the lifetime field in the token body.
    lifetime_field: ClassVar[str] = "expires_in"
    #: What a client registered without ``scopes=`` may be granted.
    default_scopes: ClassVar[str] = ""
    #: ``(requests, window seconds)`` per client IP on the token endpoint, or None.
    rate_limit: ClassVar[tuple[int, float] | None] = None
    #: A new token revokes the client's previous ones.
    one_active_token: ClassVar[bool] = False
    invalid_client_status: ClassVar[int] = 401
    invalid_client_message: ClassVar[str] = ""
    #: The ``--demo`` credential (client_id, client_secret). Published on purpose:
    #: it only ever opens simulators on loopback. It looks random so that a test
    #: searching logs for a leaked secret cannot match an ordinary word.
    demo_client: ClassVar[tuple[str, str]]
    #: The scopes ``--demo`` registers its client with (None: ``default_scopes``).
    demo_scopes: ClassVar[str | None] = None

    # --- client authentication -------------------------------------------------

    def auth_methods(self) -> tuple[str, ...]:
        """Every client authentication method this vendor accepts; the first is the default."""
        return (self.auth_method,)

    def read_client_auth(
        self, headers: Mapping[str, str], form: Mapping[str, str],
        client_cert: bytes | None = None,
    ) -> ClientAuth:
        """The credentials a request presents (HTTP Basic or the form, RFC 6749 §2.3.1).

        ``client_cert`` is the DER certificate of a mutual-TLS connection.
        """
        return read_client_auth(headers, form)

    def check_client(self, client: Client) -> None:
        """ValueError if this vendor could never authenticate ``client`` (add_client)."""

    def verify_assertion(
        self, client_id: str, client: Client, assertion: str, audiences: Collection[str],
        now: float, *, replayed: bool = False,
    ) -> str:
        """Why a client assertion (RFC 7523) is refused, or "" if it is accepted.

        ``audiences`` are the values its ``aud`` may name: the issuer and the URL called.

        Called with the engine's lock held. Vendors without JWT client
        authentication never get here: ``auth_methods()`` refuses first.
        """
        return "client assertions are not supported"

    def verify_certificate(self, client: Client, certificate: bytes | None) -> str:
        """Why a TLS client certificate (RFC 8705) does not authenticate ``client``, or ""."""
        return "mutual TLS client authentication is not supported"

    # --- token endpoint -------------------------------------------------------

    def is_token_path(self, path: str) -> bool:
        return path == self.token_path

    def granted_scope(self, allowed: tuple[str, ...], requested: str | None) -> str | None:
        """The scope to grant a client allowed ``allowed``, or None for invalid_scope."""
        words = set((requested or "").split())
        if not words <= set(allowed):
            return None
        return " ".join(scope for scope in allowed if scope in words)

    def mint_token(
        self, issuer: str | None, client_id: str, scope: str, now: float, lifetime: int
    ) -> tuple[str, float]:
        """A new access token and when it expires."""
        return secrets.token_urlsafe(32), now + lifetime

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        """The successful token answer; ``life`` is the lifetime field, or empty."""
        return {"access_token": token, **life, "token_type": "Bearer"}

    def error_body(self, code: str, message: str) -> dict[str, str]:
        """An error in this provider's shape."""
        return {"error": code}

    def oauth_error(self, status: int, code: str, message: str) -> Response:
        return json_response(status, self.error_body(code, message), *NO_STORE)

    def invalid_client(self, auth: ClientAuth, reason: str = "") -> Response:
        """The refusal of a client authentication; ``reason`` is for vendors that tell why."""
        status = self.invalid_client_status
        headers = NO_STORE
        if status == 401 and auth.method == "client_secret_basic":
            # RFC 6749 §5.2: a 401 to Basic credentials carries the Basic challenge.
            headers = (("WWW-Authenticate", f'Basic realm="{self.kind}"'), *headers)
        return json_response(
            status, self.error_body("invalid_client", self.invalid_client_message), *headers
        )

    def rate_limited(self, retry_after: int) -> Response:
        """The 429 answer, with ``Retry-After`` in seconds."""
        return json_response(429, {"error": "rate_limited"}, ("Retry-After", str(retry_after)))

    # --- API side -------------------------------------------------------------

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        """The answer to an API request, or None when no route matches (404).

        ``method`` is the request's, with HEAD read as GET.
        """
        return None

    def read_form(
        self, request: Request, method: str
    ) -> tuple[dict[str, str], ClientAuth] | Response:
        """The form and client credentials of a POSTed form (RFC 7009 revocation,
        RFC 7662 introspection), or the answer that refuses the request."""
        if method != "POST":
            return self.method_not_allowed("POST")
        if media_type(request.headers.get("content-type", "")) != (
            "application/x-www-form-urlencoded"
        ):
            return self.oauth_error(400, "invalid_request", "Send a form body.")
        form = dict(parse_form(request.body) or [])
        return form, self.read_client_auth(request.headers, form, request.client_cert)

    def not_found(self, path: str) -> Response:
        return json_response(404, self.error_body("not_found", "No such endpoint."))

    def method_not_allowed(self, allow: str) -> Response:
        return json_response(405, self.error_body("method_not_allowed", f"Allowed: {allow}."),
                             ("Allow", allow))
