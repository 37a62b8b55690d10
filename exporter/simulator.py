"""Simulated copies of the five seed providers, for tests and ``--demo``.

This module owns the provider simulator: one loopback HTTP server per
provider that issues OAuth 2.0 client-credentials tokens and answers API calls
the way that provider's documentation (``shared/seeds/``) describes, quirks
and error shapes included, plus fault switches that make it misbehave on
demand::

    kind             token path      client auth          lifetime  quirks
    simpledocs       /oauth/token    client_secret_post   7200 s    10 token requests/min/IP;
                                                                    one active token per app;
                                                                    errors {"type": ...}
    smartdocumentor  /connect/token  client_secret_post   3600 s    scope must be "WebAPI";
                                                                    client secrets expire
    simplifi         /oauth/token    client_secret_basic  3600 s    "__type", "refresh_token"
    simplestore      /connect/token  client_secret_post   3600 s    lifetime field "expiries_in"
    dokstamp         /oauth/token    client_secret_post   43200 s   JWT tokens; API needs
                                                                    X-Tenant and Accept: json

Every provider's port also serves an admin API, so that a simulator running
in another process (``--demo``) can be steered by a test or a person::

    GET    /_sim/faults   the current fault switches
    POST   /_sim/faults   partial update from a JSON object (400 on unknown field or bad type)
    DELETE /_sim/faults   all switches off
    POST   /_sim/revoke   revoke every token issued so far (204)
    GET    /_sim/stats    {"token_requests": n, "issued_tokens": n, "api_requests": n}

It is test infrastructure: bind it to loopback only. It never logs requests,
secrets or tokens.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hmac
import itertools
import json
import logging
import math
import secrets
import selectors
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Any, Literal, cast

_log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("simpledocs", "smartdocumentor", "simplifi", "simplestore", "dokstamp")

DEFAULT_LIFETIMES: dict[str, int] = {
    "simpledocs": 7200,
    "smartdocumentor": 3600,
    "simplifi": 3600,
    "simplestore": 3600,
    "dokstamp": 43200,
}

TOKEN_PATHS: dict[str, str] = {
    "simpledocs": "/oauth/token",
    "smartdocumentor": "/connect/token",
    "simplifi": "/oauth/token",
    "simplestore": "/connect/token",
    "dokstamp": "/oauth/token",
}

# Published on purpose: --demo configures the exporter with them, and they only
# ever open simulators on loopback. They look random so that a test searching
# logs for a leaked secret cannot match an ordinary word.
DEMO_CLIENTS: dict[str, tuple[str, str]] = {
    "simpledocs": ("demo-simpledocs", "HNa-45ogvWFkqp73ZOqnAMU9KRcXU1p1"),
    "smartdocumentor": ("demo-smartdocumentor", "FNeIZnt6z07Pr2TGvxuYGMwXTI6109gw"),
    "simplifi": ("demo-simplifi", "Jy_cxND8OQyC-jHiWkkXtZb2VfhGWqZ2"),
    "simplestore": ("demo-simplestore", "m3XeV16Lmm-hbtF7OvtmepXomWFQuMzD"),
    "dokstamp": ("demo-dokstamp", "EMDHO4H4h4ZPx30QeGy2c9zaO4miNSJf"),
}

_DEFAULT_SCOPES: dict[str, str] = {
    "simpledocs": "read write",
    "smartdocumentor": "WebAPI",
    "simplifi": "read",
    "simplestore": "",
    "dokstamp": "",
}

# The one client authentication method each provider documents; the other one
# is refused, so a preset with the wrong method fails here as it would there.
_AUTH_METHODS: dict[str, str] = {
    "simpledocs": "client_secret_post",
    "smartdocumentor": "client_secret_post",
    "simplifi": "client_secret_basic",
    "simplestore": "client_secret_post",
    "dokstamp": "client_secret_post",
}

_INVALID_CLIENT_STATUS: dict[str, int] = {
    "simpledocs": 401,
    "smartdocumentor": 400,
    "simplifi": 401,
    "simplestore": 400,
    "dokstamp": 401,
}

_SIMPLEDOCS_RATE_LIMIT: tuple[int, float] = (10, 60.0)

_MAX_BODY = 1 << 20
# Bounds for a demo that runs for days: request logs keep the newest records,
# and expired tokens are forgotten after an hour (long enough that a client
# holding one still gets the "expired" answer rather than "unknown").
_MAX_RECORDS = 10_000
_MAX_TOKENS = 10_000
_EXPIRED_RETENTION = 3600.0

_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_NO_STORE: tuple[tuple[str, str], ...] = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))

_HTML_503 = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# A maintenance page served with 200, as some gateways do: a client must not
# trust the status alone.
_HTML_MAINTENANCE = (
    "<html><head><title>Scheduled maintenance</title></head><body>"
    "<h1>We&rsquo;ll be back soon</h1><p>The service is undergoing scheduled maintenance.</p>"
    "</body></html>\n"
)
_HTML_500 = (
    "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head><body>"
    "<h1>Internal Server Error</h1><p>The server encountered an internal error and was "
    "unable to complete your request.</p></body></html>\n"
)
_HTML_LOGIN = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="csrf-token" content="Zm9ybS10b2tlbi1mb3ItZGVtby1vbmx5">\n'
    "<title>DokStamp - Login</title>\n</head>\n<body>\n"
    '<form method="POST" action="/login">\n'
    '<input type="hidden" name="_token" value="Zm9ybS10b2tlbi1mb3ItZGVtby1vbmx5">\n'
    '<label for="email">Email</label><input id="email" type="email" name="email">\n'
    '<label for="password">Password</label>'
    '<input id="password" type="password" name="password">\n'
    '<button type="submit">Log in</button>\n</form>\n</body>\n</html>\n'
)
_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [3 0 R] /Count 1>> endobj\n"
    b"3 0 obj <</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)

_SIMPLEDOCS_DOCUMENTS: list[dict[str, Any]] = [
    {"id": "doc_8f2a1c", "name": "Master services agreement", "status": "completed"},
    {"id": "doc_3b7e90", "name": "Non-disclosure agreement", "status": "pending"},
]
_SMARTDOCUMENTOR_TEMPLATES: list[dict[str, Any]] = [
    {"id": 1, "name": "Invoice", "type": "Word"},
    {"id": 2, "name": "Delivery note", "type": "Word"},
]
_SIMPLIFI_EMPLOYEES: dict[str, dict[str, Any]] = {
    "123": {"id": "123", "first_name": "Ada", "last_name": "Lovelace", "role": "Engineer"},
    "124": {"id": "124", "first_name": "Grace", "last_name": "Hopper", "role": "Manager"},
}
_SIMPLESTORE_PRODUCTS: list[dict[str, Any]] = [
    {"id": "P-1001", "name": "Espresso beans 1kg", "price": 24.5, "currency": "AUD"},
    {"id": "P-1002", "name": "Pour-over kettle", "price": 79.0, "currency": "AUD"},
]
_DOKSTAMP_DOCUMENTS: list[dict[str, Any]] = [
    {"uuid": "7d1f0c52-3b5e-4c1e-9f7a-2f4b8f7e9a10", "title": "Contract 2024-17",
     "status": "signed"},
]


@dataclass
class Faults:
    """Switches that make a provider misbehave; all off by default."""

    wrong_credentials: bool = False  # token endpoint refuses every client as invalid_client
    server_error: bool = False  # token endpoint answers 503 with an HTML body
    delay: float = 0.0  # seconds to wait before answering a token request
    non_json: bool = False  # token endpoint answers 200 with an HTML page
    rate_limited: bool = False  # token endpoint answers 429, Retry-After: 1
    lifetime: int | None = None  # lifetime (s) of newly issued tokens
    api_server_error: bool = False  # API endpoints answer 500 with an HTML page
    api_delay: float = 0.0  # seconds to wait before answering an API request


_BOOL_FAULTS = frozenset(
    {"wrong_credentials", "server_error", "non_json", "rate_limited", "api_server_error"}
)
_SECONDS_FAULTS = frozenset({"delay", "api_delay"})


def _checked_fault(name: str, value: object) -> object:
    """The value to store for fault ``name``; ValueError if it cannot be one."""
    if name in _BOOL_FAULTS:
        if not isinstance(value, bool):
            raise ValueError(f"fault {name!r} must be true or false")
        return value
    if name in _SECONDS_FAULTS:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"fault {name!r} must be a non-negative number of seconds")
        return float(value)
    if name == "lifetime":
        # Zero and negative lifetimes are allowed: they test a client's handling
        # of an unusable lifetime.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("fault 'lifetime' must be a whole number of seconds or null")
        return value
    raise ValueError(f"unknown fault {name!r}")


@dataclass(frozen=True)
class TokenRequest:
    """One request received on the token path. Never holds a secret."""

    time: float
    client_ip: str
    method: str
    content_type: str
    auth_method: str  # "client_secret_basic" | "client_secret_post" | "none"
    client_id: str | None
    grant_type: str | None
    scope: str | None  # as sent; None if absent
    form_keys: tuple[str, ...]  # names only, in the order sent
    status: int  # 0: no answer (the simulator stopped during a delay)
    issued: bool


@dataclass(frozen=True)
class ApiRequest:
    """One request received on an API path (anything but the token path and /_sim/)."""

    time: float
    method: str
    path: str
    status: int  # 0: no answer (the simulator stopped during a delay)
    headers: Mapping[str, str] = field(hash=False)  # lower-case names; credentials redacted


_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass
class _Client:
    secret: str = field(repr=False)
    scopes: tuple[str, ...]
    secret_expires_at: float | None


@dataclass
class _Token:
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    revoked: bool = False


TokenState = Literal["missing", "unknown", "expired", "revoked", "valid"]


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client_ip: str


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False  # hang up without answering: the simulator is stopping


_DROP = _Response(0, drop=True)


def _json(status: int, doc: object, *headers: tuple[str, str]) -> _Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return _Response(status, body, (("Content-Type", _JSON), *headers))


def _html(status: int, page: str, *headers: tuple[str, str]) -> _Response:
    return _Response(status, page.encode(), (("Content-Type", _HTML), *headers))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _wants_json(accept: str) -> bool:
    """Laravel's ``wantsJson()``: the most preferred media range is JSON (``*/*`` is not)."""
    ranges: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((-quality, index, media.lower()))
    if not ranges:
        return False
    best = min(ranges)[2]
    return "/json" in best or "+json" in best


