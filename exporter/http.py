"""Every outbound HTTP client: its limits, TLS, proxy, and the reading of answers.

``ClientPool`` hands out one ``httpx.AsyncClient`` per distinct outbound option
set (TLS trust and identity, proxy); every credential with that option set
shares it, and with it one keep-alive connection pool and one SSL context.

``read_body`` is the only way an answer's body is read. It reads the raw bytes
(``Response.aiter_raw``) and undoes ``Content-Encoding`` itself, a bounded
piece at a time, so that both the bytes on the wire and the decoded bytes are
capped. httpx's own decoding would inflate a whole network chunk at once: a
64 KiB chunk of a gzip bomb is 64 MiB decoded, and ``Content-Encoding: gzip,
gzip`` multiplies that again. Over the cap, ``ResponseTooLarge`` (class
``invalid_response``) is raised as soon as the cap is passed.

Exceptions raised here, all ``errors.InvalidResponse``::

    InvalidResponse
    ├── ResponseTooLarge       body (on the wire or decoded) over the cap
    └── UndecodableResponse    a gzip/deflate body that does not decode
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import certifi
import httpx

from exporter.config import Outbound
from exporter.errors import InvalidResponse

log = logging.getLogger("exporter.http")

DEFAULT_OUTBOUND = Outbound()

#: Requests one HTTP client has in flight at once (and connections it may open).
MAX_CONNECTIONS = 1000
#: Idle connections one HTTP client keeps open for reuse (httpx's own default).
#: Why not more: httpcore's pool checks every idle connection's socket, and
#: counts all its connections once per idle one, each time a request starts or
#: ends; with 200 idle connections that cost milliseconds per request.
MAX_KEEPALIVE = 20

#: The content codings ``read_body`` undoes with a bound, and so the only ones
#: we ask for. httpx would advertise br and zstd too when their libraries
#: happen to be installed; we decode neither, so a server must not be invited
#: to use them.
ACCEPT_ENCODING = "gzip, deflate"
#: Largest piece one decoding step may produce. Peak memory while reading is
#: the cap plus this much per content coding, whatever the compression ratio.
DECODE_PIECE = 64 * 1024


def outbound_ssl_context(outbound: Outbound) -> ssl.SSLContext | bool:
    """The TLS settings for one outbound option set (True: httpx's defaults)."""
    if outbound == Outbound(proxy_url=outbound.proxy_url):
        return True
    if outbound.insecure_skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # A configured CA replaces the public ones: a private token endpoint's
        # CA is usually all that should be trusted for it.
        context = ssl.create_default_context(cafile=outbound.ca_file or certifi.where())
    if outbound.cert_file and outbound.key_file:
        context.load_cert_chain(outbound.cert_file, outbound.key_file)
    return context


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its request's slot back when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _BoundedTransport(httpx.AsyncBaseTransport):
    """Lets at most ``limit`` requests into the connection pool at once; the rest queue here.

    Why: httpcore's pool, whenever a request starts or ends, matches every
    request queued in it against every connection it holds. With a thousand
    credentials starting together (a thousand token requests, then two thousand
    probes) that is millions of checks per event: the event loop spent minutes
    in them and requests timed out (benchmarks/README.md, scheduler_capacity).
    Waiting on a semaphore instead costs O(1), and with ``limit`` equal to the
    pool's ``max_connections`` the pool never has a queue, while as many
    requests as before may be in flight. The wait is bounded by the request's
    pool timeout and fails as ``httpx.PoolTimeout``, as waiting in the pool would.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(limit)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free connection",
                                    request=request) from None
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._slots.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, self._slots.release)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def new_http_client(outbound: Outbound = DEFAULT_OUTBOUND) -> httpx.AsyncClient:
    # trust_env=False: proxies and CA bundles come from our config, never from
    # whatever environment the process happens to inherit. Redirects are never
    # followed: a token request redirected elsewhere would carry the secret.
    # The transport is built here, with the same arguments AsyncClient would
    # use for it (proxy included), so that it can be wrapped.
    transport = httpx.AsyncHTTPTransport(
        verify=outbound_ssl_context(outbound),
        trust_env=False,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                            max_keepalive_connections=MAX_KEEPALIVE),
        proxy=outbound.proxy_url,
    )
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        transport=_BoundedTransport(transport, MAX_CONNECTIONS),
        headers={"User-Agent": "token-health-exporter", "Accept-Encoding": ACCEPT_ENCODING},
    )


class ClientPool:
    """One HTTP client per distinct outbound option set, shared by its providers.

    Most providers share the default client; a client (and its SSL context,
    which is costly to build) is made only for each distinct TLS/proxy setting.
    """

    def __init__(self, shared: httpx.AsyncClient | None = None) -> None:
        self._shared = shared
        self._clients: dict[Outbound, httpx.AsyncClient] = {}

    def get(self, outbound: Outbound) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        client = self._clients.get(outbound)
        if client is None:
            client = self._clients[outbound] = new_http_client(outbound)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


# --------------------------------------------------------------------------- reading answers


class ResponseTooLarge(InvalidResponse):
    """The body, as sent or once decoded, is longer than the cap. ``str()`` says which."""

    def __init__(self, limit: int, *, decoded: bool, status: int) -> None:
        what = "decoded body" if decoded else "body"
        super().__init__(f"{what} larger than {limit} bytes", status=status)
        self.limit = limit
        self.decoded = decoded


class UndecodableResponse(InvalidResponse):
    """A body whose ``Content-Encoding`` says gzip or deflate but which is neither."""


class _Inflater:
    """Undoes one gzip or deflate coding, at most ``DECODE_PIECE`` bytes per step."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        # RFC 9110 §8.4.1.2: "deflate" is the zlib format, but some servers send
        # raw deflate; the first two bytes tell which (RFC 1950 §2.2: a zlib
        # header is method 8 and a multiple of 31), so wait for them.
        self._inflate: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if coding != "deflate" else None
        )
        self._head = b""

    def decode(self, data: bytes) -> Iterator[bytes]:
        inflate = self._inflate
        if inflate is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            inflate = self._inflate = zlib.decompressobj(
                zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        while data or not inflate.eof:
            try:
                out = inflate.decompress(data, DECODE_PIECE)
            except zlib.error:
                raise UndecodableResponse(f"body is not valid {self._coding}") from None
            if out:
                yield out
            # Bytes after the end of the stream are ignored, as httpx does.
            data = b"" if inflate.eof else inflate.unconsumed_tail
            if not data and len(out) < DECODE_PIECE:
                return  # all input used, and nothing held back for lack of room

    def finish(self) -> Iterator[bytes]:
        if self._head:  # a deflate body of one byte: let zlib judge it
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            head, self._head = self._head, b""
            yield from self.decode(head)


class _Decoder:
    """The content codings of one answer, undone in reverse order, piece by piece.

    Each step is a generator that yields before making the next piece, so while
    the caller counts and keeps a piece nothing else is decoded: memory is one
    piece per coding, however deep the nesting or high the ratio.
    """

    def __init__(self, codings: Sequence[str]) -> None:
        self._layers = [_Inflater(c) for c in reversed(codings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, data)

    def finish(self) -> Iterator[bytes]:
        for i, layer in enumerate(self._layers):
            for piece in layer.finish():
                yield from self._through(i + 1, piece)

    def _through(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[i].decode(data):
            yield from self._through(i + 1, piece)


_INFLATABLE = frozenset({"gzip", "x-gzip", "deflate"})


def _codings(response: httpx.Response) -> list[str] | None:
    """The codings to undo, in the order applied; None to read the body as it came.

    An unknown coding (br, zstd, compress) leaves the body as it came, as httpx
    leaves it when it lacks the library: it is then judged as it is (a token
    answer that is not JSON is ``invalid_response``), never decoded unbounded.
    """
    codings = [c.strip().lower() for value in response.headers.get_list("content-encoding")
               for c in value.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not all(c in _INFLATABLE for c in codings):
        return None
    return codings


async def read_body(response: httpx.Response, limit: int) -> bytes:
    """The decoded body of a streamed answer; ``ResponseTooLarge`` past ``limit`` bytes.

    ``limit`` caps the bytes on the wire and the decoded bytes alike.
    ``UndecodableResponse`` for a body its ``Content-Encoding`` does not fit.
    """
    status = response.status_code
    # RFC 9110 §8.6: the Content-Length of an answer to HEAD, or of a 304, is
    # the size of a body that is not sent; there is nothing to refuse.
    bodiless = response.request.method == "HEAD" or status in (204, 304) or status < 200
    declared = response.headers.get("content-length", "")
    if not bodiless and declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(limit, decoded=False, status=status)
    if response.is_stream_consumed:
        # Made with its content in memory (httpx.Response(content=...), as an
        # httpx.MockTransport handler may): httpx decoded it already.
        if len(response.content) > limit:
            raise ResponseTooLarge(limit, decoded=True, status=status)
        return response.content
    codings = _codings(response)
    decoder = _Decoder(codings) if codings else None
    pieces: list[bytes] = []
    received = decoded = 0

    def keep(piece: bytes) -> None:
        nonlocal decoded
        decoded += len(piece)
        if decoded > limit:
            raise ResponseTooLarge(limit, decoded=decoder is not None, status=status)
        pieces.append(piece)

    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit:
            raise ResponseTooLarge(limit, decoded=False, status=status)
        if decoder is None:
            keep(chunk)
            continue
        for piece in decoder.feed(chunk):
            keep(piece)
    if decoder is not None:
        for piece in decoder.finish():
            keep(piece)
    return b"".join(pieces)


def _safe_url(url: httpx.URL) -> str:
    """The URL without userinfo, query or fragment, which may carry credentials."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """``read_body``, logging a refused body at WARNING with its URL before raising.

    For callers that record only the class of a failure (the probe runner),
    so that the reason is still in the log.
    """
    try:
        return await read_body(response, limit)
    except InvalidResponse as exc:
        log.warning("answer from %s refused (invalid_response): %s",
                    _safe_url(response.request.url), exc)
        raise


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """The JSON object an answer's body holds; ``InvalidResponse`` naming ``what`` if none."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidResponse(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidResponse(f"{what} is not a JSON object")
    return doc
