"""The simulator's state and the behaviour every vendor shares, without sockets.

It owns the registered clients, the issued tokens, the token endpoint's
sliding-window rate limit, the request logs, the fault switches in force,
and client authentication (RFC 6749 §2.3.1). A ``Vendor`` (``vendors/``)
supplies everything that differs between providers: paths, the accepted
client authentication method, the shapes of bodies and errors, and the API.
``server.py`` puts an ``Engine`` on a port; ``admin.py`` steers it over HTTP.

Requests and answers are plain values (``Request``, ``Response``) so that the
engine and the vendors never touch the transport.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import itertools
import json
import math
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from exporter.simulator.faults import Faults, checked_fault

if TYPE_CHECKING:
    from exporter.simulator.vendors.base import Vendor

# Bounds for a demo that runs for days: request logs keep the newest records,
# and expired tokens are forgotten after an hour (long enough that a client
# holding one still gets the "expired" answer rather than "unknown").
_MAX_RECORDS = 10_000
_MAX_TOKENS = 10_000
_EXPIRED_RETENTION = 3600.0

_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"
NO_STORE: tuple[tuple[str, str], ...] = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))

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

_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


# --- requests and answers ----------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client_ip: str
    #: DER of the client certificate the TLS handshake verified (mutual TLS), if any.
    client_cert: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False  # hang up without answering: the simulator is stopping


DROP = Response(0, drop=True)


def json_response(status: int, doc: object, *headers: tuple[str, str]) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(status, body, (("Content-Type", _JSON), *headers))


def html_response(status: int, page: str, *headers: tuple[str, str]) -> Response:
    return Response(status, page.encode(), (("Content-Type", _HTML), *headers))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_form(body: bytes) -> list[tuple[str, str]] | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return urllib.parse.parse_qsl(text, keep_blank_values=True)


# --- records -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """One request received on the token path. Never holds a secret."""

    time: float
    client_ip: str
    method: str
    content_type: str
    auth_method: str  # "client_secret_basic" | "client_secret_post" | "none" | a JWT method
    client_id: str | None
    grant_type: str | None
    scope: str | None  # as sent; None if absent
    form_keys: tuple[str, ...]  # names only, in the order sent
    status: int  # 0: no answer (the simulator stopped during a delay)
    issued: bool
    path: str = ""  # the token path called (a vendor may serve more than one)


@dataclass(frozen=True)
class ApiRequest:
    """One request received on an API path (anything but the token path and /_sim/)."""

    time: float
    method: str
    path: str
    status: int  # 0: no answer (the simulator stopped during a delay)
    headers: Mapping[str, str] = field(hash=False)  # lower-case names; credentials redacted


@dataclass
class Client:
    secret: str | None = field(repr=False)
    scopes: tuple[str, ...]
    secret_expires_at: float | None
    auth_method: str  # the one method it was registered with
    jwks: Mapping[str, Any] | None = None  # public keys (private_key_jwt), a JWK Set
    tls_subject: str | None = None  # RFC 4514 subject DN (tls_client_auth)


@dataclass
class Token:
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    revoked: bool = False
    issued_at: float = 0.0


TokenState = Literal["missing", "unknown", "expired", "revoked", "valid"]


# --- client authentication ---------------------------------------------------


@dataclass(frozen=True)
class ClientAuth:
    # "client_secret_basic" | "client_secret_post" | "client_secret_jwt" |
    # "private_key_jwt" | "none"
    method: str
    client_id: str | None
    secret: str | None = field(default=None, repr=False)
    problem: str | None = None  # why the request is malformed (RFC 6749 §5.2 invalid_request)
    assertion: str | None = field(default=None, repr=False)  # RFC 7523 client_assertion
    certificate: bytes | None = field(default=None, repr=False)  # DER (tls_client_auth)


def read_client_auth(headers: Mapping[str, str], form: Mapping[str, str]) -> ClientAuth:
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
            return ClientAuth("client_secret_basic", None, None, "malformed Basic credentials")
        # §2.3.1: both parts are form-urlencoded before being joined with ":".
        basic = (urllib.parse.unquote_plus(raw_id), urllib.parse.unquote_plus(raw_secret))
    post_secret = form.get("client_secret")
    if basic is not None:
        if post_secret is not None:
            return ClientAuth(
                "client_secret_basic", basic[0], None,
                "more than one client authentication method was used",
            )
        return ClientAuth("client_secret_basic", basic[0], basic[1])
    if post_secret is not None:
        return ClientAuth("client_secret_post", form.get("client_id"), post_secret)
    return ClientAuth("none", form.get("client_id"))


# --- the engine --------------------------------------------------------------


class Engine:
    """One provider's clients, tokens, limits and logs, answering ``Request`` values."""

    def __init__(
        self,
        vendor: Vendor,
        *,
        lifetime: int | None = None,
        rate_limit: tuple[int, float] | Literal["default"] | None = "default",
        omit_expires_in: bool = False,
        lifetime_field: str | None = None,
    ) -> None:
        if rate_limit == "default":
            rate_limit = vendor.rate_limit
        if rate_limit is not None and (rate_limit[0] < 1 or not rate_limit[1] > 0):
            raise ValueError("rate_limit needs at least 1 request per positive window")
        self.vendor = vendor
        self.kind = vendor.kind
        self.faults = Faults()
        self._lifetime = vendor.lifetime if lifetime is None else lifetime
        self._rate_limit = rate_limit
        self._omit_expires_in = omit_expires_in
        self._lifetime_field = vendor.lifetime_field if lifetime_field is None else lifetime_field
        # The transport sets it on start; the engine needs it for issuers.
        self._base_url: str | None = None

        # One lock for all state below; handler threads and the owner share it.
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._tokens: dict[str, Token] = {}
        self._arrivals: dict[str, deque[float]] = {}
        self._token_log: deque[TokenRequest] = deque(maxlen=_MAX_RECORDS)
        self._api_log: deque[ApiRequest] = deque(maxlen=_MAX_RECORDS)
        self._token_request_total = 0
        self._api_request_total = 0
        self._issued_total = 0

    # --- owner-side API -------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``; known once started, and kept after stop()."""
        if self._base_url is None:
            raise RuntimeError(f"{self.kind} simulator has not been started")
        return self._base_url

    @property
    def token_url(self) -> str:
        return self.base_url + self.vendor.token_path

    def add_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        scopes: str | None = None,
        secret_expires_at: float | None = None,
        auth_method: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        tls_client_auth_subject_dn: str | None = None,
    ) -> None:
        """Register an application; ``scopes`` is what it may be granted.

        ``auth_method`` is the one client authentication method it may use
        (default: the vendor's, ``private_key_jwt`` when only ``jwks`` is given,
        ``tls_client_auth`` when only a subject DN is); ``jwks`` holds its public
        keys, a JWK or a JWK Set; ``tls_client_auth_subject_dn`` the RFC 4514
        subject its certificate must carry (RFC 8705 §2.1.2). ValueError if
        the vendor does not support the method or it lacks what it needs.
        """
        if jwks is not None and "keys" not in jwks:
            jwks = {"keys": [dict(jwks)]}
        if auth_method is None:
            auth_method = (
                "private_key_jwt" if client_secret is None and jwks is not None
                else "tls_client_auth"
                if client_secret is None and tls_client_auth_subject_dn is not None
                else self.vendor.auth_method
            )
        if auth_method not in self.vendor.auth_methods():
            raise ValueError(f"{self.kind} does not support {auth_method}; it supports "
                             f"{', '.join(self.vendor.auth_methods())}")
        if (auth_method == "private_key_jwt") != (jwks is not None):
            raise ValueError("private_key_jwt clients need jwks=, and only they take it")
        if (auth_method == "tls_client_auth") != (tls_client_auth_subject_dn is not None):
            raise ValueError("tls_client_auth clients need tls_client_auth_subject_dn=, "
                             "and only they take it")
        if auth_method not in ("private_key_jwt", "tls_client_auth") and not client_secret:
            raise ValueError(f"{auth_method} clients need a client secret")
        allowed = self.vendor.default_scopes if scopes is None else scopes
        client = Client(client_secret, tuple(dict.fromkeys(allowed.split())), secret_expires_at,
                        auth_method, jwks, tls_client_auth_subject_dn)
        self.vendor.check_client(client)
        with self._lock:
            self._clients[client_id] = client

    def set_faults(self, **changes: Any) -> None:
        """Change some fault switches; ValueError (and no change) on a bad name or value."""
        checked = {name: checked_fault(name, value) for name, value in changes.items()}
        with self._lock:
            faults = dataclasses.replace(self.faults)
            for name, value in checked.items():
                setattr(faults, name, value)
            self.faults = faults

    def clear_faults(self) -> None:
        with self._lock:
            self.faults = Faults()

    def faults_doc(self) -> dict[str, Any]:
        """The fault switches in force, as the admin API shows them."""
        with self._lock:
            return dataclasses.asdict(self.faults)

    def revoke_all(self) -> None:
        with self._lock:
            for record in self._tokens.values():
                record.revoked = True

    def stats(self) -> dict[str, int]:
        """Totals since construction: token requests, issued tokens, API requests."""
        with self._lock:
            return {
                "token_requests": self._token_request_total,
                "issued_tokens": self._issued_total,
                "api_requests": self._api_request_total,
            }

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

    # --- token endpoint (handler threads) --------------------------------------

    def token_endpoint(self, request: Request, stopping: threading.Event) -> Response:
        received = time.time()
        content_type = request.headers.get("content-type", "")
        is_form = (
            request.method == "POST"
            and media_type(content_type) == "application/x-www-form-urlencoded"
        )
        pairs = parse_form(request.body) if is_form else []
        first: dict[str, str] = {}
        for key, value in pairs or []:
            first.setdefault(key, value)
        # RFC 6749 §3.2: a parameter must not be sent twice.
        form = first if pairs is not None and len(first) == len(pairs) else None
        auth = self.vendor.read_client_auth(request.headers, first, request.client_cert)
        with self._lock:
            self._token_request_total += 1
            faults = dataclasses.replace(self.faults)
            retry_after = self._note_arrival_locked(request.client_ip)

        vendor = self.vendor
        issued = False
        # The delay comes first so that it also slows the faulty answers: a
        # slow 503 or a slow 429 is what a struggling provider really sends.
        if faults.delay > 0 and stopping.wait(faults.delay):
            response = DROP
        elif faults.rate_limited:
            response = vendor.rate_limited(1)
        elif faults.server_error:
            response = html_response(503, _HTML_503)
        elif faults.non_json:
            response = html_response(200, _HTML_MAINTENANCE)
        elif faults.wrong_credentials:
            response = vendor.invalid_client(auth)
        elif retry_after is not None:
            response = vendor.rate_limited(retry_after)
        else:
            endpoint = (self._base_url or "") + request.path
            response, issued = self._grant(is_form, form, auth, faults, endpoint)

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
            path=request.path,
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
        auth: ClientAuth,
        faults: Faults,
        endpoint: str,
    ) -> tuple[Response, bool]:
        vendor = self.vendor
        if not is_form:
            return vendor.oauth_error(
                400, "invalid_request",
                "Send a POST with an application/x-www-form-urlencoded body.",
            ), False
        if form is None:
            return vendor.oauth_error(
                400, "invalid_request", "The form body is malformed or repeats a parameter."
            ), False
        if auth.problem is not None:
            return vendor.oauth_error(400, "invalid_request", auth.problem), False
        grant_type = form.get("grant_type")
        if not grant_type:
            return vendor.oauth_error(
                400, "invalid_request", "The grant_type parameter is required."
            ), False
        if grant_type != "client_credentials":
            return vendor.oauth_error(
                400, "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            ), False
        with self._lock:
            client, reason = self._authenticate_locked(auth, endpoint, faults)
            if client is None:
                return vendor.invalid_client(auth, reason), False
            scope = vendor.granted_scope(client.scopes, form.get("scope"))
            if scope is None:
                return vendor.oauth_error(
                    400, "invalid_scope", "The requested scope is invalid, unknown or not allowed."
                ), False
            return self._issue_locked(auth.client_id or "", scope, faults), True

    def _authenticate_locked(
        self, auth: ClientAuth, endpoint: str, faults: Faults
    ) -> tuple[Client | None, str]:
        """The authenticated client, or None and why not (for error_description).

        ``endpoint`` is the URL the client called: an assertion's audience.
        """
        if auth.method == "none":
            return None, "no client authentication was presented"
        if auth.method not in self.vendor.auth_methods():
            return None, f"{auth.method} is not supported"
        client = self._clients.get(auth.client_id or "")
        if client is None:
            return None, "unknown client"
        if auth.method != client.auth_method:
            return None, f"the client is registered for {client.auth_method}"
        now = time.time()
        if client.secret_expires_at is not None and client.secret_expires_at <= now:
            return None, "the client secret has expired"  # SmartDocumentor's do; so may any
        if auth.assertion is not None:
            reason = self.vendor.verify_assertion(
                auth.client_id or "", client, auth.assertion, (self._base_url or "", endpoint),
                now, replayed=faults.replayed_jti,
            )
            return (None, reason) if reason else (client, "")
        if auth.method == "tls_client_auth":
            reason = self.vendor.verify_certificate(client, auth.certificate)
            return (None, reason) if reason else (client, "")
        if client.secret is None or auth.secret is None or not hmac.compare_digest(
            client.secret.encode(), auth.secret.encode()
        ):
            return None, "the client secret is wrong"
        return client, ""

    def _issue_locked(self, client_id: str, scope: str, faults: Faults) -> Response:
        now = time.time()
        lifetime = self._lifetime if faults.lifetime is None else faults.lifetime
        token, expires_at = self.vendor.mint_token(self._base_url, client_id, scope, now,
                                                   lifetime)
        if self.vendor.one_active_token:
            for record in self._tokens.values():
                if record.client_id == client_id:
                    record.revoked = True
        self._prune_locked(now)
        self._tokens[token] = Token(client_id, tuple(scope.split()), expires_at, issued_at=now)
        self._issued_total += 1
        life: dict[str, Any] = {} if self._omit_expires_in else {self._lifetime_field: lifetime}
        return json_response(200, self.vendor.token_body(token, life, scope), *NO_STORE)

    def _prune_locked(self, now: float) -> None:
        cutoff = now - _EXPIRED_RETENTION
        for token in [t for t, record in self._tokens.items() if record.expires_at < cutoff]:
            del self._tokens[token]
        excess = len(self._tokens) - (_MAX_TOKENS - 1)
        if excess > 0:
            for token in list(itertools.islice(self._tokens, excess)):
                del self._tokens[token]

    # --- services vendors build on ---------------------------------------------

    def authenticate(self, auth: ClientAuth, endpoint: str) -> tuple[bool, str]:
        """Whether ``auth`` authenticates a client at ``endpoint`` (a URL), and why not."""
        with self._lock:
            faults = self.faults
            client, reason = self._authenticate_locked(auth, endpoint, faults)
        return client is not None, reason

    def revoke_token(self, auth: ClientAuth, token: str, endpoint: str = "") -> bool:
        """RFC 7009 revocation by an authenticated client; False if it does not authenticate."""
        with self._lock:
            client, _ = self._authenticate_locked(auth, endpoint, self.faults)
            if client is None:
                return False
            record = self._tokens.get(token)
            # RFC 7009 §2.2: an unknown token is not an error.
            if record is not None and record.client_id == auth.client_id:
                record.revoked = True
        return True

    def lookup(self, token: str) -> tuple[TokenState, Token | None]:
        """What ``token`` is worth now, and a copy of its record."""
        if not token:
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

    def token_state(self, request: Request) -> tuple[TokenState, Token | None]:
        """What the request's bearer token is worth now, and a copy of its record."""
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return "missing", None
        return self.lookup(value.strip())

    # --- API side (handler threads) ---------------------------------------------

    def api_endpoint(self, request: Request, stopping: threading.Event) -> Response:
        received = time.time()
        with self._lock:
            self._api_request_total += 1
            faults = dataclasses.replace(self.faults)
        if faults.api_delay > 0 and stopping.wait(faults.api_delay):
            response = DROP
        elif faults.api_server_error:
            response = html_response(500, _HTML_500)
        elif faults.api_refuses_tokens and request.headers.get("authorization"):
            response = Response(401)
        else:
            method = "GET" if request.method == "HEAD" else request.method
            response = (self.vendor.route(self, request, method)
                        or self.vendor.not_found(request.path))
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