@dataclass(frozen=True)
class _ClientAuth:
    method: str  # "client_secret_basic" | "client_secret_post" | "none"
    client_id: str | None
    secret: str | None = field(default=None, repr=False)
    problem: str | None = None  # why the request is malformed (RFC 6749 §5.2 invalid_request)


def _read_client_auth(headers: Mapping[str, str], form: Mapping[str, str]) -> _ClientAuth:
    """Client credentials from HTTP Basic (RFC 6749 §2.3.1) or the form body."""
    basic: tuple[str, str] | None = None
    scheme, _, param = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            return _ClientAuth("client_secret_basic", None, None, "malformed Basic credentials")
        # §2.3.1: both parts are form-urlencoded before being joined with ":".
        basic = (urllib.parse.unquote_plus(raw_id), urllib.parse.unquote_plus(raw_secret))
    post_secret = form.get("client_secret")
    if basic is not None:
        if post_secret is not None:
            return _ClientAuth(
                "client_secret_basic", basic[0], None,
                "more than one client authentication method was used",
            )
        return _ClientAuth("client_secret_basic", basic[0], basic[1])
    if post_secret is not None:
        return _ClientAuth("client_secret_post", form.get("client_id"), post_secret)
    return _ClientAuth("none", form.get("client_id"))


def _parse_form(body: bytes) -> list[tuple[str, str]] | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return urllib.parse.parse_qsl(text, keep_blank_values=True)


