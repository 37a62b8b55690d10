"""The provider simulator behaves as the seed documents describe, over real HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from exporter.errors import ErrorClass, classify_response
from exporter.simulator import (
    DEFAULT_LIFETIMES,
    DEMO_CLIENTS,
    KINDS,
    TOKEN_PATHS,
    Faults,
    SimulatedProvider,
    Simulation,
)

CLIENT_ID = "test-client"
SECRET = "s3cr3t-Vq7pZk2mXw9rLt4b"  # distinctive, so a leak would be found

PRESET_AUTH = {
    "simpledocs": "client_secret_post",
    "smartdocumentor": "client_secret_post",
    "simplifi": "client_secret_basic",
    "simplestore": "client_secret_post",
    "dokstamp": "client_secret_post",
}
PRESET_FORM: dict[str, dict[str, str]] = {"smartdocumentor": {"scope": "WebAPI"}}

API_CALL: dict[str, tuple[str, dict[str, str]]] = {
    "simpledocs": ("/v1/documents", {}),
    "smartdocumentor": ("/api/v1/templates", {}),
    "simplifi": ("/api/v1/employees", {}),
    "simplestore": ("/api/v1/products", {}),
    "dokstamp": ("/api/v1/documents", {"Accept": "application/json", "X-Tenant": "acme"}),
}

INVALID_CLIENT: dict[str, tuple[int, dict[str, str]]] = {
    "simpledocs": (401, {"type": "invalid_client",
                         "message": "The client ID or secret is incorrect."}),
    "smartdocumentor": (400, {"error": "invalid_client"}),
    "simplifi": (401, {"error": "invalid_client"}),
    "simplestore": (400, {"error": "invalid_client"}),
    "dokstamp": (401, {"error": "invalid_client", "message": "Client authentication failed"}),
}

Factory = Callable[..., SimulatedProvider]


@pytest.fixture
def make() -> Iterator[Factory]:
    """Start providers with one registered client; stop them all afterwards."""
    started: list[SimulatedProvider] = []

    def factory(kind: str, *, scopes: str | None = None, **kwargs: Any) -> SimulatedProvider:
        provider = SimulatedProvider(kind, **kwargs)
        provider.add_client(CLIENT_ID, SECRET, scopes=scopes)
        started.append(provider.start())
        return provider

    yield factory
    for provider in started:
        provider.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


def basic(client_id: str, secret: str) -> str:
    """An Authorization header value encoded as RFC 6749 §2.3.1 says."""
    raw = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def request_token(
    http: httpx.Client,
    provider: SimulatedProvider,
    *,
    auth_method: str | None = None,
    client_id: str = CLIENT_ID,
    secret: str = SECRET,
    form: dict[str, str | None] | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    """A token request the way the provider's preset sends it, unless told otherwise."""
    method = auth_method or PRESET_AUTH[provider.kind]
    fields: dict[str, str | None] = {"grant_type": "client_credentials",
                                     **PRESET_FORM.get(provider.kind, {})}
    fields.update(form or {})
    headers = {}
    if method == "client_secret_basic":
        headers["Authorization"] = basic(client_id, secret)
    else:
        fields.update(client_id=client_id, client_secret=secret)
    data = {key: value for key, value in fields.items() if value is not None}
    return http.post(provider.token_url, data=data, headers=headers, timeout=timeout)


def get_token(http: httpx.Client, provider: SimulatedProvider, **kwargs: Any) -> str:
    response = request_token(http, provider, **kwargs)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def call_api(http: httpx.Client, provider: SimulatedProvider, token: str | None) -> httpx.Response:
    path, headers = API_CALL[provider.kind]
    if token is not None:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    return http.get(provider.base_url + path, headers=headers)


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert isinstance(decoded, dict)
    return decoded


def assert_token_refused(kind: str, response: httpx.Response, reason: str) -> None:
    """The provider's documented answer to an expired or revoked token."""
    assert response.status_code == 401
    challenge = response.headers.get("www-authenticate", "")
    if kind == "simpledocs":
        assert response.json()["type"] == f"token_{reason}"
    elif kind == "smartdocumentor":
        assert response.content == b""
        assert challenge.startswith('Bearer error="invalid_token", error_description="')
        if reason == "expired":
            assert "The token expired at '" in challenge
        else:
            assert challenge.endswith('"The token is invalid"')
    elif kind == "simplifi":
        assert response.json() == {"error": "invalid_token"}
    elif kind == "simplestore":
        assert response.content == b""
        if reason == "expired":
            assert challenge == (
                'Bearer error="invalid_token", error_description="The token expired"'
            )
        else:
            assert challenge == 'Bearer error="invalid_token"'
    else:
        assert response.json() == {"message": "Unauthenticated."}


