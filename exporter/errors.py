"""The fixed set of error classes, and the table that puts a failure into one.

Every failed token request or probe ends up as exactly one ``ErrorClass``.
These are the only values the ``error`` label can take, so nothing a server
sends can create a new series.

A failed HTTP answer is classified by ``RULES``, one row per rule, each built
from a real server's answer (``docs/classification.md`` shows the table with
the server behind each row). Evidence is consulted in a fixed order, and the
first row that matches wins:

1. a code in the body (``error``, ``type``, ``error.code``, ``error.status``,
   ``code``, ``errors[].code`` and a few more, listed in ``_body_fields``):
   machine-readable, so it is believed first;
2. the ``error`` parameter of a ``Bearer`` (or ``DPoP``) ``WWW-Authenticate``
   challenge (RFC 6750 §3);
3. the words of the body (``detail``, ``message``, ``error_description``...),
   only on a 401 or 403: human text, so it comes after the header's code;
4. the status code, where rows may also look at the content type (an HTML
   page is a web server's or gateway's page, not the API's own answer);
5. anything else is ``unexpected_status``.

Failures without an answer are classified from the exception::

    failure
    ├── HTTP answer: RULES (above)
    ├── answer unusable: InvalidResponse         -> invalid_response
    └── no answer
        ├── tls_error         (ssl.SSLError anywhere in the cause chain)
        ├── timeout           (httpx.TimeoutException, asyncio.TimeoutError)
        ├── connection_error  (other httpx.TransportError)
        └── other
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

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

# Classes a server may name in a body or header. Our own transport and
# bookkeeping classes (timeout, no_token, ...) are never taken from a server.
_SERVER_NAMEABLE: tuple[ErrorClass, ...] = tuple(c for c in ErrorClass if c not in {
    ErrorClass.TIMEOUT,
    ErrorClass.CONNECTION_ERROR,
    ErrorClass.TLS_ERROR,
    ErrorClass.NO_TOKEN,
    ErrorClass.OTHER,
    ErrorClass.INVALID_RESPONSE,
    ErrorClass.UNEXPECTED_STATUS,
})

#: Where the request went: the token endpoint, or an API the token is used at.
Context = Literal["token", "probe"]


class InvalidResponse(Exception):
    """An answer came but cannot be used: class ``invalid_response``. ``str()`` is safe to log."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


# --------------------------------------------------------------------------- evidence


class Evidence(StrEnum):
    """Where a rule looks, in the order the evidence is consulted."""

    BODY_CODE = "body code"
    CHALLENGE = "WWW-Authenticate"
    BODY_TEXT = "body text"
    STATUS = "status"


@dataclass(frozen=True)
class Answer:
    """What one failed HTTP answer offers as evidence, read once."""

    status: int
    context: Context
    #: A bearer token was sent (a probe with ``auth: bearer``).
    bearer: bool
    #: Codes from the body, normalised (``_code``), in the order of the fields read.
    codes: tuple[str, ...]
    #: Human text from the body, lower case.
    texts: tuple[str, ...]
    #: The ``error`` parameter of a Bearer/DPoP challenge, normalised.
    challenge: str | None
    #: The body is an HTML page (by its content type, or by its first byte when untyped).
    html: bool


def _code(value: str) -> str:
    """A code as compared: lower case, letters and digits only (Invalid-Token = invalid_token)."""
    return re.sub(r"[^a-z0-9]", "", value.lower())


#: Longer strings are sentences, not codes; and a body's text is read only this far.
_MAX_CODE = 64
_MAX_TEXT = 1000


def _lower_keys(value: object) -> dict[str, Any]:
    # Field names are matched case-insensitively: AWS answers {"Message": ...}.
    if not isinstance(value, dict):
        return {}
    lowered: dict[str, Any] = {}
    for key, item in value.items():
        lowered.setdefault(str(key).lower(), item)
    return lowered


