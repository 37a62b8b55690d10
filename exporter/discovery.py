"""Authorization server metadata: a provider's endpoints, found from its issuer.

Owns reading the metadata document of a configured ``issuer``: OpenID Connect
Discovery 1.0 §4 first (``<issuer>/.well-known/openid-configuration``), then
RFC 8414 §3 (``/.well-known/oauth-authorization-server`` inserted between the
host and the issuer's path). The document's ``issuer`` must equal the
configured one exactly (OIDC Discovery §4.3, RFC 8414 §3.3), or the endpoints
in it could send the credential to someone else. Also owns the cache of
documents, shared by all credentials at one issuer.

A failed read raises ``DiscoveryError`` with one class: one of the fixed
``ErrorClass`` set, or ``issuer_mismatch``, which exists for the discovery
failure counter only. Nothing from the document reaches a log or a label
except through those classes; its URLs are only used, never echoed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import httpx

from exporter.config import is_loopback_host
from exporter.errors import ErrorClass, InvalidResponse, classify_exception
from exporter.http import json_object, read_capped

#: The class of a document whose ``issuer`` is not the configured one.
ISSUER_MISMATCH: Final = "issuer_mismatch"
DiscoveryClass = ErrorClass | Literal["issuer_mismatch"]
#: Every value the ``error`` label of the discovery failure counter can take.
DISCOVERY_ERROR_CLASSES: tuple[str, ...] = (*(str(c) for c in ErrorClass), ISSUER_MISMATCH)

OIDC_SUFFIX = "/.well-known/openid-configuration"
RFC8414_PREFIX = "/.well-known/oauth-authorization-server"
#: Endpoints RFC 8705 §5 lets a server alias for mutual-TLS clients that we use.
MTLS_ALIASED = ("token_endpoint", "introspection_endpoint", "revocation_endpoint")
#: A document is read again after this long even without a reload or a 404,
#: so endpoints a server moves are followed within a day.
DEFAULT_MAX_AGE = 86400.0


class DiscoveryError(Exception):
    """A failed metadata read. ``str()`` is safe to log: no URL from the document, no secret."""

    def __init__(self, error: DiscoveryClass, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{error}: {detail}")
        self.error: DiscoveryClass = error
        self.detail = detail
        self.status = status

    @property
    def token_error(self) -> ErrorClass:
        """The class this failure counts as on the token-request counters (the fixed set)."""
        return ErrorClass.INVALID_RESPONSE if self.error == ISSUER_MISMATCH else ErrorClass(
            self.error)


@dataclass(frozen=True)
class ServerMetadata:
    """What the exporter uses from an authorization server's metadata document."""

    issuer: str
    #: The URL the document was read from.
    source: str
    token_endpoint: str
    introspection_endpoint: str | None = None
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None
    #: None when the document does not say (then nothing is refused on its account).
    token_endpoint_auth_methods_supported: frozenset[str] | None = None
    #: RFC 8705 §5 aliases, by endpoint name, for clients that authenticate by certificate.
    mtls_endpoint_aliases: Mapping[str, str] = field(default_factory=dict)
    fetched_at: float = 0.0

    def endpoint(
        self,
        name: Literal["token_endpoint", "introspection_endpoint", "revocation_endpoint"],
        *,
        mtls: bool = False,
    ) -> str | None:
        """An endpoint's URL; with ``mtls``, its RFC 8705 alias where the server has one."""
        if mtls and name in self.mtls_endpoint_aliases:
            return self.mtls_endpoint_aliases[name]
        value: str | None = getattr(self, name)
        return value

    def supports_auth_method(self, method: str) -> bool:
        """False only when the document lists its methods and ``method`` is not among them."""
        supported = self.token_endpoint_auth_methods_supported
        return supported is None or method in supported


def discovery_urls(issuer: str) -> tuple[str, str]:
    """The OpenID Connect and RFC 8414 metadata URLs of ``issuer``, in the order tried.

    OIDC Discovery §4: append to the issuer, less any trailing ``/``. RFC 8414
    §3.1: insert the well-known segment between the host and the path
    (``https://h/realms/x`` -> ``https://h/.well-known/oauth-authorization-server/realms/x``).
    """
    url = httpx.URL(issuer)
    path = url.path.rstrip("/")
    origin = url.copy_with(path="/", query=None, fragment=None)
    oidc = str(origin.copy_with(path=path + OIDC_SUFFIX))
    rfc8414 = str(origin.copy_with(path=RFC8414_PREFIX + path))
    return oidc, rfc8414