# --- token endpoint ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_valid_request_gets_documented_body(kind: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    assert provider.token_url == provider.base_url + TOKEN_PATHS[kind]
    response = request_token(http, provider)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    lifetime = DEFAULT_LIFETIMES[kind]
    token = body["access_token"]
    assert isinstance(token, str) and len(token) >= 40
    expected: dict[str, Any] = {
        "simpledocs": {"access_token": token, "token_type": "Bearer", "expires_in": lifetime,
                       "scope": "read"},
        "smartdocumentor": {"access_token": token, "expires_in": lifetime,
                            "token_type": "Bearer", "scope": "WebAPI"},
        "simplifi": {"__type": "SSJSON_Token_Access", "access_token": token,
                     "expires_in": lifetime, "refresh_token": body.get("refresh_token"),
                     "scope": "read", "token_type": "Bearer"},
        "simplestore": {"access_token": token, "expiries_in": lifetime, "token_type": "Bearer"},
        "dokstamp": {"token_type": "Bearer", "expires_in": lifetime, "access_token": token},
    }[kind]
    assert body == expected
    assert list(body) == list(expected)  # key order as in the seed's examples
    if kind == "simplifi":
        assert isinstance(body["refresh_token"], str) and body["refresh_token"] != token
    if kind == "dokstamp":
        assert token.startswith("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.")  # the seed's prefix

    assert call_api(http, provider, token).status_code == 200
    assert provider.issued_token_count() == 1
    [record] = provider.token_requests()
    assert record.method == "POST"
    assert record.auth_method == PRESET_AUTH[kind]
    assert record.client_id == CLIENT_ID
    assert record.grant_type == "client_credentials"
    assert record.content_type == "application/x-www-form-urlencoded"
    assert (record.status, record.issued, record.client_ip) == (200, True, "127.0.0.1")
    if kind == "simplifi":
        assert record.form_keys == ("grant_type",)
    else:
        assert "client_secret" in record.form_keys
    assert SECRET not in repr(provider.token_requests())


def test_basic_credentials_are_form_urlencoded(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    odd_id, odd_secret = "svc:reports team", "p@ss w:rd+%/="
    provider.add_client(odd_id, odd_secret)

    response = request_token(http, provider, client_id=odd_id, secret=odd_secret)

    assert response.status_code == 200
    assert provider.token_requests()[-1].client_id == odd_id


@pytest.mark.parametrize(
    ("kind", "auth_method"),
    [("simplifi", "client_secret_post"), ("simpledocs", "client_secret_basic"),
     ("smartdocumentor", "client_secret_basic"), ("simplestore", "client_secret_basic"),
     ("dokstamp", "client_secret_basic")],
)
def test_wrong_auth_method_is_invalid_client(
    kind: str, auth_method: str, make: Factory, http: httpx.Client
) -> None:
    provider = make(kind)

    response = request_token(http, provider, auth_method=auth_method)

    status, body = INVALID_CLIENT[kind]
    assert (response.status_code, response.json()) == (status, body)
    assert provider.token_requests()[-1].auth_method == auth_method
    if kind != "simplifi" and status == 401:
        assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["wrong_secret", "unknown_client", "fault"])