def _body_fields(body: bytes) -> tuple[list[str], list[str]]:
    """``(codes, texts)`` read from a JSON object body, in the order of evidence."""
    if not body or body.lstrip()[:1] != b"{":
        return [], []
    try:
        doc = _lower_keys(json.loads(body))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return [], []
    codes: list[str] = []
    texts: list[str] = []

    def code(value: object) -> None:
        if isinstance(value, str) and len(value) <= _MAX_CODE and _code(value):
            codes.append(_code(value))

    def text(value: object) -> None:
        if isinstance(value, str) and value.strip():
            texts.append(" ".join(value[:_MAX_TEXT].lower().split()))

    nested = _lower_keys(doc.get("error"))
    errors = doc.get("errors")
    items = [_lower_keys(i) for i in errors[:8]] if isinstance(errors, list) else []
    nested_errors = nested.get("errors")
    reasons = ([_lower_keys(i).get("reason") for i in nested_errors[:8]]
               if isinstance(nested_errors, list) else [])
    # RFC 6749 §5.2 and RFC 6750 `error`; SimpleDocs `type`; Microsoft Graph
    # `error.code`; Google `error.errors[].reason`, then `error.status`; DRF
    # Simple JWT `code`; `errors[]` lists; Dropbox `error[".tag"]`.
    for value in (doc.get("error"), doc.get("type"), nested.get("code"), *reasons,
                  nested.get("status"), doc.get("code")):
        code(value)
    for item in items:
        code(item.get("code"))
        code(item.get("error"))
    code(nested.get(".tag"))
    for key in ("error", "error_description", "detail", "message", "title", "error_summary"):
        text(doc.get(key))
    text(nested.get("message"))
    if isinstance(errors, str):
        text(errors)
    for item in items:
        for key in ("message", "detail", "title"):
            text(item.get(key))
    return codes, texts


_CHALLENGE_SCHEME = re.compile(r"(?:^|[\s,])(?:bearer|dpop)(?:\s|,|$)", re.IGNORECASE)
# `error=` exactly: `error_description=` and `error_uri=` do not match.
_CHALLENGE_ERROR = re.compile(r'(?<![\w-])error\s*=\s*"?([A-Za-z0-9_\-]+)', re.IGNORECASE)


def _header_values(headers: httpx.Headers | Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, httpx.Headers):
        return headers.get_list(name)
    return [v for k, v in headers.items() if k.lower() == name]


def _challenge(headers: httpx.Headers | Mapping[str, str]) -> str | None:
    """The ``error`` of a Bearer or DPoP challenge in ``WWW-Authenticate``, normalised."""
    for value in _header_values(headers, "www-authenticate"):
        scheme = _CHALLENGE_SCHEME.search(value)
        if scheme is None:
            continue
        error = _CHALLENGE_ERROR.search(value, scheme.start())
        if error is not None:
            return _code(error.group(1))
    return None


_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def _is_html(headers: httpx.Headers | Mapping[str, str], body: bytes) -> bool:
    content_types = _header_values(headers, "content-type")
    if content_types:
        return content_types[0].split(";", 1)[0].strip().lower() in _HTML_TYPES
    return body.lstrip()[:1] == b"<"


def read_answer(status: int, headers: httpx.Headers | Mapping[str, str], body: bytes,
                context: Context, *, bearer: bool = True) -> Answer:
    """The evidence in one answer, for ``RULES``."""
    codes, texts = _body_fields(body)
    return Answer(status=status, context=context, bearer=bearer, codes=tuple(codes),
                  texts=tuple(texts), challenge=_challenge(headers),
                  html=_is_html(headers, body))


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Rule:
    """One row of the classification table (``docs/classification.md`` has the same rows)."""

    #: The row's name in ``docs/classification.md``.
    id: str
    looks_at: Evidence
    cls: ErrorClass
    #: Codes this row matches (``BODY_CODE``, ``CHALLENGE``), normalised.
    codes: frozenset[str] = frozenset()
    #: Words this row matches (``BODY_TEXT``).
    words: re.Pattern[str] | None = None
    # Conditions; None: any.
    context: Context | None = None
    statuses: frozenset[int] | None = None
    bearer: bool | None = None
    html: bool | None = None

    def applies(self, answer: Answer) -> bool:
        return ((self.context is None or self.context == answer.context)
                and (self.statuses is None or answer.status in self.statuses)
                and (self.bearer is None or self.bearer == answer.bearer)
                and (self.html is None or self.html == answer.html))

    def matches(self, value: str) -> bool:
        if self.words is not None:
            return self.words.search(value) is not None
        return value in self.codes


