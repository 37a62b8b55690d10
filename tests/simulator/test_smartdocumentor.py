"""SmartDocumentor's quirks (seed 001): scope must be WebAPI, client secrets expire."""

from __future__ import annotations

import time

import httpx

from exporter.errors import ErrorClass
from tests.simulator.simclient import Factory, VendorCase, request_token


def assert_refused(response: httpx.Response, reason: str) -> None:
    # ASP.NET JwtBearer: an empty body, the reason only in the challenge.
    assert response.status_code == 401
    assert response.content == b""
    challenge = response.headers["www-authenticate"]
    if reason == "missing":
        assert challenge == "Bearer"
        return
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    if reason == "expired":
        assert "The token expired at '" in challenge
    else:
        assert challenge.endswith('"The token is invalid"')


CASE = VendorCase(
    kind="smartdocumentor",
    token_body=lambda body: {"access_token": body["access_token"], "expires_in": 3600,
                             "token_type": "Bearer", "scope": "WebAPI"},
    invalid_client=(400, {"error": "invalid_client"}),
    assert_refused=assert_refused,
    rate_limited=lambda body: body == {"error": "rate_limited"},
    expired_class=ErrorClass.INVALID_TOKEN,
)


def test_scope_must_be_webapi(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    for scope in (None, "webapi", "WebAPI read", ""):
        response = request_token(http, provider, form={"scope": scope})
        assert (response.status_code, response.json()) == (400, {"error": "invalid_scope"})
    assert provider.token_requests()[0].scope is None
    assert provider.token_requests()[1].scope == "webapi"
    assert provider.issued_token_count() == 0


def test_expired_secret_is_invalid_client(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    provider.add_client("expired", "old-secret", secret_expires_at=time.time() - 1)
    provider.add_client("current", "new-secret", secret_expires_at=time.time() + 3600)

    expired = request_token(http, provider, client_id="expired", secret="old-secret")
    current = request_token(http, provider, client_id="current", secret="new-secret")

    assert (expired.status_code, expired.json()) == (400, {"error": "invalid_client"})
    assert current.status_code == 200