def test_invalid_client_answer(kind: str, how: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    kwargs: dict[str, Any] = {}
    if how == "wrong_secret":
        kwargs["secret"] = SECRET + "x"
    elif how == "unknown_client":
        kwargs["client_id"] = "nobody"
    else:
        provider.set_faults(wrong_credentials=True)

    response = request_token(http, provider, **kwargs)

    status, body = INVALID_CLIENT[kind]
    assert (response.status_code, response.json()) == (status, body)
    assert classify_response(response.status_code, response.headers, response.content,
                             "token") is ErrorClass.INVALID_CLIENT
    assert provider.issued_token_count() == 0
    assert provider.token_requests()[-1].issued is False


def test_smartdocumentor_scope_must_be_webapi(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    for scope in (None, "webapi", "WebAPI read", ""):
        response = request_token(http, provider, form={"scope": scope})
        assert (response.status_code, response.json()) == (400, {"error": "invalid_scope"})
    assert provider.token_requests()[0].scope is None
    assert provider.token_requests()[1].scope == "webapi"


def test_smartdocumentor_expired_secret_is_invalid_client(
    make: Factory, http: httpx.Client
) -> None:
    provider = make("smartdocumentor")
    provider.add_client("expired", "old-secret", secret_expires_at=time.time() - 1)
    provider.add_client("current", "new-secret", secret_expires_at=time.time() + 3600)

    expired = request_token(http, provider, client_id="expired", secret="old-secret")
    current = request_token(http, provider, client_id="current", secret="new-secret")

    assert (expired.status_code, expired.json()) == (400, {"error": "invalid_client"})
    assert current.status_code == 200


def test_simpledocs_scopes(make: Factory, http: httpx.Client) -> None:
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


@pytest.mark.parametrize(
    ("kind", "request_kwargs", "expected"),
    [
        ("simpledocs", {"method": "GET"}, "invalid_request"),
        ("smartdocumentor", {"json": {"grant_type": "client_credentials"}}, "invalid_request"),
        ("simplestore", {"data": {"grant_type": "password"}}, "unsupported_grant_type"),
        ("dokstamp", {"data": {"client_id": CLIENT_ID}}, "invalid_request"),
        ("simplifi", {"content": b"grant_type=client_credentials&grant_type=client_credentials",
                      "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         "invalid_request"),
    ],
)
def test_malformed_token_requests(
    kind: str, request_kwargs: dict[str, Any], expected: str, make: Factory, http: httpx.Client
) -> None:
    provider = make(kind)
    method = request_kwargs.pop("method", "POST")

    response = http.request(method, provider.token_url, **request_kwargs)

    assert response.status_code == 400
    body = response.json()
    assert body.get("type" if kind == "simpledocs" else "error") == expected


def test_basic_and_post_together_is_invalid_request(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    response = http.post(
        provider.token_url,
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET},
        headers={"Authorization": basic(CLIENT_ID, SECRET)},
    )
    assert (response.status_code, response.json()) == (400, {"error": "invalid_request"})


def test_simpledocs_one_active_token_per_application(make: Factory, http: httpx.Client) -> None:
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


def test_other_providers_allow_many_active_tokens(make: Factory, http: httpx.Client) -> None:
    provider = make("simplestore")
    first = get_token(http, provider)
    get_token(http, provider)
    assert call_api(http, provider, first).status_code == 200


def test_simpledocs_explicit_revocation(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs")
    token = get_token(http, provider)
    revoke_url = provider.base_url + "/oauth/revoke"

    wrong = http.post(revoke_url, data={"token": token, "client_id": CLIENT_ID,
                                        "client_secret": "nope"})
    assert wrong.status_code == 401
    assert call_api(http, provider, token).status_code == 200

    done = http.post(revoke_url, data={"token": token, "client_id": CLIENT_ID,
                                       "client_secret": SECRET})
    assert done.status_code == 200
    assert call_api(http, provider, token).json()["type"] == "token_revoked"


def test_rate_limit_sliding_window(make: Factory, http: httpx.Client) -> None:
    provider = make("simplestore", rate_limit=(2, 0.5))
    assert request_token(http, provider).status_code == 200
    assert request_token(http, provider, secret="wrong").status_code == 400  # counted too

    limited = request_token(http, provider)

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.json() == {"error": "rate_limited"}
    assert classify_response(429, limited.headers, limited.content,
                             "token") is ErrorClass.RATE_LIMITED
    time.sleep(0.6)
    assert request_token(http, provider).status_code == 200


def test_simpledocs_default_rate_limit_is_ten_per_minute(
    make: Factory, http: httpx.Client
) -> None:
    provider = make("simpledocs")
    statuses = [request_token(http, provider).status_code for _ in range(11)]

    assert statuses == [200] * 10 + [429]
    limited = request_token(http, provider)
    assert limited.json()["type"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_others_are_not_rate_limited_by_default(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    assert {request_token(http, provider).status_code for _ in range(15)} == {200}


# --- faults -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limited_fault(kind: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    provider.set_faults(rate_limited=True)

    response = request_token(http, provider)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    body = response.json()
    if kind == "simpledocs":
        assert body["type"] == "rate_limited"
    elif kind == "dokstamp":
        assert body == {"message": "Too Many Attempts."}
    else:
        assert body == {"error": "rate_limited"}
    provider.clear_faults()
    assert request_token(http, provider).status_code == 200


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"server_error": True},
         lambda r: r.status_code == 503 and r.headers["content-type"].startswith("text/html")
         and r.text.startswith("<html>")),
        ({"non_json": True},
         lambda r: r.status_code == 200 and r.headers["content-type"].startswith("text/html")
         and r.text.startswith("<html>")),
        ({"lifetime": 5}, lambda r: r.status_code == 200 and r.json()["expires_in"] == 5),
        ({"wrong_credentials": True},
         lambda r: r.status_code == 401 and r.json()["error"] == "invalid_client"),
    ],
    ids=["server_error", "non_json", "lifetime", "wrong_credentials"],
)
def test_token_faults_and_clear(
    changes: dict[str, Any], check: Callable[[httpx.Response], bool],
    make: Factory, http: httpx.Client,
) -> None:
    provider = make("dokstamp")
    provider.set_faults(**changes)
    assert check(request_token(http, provider))
    assert provider.issued_token_count() == (1 if "lifetime" in changes else 0)

    provider.clear_faults()

    assert provider.faults == Faults()
    normal = request_token(http, provider)
    assert normal.status_code == 200 and normal.json()["expires_in"] == 43200


def test_delay_fault(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    provider.set_faults(delay=0.3)

    started = time.monotonic()
    assert request_token(http, provider).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        request_token(http, provider, timeout=0.1)

    provider.clear_faults()
    started = time.monotonic()
    assert request_token(http, provider).status_code == 200
    assert time.monotonic() - started < 0.25


@pytest.mark.parametrize("kind", KINDS)
def test_api_server_error_fault(kind: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    token = get_token(http, provider)
    provider.set_faults(api_server_error=True)

    broken = call_api(http, provider, token)

    assert broken.status_code == 500
    assert broken.headers["content-type"].startswith("text/html")
    assert "Internal Server Error" in broken.text
    assert request_token(http, provider).status_code == 200  # token side unaffected
    provider.clear_faults()
    assert call_api(http, provider, get_token(http, provider)).status_code == 200


def test_api_delay_fault(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    token = get_token(http, provider)
    provider.set_faults(api_delay=0.3)

    started = time.monotonic()
    assert call_api(http, provider, token).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert get_token(http, provider)  # token side unaffected
    assert time.monotonic() - started < 0.25


def test_set_faults_validates(make: Factory) -> None:
    provider = make("simplestore")
    provider.set_faults(delay=2, lifetime=0)
    assert (provider.faults.delay, provider.faults.lifetime) == (2.0, 0)

    for bad in ({"nonsense": True}, {"delay": "slow"}, {"delay": -1}, {"delay": True},
                {"server_error": 1}, {"lifetime": 1.5}, {"server_error": True, "oops": 1}):
        with pytest.raises(ValueError):
            provider.set_faults(**bad)
    assert provider.faults == Faults(delay=2.0, lifetime=0)  # failed updates change nothing


# --- API side, revocation and expiry ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_revoke_all(kind: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    token = get_token(http, provider)
    assert call_api(http, provider, token).status_code == 200

    provider.revoke_all()

    assert_token_refused(kind, call_api(http, provider, token), "revoked")
    assert call_api(http, provider, get_token(http, provider)).status_code == 200


def test_expiry_with_one_second_lifetime(make: Factory, http: httpx.Client) -> None:
    providers = {kind: make(kind, lifetime=1) for kind in KINDS}
    tokens = {kind: get_token(http, provider) for kind, provider in providers.items()}

    time.sleep(1.2)

    expected_class = {
        "simpledocs": ErrorClass.TOKEN_EXPIRED,
        "smartdocumentor": ErrorClass.INVALID_TOKEN,
        "simplifi": ErrorClass.INVALID_TOKEN,
        "simplestore": ErrorClass.INVALID_TOKEN,
        "dokstamp": ErrorClass.INVALID_TOKEN,
    }
    for kind, provider in providers.items():
        response = call_api(http, provider, tokens[kind])
        assert_token_refused(kind, response, "expired")
        assert classify_response(response.status_code, response.headers, response.content,
                                 "probe") is expected_class[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_missing_and_unknown_tokens(kind: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    for token in (None, "not-a-token"):
        response = call_api(http, provider, token)
        assert response.status_code == 401
        if kind == "simpledocs":
            assert response.json()["type"] == "invalid_token"
        elif kind in ("smartdocumentor", "simplestore"):
            assert response.content == b""
            assert response.headers["www-authenticate"].startswith("Bearer")
        elif kind == "simplifi":
            assert response.json() == {"error": "invalid_token"}
        else:
            assert response.json() == {"message": "Unauthenticated."}


def test_dokstamp_jwt_claims(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp", lifetime=900)
    body = request_token(http, provider).json()

    header = jwt_part(body["access_token"], 0)
    claims = jwt_part(body["access_token"], 1)

    assert header == {"typ": "JWT", "alg": "RS256"}
    assert body["expires_in"] == 900
    assert claims["exp"] == claims["iat"] + 900
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["sub"] == CLIENT_ID
    assert claims["iss"] == provider.base_url
    assert {"aud", "jti"} <= set(claims)
    assert len(body["access_token"].split(".")) == 3


def test_dokstamp_omit_expires_in(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp", omit_expires_in=True)
    body = request_token(http, provider).json()

    assert set(body) == {"token_type", "access_token"}
    claims = jwt_part(body["access_token"], 1)
    assert claims["exp"] - claims["iat"] == 43200


def test_lifetime_field_override(make: Factory, http: httpx.Client) -> None:
    provider = make("simplestore", lifetime_field="expires_in")
    body = request_token(http, provider).json()
    assert list(body) == ["access_token", "expires_in", "token_type"]
    assert body["expires_in"] == 3600


def test_dokstamp_api_header_rules(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    token = get_token(http, provider)
    url = provider.base_url + "/api/v1/documents"
    bearer = {"Authorization": f"Bearer {token}"}

    no_accept = http.get(url, headers={**bearer, "X-Tenant": "acme"})
    assert no_accept.status_code == 401
    assert no_accept.headers["content-type"].startswith("text/html")
    assert '<form method="POST" action="/login">' in no_accept.text

    no_tenant = http.get(url, headers={**bearer, "Accept": "application/json"})
    assert no_tenant.status_code == 400
    assert no_tenant.json() == {"error": "invalid_request",
                                "message": "X-Tenant header is required"}

    ok = http.get(url, headers={**bearer, "Accept": "application/json", "X-Tenant": "acme"})
    assert ok.status_code == 200
    assert ok.json()["meta"]["tenant"] == "acme"


def test_dokstamp_public_download(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    url = provider.base_url + "/files/7d1f0c52-3b5e-4c1e-9f7a-2f4b8f7e9a10/download"

    response = http.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-1.4")
    assert http.get(provider.base_url + "/files/not-a-uuid/download").status_code == 404


def test_simplifi_employee_by_id(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    bearer = {"Authorization": f"Bearer {get_token(http, provider)}"}

    one = http.get(provider.base_url + "/api/v1/employees/123", headers=bearer)
    missing = http.get(provider.base_url + "/api/v1/employees/999", headers=bearer)

    assert (one.status_code, one.json()["id"]) == (200, "123")
    assert missing.status_code == 404


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_path_is_json_404(kind: str, make: Factory, http: httpx.Client) -> None:
    provider = make(kind)
    response = http.get(provider.base_url + "/no/such/thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), dict)


def test_api_requests_are_recorded_redacted(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    token = get_token(http, provider)
    call_api(http, provider, token)

    [record] = provider.api_requests()

    assert (record.method, record.path, record.status) == ("GET", "/api/v1/documents", 200)
    assert record.headers["authorization"] == "<redacted>"
    assert record.headers["x-tenant"] == "acme"
    assert token not in repr(provider.api_requests())


def test_nothing_is_written_to_stdout_or_stderr(
    make: Factory, http: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    provider = make("simplifi")
    token = get_token(http, provider)
    call_api(http, provider, token)
    request_token(http, provider, secret="wrong")
    provider.stop()

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --- admin over HTTP ----------------------------------------------------------


def test_admin_faults_revoke_and_stats(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs")
    admin = provider.base_url + "/_sim"
    token = get_token(http, provider)

    flipped = http.post(admin + "/faults", json={"server_error": True, "delay": 0.05})
    assert flipped.status_code == 200
    assert flipped.json() == {**Faults().__dict__, "server_error": True, "delay": 0.05}
    assert provider.faults.server_error is True
    assert request_token(http, provider).status_code == 503

    for bad in ({"bogus": True}, {"server_error": "yes"}, [1, 2]):
        refused = http.post(admin + "/faults", json=bad)
        assert refused.status_code == 400
        assert "error" in refused.json()
    assert http.post(admin + "/faults", content=b"{not json").status_code == 400
    assert provider.faults.server_error is True

    cleared = http.delete(admin + "/faults")
    assert cleared.json() == Faults().__dict__
    assert http.get(admin + "/faults").json() == Faults().__dict__

    revoked = http.post(admin + "/revoke")
    assert (revoked.status_code, revoked.content) == (204, b"")
    assert call_api(http, provider, token).json()["type"] == "token_revoked"

    stats = http.get(admin + "/stats")
    assert stats.json() == {"token_requests": 2, "issued_tokens": 1, "api_requests": 1}
    assert len(provider.token_requests()) == 2  # admin calls are not recorded
    assert len(provider.api_requests()) == 1


# --- lifecycle ----------------------------------------------------------------


def test_stop_is_prompt_during_a_long_delay(make: Factory) -> None:
    provider = make("simplestore")
    provider.set_faults(delay=30)
    failures: list[Exception] = []

    def slow_request() -> None:
        with httpx.Client(timeout=10.0) as client:
            try:
                request_token(client, provider, timeout=10.0)
            except httpx.HTTPError as exc:
                failures.append(exc)

    caller = threading.Thread(target=slow_request)
    caller.start()
    with httpx.Client(timeout=2.0) as client:
        deadline = time.monotonic() + 2.0
        while client.get(provider.base_url + "/_sim/stats").json()["token_requests"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    started = time.monotonic()
    provider.stop()
    assert time.monotonic() - started < 1.0

    caller.join(timeout=2.0)
    assert not caller.is_alive()
    assert len(failures) == 1
    assert [r.status for r in provider.token_requests()] == [0]
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(provider.base_url + "/_sim/stats")


def test_restart_keeps_the_port(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    url = provider.base_url
    token = get_token(http, provider)

    provider.stop()
    provider.stop()  # idempotent
    provider.start()

    assert provider.base_url == url
    assert call_api(http, provider, token).status_code == 200
    with pytest.raises(RuntimeError):
        provider.start()


def test_unknown_kind_and_unstarted_url() -> None:
    with pytest.raises(ValueError):
        SimulatedProvider("acme")
    with pytest.raises(RuntimeError):
        _ = SimulatedProvider("simplifi").base_url


def test_simulation_runs_all_five_with_demo_clients(http: httpx.Client) -> None:
    with Simulation(lifetimes={"dokstamp": 60}, rate_limit_window=1.0) as sim:
        assert set(sim.providers) == set(KINDS)
        assert len({p.base_url for p in sim.providers.values()}) == 5
        for kind, provider in sim.providers.items():
            client_id, secret = DEMO_CLIENTS[kind]
            response = request_token(http, provider, client_id=client_id, secret=secret)
            assert response.status_code == 200, kind
            token = response.json()["access_token"]
            if kind == "dokstamp":
                assert response.json()["expires_in"] == 60
            assert call_api(http, provider, token).status_code == 200, kind

        simpledocs = sim.providers["simpledocs"]
        token = get_token(http, simpledocs, client_id=DEMO_CLIENTS["simpledocs"][0],
                          secret=DEMO_CLIENTS["simpledocs"][1])
        write = http.post(simpledocs.base_url + "/v1/documents", json={},
                          headers={"Authorization": f"Bearer {token}"})
        assert (write.status_code, write.json()["type"]) == (403, "insufficient_scope")
    with pytest.raises(httpx.ConnectError):
        http.get(sim.providers["simplifi"].base_url + "/_sim/stats")


def test_simulation_rejects_unknown_lifetime_kind() -> None:
    with pytest.raises(ValueError):
        Simulation(lifetimes={"acme": 5})