class _Rejected(Exception):
    """A document we cannot use; the fetch loop turns it into a DiscoveryError."""

    def __init__(self, error: DiscoveryClass, detail: str) -> None:
        super().__init__(detail)
        self.error: DiscoveryClass = error
        self.detail = detail


def _endpoint_url(doc: Mapping[str, object], name: str, *, required: bool,
                  allow_http: bool) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _Rejected(ErrorClass.INVALID_RESPONSE,
                        f"{name} is {'missing' if value is None else 'not a URL'}")
    return _check_endpoint(value, name, allow_http)


def _check_endpoint(value: str, name: str, allow_http: bool) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        raise _Rejected(ErrorClass.INVALID_RESPONSE, f"{name} is not a valid URL") from None
    # httpx percent-encodes what cannot be in a host ("bad host", "[bad")
    # rather than refusing it; such a URL could never be reached.
    if any(c.isspace() for c in value) or not url.host or "%" in url.host:
        raise _Rejected(ErrorClass.INVALID_RESPONSE, f"{name} is not a valid URL")
    if url.scheme == "https" and url.host:
        return value
    if url.scheme == "http" and url.host and (allow_http or is_loopback_host(url.host)):
        return value
    # RFC 8414 §2: endpoints are https. A plain-http one elsewhere would carry
    # the client's credential in clear.
    raise _Rejected(ErrorClass.INVALID_RESPONSE,
                    f"{name} is not an https URL (set allow_insecure_http to accept http)")


def parse_metadata(
    body: bytes, issuer: str, source: str, fetched_at: float, *, allow_http: bool = False
) -> ServerMetadata:
    """Judge a metadata document; raise DiscoveryError if it cannot be used."""
    try:
        return _parse(body, issuer, source, fetched_at, allow_http)
    except _Rejected as exc:
        raise DiscoveryError(exc.error, exc.detail) from None


def _parse(body: bytes, issuer: str, source: str, fetched_at: float,
           allow_http: bool) -> ServerMetadata:
    try:
        doc = json_object(body, "metadata document")
    except InvalidResponse as exc:
        raise _Rejected(ErrorClass.INVALID_RESPONSE, str(exc)) from None
    if doc.get("issuer") != issuer:
        # Exact string comparison, as OIDC Discovery §4.3 and RFC 8414 §3.3 require:
        # no normalising of case, ports or trailing slashes.
        raise _Rejected(ISSUER_MISMATCH,
                        "the document's issuer is not the configured issuer"
                        if isinstance(doc.get("issuer"), str) else "the document names no issuer")
    methods = doc.get("token_endpoint_auth_methods_supported")
    if methods is not None and not (
        isinstance(methods, list) and all(isinstance(m, str) for m in methods)
    ):
        raise _Rejected(ErrorClass.INVALID_RESPONSE,
                        "token_endpoint_auth_methods_supported is not a list of names")
    aliases_doc = doc.get("mtls_endpoint_aliases")
    aliases: dict[str, str] = {}
    if aliases_doc is not None:
        if not isinstance(aliases_doc, dict):
            raise _Rejected(ErrorClass.INVALID_RESPONSE, "mtls_endpoint_aliases is not an object")
        for name in MTLS_ALIASED:
            url = _endpoint_url(aliases_doc, name, required=False, allow_http=allow_http)
            if url is not None:
                aliases[name] = url
    token_endpoint = _endpoint_url(doc, "token_endpoint", required=True, allow_http=allow_http)
    assert token_endpoint is not None
    return ServerMetadata(
        issuer=issuer,
        source=source,
        token_endpoint=token_endpoint,
        introspection_endpoint=_endpoint_url(doc, "introspection_endpoint", required=False,
                                             allow_http=allow_http),
        revocation_endpoint=_endpoint_url(doc, "revocation_endpoint", required=False,
                                          allow_http=allow_http),
        jwks_uri=_endpoint_url(doc, "jwks_uri", required=False, allow_http=allow_http),
        token_endpoint_auth_methods_supported=frozenset(methods) if methods is not None else None,
        mtls_endpoint_aliases=aliases,
        fetched_at=fetched_at,
    )


