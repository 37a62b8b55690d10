"""Authorization server metadata: locations, checks, failure classes and the cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from exporter.config import check_issuer
from exporter.discovery import (
    DISCOVERY_ERROR_CLASSES,
    ISSUER_MISMATCH,
    DiscoveryError,
    MetadataCache,
    ServerMetadata,
    discovery_urls,
    fetch_metadata,
)
from exporter.errors import ErrorClass

ISSUER = "https://id.example.com/realms/ops"
OIDC_URL = "https://id.example.com/realms/ops/.well-known/openid-configuration"
RFC8414_URL = "https://id.example.com/.well-known/oauth-authorization-server/realms/ops"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": ISSUER,
        "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
        "introspection_endpoint": f"{ISSUER}/protocol/openid-connect/token/introspect",
        "revocation_endpoint": f"{ISSUER}/protocol/openid-connect/revoke",
        "jwks_uri": f"{ISSUER}/protocol/openid-connect/certs",
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


class Server:
    """A MockTransport answering per URL, recording what was asked."""

    def __init__(self, answers: dict[str, httpx.Response | Handler]) -> None:
        self.answers = answers
        self.requests: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append(url)
        answer = self.answers.get(url)
        if answer is None:
            return httpx.Response(404)
        if isinstance(answer, httpx.Response):
            return answer
        return await answer(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


def ok(doc: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=doc)


def fetch(server: Server, issuer: str = ISSUER, **kwargs: Any) -> ServerMetadata:
    async def go() -> ServerMetadata:
        async with server.client() as client:
            options = {"timeout": 5.0, "max_bytes": 1 << 16, "clock": lambda: 1000.0, **kwargs}
            return await fetch_metadata(client, issuer, **options)

    return asyncio.run(go())


def failure(server: Server, issuer: str = ISSUER, **kwargs: Any) -> DiscoveryError:
    with pytest.raises(DiscoveryError) as caught:
        fetch(server, issuer, **kwargs)
    return caught.value


# ------------------------------------------------------------------------------ locations


@pytest.mark.parametrize(("issuer", "oidc", "rfc8414"), [
    ("https://as.example", "https://as.example/.well-known/openid-configuration",
     "https://as.example/.well-known/oauth-authorization-server"),
    ("https://as.example/", "https://as.example/.well-known/openid-configuration",
     "https://as.example/.well-known/oauth-authorization-server"),
    # Keycloak: a realm is a path.
    ("https://kc.example:8443/realms/ops",
     "https://kc.example:8443/realms/ops/.well-known/openid-configuration",
     "https://kc.example:8443/.well-known/oauth-authorization-server/realms/ops"),
    # Entra ID v2.0: tenant and version in the path.
    ("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
     "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
     "/.well-known/openid-configuration",
     "https://login.microsoftonline.com/.well-known/oauth-authorization-server"
     "/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"),
    # Okta custom authorization server, with a trailing slash removed (RFC 8414 §3.1).
    ("https://acme.okta.com/oauth2/default/",
     "https://acme.okta.com/oauth2/default/.well-known/openid-configuration",
     "https://acme.okta.com/.well-known/oauth-authorization-server/oauth2/default"),
])
def test_discovery_urls_follow_oidc_and_rfc8414_path_rules(issuer: str, oidc: str,
                                                           rfc8414: str) -> None:
    assert discovery_urls(issuer) == (oidc, rfc8414)


@pytest.mark.parametrize(("issuer", "message"), [
    ("https://as.example/?tenant=1", "query or fragment"),
    ("https://as.example/#x", "query or fragment"),
    ("ftp://as.example", "absolute http"),
    ("/realms/ops", "absolute http"),
])
def test_check_issuer_refuses_what_rfc8414_forbids(issuer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_issuer(issuer)
    assert check_issuer("https://as.example/realms/x") == "https://as.example/realms/x"


# ------------------------------------------------------------------------------ reading


def test_openid_configuration_is_used_when_present() -> None:
    server = Server({OIDC_URL: ok(document(mtls_endpoint_aliases={
        "token_endpoint": "https://mtls.id.example.com/realms/ops/token",
        "userinfo_endpoint": "https://mtls.id.example.com/realms/ops/userinfo",
    }))})
    metadata = fetch(server)
    assert server.requests == [OIDC_URL]
    assert metadata.source == OIDC_URL
    assert metadata.fetched_at == 1000.0
    assert metadata.token_endpoint == f"{ISSUER}/protocol/openid-connect/token"
    assert metadata.jwks_uri == f"{ISSUER}/protocol/openid-connect/certs"
    assert metadata.endpoint("token_endpoint", mtls=True) == (
        "https://mtls.id.example.com/realms/ops/token")
    assert metadata.endpoint("introspection_endpoint", mtls=True) == (
        f"{ISSUER}/protocol/openid-connect/token/introspect")
    # Aliases for endpoints the exporter never calls are not kept.
    assert set(metadata.mtls_endpoint_aliases) == {"token_endpoint"}


@pytest.mark.parametrize("status", [404, 400, 403, 410])
def test_rfc8414_is_tried_when_openid_configuration_is_absent(status: int) -> None:
    server = Server({OIDC_URL: httpx.Response(status), RFC8414_URL: ok(document())})
    metadata = fetch(server)
    assert server.requests == [OIDC_URL, RFC8414_URL]
    assert metadata.source == RFC8414_URL


@pytest.mark.parametrize(("status", "error"), [
    (500, ErrorClass.SERVER_ERROR), (503, ErrorClass.SERVER_ERROR),
    (429, ErrorClass.RATE_LIMITED), (302, ErrorClass.UNEXPECTED_STATUS),
])
def test_a_failing_server_is_not_asked_twice(status: int, error: ErrorClass) -> None:
    server = Server({OIDC_URL: httpx.Response(status, headers={"location": RFC8414_URL}),
                     RFC8414_URL: ok(document())})
    err = failure(server)
    assert err.error is error
    assert err.status == status
    assert server.requests == [OIDC_URL]  # no fallback, and no redirect followed


def test_neither_document_is_unexpected_status() -> None:
    server = Server({})
    err = failure(server)
    assert (err.error, err.status) == (ErrorClass.UNEXPECTED_STATUS, 404)
    assert server.requests == [OIDC_URL, RFC8414_URL]


@pytest.mark.parametrize("issuer_in_document", [
    "https://id.example.com/realms/other",
    "https://id.example.com/realms/ops/",
    "https://ID.example.com/realms/ops",
    "https://id.example.com:443/realms/ops",
    None,
    42,
])
def test_any_other_issuer_is_a_mismatch(issuer_in_document: object) -> None:
    server = Server({OIDC_URL: ok(document(issuer=issuer_in_document)),
                     RFC8414_URL: ok(document())})
    err = failure(server)
    assert err.error == ISSUER_MISMATCH
    assert err.token_error is ErrorClass.INVALID_RESPONSE
    # Never worked around by reading the other location.
    assert server.requests == [OIDC_URL]
    assert "realms/other" not in str(err)


@pytest.mark.parametrize(("body", "detail"), [
    (b"<html>login</html>", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps(document(token_endpoint=None)).encode(), "token_endpoint is missing"),
    (json.dumps(document(token_endpoint=7)).encode(), "token_endpoint is not a URL"),
    (json.dumps(document(token_endpoint="https://[bad")).encode(), "not a valid URL"),
    (json.dumps(document(revocation_endpoint="https://bad host/r")).encode(), "not a valid URL"),
    (json.dumps(document(jwks_uri="https:///keys")).encode(), "not a valid URL"),
    (json.dumps(document(introspection_endpoint="ftp://x/y")).encode(), "not an https URL"),
    (json.dumps(document(token_endpoint_auth_methods_supported="private_key_jwt")).encode(),
     "not a list of names"),
    (json.dumps(document(mtls_endpoint_aliases=["x"])).encode(), "not an object"),
])
def test_unusable_documents_are_invalid_response(body: bytes, detail: str) -> None:
    err = failure(Server({OIDC_URL: httpx.Response(200, content=body)}))
    assert err.error is ErrorClass.INVALID_RESPONSE
    assert detail in err.detail


def test_plain_http_endpoints_only_on_loopback_or_when_allowed() -> None:
    elsewhere = document(token_endpoint="http://id.example.com/token")
    err = failure(Server({OIDC_URL: ok(elsewhere)}))
    assert err.error is ErrorClass.INVALID_RESPONSE
    assert "allow_insecure_http" in err.detail
    assert fetch(Server({OIDC_URL: ok(elsewhere)}), allow_http=True).token_endpoint == (
        "http://id.example.com/token")
    loopback = document(token_endpoint="http://127.0.0.1:9000/token")
    assert fetch(Server({OIDC_URL: ok(loopback)})).token_endpoint == "http://127.0.0.1:9000/token"


def test_auth_methods_are_refused_only_when_the_server_lists_others() -> None:
    listed = fetch(Server({OIDC_URL: ok(document())}))
    assert listed.supports_auth_method("private_key_jwt")
    assert not listed.supports_auth_method("client_secret_post")
    silent = fetch(Server({OIDC_URL: ok(document(token_endpoint_auth_methods_supported=None))}))
    assert silent.token_endpoint_auth_methods_supported is None
    assert silent.supports_auth_method("tls_client_auth")


def test_oversized_documents_are_invalid_response() -> None:
    big = json.dumps(document(padding="x" * 5000)).encode()
    err = failure(Server({OIDC_URL: httpx.Response(200, content=big)}), max_bytes=4096)
    assert err.error is ErrorClass.INVALID_RESPONSE
    assert "larger than 4096 bytes" in err.detail

    async def streamed(request: httpx.Request) -> httpx.Response:
        async def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 1000

        return httpx.Response(200, content=chunks())  # no content-length

    err = failure(Server({OIDC_URL: streamed}), max_bytes=4096)
    assert err.error is ErrorClass.INVALID_RESPONSE


def test_transport_failures_keep_their_classes() -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    async def hangs(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok(document())

    assert failure(Server({OIDC_URL: refused})).error is ErrorClass.CONNECTION_ERROR
    assert failure(Server({OIDC_URL: slow})).error is ErrorClass.TIMEOUT
    # The whole read, both locations, is bounded by the timeout.
    assert failure(Server({OIDC_URL: hangs}), timeout=0.05).error is ErrorClass.TIMEOUT


def test_error_classes_for_the_failure_counter() -> None:
    assert DISCOVERY_ERROR_CLASSES[-1] == ISSUER_MISMATCH
    assert set(DISCOVERY_ERROR_CLASSES) - {ISSUER_MISMATCH} == {str(c) for c in ErrorClass}


# ------------------------------------------------------------------------------ cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_reads_once_for_concurrent_credentials_and_until_invalidated() -> None:
    clock = Clock()
    cache = MetadataCache(max_age=3600, clock=clock)
    gate = asyncio.Event()

    async def slow_document(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return ok(document())

    server = Server({OIDC_URL: slow_document})

    async def scenario() -> list[ServerMetadata]:
        async with server.client() as client:
            async def get() -> ServerMetadata:
                return await cache.get(client, ISSUER, timeout=5, max_bytes=1 << 16)

            waiting = [asyncio.create_task(get()) for _ in range(5)]
            await asyncio.sleep(0)
            gate.set()
            results = await asyncio.gather(*waiting)
            assert len(server.requests) == 1
            clock.now += 3599
            await get()
            assert len(server.requests) == 1  # still fresh
            cache.invalidate(ISSUER)  # a 404 from the token endpoint
            await get()
            assert len(server.requests) == 2
            cache.invalidate()  # a reload
            await get()
            assert len(server.requests) == 3
            clock.now += 3600  # too old
            results.append(await get())
            assert len(server.requests) == 4
            return results

    results = asyncio.run(scenario())
    assert all(r.token_endpoint == results[0].token_endpoint for r in results)
    assert results[-1].fetched_at == clock.now


def test_cache_keeps_no_failure() -> None:
    answers: list[httpx.Response] = [httpx.Response(503), ok(document())]

    async def flaky(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    cache = MetadataCache(clock=Clock())
    server = Server({OIDC_URL: flaky})

    async def scenario() -> ServerMetadata:
        async with server.client() as client:
            with pytest.raises(DiscoveryError):
                await cache.get(client, ISSUER, timeout=5, max_bytes=1 << 16)
            return await cache.get(client, ISSUER, timeout=5, max_bytes=1 << 16)

    assert asyncio.run(scenario()).issuer == ISSUER
    assert server.requests == [OIDC_URL, OIDC_URL]
