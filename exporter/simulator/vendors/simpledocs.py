"""SimpleDocs, as its seed document describes it (seed 000_fcaad63daf66ee5c.txt).

- Token endpoint ``/oauth/token`` with ``client_secret_post``; tokens last 7200 s.
- Limited to 10 token requests per minute per client IP (429 with a ``type``).
- One active token per application: a new token revokes the previous one.
- An omitted ``scope`` means ``read``, even for an application allowed ``read write``.
- Errors carry ``{"type": ..., "message": ...}``: ``token_expired``,
  ``token_revoked``, ``invalid_token``, ``invalid_client``, ``insufficient_scope``.
- Explicit revocation at ``/oauth/revoke`` (RFC 7009 semantics).
- API: ``GET /v1/documents`` needs ``read``, ``POST /v1/documents`` needs ``write``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from exporter.simulator.engine import Request, Response, json_response
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Engine

_DOCUMENTS: list[dict[str, Any]] = [
    {"id": "doc_8f2a1c", "name": "Master services agreement", "status": "completed"},
    {"id": "doc_3b7e90", "name": "Non-disclosure agreement", "status": "pending"},
]
_REALM = 'Bearer realm="SimpleDocs"'
_REFUSED: dict[str, tuple[str, str]] = {
    "unknown": ("invalid_token", "The token is not recognized."),
    "expired": ("token_expired", "The token has expired. Request a new one."),
    "revoked": ("token_revoked", "The token was revoked (a newer token was issued "
                                 "or it was explicitly revoked)."),
}


class SimpleDocs(Vendor):
    kind = "simpledocs"
    seed = "000_fcaad63daf66ee5c.txt"
    lifetime = 7200
    default_scopes = "read write"
    rate_limit = (10, 60.0)
    one_active_token = True
    invalid_client_message = "The client ID or secret is incorrect."
    demo_client = ("demo-simpledocs", "HNa-45ogvWFkqp73ZOqnAMU9KRcXU1p1")
    # Read only, so that the demo's write probe shows insufficient_scope.
    demo_scopes = "read"

    def granted_scope(self, allowed: tuple[str, ...], requested: str | None) -> str | None:
        # The seed: an omitted scope means read, even for a "read write" app.
        return super().granted_scope(allowed, requested if (requested or "").split() else "read")

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        return {"access_token": token, "token_type": "Bearer", **life, "scope": scope}

    def error_body(self, code: str, message: str) -> dict[str, str]:
        return {"type": code, "message": message}

    def rate_limited(self, retry_after: int) -> Response:
        return json_response(429, {
            "type": "rate_limited",
            "message": "The token endpoint is limited to 10 requests per minute per IP "
                       f"address. Retry in {retry_after} seconds.",
        }, ("Retry-After", str(retry_after)))

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        if request.path == "/oauth/revoke":
            return self._revoke(engine, request, method)
        if request.path != "/v1/documents":
            return None
        needed = {"GET": "read", "POST": "write"}.get(method)
        if needed is None:
            return self.method_not_allowed("GET, POST")
        state, record = engine.token_state(request)
        if state == "missing":
            return json_response(401, self.error_body("invalid_token", "No bearer token was sent."),
                                 ("WWW-Authenticate", _REALM))
        if state != "valid" or record is None:
            code, message = _REFUSED[state]
            return json_response(401, self.error_body(code, message),
                                 ("WWW-Authenticate", f'{_REALM}, error="invalid_token"'))
        if needed not in record.scopes:
            return json_response(
                403,
                self.error_body("insufficient_scope",
                                "The token doesn't have the required scope for this endpoint."),
                ("WWW-Authenticate", f'{_REALM}, error="insufficient_scope", scope="{needed}"'),
            )
        if method == "GET":
            return json_response(200, {
                "data": _DOCUMENTS,
                "meta": {"page": 1, "per_page": 25, "total": len(_DOCUMENTS)},
            })
        created = {"id": f"doc_{secrets.token_hex(3)}", "name": "Untitled document",
                   "status": "draft"}
        return json_response(201, {"data": created})

    def _revoke(self, engine: Engine, request: Request, method: str) -> Response:
        """Explicit revocation (the seed mentions it; RFC 7009 semantics)."""
        read = self.read_form(request, method)
        if isinstance(read, Response):
            return read
        form, auth = read
        if not engine.revoke_token(auth, form.get("token", "")):
            return self.invalid_client(auth)
        return Response(200)
