"""The token request and the judging of its answer, through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest

from exporter.config import Provider, parse_config
from exporter.errors import ErrorClass
from exporter.tokens import (
    TokenError,
    basic_credentials,
    jwt_expiry,
    parse_retry_after,
    request_token,
    revoke_token,
)

NOW = 1_800_000_000.0
SECRET = "p@ss:w%rd+/="


def provider(preset: str = "generic", **extra: str) -> Provider:
    fields = {"name": "p", "preset": preset, "token_url": "https://auth.example/token",
              "client_id": "client id:1", "client_secret": f"'{SECRET}'", **extra}
    body = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    return parse_config("providers:\n  -" + body[3:], "t.yaml", {}).providers[0]


Handler = Callable[[httpx.Request], httpx.Response]


def fetch(p: Provider, handler: Handler) -> object:
    async def go() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            try:
                return await request_token(client, p, clock=lambda: NOW)
            except TokenError as exc:
                return exc

    return asyncio.run(go())


def ok(body: object, status: int = 200, **headers: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=raw, headers=headers)

    return handler


def test_client_secret_post_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "tok", "expires_in": 60})

    fetch(provider("simpledocs", scope="'read write'", token_params="{audience: api}"), handler)
    (req,) = seen
    assert req.method == "POST"
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in req.headers
    form = parse_qs(req.content.decode())
    assert form == {
        "grant_type": ["client_credentials"], "scope": ["read write"], "audience": ["api"],
        "client_id": ["client id:1"], "client_secret": [SECRET],
    }


def test_client_secret_basic_encodes_before_base64() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "tok", "expires_in": 60})

    fetch(provider("simplifi"), handler)
    (req,) = seen
    scheme, _, b64 = req.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(b64).decode().partition(":")
    # RFC 6749 §2.3.1: form-urlencoded first, so ":" in the id cannot split it.
    assert user == "client+id%3A1"
    assert unquote_plus(user) == "client id:1" and unquote_plus(password) == SECRET
    assert parse_qs(req.content.decode()) == {"grant_type": ["client_credentials"]}
    assert basic_credentials("a", "b") == "Basic " + base64.b64encode(b"a:b").decode()


def make_jwt(claims: dict[str, object]) -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("preset", "body", "lifetime", "source"),
    [
        ("generic", {"access_token": "t", "expires_in": 3600, "token_type": "Bearer"}, 3600,
         "expires_in"),
        ("generic", {"access_token": "t", "expires_in": "120", "token_type": "bearer"}, 120,
         "expires_in"),
        ("generic", {"access_token": "t", "expires_in": 90.5, "token_type": "BEARER"}, 90.5,
         "expires_in"),
        ("simplestore", {"access_token": "t", "expiries_in": 3600, "token_type": "Bearer"},
         3600, "expiries_in"),
        ("dokstamp", {"access_token": make_jwt({"exp": NOW + 500}), "token_type": "Bearer"},
         500, "jwt_exp"),
        ("dokstamp", {"access_token": "opaque"}, 43200, "default"),
        ("simplifi", {"__type": "SSJSON_Token_Access", "access_token": "t", "expires_in": 3600,
                      "refresh_token": "never-kept", "scope": "read", "token_type": "Bearer"},
         3600, "expires_in"),
        ("simpledocs", {"access_token": "t"}, 7200, "default"),
    ],
)
def test_lifetime_sources(preset: str, body: dict[str, object], lifetime: float,
                          source: str) -> None:
    token = fetch(provider(preset), ok(body))
    assert not isinstance(token, TokenError), token
    assert token.lifetime == lifetime  # type: ignore[attr-defined]
    assert token.lifetime_source == source  # type: ignore[attr-defined]
    assert token.issued_at == NOW  # type: ignore[attr-defined]
    assert "never-kept" not in repr(token)


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (ok({"error": "invalid_client"}, 400), ErrorClass.INVALID_CLIENT),
        (ok({"type": "invalid_client", "message": "x"}, 401), ErrorClass.INVALID_CLIENT),
        (ok(b"", 401), ErrorClass.INVALID_CLIENT),
        (ok({"error": "invalid_scope"}, 400), ErrorClass.INVALID_SCOPE),
        (ok({"error": "unauthorized_client"}, 400), ErrorClass.UNAUTHORIZED_CLIENT),
        (ok({"error": "invalid_grant"}, 400), ErrorClass.INVALID_GRANT),
        (ok({"error": "unsupported_grant_type"}, 400), ErrorClass.UNSUPPORTED_GRANT_TYPE),
        (ok(b"", 400), ErrorClass.INVALID_REQUEST),
        (ok({"error": "something_new"}, 400), ErrorClass.INVALID_REQUEST),
        (ok(b"<html>busy</html>", 503), ErrorClass.SERVER_ERROR),
        (ok(b"", 429, **{"Retry-After": "7"}), ErrorClass.RATE_LIMITED),
        (ok(b"", 302, Location="https://elsewhere.example/"), ErrorClass.UNEXPECTED_STATUS),
        (ok(b"", 404), ErrorClass.UNEXPECTED_STATUS),
        (ok(b"<html>login</html>"), ErrorClass.INVALID_RESPONSE),
        (ok(b""), ErrorClass.INVALID_RESPONSE),
        (ok(b'{"access_token": "t", "expires_in": 3'), ErrorClass.INVALID_RESPONSE),
        (ok([1, 2]), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": None, "expires_in": 60}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": 12345, "expires_in": 60}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "", "expires_in": 60}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "has space", "expires_in": 60}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t", "expires_in": 0}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t", "expires_in": -5}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t", "expires_in": 10**20}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t", "expires_in": "soon"}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t", "expires_in": True}), ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t", "expires_in": 60, "token_type": "mac"}),
         ErrorClass.INVALID_RESPONSE),
        (ok({"access_token": "t"}), ErrorClass.INVALID_RESPONSE),  # generic: no lifetime
        (ok({"error": "invalid_client"}), ErrorClass.INVALID_CLIENT),  # 200 with error body
        (ok(b"x" * (2 << 20)), ErrorClass.INVALID_RESPONSE),  # oversized
    ],
)
def test_failures_are_classified(handler: Handler, error: ErrorClass) -> None:
    result = fetch(provider("generic"), handler)
    assert isinstance(result, TokenError), result
    assert result.error is error
    assert SECRET not in str(result)


def test_retry_after_is_reported() -> None:
    result = fetch(provider(), ok(b"", 429, **{"Retry-After": "7"}))
    assert isinstance(result, TokenError) and result.retry_after == 7.0
    assert parse_retry_after("Thu, 01 Jan 2099 00:00:00 GMT", NOW) == 3600.0  # capped
    assert parse_retry_after("garbage", NOW) is None
    assert parse_retry_after("-3", NOW) == 0.0


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectTimeout("t"), ErrorClass.TIMEOUT),
        (httpx.ReadTimeout("t"), ErrorClass.TIMEOUT),
        (httpx.ConnectError("[Errno 111] Connection refused"), ErrorClass.CONNECTION_ERROR),
        (httpx.RemoteProtocolError("peer closed"), ErrorClass.CONNECTION_ERROR),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
         ErrorClass.TLS_ERROR),
        (RuntimeError(f"library bug mentioning {SECRET}"), ErrorClass.OTHER),
    ],
)
def test_transport_failures_are_classified(exc: Exception, error: ErrorClass) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    result = fetch(provider(), handler)
    assert isinstance(result, TokenError) and result.error is error
    assert SECRET not in str(result)
    assert result.__cause__ is None and result.__suppress_context__


def test_jwt_expiry() -> None:
    assert jwt_expiry(make_jwt({"exp": 123})) == 123.0
    assert jwt_expiry("not.a.jwt") is None
    assert jwt_expiry(make_jwt({"exp": "soon"})) is None
    assert jwt_expiry("opaque") is None


def scoped(claims: dict[str, object], **fields: object) -> Handler:
    return ok({"access_token": make_jwt({"exp": NOW + 600, **claims}), "expires_in": 600,
               "token_type": "Bearer", **fields})


@pytest.mark.parametrize(("handler", "granted"), [
    # The answer's scope first (RFC 6749 §5.1), even when the JWT says otherwise.
    (scoped({"scope": "read write"}, scope="read"), {"read"}),
    (scoped({"scope": "read write"}, scope=["read", "admin"]), {"read", "admin"}),
    # No scope in the answer: the JWT's scope (RFC 9068) or scp (Okta, Entra ID) claim.
    (scoped({"scope": "read write"}), {"read", "write"}),
    (scoped({"scp": ["read", "write"]}), {"read", "write"}),
    (scoped({"scp": "read"}), {"read"}),
    (scoped({"scope": ""}), set()),  # granted nothing
    # Unknown: nothing says.
    (scoped({}), None),
    (scoped({"scp": 7}), None),
    (scoped({"scope": ["read", 7]}), None),
    (ok({"access_token": "opaque-token", "expires_in": 600}), None),
    (ok({"access_token": "opaque-token", "expires_in": 600, "scope": None}), None),
])
def test_granted_scopes(handler: Handler, granted: set[str] | None) -> None:
    token = fetch(provider("generic", scope="'read write'"), handler)
    assert not isinstance(token, TokenError), token
    assert token.granted_scopes == (None if granted is None else frozenset(granted))  # type: ignore[attr-defined]


class Chunks(httpx.AsyncByteStream):
    def __init__(self, data: bytes, size: int = 8192) -> None:
        self._data, self._size = data, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), self._size):
            yield self._data[i:i + self._size]


def streamed(body: bytes, status: int = 200,
             headers: Mapping[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=Chunks(body))

    return handler


# 64 MiB of zeros as gzip: 64 KiB on the wire.
BOMB = gzip.compress(bytes(64 << 20), compresslevel=9)


@pytest.mark.parametrize("status", [200, 401, 500])
def test_a_decompression_bomb_is_invalid_response(status: int) -> None:
    result = fetch(provider(), streamed(BOMB, status, {"Content-Encoding": "gzip"}))
    assert isinstance(result, TokenError), result
    assert result.error is ErrorClass.INVALID_RESPONSE
    assert result.detail == "decoded body larger than 1048576 bytes"
    assert result.status == status


def test_a_compressed_token_answer_is_read() -> None:
    body = json.dumps({"access_token": "t", "expires_in": 60}).encode()
    token = fetch(provider(), streamed(gzip.compress(body), headers={"Content-Encoding": "gzip"}))
    assert not isinstance(token, TokenError), token


def test_revocation_reads_its_answer_under_the_cap() -> None:
    p = provider("simpledocs", revocation_url="https://auth.example/revoke",
                 revoke_on_shutdown="true")
    token = fetch(p, ok({"access_token": "t-123", "expires_in": 60}))
    assert not isinstance(token, TokenError)

    async def revoke(handler: Handler) -> int | None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await revoke_token(client, p, token)  # type: ignore[arg-type]

    bomb = streamed(BOMB, 200, {"Content-Encoding": "gzip"})
    assert asyncio.run(revoke(bomb)) == 200  # refused unread past the cap; the status stands
    assert asyncio.run(revoke(ok(b"", 503))) == 503


def test_read_capped_is_still_importable_from_tokens() -> None:
    from exporter import http, tokens

    assert tokens.read_capped is http.read_capped
