"""Discovery and client assertions against authorization servers nobody here wrote.

oidc-provider (node) and django-oauth-toolkit run on loopback for the whole
session (tests/servers/). These tests check that what exporter.discovery reads
and what exporter.assertion signs is what real servers publish and accept.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import ssl
import sys
import time
from pathlib import Path

import httpx
import pytest

from exporter import assertion
from exporter.discovery import ISSUER_MISMATCH, DiscoveryError, ServerMetadata, fetch_metadata
from exporter.errors import ErrorClass
from tests.harness import wait_for
from tests.servers import dot_server as dot_server_module
from tests.servers import oidc_provider as oidc_provider_module
from tests.servers._process import server_process
from tests.servers.dot_server import DotServer
from tests.servers.oidc_provider import SCOPE, Credential, OidcProvider
from tests.servers.resource_server import ResourceServer

pytestmark = pytest.mark.slow


def _discover(issuer: str) -> ServerMetadata:
    async def go() -> ServerMetadata:
        async with httpx.AsyncClient() as client:
            return await fetch_metadata(client, issuer, timeout=10, max_bytes=1 << 20)

    return asyncio.run(go())


# ------------------------------------------------------------------------------ discovery


def test_discovery_reads_oidc_provider_configuration(oidc_provider: OidcProvider) -> None:
    metadata = _discover(oidc_provider.issuer)
    assert metadata.source == f"{oidc_provider.issuer}/.well-known/openid-configuration"
    assert metadata.token_endpoint == oidc_provider.token_endpoint
    assert metadata.introspection_endpoint == oidc_provider.introspection_endpoint
    assert metadata.revocation_endpoint == oidc_provider.revocation_endpoint
    assert metadata.jwks_uri == f"{oidc_provider.issuer}/jwks"
    assert metadata.token_endpoint_auth_methods_supported == frozenset({
        "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt",
        "tls_client_auth", "self_signed_tls_client_auth",
    })
    assert metadata.endpoint("token_endpoint", mtls=True) == f"{oidc_provider.mtls_base}/token"
    assert metadata.endpoint("token_endpoint", mtls=False) == oidc_provider.token_endpoint


def test_discovery_falls_back_to_rfc8414_at_django_oauth_toolkit(dot_server: DotServer) -> None:
    # DOT publishes no OpenID configuration, only RFC 8414 metadata, at the
    # path-inserted location for its issuer <base>/o.
    metadata = _discover(dot_server.issuer)
    assert metadata.source == f"{dot_server.base}/.well-known/oauth-authorization-server/o"
    assert metadata.token_endpoint == dot_server.token_endpoint
    assert metadata.introspection_endpoint == dot_server.introspection_endpoint
    assert metadata.revocation_endpoint == dot_server.revocation_endpoint
    assert metadata.supports_auth_method("client_secret_basic")
    assert not metadata.supports_auth_method("private_key_jwt")


@pytest.mark.parametrize("spelling", ["localhost", "trailing-slash"])
def test_discovery_refuses_an_issuer_the_server_does_not_claim(
    oidc_provider: OidcProvider, spelling: str
) -> None:
    # Both spellings reach the same server, whose document names
    # http://127.0.0.1:PORT: only an exact match is accepted.
    issuer = (oidc_provider.issuer.replace("127.0.0.1", "localhost") if spelling == "localhost"
              else oidc_provider.issuer + "/")
    with pytest.raises(DiscoveryError) as caught:
        _discover(issuer)
    assert caught.value.error == ISSUER_MISMATCH
    assert caught.value.token_error is ErrorClass.INVALID_RESPONSE


def test_discovery_of_an_issuer_nothing_publishes_is_unexpected_status(
    oidc_provider: OidcProvider,
) -> None:
    # Neither location exists for this path at oidc-provider: both answer 404.
    with pytest.raises(DiscoveryError) as caught:
        _discover(oidc_provider.issuer + "/elsewhere")
    assert caught.value.error is ErrorClass.UNEXPECTED_STATUS
    assert caught.value.status == 404


# ------------------------------------------------------------------------------ assertions


def _token(url: str, form: dict[str, str], **client_args: object) -> httpx.Response:
    with httpx.Client(**client_args) as client:  # type: ignore[arg-type]
        return client.post(url, data={"grant_type": "client_credentials", "scope": SCOPE,
                                      **form})


def _key(cred: Credential) -> assertion.SigningKey:
    if cred.auth_method == "client_secret_jwt":
        assert cred.client_secret is not None
        return assertion.secret_key(cred.client_secret)
    assert cred.private_key_file is not None
    return assertion.load_private_key(cred.private_key_file, cred.signing_algorithm,
                                      cred.private_key_id, cred.signing_certificate_file)


@pytest.mark.parametrize("client_id", ["secret-jwt", "rsa-jwt", "pss-jwt", "ec-jwt", "ed-jwt"])
@pytest.mark.parametrize("audience", ["token_endpoint", "issuer"])
def test_oidc_provider_accepts_our_assertions(
    oidc_provider: OidcProvider, client_id: str, audience: str
) -> None:
    cred = oidc_provider.credentials[client_id]
    aud = oidc_provider.token_endpoint if audience == "token_endpoint" else oidc_provider.issuer
    form = assertion.assertion_form(_key(cred), client_id, aud, time.time())
    response = _token(oidc_provider.token_endpoint, form)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


def test_oidc_provider_refuses_a_replayed_assertion(oidc_provider: OidcProvider) -> None:
    # Why every attempt needs a fresh jti: the same assertion twice is refused.
    form = assertion.assertion_form(_key(oidc_provider.credentials["ec-jwt"]), "ec-jwt",
                                    oidc_provider.token_endpoint, time.time())
    assert _token(oidc_provider.token_endpoint, form).status_code == 200
    second = _token(oidc_provider.token_endpoint, form)
    assert second.status_code == 401
    assert second.json()["error"] == "invalid_client"


def test_oidc_provider_refuses_an_assertion_for_another_audience(
    oidc_provider: OidcProvider,
) -> None:
    form = assertion.assertion_form(_key(oidc_provider.credentials["rsa-jwt"]), "rsa-jwt",
                                    "https://elsewhere.example/token", time.time())
    response = _token(oidc_provider.token_endpoint, form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# ------------------------------------------------------------------------------ mutual TLS


def _mtls_context(oidc_provider: OidcProvider, cred: Credential) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(oidc_provider.ca_file))
    assert cred.cert_file is not None and cred.key_file is not None
    context.load_cert_chain(str(cred.cert_file), str(cred.key_file))
    return context


@pytest.mark.parametrize("client_id", ["mtls", "self-signed"])
def test_certificate_clients_get_tokens_without_a_secret(
    oidc_provider: OidcProvider, client_id: str
) -> None:
    cred = oidc_provider.credentials[client_id]
    assert cred.client_secret is None
    url = f"{oidc_provider.mtls_base}/token"
    response = _token(url, {"client_id": client_id},
                      verify=_mtls_context(oidc_provider, cred))
    assert response.status_code == 200, response.text
    # Without the certificate the same request is refused.
    plain = ssl.create_default_context(cafile=str(oidc_provider.ca_file))
    assert _token(url, {"client_id": client_id}, verify=plain).status_code == 401


def test_certificate_expiry_is_read_from_the_client_certificate(
    oidc_provider: OidcProvider,
) -> None:
    cred = oidc_provider.credentials["mtls"]
    assert cred.cert_file is not None
    not_after = assertion.certificate_not_after(cred.cert_file)
    # tests/pki.py issues for two days.
    assert 1.9 * 86400 < not_after - time.time() < 2.1 * 86400
    signing = oidc_provider.credentials["rsa-jwt"].signing_certificate_file
    assert isinstance(signing, Path)
    assert assertion.certificate_not_after(signing) > time.time()


# ------------------------------------------------------------------------------ introspection


def _basic(cred_id: str, secret: str | None) -> httpx.BasicAuth:
    assert secret is not None
    return httpx.BasicAuth(cred_id, secret)


def test_oidc_provider_introspection_sees_revocation(
    oidc_provider: OidcProvider, resource_server: ResourceServer
) -> None:
    basic = oidc_provider.credentials["basic"]
    introspector = oidc_provider.credentials["introspector"]
    token = _token(oidc_provider.token_endpoint, {},
                   auth=_basic("basic", basic.client_secret)).json()["access_token"]
    auth = _basic("introspector", introspector.client_secret)
    active = httpx.post(oidc_provider.introspection_endpoint, data={"token": token}, auth=auth)
    assert active.json()["active"] is True
    # The resource server validates by introspection at oidc-provider.
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(resource_server.api, headers=bearer).status_code == 200

    revoked = httpx.post(oidc_provider.revocation_endpoint, data={"token": token},
                         auth=_basic("basic", basic.client_secret))
    assert revoked.status_code == 200
    after = httpx.post(oidc_provider.introspection_endpoint, data={"token": token}, auth=auth)
    assert after.json() == {"active": False}
    wait_for(lambda: httpx.get(resource_server.api, headers=bearer).status_code == 401,
             timeout=20, message="the resource server to refuse the revoked token")
    refused = httpx.get(resource_server.api, headers=bearer)
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


def test_django_oauth_toolkit_introspection_sees_revocation(dot_server: DotServer) -> None:
    auth = _basic(dot_server.client_id, dot_server.client_secret)
    token = _token(dot_server.token_endpoint, {"scope": "read"}, auth=auth).json()["access_token"]
    introspector = _basic(dot_server.introspector_id, dot_server.introspector_secret)
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(dot_server.api, headers=bearer).status_code == 200
    assert httpx.post(dot_server.introspection_endpoint, data={"token": token},
                      auth=introspector).json()["active"] is True
    assert httpx.post(dot_server.revocation_endpoint, data={"token": token},
                      auth=auth).status_code == 200
    assert httpx.post(dot_server.introspection_endpoint, data={"token": token},
                      auth=introspector).json() == {"active": False}
    refused = httpx.get(dot_server.api, headers=bearer)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


# ------------------------------------------------------------------------------ fixtures


def test_missing_node_fails_loudly_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="npm ci"):
        oidc_provider_module.require_node()


def test_missing_django_oauth_toolkit_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=r"pip install -e '\.\[test\]'"):
        dot_server_module.require_django_oauth_toolkit()


def test_a_server_that_dies_at_start_fails_with_its_stderr(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit('no such module: oidc-provider')"]
    with pytest.raises(pytest.fail.Exception, match="no such module: oidc-provider"), \
            server_process("broken server", argv, cwd=tmp_path, log=tmp_path / "log"):
        pass
