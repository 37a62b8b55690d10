"""Every outbound HTTP client: its limits, TLS, proxy, and the reading of answers.

``ClientPool`` hands out one ``httpx.AsyncClient`` per distinct outbound option
set (TLS trust and identity, proxy); every credential with that option set
shares it, and with it its keep-alive connections (``exporter.transport``: a
pool per host) and one SSL context. ``send_streamed`` sends a request the
caller built in full, straight to that transport (the probe runner's path).

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
from exporter.transport import KeepAliveTransport

log = logging.getLogger("exporter.http")

DEFAULT_OUTBOUND = Outbound()

#: Requests one HTTP client has in flight to one host (scheme, host and port)
#: at once, and connections it keeps open to that host for reuse. A host's
#: throughput is this many over its latency: 64 connections at 100 ms are 640
#: requests a second, the probes of 10,000 credentials at 30 s intervals.
#: (Through a proxy, httpcore's pool: it checks every idle connection it holds
#: whenever a request starts or ends, one more reason to keep this small.)
MAX_CONNECTIONS_PER_HOST = 64

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


class HostPools(httpx.AsyncBaseTransport):
    """One connection pool per host, each letting at most ``per_host`` requests in at
    once; the rest queue here, on a semaphore. Used around httpx's own transport
    when a proxy is configured (without one, ``exporter.transport`` does all this).

    Why one pool per host: httpcore's pool, whenever a request starts or ends,
    walks every connection it holds (and, for each idle one, counts them all
    again and polls its socket). One pool for every host made that cost grow
    with the whole fleet's connections: at 2,000 credentials it was most of
    the exporter's CPU (benchmarks/README.md, capacity). A pool per host holds
    at most ``per_host`` connections, all kept alive for the next request, so a
    host's probes reuse its connections instead of opening new ones.

    Why the semaphore: with at most as many requests in a pool as it may have
    connections, the pool never has a queue of its own, whose matching of every
    queued request against every connection was the start-up stall this class
    was first written for (and httpcore leaves connections behind when a
    request is cancelled while queued in it, encode/httpcore#1093). The wait is
    bounded by the request's pool timeout and fails as ``httpx.PoolTimeout``,
    as waiting in the pool would. Every pool shares one SSL context.
    """

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport], per_host: int) -> None:
        self._make = make
        self._per_host = per_host
        self._hosts: dict[tuple[bytes, bytes, int | None],
                          tuple[httpx.AsyncBaseTransport, asyncio.Semaphore]] = {}
        #: Answers nobody waits for any more, being closed.
        self._closing: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = (self._make(), asyncio.Semaphore(self._per_host))
        transport, slots = host
        timeout = request.extensions.get("timeout", {}).get("pool")
        if slots.locked():
            try:
                async with asyncio.timeout(timeout):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("timed out waiting for a free connection",
                                        request=request) from None
        else:
            await slots.acquire()
        # The request runs as a task of its own that our caller's cancellation
        # (a probe's overall deadline) does not reach: httpcore leaves a
        # connection behind for good when a request is cancelled while that
        # connection is being opened (encode/httpcore#1093), and a pool of 64
        # filled with those within seconds of a busy start, after which every
        # request to the host timed out. httpx's own timeouts still end it.
        sending = asyncio.ensure_future(transport.handle_async_request(request))
        try:
            response = await asyncio.shield(sending)
        except asyncio.CancelledError:
            if sending.done() and not sending.cancelled() and sending.exception() is None:
                self._close_later(sending.result(), slots)
            else:
                sending.add_done_callback(lambda task: self._abandoned(task, slots))
            raise
        except BaseException:
            slots.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, slots.release)
        return response

    def _abandoned(self, sending: asyncio.Future[httpx.Response],
                   slots: asyncio.Semaphore) -> None:
        """A request whose caller gave up has ended: free its slot (and its answer)."""
        if sending.cancelled() or sending.exception() is not None:
            slots.release()
        else:
            self._close_later(sending.result(), slots)

    def _close_later(self, response: httpx.Response, slots: asyncio.Semaphore) -> None:
        async def close() -> None:
            try:
                await response.aclose()
            finally:
                slots.release()

        task = asyncio.ensure_future(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        hosts, self._hosts = self._hosts, {}
        for transport, _ in hosts.values():
            await transport.aclose()


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: answers' ``Set-Cookie`` is not even parsed."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """An ``AsyncClient`` that never keeps a cookie.

    One client serves every credential with the same outbound options, so a
    cookie one credential's answer set would ride along with every other's
    requests to that host. And httpx reads every answer's headers into its jar
    through a ``urllib`` request built per answer: 8 % of a bare request's CPU.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._no_cookies = _NoCookies()
        self.direct_transport = transport

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass  # an empty jar that stays empty


async def send_streamed(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send a request built in full by the caller (headers, timeouts in its
    ``extensions``); the answer's body is unread, to be closed by the caller.

    A client of ours hands it straight to its transport: the client's own
    ``send`` (auth, redirects, event hooks, cookies, timing) would do nothing
    here, and cost a quarter of a probe run's CPU. Any other client (a test's,
    on ``httpx.MockTransport``) sends it as usual.
    """
    if isinstance(client, _CookielessClient):
        response = await client.direct_transport.handle_async_request(request)
        response.request = request
        return response
    return await client.send(request, stream=True)


def new_http_client(outbound: Outbound = DEFAULT_OUTBOUND) -> httpx.AsyncClient:
    # trust_env=False: proxies and CA bundles come from our config, never from
    # whatever environment the process happens to inherit. Redirects are never
    # followed: a token request redirected elsewhere would carry the secret.
    # The transports are built here, with the same arguments AsyncClient would
    # use (proxy included), so that they can be wrapped; the SSL context is
    # built once (loading a CA bundle takes milliseconds) and shared by all.
    verify = outbound_ssl_context(outbound)
    context = (verify if isinstance(verify, ssl.SSLContext)
               else httpx.create_ssl_context(verify=True, trust_env=False))
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS_PER_HOST,
                          max_keepalive_connections=MAX_CONNECTIONS_PER_HOST)

    def transport() -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(verify=context, trust_env=False, limits=limits,
                                        proxy=outbound.proxy_url)

    # Through a proxy, httpx's own transport (it speaks CONNECT and forwarding);
    # otherwise ours, which costs a fraction of its CPU (exporter/transport.py).
    pools: httpx.AsyncBaseTransport = (
        HostPools(transport, MAX_CONNECTIONS_PER_HOST) if outbound.proxy_url
        else KeepAliveTransport(context, MAX_CONNECTIONS_PER_HOST))
    return _CookielessClient(
        trust_env=False,
        follow_redirects=False,
        transport=pools,
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
