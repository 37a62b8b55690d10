"""SmartDocumentor, as its seed document describes it (seed 001_e271c1a4bdf9af1f.txt).

- Token endpoint ``/connect/token`` with ``client_secret_post``; tokens last 3600 s.
- ``scope`` "MUST always be WebAPI": anything else, absence included, is
  ``invalid_scope``.
- A failed client authentication is 400 ``{"error": "invalid_client"}``; client
  secrets themselves expire (``add_client(secret_expires_at=...)``).
- API: ``GET /api/v1/templates``; refusals are ASP.NET JwtBearer's: an empty
  body with the reason only in ``WWW-Authenticate``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from exporter.simulator.engine import Request, Response, json_response
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Engine

_TEMPLATES: list[dict[str, Any]] = [
    {"id": 1, "name": "Invoice", "type": "Word"},
    {"id": 2, "name": "Delivery note", "type": "Word"},
]


class SmartDocumentor(Vendor):
    kind = "smartdocumentor"
    seed = "001_e271c1a4bdf9af1f.txt"
    token_path = "/connect/token"
    auth_method = "client_secret_post"
    lifetime = 3600
    default_scopes = "WebAPI"
    invalid_client_status = 400
    demo_client = ("demo-smartdocumentor", "FNeIZnt6z07Pr2TGvxuYGMwXTI6109gw")

    def granted_scope(self, allowed: tuple[str, ...], requested: str | None) -> str | None:
        return "WebAPI" if requested == "WebAPI" and "WebAPI" in allowed else None

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        return {"access_token": token, **life, "token_type": "Bearer", "scope": scope}

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        if request.path != "/api/v1/templates":
            return None
        if method != "GET":
            return self.method_not_allowed("GET")
        state, record = engine.token_state(request)
        if state == "valid":
            return json_response(200, _TEMPLATES)
        if state == "missing":
            challenge = "Bearer"
        elif state == "expired" and record is not None:
            expired_at = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(record.expires_at))
            challenge = (f'Bearer error="invalid_token", '
                         f"error_description=\"The token expired at '{expired_at}'\"")
        else:
            challenge = 'Bearer error="invalid_token", error_description="The token is invalid"'
        return Response(401, headers=(("WWW-Authenticate", challenge),))
