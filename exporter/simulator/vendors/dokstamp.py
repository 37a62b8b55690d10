"""DokStamp, as its seed document describes it (seed 004_0de1fd3e08e0d78b.txt).

- Token endpoint ``/oauth/token`` with ``client_secret_post``; tokens last
  43200 s (12 h) and are Passport-style JWTs (``eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.``)
  whose ``exp`` claim is the authority on expiry.
- Laravel answers: ``{"error", "message"}`` errors, ``{"message": "Too Many
  Attempts."}`` on 429, ``{"message": "Unauthenticated."}`` on 401, and a
  login page to API callers that do not ask for JSON.
- API: ``GET /api/v1/documents`` needs ``Accept: application/json`` and
  ``X-Tenant``; ``GET /files/{uuid}/download`` is public.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from exporter.simulator.engine import (
    Request,
    Response,
    b64url,
    html_response,
    json_response,
)
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Engine

_DOCUMENTS: list[dict[str, Any]] = [
    {"uuid": "7d1f0c52-3b5e-4c1e-9f7a-2f4b8f7e9a10", "title": "Contract 2024-17",
     "status": "signed"},
]
_HTML_LOGIN = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="csrf-token" content="Zm9ybS10b2tlbi1mb3ItZGVtby1vbmx5">\n'
    "<title>DokStamp - Login</title>\n</head>\n<body>\n"
    '<form method="POST" action="/login">\n'
    '<input type="hidden" name="_token" value="Zm9ybS10b2tlbi1mb3ItZGVtby1vbmx5">\n'
    '<label for="email">Email</label><input id="email" type="email" name="email">\n'
    '<label for="password">Password</label>'
    '<input id="password" type="password" name="password">\n'
    '<button type="submit">Log in</button>\n</form>\n</body>\n</html>\n'
)
_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [3 0 R] /Count 1>> endobj\n"
    b"3 0 obj <</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)


def wants_json(accept: str) -> bool:
    """Laravel's ``wantsJson()``: the most preferred media range is JSON (``*/*`` is not)."""
    ranges: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((-quality, index, media.lower()))
    if not ranges:
        return False
    best = min(ranges)[2]
    return "/json" in best or "+json" in best


class DokStamp(Vendor):
    kind = "dokstamp"
    seed = "004_0de1fd3e08e0d78b.txt"
    lifetime = 43200
    invalid_client_message = "Client authentication failed"
    demo_client = ("demo-dokstamp", "EMDHO4H4h4ZPx30QeGy2c9zaO4miNSJf")

    def mint_token(
        self, issuer: str | None, client_id: str, scope: str, now: float, lifetime: int
    ) -> tuple[str, float]:
        """A Passport-style JWT; its ``exp`` is the authority on when it expires."""
        iat = int(now)
        header = {"typ": "JWT", "alg": "RS256"}
        payload = {
            "iss": issuer,
            "sub": client_id,
            "aud": client_id,
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime,
            "jti": secrets.token_hex(40),
        }
        parts = [b64url(json.dumps(part, separators=(",", ":")).encode())
                 for part in (header, payload)]
        # Nobody can verify it without the provider's key, so random bytes of an
        # RS256 signature's length look the part.
        parts.append(b64url(secrets.token_bytes(256)))
        return ".".join(parts), float(iat + lifetime)

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        return {"token_type": "Bearer", **life, "access_token": token}

    def error_body(self, code: str, message: str) -> dict[str, str]:
        return {"error": code, "message": message}

    def rate_limited(self, retry_after: int) -> Response:
        # Laravel's throttle middleware.
        return json_response(429, {"message": "Too Many Attempts."},
                             ("Retry-After", str(retry_after)))

    def not_found(self, path: str) -> Response:
        return json_response(404, {"message": f"The route {path.lstrip('/')} could not be found."})

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        parts = request.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "download":
            return self._download(parts[1], method)
        if request.path != "/api/v1/documents":
            return None
        if method != "GET":
            return json_response(405, {"message": f"The {method} method is not supported for "
                                                  "route api/v1/documents. Supported methods: "
                                                  "GET, HEAD."},
                                 ("Allow", "GET, HEAD"))
        if not wants_json(request.headers.get("accept", "")):
            # Laravel renders its login page to anyone who does not ask for JSON;
            # this is why the seed insists on Accept: application/json.
            return html_response(401, _HTML_LOGIN)
        state, _ = engine.token_state(request)
        if state != "valid":
            return json_response(401, {"message": "Unauthenticated."})
        tenant = request.headers.get("x-tenant", "").strip()
        if not tenant:
            return json_response(400, {"error": "invalid_request",
                                       "message": "X-Tenant header is required"})
        return json_response(200, {"data": _DOCUMENTS,
                                   "meta": {"tenant": tenant, "total": len(_DOCUMENTS)}})

    def _download(self, file_id: str, method: str) -> Response | None:
        try:
            uuid.UUID(file_id)
        except ValueError:
            return None
        if method != "GET":
            return self.method_not_allowed("GET, HEAD")
        # Public by design (the seed): signed documents are fetched without a token.
        return Response(200, _PDF, (
            ("Content-Type", "application/pdf"),
            ("Content-Disposition", f'attachment; filename="{file_id}.pdf"'),
        ))
