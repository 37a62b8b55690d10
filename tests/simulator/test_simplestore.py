"""SimpleStore's quirks (seed 003): "expiries_in", 400 invalid_client, bare 401 challenges."""

from __future__ import annotations

import httpx

from exporter.errors import ErrorClass
from tests.simulator.simclient import Factory, VendorCase, call_api, get_token, request_token

_CHALLENGE = {
    "missing": "Bearer",
    "unknown": 'Bearer error="invalid_token"',
    "revoked": 'Bearer error="invalid_token"',
    "expired": 'Bearer error="invalid_token", error_description="The token expired"',
}


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["www-authenticate"] == _CHALLENGE[reason]


CASE = VendorCase(
    kind="simplestore",
    token_body=lambda body: {"access_token": body["access_token"], "expiries_in": 3600,
                             "token_type": "Bearer"},
    invalid_client=(400, {"error": "invalid_client"}),
    assert_refused=assert_refused,
    rate_limited=lambda body: body == {"error": "rate_limited"},
    expired_class=ErrorClass.INVALID_TOKEN,
)


def test_lifetime_field_override(make: Factory, http: httpx.Client) -> None:
    provider = make("simplestore", lifetime_field="expires_in")
    body = request_token(http, provider).json()
    assert list(body) == ["access_token", "expires_in", "token_type"]
    assert body["expires_in"] == 3600


def test_many_active_tokens(make: Factory, http: httpx.Client) -> None:
    provider = make("simplestore")
    first = get_token(http, provider)
    get_token(http, provider)
    assert call_api(http, provider, first).status_code == 200
    assert provider.active_token_count() == 2