def _codes(*values: str) -> frozenset[str]:
    return frozenset(_code(v) for v in values)


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_AUTH_FAILED = frozenset({401, 403})

RULES: tuple[Rule, ...] = (
    # 1. Codes in the body. Rows that depend on context or status come before
    #    the plain class names, so that they can overrule them.
    Rule("keycloak-unauthorized-client-401", Evidence.BODY_CODE, ErrorClass.INVALID_CLIENT,
         _codes("unauthorized_client"), context="token", statuses=frozenset({401})),
    Rule("auth0-access-denied-401", Evidence.BODY_CODE, ErrorClass.INVALID_CLIENT,
         _codes("access_denied"), context="token", statuses=frozenset({401})),
    Rule("auth0-access-denied", Evidence.BODY_CODE, ErrorClass.UNAUTHORIZED_CLIENT,
         _codes("access_denied"), context="token"),
    Rule("spring-access-denied-403", Evidence.BODY_CODE, ErrorClass.INSUFFICIENT_SCOPE,
         _codes("access_denied"), context="probe", statuses=frozenset({403})),
    *(Rule("class-name", Evidence.BODY_CODE, cls, _codes(cls.value))
      for cls in _SERVER_NAMEABLE),
    Rule("glewlwyd-scope-invalid", Evidence.BODY_CODE, ErrorClass.INVALID_SCOPE,
         _codes("scope_invalid")),
    Rule("glewlwyd-authorization-type-invalid", Evidence.BODY_CODE,
         ErrorClass.UNAUTHORIZED_CLIENT, _codes("authorization_type_invalid"), context="token"),
    Rule("client-credential-spellings", Evidence.BODY_CODE, ErrorClass.INVALID_CLIENT,
         _codes("incorrect_client_credentials", "bad_client_credentials",
                "invalid_client_credentials", "invalid_credentials", "unauthorized",
                "authentication_failed", "not_authenticated"), context="token"),
    Rule("token-refused-spellings", Evidence.BODY_CODE, ErrorClass.INVALID_TOKEN,
         _codes("unauthorized", "unauthenticated", "not_authenticated", "authentication_failed",
                "invalid_credentials", "token_not_valid", "InvalidAuthenticationToken",
                "authError", "invalid_access_token"),
         context="probe"),
    Rule("permission-spellings", Evidence.BODY_CODE, ErrorClass.INSUFFICIENT_SCOPE,
         _codes("permission_denied", "Authorization_RequestDenied", "insufficientPermissions",
                "insufficient_permissions"),
         context="probe"),
    Rule("expired-spellings", Evidence.BODY_CODE, ErrorClass.TOKEN_EXPIRED,
         _codes("expired_token", "expired_access_token", "access_token_expired")),
    Rule("revoked-spellings", Evidence.BODY_CODE, ErrorClass.TOKEN_REVOKED,
         _codes("revoked_token", "revoked", "inactive_token")),
    Rule("unavailable-spellings", Evidence.BODY_CODE, ErrorClass.SERVER_ERROR,
         _codes("temporarily_unavailable")),
    Rule("rate-limit-spellings", Evidence.BODY_CODE, ErrorClass.RATE_LIMITED,
         _codes("too_many_requests", "rate_limit_exceeded", "rateLimitExceeded",
                "userRateLimitExceeded", "slow_down", "throttled")),
    # 2. The Bearer/DPoP challenge's `error` (RFC 6750 §3; oauthlib puts the
    #    token endpoint's error there too).
    *(Rule("challenge", Evidence.CHALLENGE, cls, _codes(cls.value)) for cls in _SERVER_NAMEABLE),
    # 3. The body's words, on a 401 or 403 from an API. Most specific first.
    Rule("text-invalid-or-expired", Evidence.BODY_TEXT, ErrorClass.INVALID_TOKEN,
         words=_words(r"\binvalid or expired\b"), context="probe", statuses=_AUTH_FAILED),
    Rule("text-expired", Evidence.BODY_TEXT, ErrorClass.TOKEN_EXPIRED,
         words=_words(r"\bexpired\b"), context="probe", statuses=_AUTH_FAILED),
    Rule("text-no-permission", Evidence.BODY_TEXT, ErrorClass.INSUFFICIENT_SCOPE,
         words=_words(r"\bpermission\b|\bnot authori[sz]ed to\b|\binsufficient\b"),
         context="probe", statuses=_AUTH_FAILED),
    Rule("text-not-authenticated", Evidence.BODY_TEXT, ErrorClass.INVALID_TOKEN,
         words=_words(r"credentials were not provided|\bunauthenticated\b|\bnot authenticated\b"
                      r"|\bbad credentials\b|\binvalid token\b|\bunauthori[sz]ed\b"
                      r"|\bincorrect authentication credentials\b"),
         context="probe", statuses=_AUTH_FAILED),
    # 4. The status code, with the content type where it decides.
    Rule("status-429", Evidence.STATUS, ErrorClass.RATE_LIMITED, statuses=frozenset({429})),
    Rule("status-5xx", Evidence.STATUS, ErrorClass.SERVER_ERROR,
         statuses=frozenset(range(500, 600))),
    Rule("token-401-403", Evidence.STATUS, ErrorClass.INVALID_CLIENT, context="token",
         statuses=_AUTH_FAILED),
    Rule("token-400", Evidence.STATUS, ErrorClass.INVALID_REQUEST, context="token",
         statuses=frozenset({400}), html=False),
    Rule("token-400-html", Evidence.STATUS, ErrorClass.UNEXPECTED_STATUS, context="token",
         statuses=frozenset({400}), html=True),
    Rule("probe-401", Evidence.STATUS, ErrorClass.INVALID_TOKEN, context="probe",
         statuses=frozenset({401}), bearer=True),
    Rule("probe-403-html", Evidence.STATUS, ErrorClass.UNEXPECTED_STATUS, context="probe",
         statuses=frozenset({403}), html=True),
    Rule("probe-403", Evidence.STATUS, ErrorClass.INVALID_TOKEN, context="probe",
         statuses=frozenset({403}), bearer=True, html=False),
    # 5. Everything else.
    Rule("other-status", Evidence.STATUS, ErrorClass.UNEXPECTED_STATUS),
)