def _status_class(status: int) -> ErrorClass:
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if 500 <= status <= 599:
        return ErrorClass.SERVER_ERROR
    return ErrorClass.UNEXPECTED_STATUS


async def fetch_metadata(
    client: httpx.AsyncClient,
    issuer: str,
    *,
    timeout: float,
    max_bytes: int,
    clock: Callable[[], float] = time.time,
    allow_http: bool = False,
) -> ServerMetadata:
    """Read ``issuer``'s metadata: OpenID Connect discovery, then RFC 8414.

    The RFC 8414 location is tried only when the OpenID one answers 4xx (the
    server does not publish a document there). A server error, a timeout or a
    document that fails the checks ends the read: trying elsewhere would not
    make that server healthier, and a wrong issuer must never be worked around.
    The whole read, both locations, is bounded by ``timeout``.
    """
    oidc_url, rfc8414_url = discovery_urls(issuer)
    try:
        async with asyncio.timeout(timeout):
            url = oidc_url
            status, body = await _get(client, url, timeout, max_bytes)
            if 400 <= status <= 499 and status != 429:
                url = rfc8414_url
                status, body = await _get(client, url, timeout, max_bytes)
    except InvalidResponse as exc:
        # Larger than the cap, or undecodable: str() says which, and is safe.
        raise DiscoveryError(ErrorClass.INVALID_RESPONSE, f"metadata document {exc}",
                             status=exc.status) from None
    except Exception as exc:
        raise DiscoveryError(classify_exception(exc),
                             f"{type(exc).__name__} reading the metadata document") from None
    if not 200 <= status <= 299 or body is None:
        raise DiscoveryError(_status_class(status), f"HTTP {status} from the metadata endpoint",
                             status=status)
    return parse_metadata(body, issuer, url, clock(), allow_http=allow_http)


async def _get(client: httpx.AsyncClient, url: str, timeout: float,
               max_bytes: int) -> tuple[int, bytes | None]:
    # Redirects are not followed: the document's location is part of what the
    # issuer identifier vouches for.
    async with client.stream("GET", url, headers={"Accept": "application/json"},
                             timeout=timeout, follow_redirects=False) as response:
        if not 200 <= response.status_code <= 299:
            return response.status_code, None
        return response.status_code, await read_capped(response, max_bytes)


@dataclass
class _Entry:
    metadata: ServerMetadata | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MetadataCache:
    """Metadata documents by issuer, read once and shared by every credential there.

    ``get`` reads a document that is absent, older than ``max_age`` or
    invalidated; concurrent callers for one issuer wait for a single read. A
    failed read leaves nothing cached: the next ``get`` tries again.
    """

    def __init__(self, *, max_age: float = DEFAULT_MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        # Keyed by whether plain-http endpoints are acceptable too, since that
        # changes which documents pass the checks.
        self._entries: dict[tuple[str, bool], _Entry] = {}
        self._max_age = max_age
        self._clock = clock

    def invalidate(self, issuer: str | None = None) -> None:
        """Forget one issuer's document (a 404 from its token endpoint), or all (a reload)."""
        for (cached_issuer, _), entry in self._entries.items():
            if issuer is None or cached_issuer == issuer:
                entry.metadata = None

    def _fresh(self, entry: _Entry) -> ServerMetadata | None:
        metadata = entry.metadata
        if metadata is not None and self._clock() - metadata.fetched_at < self._max_age:
            return metadata
        return None

    async def get(
        self,
        client: httpx.AsyncClient,
        issuer: str,
        *,
        timeout: float,
        max_bytes: int,
        allow_http: bool = False,
    ) -> ServerMetadata:
        """The issuer's document, from the cache or read now; DiscoveryError if unreadable."""
        entry = self._entries.setdefault((issuer, allow_http), _Entry())
        cached = self._fresh(entry)
        if cached is not None:
            return cached
        async with entry.lock:
            # Another credential's read may have finished while we waited.
            cached = self._fresh(entry)
            if cached is not None:
                return cached
            entry.metadata = None
            entry.metadata = await fetch_metadata(
                client, issuer, timeout=timeout, max_bytes=max_bytes, clock=self._clock,
                allow_http=allow_http)
            return entry.metadata
