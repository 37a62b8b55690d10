"""The admin API every simulated provider serves under ``/_sim/``.

It lets a test or a person steer a simulator that runs in another process
(``--demo``)::

    GET    /_sim/faults   the current fault switches
    POST   /_sim/faults   partial update from a JSON object (400 on unknown field or bad type)
    DELETE /_sim/faults   all switches off
    POST   /_sim/revoke   revoke every token issued so far (204)
    GET    /_sim/stats    {"token_requests": n, "issued_tokens": n, "api_requests": n}

Admin calls are not recorded in the request logs.
"""

from __future__ import annotations

import json

from exporter.simulator.engine import Engine, Request, Response, json_response

PREFIX = "/_sim"


def is_admin_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _method_not_allowed(allow: str) -> Response:
    return json_response(405, {"error": "method_not_allowed"}, ("Allow", allow))


def admin_response(engine: Engine, request: Request) -> Response:
    method = request.method
    if request.path == PREFIX + "/faults":
        if method == "GET":
            return json_response(200, engine.faults_doc())
        if method == "DELETE":
            engine.clear_faults()
            return json_response(200, engine.faults_doc())
        if method != "POST":
            return _method_not_allowed("GET, POST, DELETE")
        try:
            changes = json.loads(request.body or b"null")
        except ValueError:
            return json_response(400, {"error": "the body is not JSON"})
        if not isinstance(changes, dict):
            return json_response(400, {"error": "the body must be a JSON object of fault fields"})
        try:
            engine.set_faults(**changes)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, engine.faults_doc())
    if request.path == PREFIX + "/revoke":
        if method != "POST":
            return _method_not_allowed("POST")
        engine.revoke_all()
        return Response(204)
    if request.path == PREFIX + "/stats":
        if method != "GET":
            return _method_not_allowed("GET")
        return json_response(200, engine.stats())
    return json_response(404, {"error": "not_found"})
