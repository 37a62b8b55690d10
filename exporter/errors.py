"""The fixed set of error classes, and how a failure is put into one.

Every failed token request or probe ends up as exactly one ``ErrorClass``.
These are the only values the ``error`` label can take, so nothing a server
sends can create a new series.

Classification order (SPEC): the body's ``error`` or ``type`` field, then the
``WWW-Authenticate: Bearer error="..."`` header (RFC 6750 §3), then the status
code, then (for transport failures) the exception::

    failure
    ├── HTTP answer
    │   ├── body {"error": ...} / {"type": ...}  -> known class
    │   ├── WWW-Authenticate: Bearer error=...  -> known class
    │   └── status: 429 rate_limited, 5xx server_error, 401/403/400 by context,
    │       anything else unexpected_status
    └── no answer
        ├── timeout           (httpx.TimeoutException, asyncio.TimeoutError)
        ├── tls_error         (ssl.SSLError anywhere in the cause chain)
        ├── connection_error  (other httpx.TransportError)
        └── other
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping
from enum import StrEnum
from typing import Literal

import httpx


class ErrorClass(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_SCOPE = "invalid_scope"
    INVALID_TOKEN = "invalid_token"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    UNEXPECTED_STATUS = "unexpected_status"
    INVALID_RESPONSE = "invalid_response"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    NO_TOKEN = "no_token"
    OTHER = "other"


ALL_ERROR_CLASSES: tuple[ErrorClass, ...] = tuple(ErrorClass)

# Classes that say the token itself is no good: a fresh token may fix them.
TOKEN_REJECTED: frozenset[ErrorClass] = frozenset(
    {ErrorClass.INVALID_TOKEN, ErrorClass.TOKEN_EXPIRED, ErrorClass.TOKEN_REVOKED}
)

# Spellings servers use for the same thing, mapped onto our fixed set.
_ALIASES: Mapping[str, ErrorClass] = {
    "expired_token": ErrorClass.TOKEN_EXPIRED,
    "revoked_token": ErrorClass.TOKEN_REVOKED,
    "temporarily_unavailable": ErrorClass.SERVER_ERROR,
    "server_error": ErrorClass.SERVER_ERROR,
    "rate_limited": ErrorClass.RATE_LIMITED,
    "too_many_requests": ErrorClass.RATE_LIMITED,
    "slow_down": ErrorClass.RATE_LIMITED,
}

# Classes a server may name in a body or header. Our own transport and
# bookkeeping classes (timeout, no_token, ...) are never taken from a server.
_SERVER_NAMEABLE: frozenset[ErrorClass] = frozenset(ALL_ERROR_CLASSES) - {
    ErrorClass.TIMEOUT,
    ErrorClass.CONNECTION_ERROR,
    ErrorClass.TLS_ERROR,
    ErrorClass.NO_TOKEN,
    ErrorClass.OTHER,
    ErrorClass.INVALID_RESPONSE,
    ErrorClass.UNEXPECTED_STATUS,
}

Context = Literal["token", "probe"]


def from_server_code(code: object) -> ErrorClass | None:
    """Map an error code a server sent onto a class, or None if unknown."""
    if not isinstance(code, str):
        return None
    code = code.strip().lower()
    if code in _ALIASES:
        return _ALIASES[code]
    try:
        cls = ErrorClass(code)
    except ValueError:
        return None
    return cls if cls in _SERVER_NAMEABLE else None


def from_body(body: bytes) -> ErrorClass | None:
    """The class named by a JSON body's ``error`` or ``type`` field, if any."""
    if not body or body.lstrip()[:1] != b"{":
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    for key in ("error", "type"):
        cls = from_server_code(doc.get(key))
        if cls is not None:
            return cls
    return None


_BEARER_ERROR = re.compile(r'\berror\s*=\s*"?([A-Za-z0-9_\-]+)"?', re.IGNORECASE)


def from_www_authenticate(value: str | None) -> ErrorClass | None:
    """The class named by ``WWW-Authenticate: Bearer error="..."`` (RFC 6750 §3)."""
    if not value or not value.lstrip().lower().startswith("bearer"):
        return None
    match = _BEARER_ERROR.search(value)
    return from_server_code(match.group(1)) if match else None


def from_status(status: int, context: Context) -> ErrorClass:
    """The class a bare status code implies."""
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if 500 <= status <= 599:
        return ErrorClass.SERVER_ERROR
    if context == "token":
        # RFC 6749 §5.2: a failed client authentication is 401 (or 400).
        if status == 401:
            return ErrorClass.INVALID_CLIENT
        if status == 400:
            return ErrorClass.INVALID_REQUEST
    elif status == 401:
        # RFC 6750 §3.1: a 401 to a bearer request means the token was refused.
        return ErrorClass.INVALID_TOKEN
    return ErrorClass.UNEXPECTED_STATUS


def classify_response(
    status: int, headers: httpx.Headers | Mapping[str, str], body: bytes, context: Context
) -> ErrorClass:
    """Classify a failed HTTP answer: body, then header, then status."""
    return (
        from_body(body)
        or from_www_authenticate(headers.get("www-authenticate"))
        or from_status(status, context)
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 16:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def classify_exception(exc: BaseException) -> ErrorClass:
    """Classify a failure that produced no HTTP answer."""
    chain = _chain(exc)
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return ErrorClass.TLS_ERROR
    if any(isinstance(e, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError)
           for e in chain):
        return ErrorClass.TIMEOUT
    if any(isinstance(e, httpx.TransportError | ConnectionError) for e in chain):
        # httpx reports certificate failures as ConnectError with a message only.
        if any("certificate" in str(e).lower() or "ssl" in str(e).lower() for e in chain):
            return ErrorClass.TLS_ERROR
        return ErrorClass.CONNECTION_ERROR
    return ErrorClass.OTHER