def _first(evidence: Evidence, answer: Answer, values: Iterable[str | None]) -> Rule | None:
    rules = [r for r in RULES if r.looks_at is evidence and r.applies(answer)]
    for value in values:
        if value is None:
            continue
        for rule in rules:
            if rule.matches(value):
                return rule
    return None


def explain(answer: Answer) -> Rule:
    """The row of ``RULES`` that classifies ``answer``."""
    rule = (_first(Evidence.BODY_CODE, answer, answer.codes)
            or _first(Evidence.CHALLENGE, answer, [answer.challenge])
            or _first(Evidence.BODY_TEXT, answer, answer.texts))
    if rule is not None:
        return rule
    return next(r for r in RULES if r.looks_at is Evidence.STATUS and r.applies(answer))


def classify_response(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    body: bytes,
    context: Context,
    *,
    bearer: bool = True,
) -> ErrorClass:
    """Classify a failed HTTP answer by ``RULES``.

    ``bearer``: a token was sent with the request. A public probe's 401 or 403
    says nothing about our token, so without one those are ``unexpected_status``.
    """
    return explain(read_answer(status, headers, body, context, bearer=bearer)).cls


def from_body(body: bytes, context: Context = "token") -> ErrorClass | None:
    """The class a code in a body names, if any (a 200 answer that carries an error)."""
    codes, _ = _body_fields(body)
    answer = Answer(200, context, True, tuple(codes), (), None, False)
    rule = _first(Evidence.BODY_CODE, answer, answer.codes)
    return rule.cls if rule is not None else None


# --------------------------------------------------------------------------- no answer


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 16:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def classify_exception(exc: BaseException) -> ErrorClass:
    """Classify a failure that produced no usable HTTP answer."""
    chain = _chain(exc)
    if isinstance(exc, InvalidResponse | httpx.DecodingError):
        return ErrorClass.INVALID_RESPONSE
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
