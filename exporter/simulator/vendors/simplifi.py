"""Simplifi, as its seed document describes it (seed 002_0d498f27ece73f39.txt).

- Token endpoint ``/oauth/token`` with ``client_secret_basic`` (the seed's
  example posts only ``grant_type`` and sends the credentials as HTTP Basic);
  tokens last 3600 s.
- The token answer adds ``"__type": "SSJSON_Token_Access"`` and a
  ``refresh_token``, and grants ``read`` although the request names no scope.
- API: ``GET /api/v1/employees`` and ``GET /api/v1/employees/{id}``; a refused
  token gets 401 ``{"error": "invalid_token"}`` (the seed's client
  re-authenticates once on 401).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from exporter.simulator.engine import Request, Response, json_response
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Engine

_EMPLOYEES: dict[str, dict[str, Any]] = {
    "123": {"id": "123", "first_name": "Ada", "last_name": "Lovelace", "role": "Engineer"},
    "124": {"id": "124", "first_name": "Grace", "last_name": "Hopper", "role": "Manager"},
}
_PREFIX = "/api/v1/employees"


class Simplifi(Vendor):
    kind = "simplifi"
    seed = "002_0d498f27ece73f39.txt"
    auth_method = "client_secret_basic"
    default_scopes = "read"
    demo_client = ("demo-simplifi", "Jy_cxND8OQyC-jHiWkkXtZb2VfhGWqZ2")

    def granted_scope(self, allowed: tuple[str, ...], requested: str | None) -> str | None:
        # The documented request sends no scope and still gets "read".
        return " ".join(allowed) or "read"

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        return {
            "__type": "SSJSON_Token_Access",
            "access_token": token,
            **life,
            "refresh_token": secrets.token_urlsafe(32),
            "scope": scope,
            "token_type": "Bearer",
        }

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        path = request.path.rstrip("/")
        if path != _PREFIX and not path.startswith(_PREFIX + "/"):
            return None
        employee_id = path[len(_PREFIX) + 1:]
        if "/" in employee_id:
            return None
        if method != "GET":
            return self.method_not_allowed("GET")
        state, _ = engine.token_state(request)
        if state != "valid":
            return json_response(401, {"error": "invalid_token"}, ("WWW-Authenticate", "Bearer"))
        if not employee_id:
            return json_response(200, list(_EMPLOYEES.values()))
        employee = _EMPLOYEES.get(employee_id)
        if employee is None:
            return json_response(404, {"error": "not_found"})
        return json_response(200, employee)
