"""What every simulated vendor does, each in its own documented shape.

Each vendor: issues a token for good credentials, refuses wrong ones with its
documented error, answers its API with the token and refuses it after
revoke_all or expiry, and answers 429 in its own shape with Retry-After.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from exporter.errors import ErrorClass, classify_response
from exporter.simulator import DEFAULT_LIFETIMES, KINDS, TOKEN_PATHS
from exporter.simulator.vendors import BY_KIND
from tests.harness import wait_for
from tests.simulator import (
    test_dokstamp,
    test_oidc,
    test_simpledocs,
    test_simplestore,
    test_simplifi,
    test_smartdocumentor,
)
from tests.simulator.simclient import (
    CLIENT_ID,
    PRESET_AUTH,
    SECRET,
    Factory,
    VendorCase,
    call_api,
    get_token,
    preset_fields,
    request_token,
    without_description,
)

CASES: list[VendorCase] = [
    test_simpledocs.CASE,
    test_smartdocumentor.CASE,
    test_simplifi.CASE,
    test_simplestore.CASE,
    test_dokstamp.CASE,
    test_oidc.CASE,
]
by_case = pytest.mark.parametrize("case", CASES, ids=str)


def test_every_vendor_has_a_case() -> None:
    assert [case.kind for case in CASES] == list(BY_KIND)
    assert list(KINDS) == list(BY_KIND)[:5]  # the seed vendors; optional ones follow


@by_case
def test_issues_token_for_good_credentials(
    case: VendorCase, make: Factory, http: httpx.Client
) -> None:
    provider = make(case.kind)
    assert provider.token_url == provider.base_url + TOKEN_PATHS.get(case.kind, "/token")

    response = request_token(http, provider)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    token = body["access_token"]
    assert isinstance(token, str) and len(token) >= 40
    expected = case.token_body(body)
    assert body == expected
    assert list(body) == list(expected)  # key order as in the seed's examples
    assert DEFAULT_LIFETIMES.get(case.kind, 300) in body.values()

    assert call_api(http, provider, token).status_code == 200
    assert provider.issued_token_count() == 1
    [record] = provider.token_requests()
    assert record.method == "POST"
    assert record.auth_method == PRESET_AUTH[case.kind]
    assert record.client_id == CLIENT_ID
    assert record.grant_type == "client_credentials"
    assert record.content_type == "application/x-www-form-urlencoded"
    assert (record.status, record.issued, record.client_ip) == (200, True, "127.0.0.1")
    assert record.form_keys == tuple(preset_fields(case.kind))
    assert SECRET not in repr(provider.token_requests())


@by_case
@pytest.mark.parametrize("how", ["wrong_secret", "unknown_client", "fault"])
def test_refuses_wrong_credentials(
    case: VendorCase, how: str, make: Factory, http: httpx.Client
) -> None:
    provider = make(case.kind)
    kwargs: dict[str, Any] = {}
    if how == "wrong_secret":
        kwargs["secret"] = SECRET + "x"
    elif how == "unknown_client":
        kwargs["client_id"] = "nobody"
    else:
        provider.set_faults(wrong_credentials=True)

    response = request_token(http, provider, **kwargs)

    assert (response.status_code,
            without_description(case, response.json())) == case.invalid_client
    assert response.headers["cache-control"] == "no-store"
    assert classify_response(response.status_code, response.headers, response.content,
                             "token") is ErrorClass.INVALID_CLIENT
    assert provider.issued_token_count() == 0
    assert provider.token_requests()[-1].issued is False


@by_case
def test_refuses_the_other_auth_method(
    case: VendorCase, make: Factory, http: httpx.Client
) -> None:
    provider = make(case.kind)
    other = {"client_secret_post": "client_secret_basic",
             "client_secret_basic": "client_secret_post"}[PRESET_AUTH[case.kind]]

    response = request_token(http, provider, auth_method=other)

    status, body = case.invalid_client
    assert (response.status_code, without_description(case, response.json())) == (status, body)
    assert provider.token_requests()[-1].auth_method == other
    if other == "client_secret_basic" and status == 401:
        # RFC 6749 §5.2: a 401 to Basic credentials carries the Basic challenge.
        assert response.headers["www-authenticate"] == f'Basic realm="{case.kind}"'


@by_case
def test_answers_api_with_token_and_refuses_without(
    case: VendorCase, make: Factory, http: httpx.Client
) -> None:
    provider = make(case.kind)
    assert call_api(http, provider, get_token(http, provider)).status_code == 200

    case.assert_refused(call_api(http, provider, None), "missing")
    case.assert_refused(call_api(http, provider, "not-a-token"), "unknown")


@by_case
def test_refuses_after_revoke_all(case: VendorCase, make: Factory, http: httpx.Client) -> None:
    provider = make(case.kind)
    token = get_token(http, provider)
    assert call_api(http, provider, token).status_code == 200

    provider.revoke_all()

    case.assert_refused(call_api(http, provider, token), "revoked")
    assert provider.active_token_count() == 0
    assert call_api(http, provider, get_token(http, provider)).status_code == 200


@by_case
@pytest.mark.parametrize("how", ["limit", "fault"])
def test_rate_limit_shape(case: VendorCase, how: str, make: Factory, http: httpx.Client) -> None:
    if how == "limit":
        provider = make(case.kind, rate_limit=(1, 60.0))
        assert request_token(http, provider).status_code == 200
    else:
        provider = make(case.kind)
        provider.set_faults(rate_limited=True)

    response = request_token(http, provider)

    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert retry_after == 1 if how == "fault" else 1 <= retry_after <= 60
    assert case.rate_limited(response.json())
    assert classify_response(429, response.headers, response.content,
                             "token") is ErrorClass.RATE_LIMITED
    if how == "fault":
        provider.clear_faults()
        assert request_token(http, provider).status_code == 200


@pytest.mark.slow
def test_expired_tokens_are_refused_and_classed(make: Factory, http: httpx.Client) -> None:
    """One test for all five, so they share a single one-second wait."""
    providers = {case.kind: make(case.kind, lifetime=1) for case in CASES}
    tokens = {kind: get_token(http, provider) for kind, provider in providers.items()}
    issued = time.time()

    wait_for(lambda: all(call_api(http, p, tokens[k]).status_code == 401
                         for k, p in providers.items()),
             timeout=10, message="one-second tokens to expire")

    assert time.time() - issued >= 0.9  # not refused before their lifetime was up
    for case in CASES:
        response = call_api(http, providers[case.kind], tokens[case.kind])
        case.assert_refused(response, "expired")
        assert classify_response(response.status_code, response.headers, response.content,
                                 "probe") is case.expired_class


@by_case
def test_api_server_error_fault(case: VendorCase, make: Factory, http: httpx.Client) -> None:
    provider = make(case.kind)
    token = get_token(http, provider)
    provider.set_faults(api_server_error=True)

    broken = call_api(http, provider, token)

    assert broken.status_code == 500
    assert broken.headers["content-type"].startswith("text/html")
    assert "Internal Server Error" in broken.text
    assert request_token(http, provider).status_code == 200  # token side unaffected
    provider.clear_faults()
    assert call_api(http, provider, get_token(http, provider)).status_code == 200


@by_case
def test_api_refuses_tokens_fault(case: VendorCase, make: Factory, http: httpx.Client) -> None:
    provider = make(case.kind)
    provider.set_faults(api_refuses_tokens=True)

    refused = call_api(http, provider, get_token(http, provider))

    assert refused.status_code == 401
    assert refused.content == b"" and "www-authenticate" not in refused.headers
    assert request_token(http, provider).status_code == 200  # token side unaffected
    provider.clear_faults()
    assert call_api(http, provider, get_token(http, provider)).status_code == 200


@by_case
def test_unknown_path_is_json_404(case: VendorCase, make: Factory, http: httpx.Client) -> None:
    provider = make(case.kind)
    response = http.get(provider.base_url + "/no/such/thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), dict)
