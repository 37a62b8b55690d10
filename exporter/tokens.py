"""The token request: build it, send it, and judge the answer.

``request_token`` performs one client-credentials grant (RFC 6749 §4.4) and
returns a ``Token`` or raises ``TokenError`` carrying exactly one
``ErrorClass``. It never retries and never sleeps: scheduling, backoff and rate
limiting belong to the caller.

The access token is held as a ``SecretStr``; of the rest of the response only
the lifetime and the granted scopes are kept (Simplifi's ``refresh_token`` in
particular is dropped on the floor). Answers are read with
``exporter.http.read_body``, capped as sent and as decoded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from pydantic import SecretStr

from exporter import clientauth
from exporter.clientauth import basic_credentials
from exporter.config import Provider
from exporter.errors import (
    ErrorClass,
    InvalidResponse,
    classify_exception,
    classify_response,
    from_body,
)
from exporter.http import json_object, read_body, read_capped

__all__ = [  # read_capped moved to exporter.http; still importable from here
    "Token", "TokenError", "basic_credentials", "build_request", "client_auth", "granted_scopes",
    "jwt_claims", "jwt_expiry", "parse_retry_after", "parse_token_response", "read_capped",
    "request_token", "revoke_token",
]

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


def assertion_audience(provider: Provider, token_endpoint: str) -> str:
    """The ``aud`` of the provider's client assertions (``assertion_audience``)."""
    choice = provider.assertion_audience
    if choice == "token_endpoint":
        return token_endpoint
    if choice == "issuer":
        return provider.issuer or token_endpoint
    return choice


def client_auth(
    provider: Provider, token_endpoint: str | None = None, now: float | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Form fields and headers that authenticate the client, by its auth method.

    ``token_endpoint`` is where the token request goes (an assertion's default
    ``aud``); ``now`` the assertion's ``iat``. See ``exporter.clientauth``.
    """
    endpoint = token_endpoint or provider.token_url or provider.issuer or ""
    return clientauth.client_auth(
        provider.credential, audience=assertion_audience(provider, endpoint),
        now=time.time() if now is None else now)


def build_request(
    provider: Provider, token_endpoint: str | None = None, now: float | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers of a token request for this provider.

    A client assertion is minted here, so each call has a fresh ``jti``.
    """
    form: dict[str, str] = {"grant_type": "client_credentials"}
    if provider.scope:
        form["scope"] = provider.scope
    form.update(provider.token_params)
    auth_form, auth_headers = client_auth(provider, token_endpoint, now)
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


def jwt_claims(token: str) -> dict[str, object] | None:
    """The claims of a JWT, read without verifying it: we only schedule and report by them."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it."""
    exp = (jwt_claims(token) or {}).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


def _scope_set(value: object) -> frozenset[str] | None:
    """A scope as a space-separated string (RFC 6749 §3.3) or a list of strings; else None."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return frozenset(s for item in value for s in item.split())
    return None


def granted_scopes(doc: dict[str, object], access_token: str) -> frozenset[str] | None:
    """The scopes the server says it granted; None when it does not say.

    The answer's ``scope`` first (RFC 6749 §5.1). Many servers leave it out
    when they grant what was asked; a JWT access token then often says it in a
    ``scope`` claim (RFC 9068, a space-separated string) or an ``scp`` claim
    (Okta, Entra ID: a string or a list).
    """
    if "scope" in doc:
        return _scope_set(doc["scope"])
    claims = jwt_claims(access_token)
    if claims is None:
        return None
    for claim in ("scope", "scp"):
        if claim in claims:
            return _scope_set(claims[claim])
    return None


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
        doc = json_object(body, "response")
    except InvalidResponse as exc:
        raise TokenError(ErrorClass.INVALID_RESPONSE, str(exc)) from None
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

    return Token(
        access_token=SecretStr(access_token),
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
        granted_scopes=granted_scopes(doc, access_token),
        lifetime_source=source,
    )


async def request_token(
    client: httpx.AsyncClient,
    provider: Provider,
    clock: Callable[[], float] = time.time,
    *,
    url: str | None = None,
    timeout: float | None = None,
) -> Token:
    """Obtain one token. Raises TokenError, and nothing else, on failure.

    ``url``: the token endpoint, when it is not the configured ``token_url``
    (found by discovery); ``timeout``: less than the provider's, when part of
    it has been spent already (on discovery).
    """
    target = url or provider.token_url
    limit = provider.timeout if timeout is None else timeout
    issued_at = clock()
    form, headers = build_request(provider, target, issued_at)
    try:
        async with asyncio.timeout(limit):
            async with client.stream(
                "POST",
                target,
                data=form,
                headers=headers,
                timeout=limit,
                follow_redirects=False,
            ) as response:
                body = await read_body(response, provider.max_response_bytes)
    except InvalidResponse as exc:
        raise TokenError(ErrorClass.INVALID_RESPONSE, str(exc), status=exc.status) from None
    except Exception as exc:
        error = classify_exception(exc)
        raise TokenError(error, f"{type(exc).__name__} talking to {provider.token_host}") from None
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
            async with client.stream(
                "POST", provider.revocation_url, data=form, headers=headers,
                timeout=provider.timeout, follow_redirects=False,
            ) as response:
                # The answer says nothing we use, but is read (bounded) so the
                # connection ends cleanly; an oversized one still has its status.
                with contextlib.suppress(InvalidResponse):
                    await read_body(response, provider.max_response_bytes)
    except Exception:
        return None
    return response.status_code
