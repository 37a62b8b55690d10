"""The outbound HTTP/1.1 transport: one small keep-alive pool per host, h11 parsing.

``KeepAliveTransport`` is an ``httpx.AsyncBaseTransport``: the exporter's
clients (``exporter.http.new_http_client``) send every token request and probe
through it unless a proxy is configured. h11 parses and frames every message;
this module only opens, reuses and closes connections.

Why not httpx's own transport (httpcore): whenever a request starts or ends,
its pool walks every connection it holds and, for each idle one, polls the
socket through several layers of anyio; at a start-up burst that was 38 % of
the exporter's CPU and in steady state a fifth (benchmarks/README.md,
capacity). Here a host's idle connections are a stack: a request takes the top
one, and only that one is looked at. A connection the server closed while it
sat idle has already been told so by the event loop (``eof_received``), so no
poll is needed to see it.

The rules it keeps:

* at most ``per_host`` requests in flight to one host (scheme, host, port) at
  once, each on a connection of its own; the rest wait, within the request's
  ``pool`` timeout (``httpx.PoolTimeout``);
* a connection goes back on its host's stack only when its request and answer
  both ended cleanly and neither side asked to close; an idle connection older
  than ``keepalive_expiry`` is closed, as httpx's transport would;
* a request cancelled or failed part-way closes its connection (it is never
  reused in an unknown state) and gives its slot back at once;
* the ``connect``, ``read`` and ``write`` timeouts of the request apply to each
  step, and failures are the httpx exceptions httpx's transport raises
  (``ConnectError`` with the ``ssl`` error as its cause, ``ReadTimeout``,
  ``RemoteProtocolError``...), so ``exporter.errors`` classifies them alike.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import h11
import httpx

#: Received bytes held for a connection before the socket is no longer read
#: (the reader catches up, then reading resumes).
READ_BUFFER = 256 * 1024
#: Seconds an idle connection is kept for reuse (httpx's transport: 5 s).
KEEPALIVE_EXPIRY = 5.0

_HostKey = tuple[bytes, bytes, int]
_DEFAULT_PORTS = {b"http": 80, b"https": 443}


async def _wait(waiter: asyncio.Future[None], timeout: float | None,
                timed_out: Callable[[], httpx.TimeoutException]) -> None:
    """Wait for a protocol callback to resolve ``waiter``; ``timed_out()`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        raise timed_out() from None


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: the bytes received, and h11's view of it."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._reading_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self.idle_since = 0.0

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_BUFFER and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        self._wake_reader()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._data_waiter = self._data_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- used by the transport

    def reusable(self, now: float, expiry: float) -> bool:
        """Idle, open, nothing unasked-for received, and not idle for too long.

        Bytes that came after an answer (in h11's buffer or ours) would be read
        as the next request's answer: such a connection is closed instead."""
        return (not self._lost and not self._eof and not self._buffer
                and not self.h11.trailing_data[0]
                and self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE
                and now - self.idle_since < expiry)

    def close(self) -> None:
        # abort, not close: over TLS, close() sends close_notify and keeps the
        # socket open until the peer answers it (up to 30 s), and a peer that
        # never does leaves it open that long, or for good if the event loop
        # stops first. The message framing already said where each answer
        # ended; httpx's own transport also closes without a TLS shutdown.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def write(self, data: bytes, timeout: float | None) -> None:
        if self._lost or self.transport is None or self.transport.is_closing():
            raise httpx.WriteError("connection closed while sending the request")
        self.transport.write(data)
        if self._writing_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await _wait(self._drain_waiter, timeout,
                        lambda: httpx.WriteTimeout("timed out sending the request"))
            if self._lost:
                raise httpx.WriteError("connection closed while sending the request") \
                    from self._error

    async def _read(self, timeout: float | None) -> bytes:
        """What has arrived, waiting for something; ``b""`` once the peer has closed."""
        if not self._buffer and not self._eof and not self._lost:
            self._data_waiter = asyncio.get_running_loop().create_future()
            await _wait(self._data_waiter, timeout,
                        lambda: httpx.ReadTimeout("timed out reading the answer"))
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            if self._reading_paused and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()
            return data
        if self._error is not None:
            raise httpx.ReadError(f"connection lost: {self._error}") from self._error
        return b""

    async def next_event(self, timeout: float | None) -> Any:
        """h11's next event of the answer, reading as it needs."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(f"invalid HTTP answer: {exc}") from exc
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(
                        "server disconnected without sending a complete answer")
                return event
            self.h11.receive_data(await self._read(timeout))


class _Body(httpx.AsyncByteStream):
    """An answer's body, read from its connection as the caller iterates."""

    def __init__(self, transport: KeepAliveTransport, host: _Host, conn: _Connection,
                 read_timeout: float | None) -> None:
        self._transport = transport
        self._host = host
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None or self._complete:
            return
        try:
            while True:
                event = await conn.next_event(self._read_timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._complete = True
                    return
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._transport._finished(self._host, conn)


class _Host:
    """One host's idle connections (a stack: newest on top) and request slots."""

    def __init__(self, per_host: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(per_host)


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over a keep-alive pool per host; see the module's docstring."""

    def __init__(self, ssl_context: ssl.SSLContext, per_host: int, *,
                 keepalive_expiry: float = KEEPALIVE_EXPIRY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ssl = ssl_context
        self._per_host = per_host
        self._expiry = keepalive_expiry
        self._clock = clock
        self._hosts: dict[_HostKey, _Host] = {}
        self._closed = False

    def idle_connections(self) -> int:
        """Idle connections a request could still take, over all hosts."""
        now = self._clock()
        return sum(conn.reusable(now, self._expiry)
                   for host in self._hosts.values() for conn in host.idle)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or _DEFAULT_PORTS[scheme]
        key = (scheme, url.raw_host, port)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(self._per_host)
        timeouts = request.extensions.get("timeout", {})
        await self._acquire(host, timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            conn = self._idle_connection(host)
            if conn is None:
                conn = await self._connect(url.host, port, scheme == b"https",
                                           timeouts.get("connect"))
            return await self._exchange(host, conn, request, timeouts)
        except BaseException:
            if conn is not None:
                conn.close()
            host.slots.release()
            raise

    async def _acquire(self, host: _Host, timeout: float | None) -> None:
        if not host.slots.locked():
            await host.slots.acquire()
            return
        try:
            async with asyncio.timeout(timeout):
                await host.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free connection") from None

    def _idle_connection(self, host: _Host) -> _Connection | None:
        now = self._clock()
        while host.idle:
            conn = host.idle.pop()
            if conn.reusable(now, self._expiry):
                return conn
            conn.close()
        return None

    async def _connect(self, hostname: str, port: int, tls: bool,
                       timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection, hostname, port,
                    ssl=self._ssl if tls else None,
                    server_hostname=hostname if tls else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {hostname}:{port}") from None
        except OSError as exc:  # ssl.SSLError included: the cause says which
            raise httpx.ConnectError(f"could not connect to {hostname}:{port}: {exc}") from exc
        return conn

    async def _exchange(self, host: _Host, conn: _Connection, request: httpx.Request,
                        timeouts: dict[str, float | None]) -> httpx.Response:
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        try:
            head = conn.h11.send(h11.Request(method=request.method,
                                             target=request.url.raw_path,
                                             headers=request.headers.raw))
            parts = [head or b""]
            async for chunk in request.stream:  # type: ignore[union-attr]
                parts.append(conn.h11.send(h11.Data(data=chunk)) or b"")
            parts.append(conn.h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        # One write for the whole request: with TCP_NODELAY, one packet.
        await conn.write(b"".join(parts), write_timeout)
        while True:
            event = await conn.next_event(read_timeout)
            if isinstance(event, h11.Response):
                break
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}")
        return httpx.Response(
            status_code=event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, host, conn, read_timeout),
            extensions={"http_version": b"HTTP/" + event.http_version,
                        "reason_phrase": event.reason},
        )

    def _finished(self, host: _Host, conn: _Connection) -> None:
        """The answer's body is closed: keep its connection for the next request, or close it.

        Kept only when both messages ended as h11 says they should, neither side
        asked to close (h11's states are then DONE), and nothing came after."""
        host.slots.release()
        state = conn.h11
        if not self._closed and state.our_state is h11.DONE and state.their_state is h11.DONE:
            state.start_next_cycle()
            now = conn.idle_since = self._clock()
            if not conn.reusable(now, self._expiry):
                conn.close()
                return
            # The oldest idle connections are at the bottom: drop those expired.
            while host.idle and not host.idle[0].reusable(now, self._expiry):
                host.idle.pop(0).close()
            host.idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        hosts, self._hosts = self._hosts, {}
        for host in hosts.values():
            for conn in host.idle:
                conn.close()
            host.idle.clear()
