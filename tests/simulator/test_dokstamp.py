"""DokStamp's quirks (seed 004): JWT tokens, Accept and X-Tenant rules, a public download."""

from __future__ import annotations

import time

import httpx

from exporter.errors import ErrorClass
from tests.simulator.simclient import (
    CLIENT_ID,
    Factory,
    VendorCase,
    get_token,
    jwt_part,
    request_token,
)


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}


CASE = VendorCase(
    kind="dokstamp",
    token_body=lambda body: {"token_type": "Bearer", "expires_in": 43200,
                             "access_token": body["access_token"]},
    invalid_client=(401, {"error": "invalid_client", "message": "Client authentication failed"}),
    assert_refused=assert_refused,
    rate_limited=lambda body: body == {"message": "Too Many Attempts."},  # Laravel's throttle
    expired_class=ErrorClass.INVALID_TOKEN,
)


def test_jwt_claims(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp", lifetime=900)
    body = request_token(http, provider).json()

    header = jwt_part(body["access_token"], 0)
    claims = jwt_part(body["access_token"], 1)

    assert body["access_token"].startswith("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.")  # the seed's
    assert header == {"typ": "JWT", "alg": "RS256"}
    assert body["expires_in"] == 900
    assert claims["exp"] == claims["iat"] + 900
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["sub"] == CLIENT_ID
    assert claims["iss"] == provider.base_url
    assert {"aud", "jti"} <= set(claims)
    assert len(body["access_token"].split(".")) == 3


def test_omit_expires_in(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp", omit_expires_in=True)
    body = request_token(http, provider).json()

    assert set(body) == {"token_type", "access_token"}
    claims = jwt_part(body["access_token"], 1)
    assert claims["exp"] - claims["iat"] == 43200


def test_api_header_rules(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    token = get_token(http, provider)
    url = provider.base_url + "/api/v1/documents"
    bearer = {"Authorization": f"Bearer {token}"}

    no_accept = http.get(url, headers={**bearer, "X-Tenant": "acme"})
    assert no_accept.status_code == 401
    assert no_accept.headers["content-type"].startswith("text/html")
    assert '<form method="POST" action="/login">' in no_accept.text

    # Laravel's wantsJson(): the most preferred range decides; */* is not JSON.
    for accept in ("*/*", "text/html, application/json;q=0.5"):
        assert http.get(url, headers={**bearer, "X-Tenant": "acme",
                                      "Accept": accept}).status_code == 401
    preferred = http.get(url, headers={**bearer, "X-Tenant": "acme",
                                       "Accept": "text/html;q=0.1, application/json"})
    assert preferred.status_code == 200

    no_tenant = http.get(url, headers={**bearer, "Accept": "application/json"})
    assert no_tenant.status_code == 400
    assert no_tenant.json() == {"error": "invalid_request",
                                "message": "X-Tenant header is required"}

    ok = http.get(url, headers={**bearer, "Accept": "application/json", "X-Tenant": "acme"})
    assert ok.status_code == 200
    assert ok.json()["meta"]["tenant"] == "acme"

    wrong_method = http.post(url, headers={**bearer, "Accept": "application/json"})
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "GET, HEAD")


def test_public_download(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    url = provider.base_url + "/files/7d1f0c52-3b5e-4c1e-9f7a-2f4b8f7e9a10/download"

    response = http.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-1.4")
    assert http.get(provider.base_url + "/files/not-a-uuid/download").status_code == 404


def test_not_found_is_laravel_shaped(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    response = http.get(provider.base_url + "/no/such/thing")
    assert response.json() == {"message": "The route no/such/thing could not be found."}
