"""SmartDocumentor, as its seed document describes it (seed 001_e271c1a4bdf9af1f.txt).

- Token endpoint ``/connect/token`` with ``client_secret_post``; tokens last 3600 s.
- ``scope`` "MUST always be WebAPI": anything else, absence included, is
  ``invalid_scope``.
- A failed client authentication is 400 ``{"error": "invalid_client"}``; client
  secrets themselves expire (``add_client(secret_expires_at=...)``).
- API: ``GET /api/v1/templates``; refusals are ASP.NET JwtBearer's: an empty
  body with the reason only in ``WWW-Authenticate``.

The token endpoint and the API's shape are SimpleStore's too
(``identityserver.py``); this module says what SmartDocumentor's own are.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from exporter.simulator.vendors.identityserver import IdentityServerVendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Token, TokenState

_TEMPLATES: list[dict[str, Any]] = [
    {"id": 1, "name": "Invoice", "type": "Word"},
    {"id": 2, "name": "Delivery note", "type": "Word"},
]


class SmartDocumentor(IdentityServerVendor):
    kind = "smartdocumentor"
    seed = "001_e271c1a4bdf9af1f.txt"
    default_scopes = "WebAPI"
    demo_client = ("demo-smartdocumentor", "FNeIZnt6z07Pr2TGvxuYGMwXTI6109gw")

    def granted_scope(self, allowed: tuple[str, ...], requested: str | None) -> str | None:
        return "WebAPI" if requested == "WebAPI" and "WebAPI" in allowed else None

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        return {"access_token": token, **life, "token_type": "Bearer", "scope": scope}

    # --- API side -------------------------------------------------------------

    api_path = "/api/v1/templates"

    def api_body(self) -> Any:
        return _TEMPLATES

    def challenge(self, state: TokenState, record: Token | None) -> str:
        if state == "missing":
            return "Bearer"
        if state == "expired" and record is not None:
            expired_at = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(record.expires_at))
            return (f'Bearer error="invalid_token", '
                    f"error_description=\"The token expired at '{expired_at}'\"")
        return 'Bearer error="invalid_token", error_description="The token is invalid"'
