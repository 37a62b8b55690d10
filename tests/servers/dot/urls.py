"""Routes: DOT's endpoints under ``/o/``, RFC 8414 metadata at the root, one protected API."""

from __future__ import annotations

from django.urls import include, path
from oauth2_provider import urls as dot_urls

from tests.servers.dot.views import HelloView

urlpatterns = [
    path("o/", include((dot_urls.base_urlpatterns, "oauth2_provider"))),
    # RFC 8414 §3: the metadata of issuer https://host/o lives at
    # https://host/.well-known/oauth-authorization-server/o (DOT's own advice
    # for a prefixed mount). OpenID discovery is deliberately not served, so
    # clients must fall back to RFC 8414.
    path("", include((dot_urls.metadata_urlpatterns, "oauth2_provider"),
                     namespace="root-metadata")),
    path("api/hello", HelloView.as_view(), name="hello"),
]
