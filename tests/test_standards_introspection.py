"""The introspection probe (RFC 7662): which request it sends, and how it judges the answer.

``judge`` is tested on answers as they come; ``introspect`` sends real
``httpx`` requests through ``httpx.MockTransport`` to a handler that records
them. The probe against real servers is in tests/test_standards_exporter.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import yaml
from pydantic import SecretStr

from exporter.config import Provider, parse_config
from exporter.discovery import MetadataCache
from exporter.errors import ErrorClass
from exporter.introspection import EXP_TOLERANCE, introspect, judge
from exporter.state import ProviderState
from exporter.tokens import Token

NOW = 1_800_000_000.0
ISSUER = "https://id.example.com"
INTROSPECT = ISSUER + "/oauth2/introspect"
MTLS_INTROSPECT = "https://mtls.id.example.com/oauth2/introspect"
TOKEN_VALUE = "opaque-access-token-7Qx"


def token(expires_in: float = 3600, scopes: frozenset[str] | None = None) -> Token:
    return Token(SecretStr(TOKEN_VALUE), NOW, NOW + expires_in, scopes, "expires_in")


def answer(**doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------- judging


@pytest.mark.parametrize(("body", "expected"), [
    (answer(active=True), None),
    (answer(active=True, exp=NOW + 3600, scope="read write"), None),
    # Later than the token answer said: harmless, the exporter renews early anyway.
    (answer(active=True, exp=NOW + 7200), None),
    # Within the tolerance for clock skew.
    (answer(active=True, exp=NOW + 3600 - EXP_TOLERANCE + 1), None),
    (answer(active=False), ErrorClass.TOKEN_REVOKED),
    (answer(active=False, exp=NOW + 3600), ErrorClass.TOKEN_REVOKED),
    # The server ends the token half an hour before the exporter plans to renew.
    (answer(active=True, exp=NOW + 1800), ErrorClass.INVALID_RESPONSE),
    (answer(active=True, scope="read"), ErrorClass.INSUFFICIENT_SCOPE),
    (answer(active="true"), ErrorClass.INVALID_RESPONSE),
    (answer(valid=True), ErrorClass.INVALID_RESPONSE),
    (b"[true]", ErrorClass.INVALID_RESPONSE),
    (b"<html>", ErrorClass.INVALID_RESPONSE),
    # Values that are not what RFC 7662 says are ignored rather than trusted.
    (answer(active=True, exp="soon", scope=["read"]), None),
])
def test_judge(body: bytes, expected: ErrorClass | None) -> None:
    error, why = judge(body, token(), "read write", NOW)
    assert error is expected
    assert TOKEN_VALUE not in why


def test_scope_is_compared_with_what_the_token_answer_granted() -> None:
    # The token answer granted only "read" of "read write": the introspection
    # agreeing with that is no failure (scope_granted already shows the drop).
    granted = token(scopes=frozenset({"read"}))
    assert judge(answer(active=True, scope="read"), granted, "read write", NOW)[0] is None
    assert judge(answer(active=True, scope="other"), granted, "read write", NOW)[0] is (
        ErrorClass.INSUFFICIENT_SCOPE)
    # No scope asked and none granted: nothing to compare.
    assert judge(answer(active=True, scope=""), token(), None, NOW)[0] is None


# ------------------------------------------------------------------------- requests


Handler = Callable[[httpx.Request], httpx.Response]


def provider(**entry: Any) -> Provider:
    base: dict[str, Any] = {"name": "ops", "issuer": ISSUER, "client_id": "exporter",
                            "client_secret": "exporter-secret-0123456", "timeout": "5s",
                            "probes": [{"name": "introspect", "kind": "introspection"}]}
    base.update(entry)
    text = yaml.safe_dump({"providers": [{k: v for k, v in base.items() if v is not None}]})
    return parse_config(text, "test.yaml", {}).providers[0]


def call(p: Provider, handler: Handler, held: Token | None = None) -> tuple[
        tuple[int, ErrorClass | None], list[httpx.Request], ProviderState]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def go() -> tuple[int, ErrorClass | None]:
        state = ProviderState(p)
        async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
            result = await introspect(client, state, p.probes[0], held or token(),
                                      MetadataCache(clock=lambda: NOW), lambda: NOW)
        calls.append(state)
        return result

    calls: list[ProviderState] = []
    result = asyncio.run(go())
    return result, seen, calls[0]


def server(introspection: Handler, **document: Any) -> Handler:
    doc = {"issuer": ISSUER, "token_endpoint": ISSUER + "/oauth2/token",
           "introspection_endpoint": INTROSPECT,
           "mtls_endpoint_aliases": {"introspection_endpoint": MTLS_INTROSPECT}, **document}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=doc)
        return introspection(request)

    return handle


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def active(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"active": True})


def test_the_discovered_endpoint_with_the_probes_own_credential() -> None:
    p = provider(probes=[{"name": "introspect", "kind": "introspection", "client_id": "rs",
                          "client_secret": "rs-secret-value-42"}])
    (status, error), seen, state = call(p, server(active))
    assert (status, error) == (200, None)
    request = seen[-1]
    assert str(request.url) == INTROSPECT
    assert form(request) == {"token": TOKEN_VALUE, "token_type_hint": "access_token"}
    expected = base64.b64encode(b"rs:rs-secret-value-42").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert state.discovery_last_success == NOW


def test_client_secret_post_for_the_probes_own_credential() -> None:
    p = provider(probes=[{"name": "introspect", "kind": "introspection", "client_id": "rs",
                          "client_secret": "rs-secret-value-42",
                          "auth_method": "client_secret_post"}])
    _, seen, _ = call(p, server(active))
    assert form(seen[-1]) == {"token": TOKEN_VALUE, "token_type_hint": "access_token",
                              "client_id": "rs", "client_secret": "rs-secret-value-42"}
    assert "authorization" not in seen[-1].headers


def test_a_configured_url_needs_no_discovery() -> None:
    url = "https://rs.example.com/introspect"
    p = provider(issuer=None, token_url=ISSUER + "/oauth2/token",
                 probes=[{"name": "introspect", "kind": "introspection", "url": url}])
    (status, error), seen, _ = call(p, active)
    assert (status, error) == (200, None)
    assert [str(r.url) for r in seen] == [url]
    # The provider's own credential, by the provider's own method.
    assert form(seen[0])["client_secret"] == "exporter-secret-0123456"


@pytest.mark.slow
def test_a_mutual_tls_credential_uses_the_alias(pki: Any) -> None:
    p = provider(auth_method="tls_client_auth", client_secret=None,
                 tls_config={"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)})
    _, seen, _ = call(p, server(active))
    assert str(seen[-1].url) == MTLS_INTROSPECT
    assert form(seen[-1]) == {"token": TOKEN_VALUE, "token_type_hint": "access_token",
                              "client_id": "exporter"}


@pytest.mark.parametrize(("response", "expected"), [
    (httpx.Response(401, json={"error": "invalid_client"}), (401, ErrorClass.INVALID_CLIENT)),
    # A bare 401 from this endpoint is about the introspecting client, not the token.
    (httpx.Response(401), (401, ErrorClass.INVALID_CLIENT)),
    (httpx.Response(503), (503, ErrorClass.SERVER_ERROR)),
    (httpx.Response(200, content=b"x" * (2 << 20)), (200, ErrorClass.INVALID_RESPONSE)),
    (httpx.Response(200, json={"active": False}), (200, ErrorClass.TOKEN_REVOKED)),
])
def test_failed_answers_are_classified(response: httpx.Response,
                                       expected: tuple[int, ErrorClass]) -> None:
    result, _, _ = call(provider(), server(lambda r: response))
    assert result == expected


def test_a_failed_discovery_is_the_probes_failure_and_counted() -> None:
    def wrong(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://other.example.com",
                                         "token_endpoint": ISSUER + "/token"})

    result, seen, state = call(provider(), wrong)
    assert result == (0, ErrorClass.INVALID_RESPONSE)
    assert state.discovery_failures == {"issuer_mismatch": 1}
    assert all(r.method == "GET" for r in seen)  # the token was sent nowhere


def test_a_server_without_an_introspection_endpoint() -> None:
    handler = server(active, introspection_endpoint=None, mtls_endpoint_aliases=None)
    result, seen, _ = call(provider(), handler)
    assert result == (0, ErrorClass.INVALID_RESPONSE)
    assert all(r.method == "GET" for r in seen)
