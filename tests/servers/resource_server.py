"""A resource server that validates oidc-provider's tokens by introspection.

``resource_server`` (session fixture) runs django-oauth-toolkit in its
resource-server mode: it has no tokens of its own and asks oidc-provider's
RFC 7662 endpoint about every bearer token it is shown, with oidc-provider's
``introspector`` client. It caches an answer for one second, so a token
revoked at oidc-provider is refused (401 ``invalid_token``) right after.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.servers.dot_server import run_dot
from tests.servers.oidc_provider import OidcProvider


@dataclass(frozen=True)
class ResourceServer:
    base: str

    @property
    def api(self) -> str:
        return f"{self.base}/api/hello"


@pytest.fixture(scope="session")
def resource_server(
    tmp_path_factory: pytest.TempPathFactory, oidc_provider: OidcProvider
) -> Iterator[ResourceServer]:
    introspector = oidc_provider.credentials["introspector"]
    assert introspector.client_secret is not None
    remote = {"url": oidc_provider.introspection_endpoint, "client_id": introspector.client_id,
              "client_secret": introspector.client_secret}
    with run_dot(tmp_path_factory.mktemp("resource-server"), "resource server",
                 {"introspection": remote}) as base:
        yield ResourceServer(base)
