"""What SmartDocumentor and SimpleStore share: an ASP.NET Core API behind an
IdentityServer-style token endpoint.

- Token endpoint ``/connect/token``; a failed client authentication is 400
  ``{"error": "invalid_client"}`` (both seeds show this answer).
- One protected ``GET`` path; a refused token gets ASP.NET JwtBearer's answer:
  401 with an empty body and the reason only in ``WWW-Authenticate``.

A subclass names its API path and says what a valid token reads
(``api_body``) and how a refusal is worded (``challenge``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from exporter.simulator.engine import Request, Response, json_response
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Engine, Token, TokenState


class IdentityServerVendor(Vendor):
    token_path = "/connect/token"
    invalid_client_status = 400
    #: The one protected API path.
    api_path: ClassVar[str]

    def api_body(self) -> Any:
        """The JSON a valid token reads."""
        raise NotImplementedError

    def challenge(self, state: TokenState, record: Token | None) -> str:
        """The ``WWW-Authenticate`` value that refuses a token in ``state``."""
        raise NotImplementedError

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        if request.path != self.api_path:
            return None
        if method != "GET":
            return self.method_not_allowed("GET")
        state, record = engine.token_state(request)
        if state == "valid":
            return json_response(200, self.api_body())
        return Response(401, headers=(("WWW-Authenticate", self.challenge(state, record)),))
