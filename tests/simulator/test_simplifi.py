"""Simplifi's quirks (seed 002): HTTP Basic only, "__type" and refresh_token, employees API."""

from __future__ import annotations

import httpx

from exporter.errors import ErrorClass
from tests.simulator.simclient import (
    CLIENT_ID,
    SECRET,
    Factory,
    VendorCase,
    basic,
    get_token,
    request_token,
)


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    assert response.headers["www-authenticate"] == "Bearer"


CASE = VendorCase(
    kind="simplifi",
    token_body=lambda body: {"__type": "SSJSON_Token_Access", "access_token": body["access_token"],
                             "expires_in": 3600, "refresh_token": body.get("refresh_token"),
                             "scope": "read", "token_type": "Bearer"},
    invalid_client=(401, {"error": "invalid_client"}),
    assert_refused=assert_refused,
    rate_limited=lambda body: body == {"error": "rate_limited"},
    expired_class=ErrorClass.INVALID_TOKEN,
)


def test_refresh_token_and_no_scope_sent(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    body = request_token(http, provider).json()

    assert isinstance(body["refresh_token"], str) and body["refresh_token"] != body["access_token"]
    assert body["scope"] == "read"
    assert provider.token_requests()[-1].form_keys == ("grant_type",)


def test_basic_credentials_are_form_urlencoded(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    odd_id, odd_secret = "svc:reports team", "p@ss w:rd+%/="
    provider.add_client(odd_id, odd_secret)

    response = request_token(http, provider, client_id=odd_id, secret=odd_secret)

    assert response.status_code == 200
    assert provider.token_requests()[-1].client_id == odd_id


def test_basic_and_post_together_is_invalid_request(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    response = http.post(
        provider.token_url,
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET},
        headers={"Authorization": basic(CLIENT_ID, SECRET)},
    )
    assert (response.status_code, response.json()) == (400, {"error": "invalid_request"})


def test_wrong_secret_gets_basic_challenge(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    response = request_token(http, provider, secret="wrong")
    assert response.headers["www-authenticate"] == 'Basic realm="simplifi"'


def test_employee_by_id(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    bearer = {"Authorization": f"Bearer {get_token(http, provider)}"}

    one = http.get(provider.base_url + "/api/v1/employees/123", headers=bearer)
    missing = http.get(provider.base_url + "/api/v1/employees/999", headers=bearer)
    deeper = http.get(provider.base_url + "/api/v1/employees/123/payslips", headers=bearer)

    assert (one.status_code, one.json()["id"]) == (200, "123")
    assert missing.status_code == 404
    assert deeper.status_code == 404
