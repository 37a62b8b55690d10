"""SimpleStore, as its seed document describes it (seed 003_4f74a99f9ed31a06.txt).

- Token endpoint ``/connect/token`` with ``client_secret_post``; tokens last 3600 s.
- The seed's table names the lifetime field ``expiries_in`` (its sample says
  ``expires_in``); the simulator sends ``expiries_in`` unless told otherwise
  (``lifetime_field=``), so clients must cope with either.
- A failed client authentication is 400 ``{"error": "invalid_client"}``.
- API: ``GET /api/v1/products``; refusals have an empty body and the reason in
  ``WWW-Authenticate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.simulator.engine import Request, Response, json_response
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Engine

_PRODUCTS: list[dict[str, Any]] = [
    {"id": "P-1001", "name": "Espresso beans 1kg", "price": 24.5, "currency": "AUD"},
    {"id": "P-1002", "name": "Pour-over kettle", "price": 79.0, "currency": "AUD"},
]
_CHALLENGES = {
    "missing": "Bearer",
    "expired": 'Bearer error="invalid_token", error_description="The token expired"',
}


class SimpleStore(Vendor):
    kind = "simplestore"
    seed = "003_4f74a99f9ed31a06.txt"
    token_path = "/connect/token"
    auth_method = "client_secret_post"
    lifetime = 3600
    lifetime_field = "expiries_in"
    invalid_client_status = 400
    demo_client = ("demo-simplestore", "m3XeV16Lmm-hbtF7OvtmepXomWFQuMzD")

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        if request.path != "/api/v1/products":
            return None
        if method != "GET":
            return self.method_not_allowed("GET")
        state, _ = engine.token_state(request)
        if state == "valid":
            return json_response(200, {"data": _PRODUCTS, "total": len(_PRODUCTS)})
        challenge = _CHALLENGES.get(state, 'Bearer error="invalid_token"')
        return Response(401, headers=(("WWW-Authenticate", challenge),))
