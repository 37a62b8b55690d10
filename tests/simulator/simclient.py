"""How the tests talk to the provider simulator, and what a vendor's test case states.

The client side (how each vendor's preset authenticates, which form fields
it sends, which API call it probes) is written here independently of the
simulator's own vendor classes, so a vendor that drifts from its seed fails
a test instead of teaching the test its mistake. Each ``test_<kind>.py``
states its vendor's documented answers as a ``VendorCase``;
``test_contract.py`` runs the same checks over all of them.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from exporter.errors import ErrorClass
from exporter.simulator import SimulatedProvider

CLIENT_ID = "test-client"
SECRET = "s3cr3t-Vq7pZk2mXw9rLt4b"  # distinctive, so a leak would be found

#: The client authentication method each vendor's preset uses.
PRESET_AUTH = {
    "simpledocs": "client_secret_post",
    "smartdocumentor": "client_secret_post",
    "simplifi": "client_secret_basic",
    "simplestore": "client_secret_post",
    "dokstamp": "client_secret_post",
    "oidc": "client_secret_basic",
}
#: Form fields a vendor requires beyond grant_type and the credentials.
PRESET_FORM: dict[str, dict[str, str]] = {"smartdocumentor": {"scope": "WebAPI"}}
#: One authenticated API call per vendor: path and the headers it needs.
API_CALL: dict[str, tuple[str, dict[str, str]]] = {
    "simpledocs": ("/v1/documents", {}),
    "smartdocumentor": ("/api/v1/templates", {}),
    "simplifi": ("/api/v1/employees", {}),
    "simplestore": ("/api/v1/products", {}),
    "dokstamp": ("/api/v1/documents", {"Accept": "application/json", "X-Tenant": "acme"}),
    "oidc": ("/api/whoami", {}),
}

Factory = Callable[..., SimulatedProvider]


@dataclass(frozen=True)
class VendorCase:
    """A vendor's documented answers, for the contract test."""

    kind: str
    #: The documented token answer, given the answer received (for its random parts).
    token_body: Callable[[dict[str, Any]], dict[str, Any]]
    #: Status and body of a refused client authentication.
    invalid_client: tuple[int, dict[str, str]]
    #: Asserts the documented refusal of a token; reason: missing|unknown|expired|revoked.
    assert_refused: Callable[[httpx.Response, str], None]
    #: The body of a 429 from the token endpoint, or a check of it.
    rate_limited: Callable[[Any], bool]
    #: How the exporter classes a probe refused for an expired token.
    expired_class: ErrorClass
    #: The refusal also says why, in an ``error_description`` (RFC 6749 §5.2).
    described: bool = False

    def __str__(self) -> str:
        return self.kind


def without_description(case: VendorCase, body: dict[str, Any]) -> dict[str, Any]:
    """An error body less the ``error_description`` a describing vendor must add."""
    if not case.described:
        return body
    assert isinstance(body.pop("error_description", None), str), body
    return body


def basic(client_id: str, secret: str) -> str:
    """An Authorization header value encoded as RFC 6749 §2.3.1 says."""
    raw = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def preset_fields(kind: str, auth_method: str | None = None) -> dict[str, str]:
    """The form a vendor's preset posts, in order, credentials included for _post."""
    fields = {"grant_type": "client_credentials", **PRESET_FORM.get(kind, {})}
    if (auth_method or PRESET_AUTH[kind]) == "client_secret_post":
        fields.update(client_id=CLIENT_ID, client_secret=SECRET)
    return fields


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