class SimulatedProvider:
    """One provider's token endpoint and API, on its own loopback port."""

    def __init__(
        self,
        kind: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifetime: int | None = None,
        rate_limit: tuple[int, float] | Literal["default"] | None = "default",
        omit_expires_in: bool = False,
        lifetime_field: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown provider kind {kind!r}; expected one of {', '.join(KINDS)}")
        if rate_limit == "default":
            rate_limit = _SIMPLEDOCS_RATE_LIMIT if kind == "simpledocs" else None
        if rate_limit is not None and (rate_limit[0] < 1 or not rate_limit[1] > 0):
            raise ValueError("rate_limit needs at least 1 request per positive window")
        self.kind = kind
        self.faults = Faults()
        self._host = host
        self._port = port
        self._lifetime = DEFAULT_LIFETIMES[kind] if lifetime is None else lifetime
        self._rate_limit = rate_limit
        self._omit_expires_in = omit_expires_in
        if lifetime_field is None:
            lifetime_field = "expiries_in" if kind == "simplestore" else "expires_in"
        self._lifetime_field = lifetime_field
        self._api: Callable[[_Request, str], _Response | None] = {
            "simpledocs": self._simpledocs_api,
            "smartdocumentor": self._smartdocumentor_api,
            "simplifi": self._simplifi_api,
            "simplestore": self._simplestore_api,
            "dokstamp": self._dokstamp_api,
        }[kind]

        # One lock for all state below; handler threads and the owner share it.
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._tokens: dict[str, _Token] = {}
        self._arrivals: dict[str, deque[float]] = {}
        self._token_log: deque[TokenRequest] = deque(maxlen=_MAX_RECORDS)
        self._api_log: deque[ApiRequest] = deque(maxlen=_MAX_RECORDS)
        self._token_request_total = 0
        self._api_request_total = 0
        self._issued_total = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        return f"<SimulatedProvider {self.kind} {self._base_url or 'not started'}>"

    # --- owner-side API -------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``; known once started, and kept after stop()."""
        if self._base_url is None:
            raise RuntimeError(f"{self.kind} simulator has not been started")
        return self._base_url

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATHS[self.kind]

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        *,
        scopes: str | None = None,
        secret_expires_at: float | None = None,
    ) -> None:
        """Register an application; ``scopes`` is what it may be granted."""
        allowed = _DEFAULT_SCOPES[self.kind] if scopes is None else scopes
        client = _Client(client_secret, tuple(dict.fromkeys(allowed.split())), secret_expires_at)
        with self._lock:
            self._clients[client_id] = client

    def set_faults(self, **changes: Any) -> None:
        """Change some fault switches; ValueError (and no change) on a bad name or value."""
        checked = {name: _checked_fault(name, value) for name, value in changes.items()}
        with self._lock:
            faults = dataclasses.replace(self.faults)
            for name, value in checked.items():
                setattr(faults, name, value)
            self.faults = faults

    def clear_faults(self) -> None:
        with self._lock:
            self.faults = Faults()

    def revoke_all(self) -> None:
        with self._lock:
            for record in self._tokens.values():
                record.revoked = True

    def token_requests(self) -> list[TokenRequest]:
        """Answered token requests, oldest first (the newest 10 000)."""
        with self._lock:
            return list(self._token_log)

    def api_requests(self) -> list[ApiRequest]:
        """Answered API requests, oldest first (the newest 10 000)."""
        with self._lock:
            return list(self._api_log)

    def active_token_count(self) -> int:
        """Tokens that would be accepted now (neither revoked nor expired)."""
        now = time.time()
        with self._lock:
            return sum(1 for r in self._tokens.values() if not r.revoked and r.expires_at > now)

    def issued_token_count(self) -> int:
        """Tokens issued since construction (revoked and expired ones included)."""
        with self._lock:
            return self._issued_total

    def start(self) -> SimulatedProvider:
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"{self.kind} simulator is already running")
            server = _Server((self._host, self._port), self)
            # A restart binds the same port again, so base_url stays valid.
            self._port = server.port
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._base_url = f"http://{host}:{server.port}"
            thread = threading.Thread(
                target=server.serve, name=f"simulator-{self.kind}", daemon=True
            )
            self._server, self._thread = server, thread
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests in flight are cut off. Safe to call twice."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.request_stop()  # also wakes handlers waiting out a delay
        if thread is not None:
            thread.join(timeout=5.0)
        server.server_close()
        server.close_connections()  # idle keep-alive connections would serve on otherwise

    def __enter__(self) -> SimulatedProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- request handling (handler threads) -----------------------------------

    def _handle(self, request: _Request, stopping: threading.Event) -> _Response:
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            return self._admin(request)
        if request.path == TOKEN_PATHS[self.kind]:
            return self._token_endpoint(request, stopping)
        return self._api_endpoint(request, stopping)

    def _token_endpoint(self, request: _Request, stopping: threading.Event) -> _Response:
        received = time.time()
        content_type = request.headers.get("content-type", "")
        is_form = (
            request.method == "POST"
            and _media_type(content_type) == "application/x-www-form-urlencoded"
        )
        pairs = _parse_form(request.body) if is_form else []
        first: dict[str, str] = {}
        for key, value in pairs or []:
            first.setdefault(key, value)
        # RFC 6749 §3.2: a parameter must not be sent twice.
        form = first if pairs is not None and len(first) == len(pairs) else None
        auth = _read_client_auth(request.headers, first)
        with self._lock:
            self._token_request_total += 1
            faults = dataclasses.replace(self.faults)
            retry_after = self._note_arrival_locked(request.client_ip)

        issued = False
        # The delay comes first so that it also slows the faulty answers: a
        # slow 503 or a slow 429 is what a struggling provider really sends.
        if faults.delay > 0 and stopping.wait(faults.delay):
            response = _DROP
        elif faults.rate_limited:
            response = self._rate_limited(1)
        elif faults.server_error:
            response = _html(503, _HTML_503)
        elif faults.non_json:
            response = _html(200, _HTML_MAINTENANCE)
        elif faults.wrong_credentials:
            response = self._invalid_client(auth)
        elif retry_after is not None:
            response = self._rate_limited(retry_after)
        else:
            response, issued = self._grant(is_form, form, auth, faults)

        record = TokenRequest(
            time=received,
            client_ip=request.client_ip,
            method=request.method,
            content_type=content_type,
            auth_method=auth.method,
            client_id=auth.client_id,
            grant_type=first.get("grant_type"),
            scope=first.get("scope"),
            form_keys=tuple(first),
            status=response.status,
            issued=issued,
        )
        with self._lock:
            self._token_log.append(record)
        return response

    def _note_arrival_locked(self, client_ip: str) -> int | None:
        """Count a token request; Retry-After seconds if it is over the limit."""
        if self._rate_limit is None:
            return None
        limit, window = self._rate_limit
        now = time.monotonic()
        for ip in [ip for ip, seen in self._arrivals.items() if seen[-1] <= now - window]:
            del self._arrivals[ip]
        arrivals = self._arrivals.setdefault(client_ip, deque())
        while arrivals and arrivals[0] <= now - window:
            arrivals.popleft()
        arrivals.append(now)
        if len(arrivals) <= limit:
            return None
        # Refused requests count too, so the next one is accepted only once all
        # but limit-1 of those in the window have aged out.
        frees_at = arrivals[len(arrivals) - limit] + window
        return max(1, math.ceil(frees_at - now))

    def _grant(
        self,
        is_form: bool,
        form: Mapping[str, str] | None,
        auth: _ClientAuth,
        faults: Faults,
    ) -> tuple[_Response, bool]:
        if not is_form:
            return self._oauth_error(
                400, "invalid_request",
                "Send a POST with an application/x-www-form-urlencoded body.",
            ), False
        if form is None:
            return self._oauth_error(
                400, "invalid_request", "The form body is malformed or repeats a parameter."
            ), False
        if auth.problem is not None:
            return self._oauth_error(400, "invalid_request", auth.problem), False
        grant_type = form.get("grant_type")
        if not grant_type:
            return self._oauth_error(
                400, "invalid_request", "The grant_type parameter is required."
            ), False
        if grant_type != "client_credentials":
            return self._oauth_error(
                400, "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            ), False
        if auth.method != _AUTH_METHODS[self.kind]:
            return self._invalid_client(auth), False
        with self._lock:
            client = self._clients.get(auth.client_id or "")
            if client is None or not self._authenticates_locked(client, auth.secret, time.time()):
                return self._invalid_client(auth), False
            scope = self._granted_scope(client, form.get("scope"))
            if scope is None:
                return self._oauth_error(
                    400, "invalid_scope", "The requested scope is invalid, unknown or not allowed."
                ), False
            return self._issue_locked(auth.client_id or "", scope, faults), True

    @staticmethod
    def _authenticates_locked(client: _Client | None, secret: str | None, now: float) -> bool:
        if client is None or secret is None:
            return False
        if client.secret_expires_at is not None and client.secret_expires_at <= now:
            return False  # SmartDocumentor's secrets expire; so may any provider's
        return hmac.compare_digest(client.secret.encode(), secret.encode())

    def _granted_scope(self, client: _Client, requested: str | None) -> str | None:
        """The scope to grant, or None for invalid_scope."""
        if self.kind == "smartdocumentor":
            # The seed: scope "MUST always be WebAPI"; anything else, absence included, fails.
            return "WebAPI" if requested == "WebAPI" and "WebAPI" in client.scopes else None
        if self.kind == "simplifi":
            # Simplifi's documented request sends no scope and still gets "read".
            return " ".join(client.scopes) or "read"
        words = set((requested or "").split())
        if self.kind == "simpledocs" and not words:
            # The seed: an omitted scope means read, even for a "read write" app.
            words = {"read"}
        if not words <= set(client.scopes):
            return None
        return " ".join(scope for scope in client.scopes if scope in words)

    def _issue_locked(self, client_id: str, scope: str, faults: Faults) -> _Response:
        now = time.time()
        lifetime = self._lifetime if faults.lifetime is None else faults.lifetime
        if self.kind == "dokstamp":
            token, expires_at = self._jwt(client_id, now, lifetime)
        else:
            token, expires_at = secrets.token_urlsafe(32), now + lifetime
        if self.kind == "simpledocs":
            # One active token per application: the new one revokes the rest.
            for record in self._tokens.values():
                if record.client_id == client_id:
                    record.revoked = True
        self._prune_locked(now)
        self._tokens[token] = _Token(client_id, tuple(scope.split()), expires_at)
        self._issued_total += 1
        return _json(200, self._token_body(token, lifetime, scope), *_NO_STORE)

    def _prune_locked(self, now: float) -> None:
        cutoff = now - _EXPIRED_RETENTION
        for token in [t for t, record in self._tokens.items() if record.expires_at < cutoff]:
            del self._tokens[token]
        excess = len(self._tokens) - (_MAX_TOKENS - 1)
        if excess > 0:
            for token in list(itertools.islice(self._tokens, excess)):
                del self._tokens[token]

    def _jwt(self, client_id: str, now: float, lifetime: int) -> tuple[str, float]:
        """A Passport-style JWT; its ``exp`` is the authority on when it expires."""
        iat = int(now)
        header = {"typ": "JWT", "alg": "RS256"}
        payload = {
            "iss": self._base_url,
            "sub": client_id,
            "aud": client_id,
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime,
            "jti": secrets.token_hex(40),
        }
        parts = [_b64url(json.dumps(part, separators=(",", ":")).encode())
                 for part in (header, payload)]
        # Nobody can verify it without the provider's key, so random bytes of an
        # RS256 signature's length look the part.
        parts.append(_b64url(secrets.token_bytes(256)))
        return ".".join(parts), float(iat + lifetime)

    def _token_body(self, token: str, lifetime: int, scope: str) -> dict[str, Any]:
        life: dict[str, Any] = {} if self._omit_expires_in else {self._lifetime_field: lifetime}
        if self.kind == "simpledocs":
            return {"access_token": token, "token_type": "Bearer", **life, "scope": scope}
        if self.kind == "smartdocumentor":
            return {"access_token": token, **life, "token_type": "Bearer", "scope": scope}
        if self.kind == "simplifi":
            return {
                "__type": "SSJSON_Token_Access",
                "access_token": token,
                **life,
                "refresh_token": secrets.token_urlsafe(32),
                "scope": scope,
                "token_type": "Bearer",
            }
        if self.kind == "simplestore":
            return {"access_token": token, **life, "token_type": "Bearer"}
        return {"token_type": "Bearer", **life, "access_token": token}

    def _error_body(self, code: str, message: str) -> dict[str, str]:
        """An error in this provider's shape."""
        if self.kind == "simpledocs":
            return {"type": code, "message": message}
        if self.kind == "dokstamp":
            return {"error": code, "message": message}
        return {"error": code}

    def _oauth_error(self, status: int, code: str, message: str) -> _Response:
        return _json(status, self._error_body(code, message), *_NO_STORE)

    def _invalid_client(self, auth: _ClientAuth) -> _Response:
        status = _INVALID_CLIENT_STATUS[self.kind]
        message = {
            "simpledocs": "The client ID or secret is incorrect.",
            "dokstamp": "Client authentication failed",
        }.get(self.kind, "")
        headers = _NO_STORE
        if status == 401 and auth.method == "client_secret_basic":
            # RFC 6749 §5.2: a 401 to Basic credentials carries the Basic challenge.
            headers = (("WWW-Authenticate", f'Basic realm="{self.kind}"'), *headers)
        return _json(status, self._error_body("invalid_client", message), *headers)

    def _rate_limited(self, retry_after: int) -> _Response:
        header = ("Retry-After", str(retry_after))
        if self.kind == "simpledocs":
            return _json(429, {
                "type": "rate_limited",
                "message": "The token endpoint is limited to 10 requests per minute per IP "
                           f"address. Retry in {retry_after} seconds.",
            }, header)
        if self.kind == "dokstamp":
            return _json(429, {"message": "Too Many Attempts."}, header)  # Laravel's throttle
        return _json(429, {"error": "rate_limited"}, header)

    # --- API side -------------------------------------------------------------

    def _api_endpoint(self, request: _Request, stopping: threading.Event) -> _Response:
        received = time.time()
        with self._lock:
            self._api_request_total += 1
            faults = dataclasses.replace(self.faults)
        if faults.api_delay > 0 and stopping.wait(faults.api_delay):
            response = _DROP
        elif faults.api_server_error:
            response = _html(500, _HTML_500)
        else:
            method = "GET" if request.method == "HEAD" else request.method
            response = self._api(request, method) or self._not_found(request.path)
        headers = {
            name: "<redacted>" if name in _REDACTED_HEADERS else value
            for name, value in request.headers.items()
        }
        record = ApiRequest(
            time=received,
            method=request.method,
            path=request.path,
            status=response.status,
            headers=MappingProxyType(headers),
        )
        with self._lock:
            self._api_log.append(record)
        return response

    def _token_state(self, request: _Request) -> tuple[TokenState, _Token | None]:
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or not token:
            return "missing", None
        with self._lock:
            record = self._tokens.get(token)
            if record is None:
                return "unknown", None
            snapshot = dataclasses.replace(record)
        if snapshot.revoked:
            return "revoked", snapshot
        if snapshot.expires_at <= time.time():
            return "expired", snapshot
        return "valid", snapshot

    def _not_found(self, path: str) -> _Response:
        if self.kind == "dokstamp":
            return _json(404, {"message": f"The route {path.lstrip('/')} could not be found."})
        return _json(404, self._error_body("not_found", "No such endpoint."))

    def _method_not_allowed(self, allow: str) -> _Response:
        return _json(405, self._error_body("method_not_allowed", f"Allowed: {allow}."),
                     ("Allow", allow))

    def _simpledocs_api(self, request: _Request, method: str) -> _Response | None:
        if request.path == "/oauth/revoke":
            return self._simpledocs_revoke(request, method)
        if request.path != "/v1/documents":
            return None
        needed = {"GET": "read", "POST": "write"}.get(method)
        if needed is None:
            return self._method_not_allowed("GET, POST")
        state, record = self._token_state(request)
        realm = 'Bearer realm="SimpleDocs"'
        if state == "missing":
            return _json(401, self._error_body("invalid_token", "No bearer token was sent."),
                         ("WWW-Authenticate", realm))
        if state != "valid" or record is None:
            code, message = {
                "unknown": ("invalid_token", "The token is not recognized."),
                "expired": ("token_expired", "The token has expired. Request a new one."),
                "revoked": ("token_revoked", "The token was revoked (a newer token was issued "
                                             "or it was explicitly revoked)."),
            }[state]
            return _json(401, self._error_body(code, message),
                         ("WWW-Authenticate", f'{realm}, error="invalid_token"'))
        if needed not in record.scopes:
            return _json(
                403,
                self._error_body("insufficient_scope",
                                 "The token doesn't have the required scope for this endpoint."),
                ("WWW-Authenticate", f'{realm}, error="insufficient_scope", scope="{needed}"'),
            )
        if method == "GET":
            return _json(200, {
                "data": _SIMPLEDOCS_DOCUMENTS,
                "meta": {"page": 1, "per_page": 25, "total": len(_SIMPLEDOCS_DOCUMENTS)},
            })
        created = {"id": f"doc_{secrets.token_hex(3)}", "name": "Untitled document",
                   "status": "draft"}
        return _json(201, {"data": created})

    def _simpledocs_revoke(self, request: _Request, method: str) -> _Response:
        """Explicit revocation (the seed mentions it; RFC 7009 semantics)."""
        if method != "POST":
            return self._method_not_allowed("POST")
        if _media_type(request.headers.get("content-type", "")) != (
            "application/x-www-form-urlencoded"
        ):
            return self._oauth_error(400, "invalid_request", "Send a form body.")
        form = dict(_parse_form(request.body) or [])
        auth = _read_client_auth(request.headers, form)
        with self._lock:
            client = self._clients.get(auth.client_id or "")
            if auth.method != "client_secret_post" or not self._authenticates_locked(
                client, auth.secret, time.time()
            ):
                return self._invalid_client(auth)
            record = self._tokens.get(form.get("token", ""))
            # RFC 7009 §2.2: an unknown token is not an error.
            if record is not None and record.client_id == auth.client_id:
                record.revoked = True
        return _Response(200)

    def _smartdocumentor_api(self, request: _Request, method: str) -> _Response | None:
        if request.path != "/api/v1/templates":
            return None
        if method != "GET":
            return self._method_not_allowed("GET")
        state, record = self._token_state(request)
        if state == "valid":
            return _json(200, _SMARTDOCUMENTOR_TEMPLATES)
        # ASP.NET JwtBearer: empty body, the reason only in the challenge.
        if state == "missing":
            challenge = "Bearer"
        elif state == "expired" and record is not None:
            expired_at = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(record.expires_at))
            challenge = (f'Bearer error="invalid_token", '
                         f"error_description=\"The token expired at '{expired_at}'\"")
        else:
            challenge = 'Bearer error="invalid_token", error_description="The token is invalid"'
        return _Response(401, headers=(("WWW-Authenticate", challenge),))

    def _simplifi_api(self, request: _Request, method: str) -> _Response | None:
        path = request.path.rstrip("/")
        prefix = "/api/v1/employees"
        if path != prefix and not path.startswith(prefix + "/"):
            return None
        employee_id = path[len(prefix) + 1:]
        if "/" in employee_id:
            return None
        if method != "GET":
            return self._method_not_allowed("GET")
        state, _ = self._token_state(request)
        if state != "valid":
            return _json(401, {"error": "invalid_token"}, ("WWW-Authenticate", "Bearer"))
        if not employee_id:
            return _json(200, list(_SIMPLIFI_EMPLOYEES.values()))
        employee = _SIMPLIFI_EMPLOYEES.get(employee_id)
        if employee is None:
            return _json(404, {"error": "not_found"})
        return _json(200, employee)

    def _simplestore_api(self, request: _Request, method: str) -> _Response | None:
        if request.path != "/api/v1/products":
            return None
        if method != "GET":
            return self._method_not_allowed("GET")
        state, _ = self._token_state(request)
        if state == "valid":
            return _json(200, {"data": _SIMPLESTORE_PRODUCTS, "total": len(_SIMPLESTORE_PRODUCTS)})
        challenge = {
            "missing": "Bearer",
            "expired": 'Bearer error="invalid_token", error_description="The token expired"',
        }.get(state, 'Bearer error="invalid_token"')
        return _Response(401, headers=(("WWW-Authenticate", challenge),))

    def _dokstamp_api(self, request: _Request, method: str) -> _Response | None:
        parts = request.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "download":
            try:
                uuid.UUID(parts[1])
            except ValueError:
                return None
            if method != "GET":
                return self._method_not_allowed("GET, HEAD")
            # Public by design (the seed): signed documents are fetched without a token.
            return _Response(200, _PDF, (
                ("Content-Type", "application/pdf"),
                ("Content-Disposition", f'attachment; filename="{parts[1]}.pdf"'),
            ))
        if request.path != "/api/v1/documents":
            return None
        if method != "GET":
            return _json(405, {"message": f"The {method} method is not supported for route "
                                          "api/v1/documents. Supported methods: GET, HEAD."},
                         ("Allow", "GET, HEAD"))
        if not _wants_json(request.headers.get("accept", "")):
            # Laravel renders its login page to anyone who does not ask for JSON;
            # this is why the seed insists on Accept: application/json.
            return _html(401, _HTML_LOGIN)
        state, _ = self._token_state(request)
        if state != "valid":
            return _json(401, {"message": "Unauthenticated."})
        tenant = request.headers.get("x-tenant", "").strip()
        if not tenant:
            return _json(400, {"error": "invalid_request",
                               "message": "X-Tenant header is required"})
        return _json(200, {"data": _DOKSTAMP_DOCUMENTS,
                           "meta": {"tenant": tenant, "total": len(_DOKSTAMP_DOCUMENTS)}})

    # --- admin ----------------------------------------------------------------

    def _faults_doc(self) -> dict[str, Any]:
        with self._lock:
            return dataclasses.asdict(self.faults)

    def _admin(self, request: _Request) -> _Response:
        method = request.method
        if request.path == "/_sim/faults":
            if method == "GET":
                return _json(200, self._faults_doc())
            if method == "DELETE":
                self.clear_faults()
                return _json(200, self._faults_doc())
            if method != "POST":
                return _json(405, {"error": "method_not_allowed"}, ("Allow", "GET, POST, DELETE"))
            try:
                changes = json.loads(request.body or b"null")
            except ValueError:
                return _json(400, {"error": "the body is not JSON"})
            if not isinstance(changes, dict):
                return _json(400, {"error": "the body must be a JSON object of fault fields"})
            try:
                self.set_faults(**changes)
            except ValueError as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, self._faults_doc())
        if request.path == "/_sim/revoke":
            if method != "POST":
                return _json(405, {"error": "method_not_allowed"}, ("Allow", "POST"))
            self.revoke_all()
            return _Response(204)
        if request.path == "/_sim/stats":
            if method != "GET":
                return _json(405, {"error": "method_not_allowed"}, ("Allow", "GET"))
            with self._lock:
                stats = {
                    "token_requests": self._token_request_total,
                    "issued_tokens": self._issued_total,
                    "api_requests": self._api_request_total,
                }
            return _json(200, stats)
        return _json(404, {"error": "not_found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 resets connections when an exporter opens a
    # burst of them at once (all probes at start-up).
    request_queue_size = 128
    # Bounds handle_request()'s own wait should a client vanish between our
    # select and its accept; stop() is never held up longer than this.
    timeout = 0.5

    def __init__(self, address: tuple[str, int], provider: SimulatedProvider) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.provider = provider
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def serve(self) -> None:
        """serve_forever() without its polling: request_stop() wakes the loop at once."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self.stopping.is_set():
                        self.handle_request()

    def request_stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for
        # seconds without DNS; a loopback simulator has no use for it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.port

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)
        if self.stopping.is_set():
            self._hang_up(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            self._hang_up(connection)

    @staticmethod
    def _hang_up(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client may have closed it already
            connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine here (timeouts, stop());
        # anything else is a simulator bug, logged without request data.
        if isinstance(sys.exc_info()[1], OSError):
            return
        _log.exception("simulator connection failed")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # clients pool keep-alive connections
    server_version = "token-health-simulator"
    sys_version = ""
    timeout = 30.0  # an idle keep-alive connection ends on its own

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle's algorithm the
        # second waits for the client's delayed ACK, ~40 ms per request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sim().track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._sim().untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines would put paths and client details on stderr; stay silent.
        return

    def _sim(self) -> _Server:
        return cast(_Server, self.server)

    def do_GET(self) -> None:
        server = self._sim()
        if server.stopping.is_set():
            self.close_connection = True
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._write(_json(411, {"error": "length_required"}))
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._write(_json(413 if length > 0 else 400, {"error": "invalid_request"}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = _Request(
            method=self.command,
            path=urllib.parse.urlsplit(self.path).path or "/",
            headers=headers,
            body=body,
            client_ip=str(self.client_address[0]),
        )
        try:
            response = server.provider._handle(request, server.stopping)
        except Exception:
            _log.exception("simulated %s failed to answer", server.provider.kind)
            response = _json(500, {"error": "simulator_failure"})
        self._write(response)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _write(self, response: _Response) -> None:
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.status != 204:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


class Simulation:
    """All five providers, each on its own port, with the ``DEMO_CLIENTS`` registered."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        lifetimes: dict[str, int] | None = None,
        rate_limit_window: float | None = None,
    ) -> None:
        lifetimes = dict(lifetimes or {})
        unknown = sorted(set(lifetimes) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown provider kind(s) in lifetimes: {', '.join(unknown)}")
        self.providers: dict[str, SimulatedProvider] = {}
        for kind in KINDS:
            rate_limit: tuple[int, float] | Literal["default"] | None = "default"
            if kind == "simpledocs" and rate_limit_window is not None:
                rate_limit = (_SIMPLEDOCS_RATE_LIMIT[0], rate_limit_window)
            provider = SimulatedProvider(
                kind, host=host, lifetime=lifetimes.get(kind), rate_limit=rate_limit
            )
            client_id, client_secret = DEMO_CLIENTS[kind]
            # Read only, so that the demo's write probe shows insufficient_scope.
            scopes = "read" if kind == "simpledocs" else None
            provider.add_client(client_id, client_secret, scopes=scopes)
            self.providers[kind] = provider

    def start(self) -> Simulation:
        started: list[SimulatedProvider] = []
        try:
            for provider in self.providers.values():
                started.append(provider.start())
        except BaseException:
            for provider in started:
                provider.stop()
            raise
        return self

    def stop(self) -> None:
        for provider in self.providers.values():
            provider.stop()

    def __enter__(self) -> Simulation:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
