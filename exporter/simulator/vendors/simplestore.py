"""SimpleStore, as its seed document describes it (seed 003_4f74a99f9ed31a06.txt).

- Token endpoint ``/connect/token`` with ``client_secret_post``; tokens last 3600 s.
- The seed's table names the lifetime field ``expiries_in`` (its sample says
  ``expires_in``); the simulator sends ``expiries_in`` unless told otherwise
  (``lifetime_field=``), so clients must cope with either.
- A failed client authentication is 400 ``{"error": "invalid_client"}``.
- API: ``GET /api/v1/products``; refusals have an empty body and the reason in
  ``WWW-Authenticate``.

The token endpoint and the API's shape are SmartDocumentor's too
(``identityserver.py``); this module says what SimpleStore's own are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.simulator.vendors.identityserver import IdentityServerVendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Token, TokenState

_PRODUCTS: list[dict[str, Any]] = [
    {"id": "P-1001", "name": "Espresso beans 1kg", "price": 24.5, "currency": "AUD"},
    {"id": "P-1002", "name": "Pour-over kettle", "price": 79.0, "currency": "AUD"},
]
_CHALLENGES = {
    "missing": "Bearer",
    "expired": 'Bearer error="invalid_token", error_description="The token expired"',
}


class SimpleStore(IdentityServerVendor):
    kind = "simplestore"
    seed = "003_4f74a99f9ed31a06.txt"
    lifetime_field = "expiries_in"
    demo_client = ("demo-simplestore", "m3XeV16Lmm-hbtF7OvtmepXomWFQuMzD")

    # --- API side -------------------------------------------------------------

    api_path = "/api/v1/products"

    def api_body(self) -> Any:
        return {"data": _PRODUCTS, "total": len(_PRODUCTS)}

    def challenge(self, state: TokenState, record: Token | None) -> str:
        return _CHALLENGES.get(state, 'Bearer error="invalid_token"')
