"""SimpleDocs' quirks (seed 000): scopes, one active token, revocation, 10 token requests/min."""

from __future__ import annotations

import httpx

from exporter.errors import ErrorClass
from tests.simulator.simclient import (
    CLIENT_ID,
    SECRET,
    Factory,
    VendorCase,
    call_api,
    get_token,
    request_token,
)

_REFUSED_TYPE = {"missing": "invalid_token", "unknown": "invalid_token",
                 "expired": "token_expired", "revoked": "token_revoked"}


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.json()["type"] == _REFUSED_TYPE[reason]
    assert response.headers["www-authenticate"].startswith('Bearer realm="SimpleDocs"')


CASE = VendorCase(
    kind="simpledocs",
    token_body=lambda body: {"access_token": body["access_token"], "token_type": "Bearer",
                             "expires_in": 7200, "scope": "read"},
    invalid_client=(401, {"type": "invalid_client",
                          "message": "The client ID or secret is incorrect."}),
    assert_refused=assert_refused,
    rate_limited=lambda body: body["type"] == "rate_limited" and "Retry in" in body["message"],
    expired_class=ErrorClass.TOKEN_EXPIRED,
)


def test_scopes(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs", rate_limit=None)  # app scoped "read write"
    url = provider.base_url + "/v1/documents"

    def token_for(scope: str | None) -> httpx.Response:
        return request_token(http, provider, form={"scope": scope})

    # The seed: an app with "read write" still gets read unless it asks explicitly.
    default = token_for(None)
    assert default.json()["scope"] == "read"
    token = default.json()["access_token"]
    assert http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    refused = http.post(url, headers={"Authorization": f"Bearer {token}"}, json={})
    assert refused.status_code == 403
    assert refused.json()["type"] == "insufficient_scope"
    assert 'error="insufficient_scope", scope="write"' in refused.headers["www-authenticate"]

    both = token_for("write read")
    assert both.json()["scope"] == "read write"
    token = both.json()["access_token"]
    created = http.post(url, headers={"Authorization": f"Bearer {token}"}, json={})
    assert created.status_code == 201
    assert created.json()["data"]["status"] == "draft"

    write_only = token_for("write").json()["access_token"]
    assert http.get(url, headers={"Authorization": f"Bearer {write_only}"}).status_code == 403

    bad = token_for("admin")
    assert bad.status_code == 400
    assert bad.json()["type"] == "invalid_scope"

    provider.add_client("reader", "reader-secret", scopes="read")
    over = request_token(http, provider, client_id="reader", secret="reader-secret",
                         form={"scope": "read write"})
    assert (over.status_code, over.json()["type"]) == (400, "invalid_scope")


def test_one_active_token_per_application(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs")
    first = get_token(http, provider)
    second = get_token(http, provider)

    old = call_api(http, provider, first)
    new = call_api(http, provider, second)

    assert old.status_code == 401
    assert old.json() == {
        "type": "token_revoked",
        "message": "The token was revoked (a newer token was issued or it was explicitly "
                   "revoked).",
    }
    assert new.status_code == 200
    assert new.json()["data"]
    assert provider.active_token_count() == 1


def test_explicit_revocation(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs")
    token = get_token(http, provider)
    revoke_url = provider.base_url + "/oauth/revoke"

    wrong = http.post(revoke_url, data={"token": token, "client_id": CLIENT_ID,
                                        "client_secret": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["type"] == "invalid_client"
    assert call_api(http, provider, token).status_code == 200

    # RFC 7009 §2.2: an unknown token is not an error.
    unknown = http.post(revoke_url, data={"token": "no-such-token", "client_id": CLIENT_ID,
                                          "client_secret": SECRET})
    assert unknown.status_code == 200

    done = http.post(revoke_url, data={"token": token, "client_id": CLIENT_ID,
                                       "client_secret": SECRET})
    assert done.status_code == 200
    assert call_api(http, provider, token).json()["type"] == "token_revoked"


def test_default_rate_limit_is_ten_per_minute(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs")
    statuses = [request_token(http, provider).status_code for _ in range(11)]

    assert statuses == [200] * 10 + [429]
    limited = request_token(http, provider)
    assert limited.json()["type"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
