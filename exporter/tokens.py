"""The token request: build it, send it, and judge the answer.

``request_token`` performs one client-credentials grant (RFC 6749 §4.4) and
returns a ``Token`` or raises ``TokenError`` carrying exactly one
``ErrorClass``. It never retries and never sleeps: scheduling, backoff and rate
limiting belong to the caller.

The access token is held as a ``SecretStr`` and nothing else from the response
is kept (Simplifi's ``refresh_token`` in particular is dropped on the floor).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote_plus

import httpx
from pydantic import SecretStr

from exporter.config import Provider
from exporter.errors import ErrorClass, classify_exception, classify_response, from_body

#: Longest lifetime we accept; beyond it the number is not a lifetime we can schedule by.
MAX_LIFETIME = 10 * 366 * 86400.0
#: How much of an unlimited Retry-After we honour.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Token:
    access_token: SecretStr
    issued_at: float
    expires_at: float
    #: Scopes the server said it granted, or None when it did not say (RFC 6749
    #: §5.1: then the granted scope equals the requested one).
    granted_scopes: frozenset[str] | None
    lifetime_source: str

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at


class TokenError(Exception):
    """A failed token request. ``str()`` is safe to log: it holds no secret."""

    def __init__(
        self,
        error: ErrorClass,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The Authorization header value for client_secret_basic.

    RFC 6749 §2.3.1: both parts are form-urlencoded *before* Base64, so a
    secret holding ``:`` or ``%`` survives. Many clients get this wrong.
    """
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def client_auth(provider: Provider) -> tuple[dict[str, str], dict[str, str]]:
    """Form fields and headers that authenticate the client, by its auth method."""
    secret = provider.client_secret.get_secret_value()
    if provider.auth_method == "client_secret_basic":
        return {}, {"Authorization": basic_credentials(provider.client_id, secret)}
    return {"client_id": provider.client_id, "client_secret": secret}, {}


def build_request(provider: Provider) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers of a token request for this provider."""
    form: dict[str, str] = {"grant_type": "client_credentials"}
    if provider.scope:
        form["scope"] = provider.scope
    form.update(provider.token_params)
    auth_form, auth_headers = client_auth(provider)
    form.update(auth_form)
    return form, {"Accept": "application/json", **auth_headers}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """Read at most ``limit`` bytes of a streamed body; None if it is longer."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (we only schedule by it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


def _number(value: object) -> float | None:
    """expires_in as an int, a float or a numeric string; None if it is none of those."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _valid_token_string(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 65536
        and all(33 <= ord(c) <= 126 for c in value)
    )


def parse_token_response(provider: Provider, body: bytes, issued_at: float) -> Token:
    """Judge a 2xx token response; raise TokenError(invalid_response) if unusable."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenError(ErrorClass.INVALID_RESPONSE, "response is not JSON") from None
    if not isinstance(doc, dict):
        raise TokenError(ErrorClass.INVALID_RESPONSE, "response is not a JSON object")
    if "access_token" not in doc:
        # Some servers answer 200 with an error document.
        named = from_body(body)
        if named is not None:
            raise TokenError(named, "200 response carries an error")
        raise TokenError(ErrorClass.INVALID_RESPONSE, "response has no access_token")
    access_token = doc["access_token"]
    if not _valid_token_string(access_token):
        raise TokenError(ErrorClass.INVALID_RESPONSE, "access_token is not a usable string")
    assert isinstance(access_token, str)
    token_type = doc.get("token_type")
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() != "bearer"
    ):
        raise TokenError(ErrorClass.INVALID_RESPONSE, "token_type is not Bearer")

    lifetime: float | None = None
    source = ""
    for field in provider.preset.lifetime_fields:
        if field in doc:
            lifetime = _number(doc[field])
            if lifetime is None:
                raise TokenError(ErrorClass.INVALID_RESPONSE, f"{field} is not a number")
            source = field
            break
    if lifetime is None and provider.preset.jwt_access_token:
        exp = jwt_expiry(access_token)
        if exp is not None:
            lifetime, source = exp - issued_at, "jwt_exp"
    if lifetime is None and provider.default_lifetime is not None:
        lifetime, source = provider.default_lifetime, "default"
    if lifetime is None:
        raise TokenError(ErrorClass.INVALID_RESPONSE, "response states no lifetime")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise TokenError(ErrorClass.INVALID_RESPONSE, f"unusable lifetime from {source}")

    scope = doc.get("scope")
    granted = frozenset(scope.split()) if isinstance(scope, str) else None
    return Token(
        access_token=SecretStr(access_token),
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
        granted_scopes=granted,
        lifetime_source=source,
    )


async def request_token(
    client: httpx.AsyncClient,
    provider: Provider,
    clock: Callable[[], float] = time.time,
) -> Token:
    """Obtain one token. Raises TokenError, and nothing else, on failure."""
    form, headers = build_request(provider)
    issued_at = clock()
    try:
        async with asyncio.timeout(provider.timeout):
            async with client.stream(
                "POST",
                provider.token_url,
                data=form,
                headers=headers,
                timeout=provider.timeout,
                follow_redirects=False,
            ) as response:
                body = await read_capped(response, provider.max_response_bytes)
    except TokenError:
        raise
    except Exception as exc:
        error = classify_exception(exc)
        raise TokenError(error, f"{type(exc).__name__} talking to {provider.token_host}") from None
    if body is None:
        raise TokenError(
            ErrorClass.INVALID_RESPONSE,
            f"response larger than {provider.max_response_bytes} bytes",
            status=response.status_code,
        )
    status = response.status_code
    if not 200 <= status <= 299:
        error = classify_response(status, response.headers, body, "token")
        retry_after = parse_retry_after(response.headers.get("retry-after"), clock())
        raise TokenError(error, f"HTTP {status}", status=status, retry_after=retry_after)
    try:
        return parse_token_response(provider, body, issued_at)
    except TokenError as exc:
        exc.status = status
        raise


async def revoke_token(client: httpx.AsyncClient, provider: Provider, token: Token) -> int | None:
    """Revoke ``token`` at the provider (RFC 7009); return the HTTP status, None if unsent.

    RFC 7009 §2.2: 200 means revoked (or already invalid). Failures are the
    caller's to log; nothing here raises.
    """
    if provider.revocation_url is None:
        return None
    auth_form, headers = client_auth(provider)
    form = {
        "token": token.access_token.get_secret_value(),
        "token_type_hint": "access_token",
        **auth_form,
    }
    try:
        async with asyncio.timeout(provider.timeout):
            response = await client.post(
                provider.revocation_url, data=form, headers=headers,
                timeout=provider.timeout, follow_redirects=False,
            )
    except Exception:
        return None
    return response.status_code
