"""The protected API of the test resource server."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider.views.generic import ProtectedResourceMetadataView


class HelloView(ProtectedResourceMetadataView):
    """Answers 200 to a valid bearer token.

    DOT's metadata-advertising variant of its protected view answers a missing,
    unknown, expired or revoked token with 401 and an RFC 6750 challenge
    (``WWW-Authenticate: Bearer error="invalid_token"``), where the plain
    variant answers a bare 403.
    """

    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"hello": "world"})
