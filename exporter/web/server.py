"""The HTTP/1.1 server on the exporter's event loop: connections, TLS, limits, access.

One task per connection and no thread per connection: ``asyncio.start_server``
accepts, h11 parses (this module never parses HTTP itself) and ``WebApp``
answers. What a connection may cost is bounded by ``Limits``, each with its
reason; docs/reliability.md lists them with their flags. Every connection runs
on three clocks:

- the TLS handshake (``tls_handshake_timeout``);
- an absolute deadline for a request head (``read_header_timeout``), from the
  accept (or the handshake) for the first request and from the first byte for
  later ones; bytes trickling in do not move it, so a client sending one byte a
  second is cut like a silent one;
- an idle timeout between requests (``idle_timeout``), longer than the scrape
  interval, so a scraper's keep-alive connection is reused, not re-handshaken.

At most ``max_connections`` are open. One more sheds the connection idle the
longest (no request in progress: a fresh one that sent nothing, or a
keep-alive one between requests), then the oldest still handshaking or
sending its head; a connection answering a request is never shed. A flood of
idle connections therefore cannot lock scrapers out, and costs no thread.

Each request is decided in this order before any work is done for it: the
head size (431), the web config's rate limit (429), basic auth (401, bcrypt
in a worker thread only for credentials not already verified), the body
size (413); then the app answers. TLS is run on each connection
(``exporter.web.streams``) with the web config in force at that moment
(``ReloadingWebConfig``), so a renewed certificate is served from the next
connection on; a handshake counts against the connection cap like any other
connection.

At shutdown the server stops accepting, closes idle connections, gives
answers in progress ``shutdown_timeout`` and then cuts the rest. It tracks
its connection tasks itself: in Python 3.11 ``Server.wait_closed()`` does
not wait for connections.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import h11

from exporter.web.app import Request, Response, WebApp, Workers
from exporter.web.compression import gzip_compress
from exporter.web.streams import PlainStream, TLSStream
from exporter.webconfig import REALM, BasicAuth, ReloadingWebConfig, WebConfig

log = logging.getLogger("exporter.web")


@dataclass(frozen=True)
class Limits:
    """Every bound on what a client can make the web server hold or do."""

    #: A TLS client gets this long to finish its handshake. A real client needs
    #: milliseconds; a silent one would otherwise hold a socket and a slot.
    tls_handshake_timeout: float = 10.0
    #: A request head must be complete this long after the connection opened (first
    #: request) or after its first byte (later ones), however the bytes trickle in;
    #: a short request body must arrive by the same deadline. A scraper sends its
    #: few hundred bytes at once; only a slow or hostile client needs more.
    read_header_timeout: float = 5.0
    #: A keep-alive connection with no request in progress is closed after this long.
    #: Longer than Prometheus keeps idle connections itself (5 minutes), so the
    #: client closes first and never sends a scrape down a connection being closed.
    idle_timeout: float = 330.0
    #: The request line and headers together; 431 beyond. A scrape needs under
    #: 1 KiB; this leaves room for a browser's cookies on the landing page.
    max_header_bytes: int = 16 * 1024
    #: Connections open at once, handshakes included; one more sheds the longest-idle.
    #: Each costs a file descriptor and about 9 KiB (benchmarks/flood.py: 2,000 idle
    #: connections add 17 MiB), so a flood up to the cap costs under 40 MiB.
    max_connections: int = 4096
    #: Connections the kernel queues before they are accepted. A burst of connects
    #: beyond it is dropped and retried by the client a second later, which a
    #: scrape caught in a flood would feel; the kernel caps it at somaxconn.
    backlog: int = 1024
    #: Request bodies are never used (POST /-/reload takes none); up to this much is
    #: read and dropped so the connection stays usable, more gets 413 and a close.
    max_body_bytes: int = 64 * 1024
    #: A client must take each response within this long. /metrics can be tens of MB
    #: at thousands of credentials; a client that stops reading would pin it in memory.
    write_timeout: float = 60.0
    #: At shutdown, answers in progress get this long before their connections are cut.
    shutdown_timeout: float = 10.0


#: Responses at least this big are gzipped when the client accepts it; smaller ones
#: cost more to compress than they save.
GZIP_MIN_BYTES = 1024
#: Bytes read from a connection at a time: h11 then holds at most this much beyond
#: ``max_header_bytes`` before it refuses an over-long head.
_READ_CHUNK = 16 * 1024


class _Phase(Enum):
    HANDSHAKE = "handshake"
    #: No request in progress: a fresh connection, or a kept-alive one between requests.
    IDLE = "idle"
    #: Part of a request head has arrived.
    READING = "reading"
    #: A request is being answered.
    BUSY = "busy"


class _Connection:
    __slots__ = ("peer", "phase", "stream")

    def __init__(self, peer: str, phase: _Phase, stream: PlainStream) -> None:
        self.peer = peer
        self.phase = phase
        self.stream = stream


class TokenBucket:
    """exporter-toolkit's ``rate_limit``: ``burst`` requests at once, one per ``interval``."""

    def __init__(self, interval: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float:
        """0 if a request may go ahead now (and counts it), else seconds to wait."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) / self.interval)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) * self.interval


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:10180``, ``0.0.0.0:10180``, ``[::1]:10180`` -> (host, port); host "" is every address."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {address!r}: use HOST:PORT or :PORT")
    return host.strip("[]"), int(port)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as Prometheus does; ``(old, new)``.

    Distributions often keep the soft limit at 1024 for old select()-based
    programs; the event loop uses epoll, so the only effect of the low limit
    is to fail accept() under a connection flood long before the cap sheds.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
            return soft, soft
        return soft, hard
    return soft, soft


def _accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _head_bytes(request: h11.Request) -> int:
    # Request line plus "name: value\r\n" per header, as it came on the wire.
    size = len(request.method) + len(request.target) + 12
    for name, value in request.headers:
        size += len(name) + len(value) + 4
    return size


class WebServer:
    """Serves a ``WebApp`` on the running event loop: ``await start()``, ``await stop()``."""

    def __init__(self, app: WebApp, address: str, web_config: WebConfig | None = None,
                 limits: Limits | None = None, *, config_check_interval: float = 1.0) -> None:
        self.app = app
        self.address = address
        self._host, self._port = parse_listen_address(address)
        self.limits = limits or Limits()
        self._config = (
            ReloadingWebConfig(web_config, check_interval=config_check_interval)
            if web_config is not None else None
        )
        self.scheme = "https" if web_config is not None and web_config.ssl_context else "http"
        self._server: asyncio.Server | None = None
        self._bound_port: int | None = None
        #: bcrypt one at a time: a flood of wrong passwords takes one core at most, and
        #: never the threads that render /metrics.
        self._bcrypt = Workers(1)
        self._bucket: TokenBucket | None = None
        self._idle: OrderedDict[_Connection, None] = OrderedDict()
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._busy: OrderedDict[_Connection, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen; OSError if the address cannot be bound."""
        self._server = await asyncio.start_server(
            self._on_connection, self._host or None, self._port,
            backlog=self.limits.backlog, reuse_address=True,
        )
        self._bound_port = int(self._server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose for port 0)."""
        assert self._bound_port is not None, "start() first"
        return self._bound_port

    @property
    def web_config(self) -> WebConfig | None:
        """The web config in force (re-read if its files changed)."""
        return self._config.current() if self._config is not None else None

    async def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in [*self._idle, *self._waiting]:
            self._forget(conn)
            conn.stream.abort()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.limits.shutdown_timeout)
            if pending:
                log.warning("cutting %d connection(s) still answering after %gs",
                            len(pending), self.limits.shutdown_timeout)
                for conn in list(self._busy):
                    self._forget(conn)
                    conn.stream.abort()
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ connection table

    def _container(self, phase: _Phase) -> OrderedDict[_Connection, None]:
        if phase is _Phase.IDLE:
            return self._idle
        if phase is _Phase.BUSY:
            return self._busy
        return self._waiting

    def _count(self) -> int:
        return len(self._idle) + len(self._waiting) + len(self._busy)

    def _admit(self, conn: _Connection) -> bool:
        """Make room for a new connection, shedding others if at the cap; False: refuse it."""
        while self._count() >= self.limits.max_connections:
            victim = next(iter(self._idle), None) or next(iter(self._waiting), None)
            if victim is None:  # every slot is answering a request: turn the newcomer away
                self.app.http.shed += 1
                log.debug("connection cap %d reached with every connection busy; "
                          "refusing %s", self.limits.max_connections, conn.peer)
                return False
            self._forget(victim)
            victim.stream.abort()
            self.app.http.shed += 1
            log.debug("connection cap %d reached: shed %s connection from %s",
                      self.limits.max_connections, victim.phase.value, victim.peer)
        self._container(conn.phase)[conn] = None
        self.app.http.open = self._count()
        return True

    def _move(self, conn: _Connection, phase: _Phase) -> None:
        old = self._container(conn.phase)
        if conn not in old:
            return  # shed meanwhile
        del old[conn]
        conn.phase = phase
        # At the end: the most recently idle (or waiting) is the last to be shed.
        self._container(phase)[conn] = None

    def _forget(self, conn: _Connection) -> None:
        self._container(conn.phase).pop(conn, None)
        self.app.http.open = self._count()

    # ------------------------------------------------------------------ one connection

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        config = self.web_config
        ssl_context = config.ssl_context if config is not None else None
        stream = (TLSStream(reader, writer, ssl_context) if ssl_context is not None
                  else PlainStream(reader, writer))
        conn = _Connection(peer, _Phase.HANDSHAKE if ssl_context else _Phase.IDLE, stream)
        if self._closing or not self._admit(conn):
            stream.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        graceful = False
        try:
            if isinstance(stream, TLSStream):
                try:
                    async with asyncio.timeout(self.limits.tls_handshake_timeout):
                        await stream.handshake()
                    await stream.drain()
                except (OSError, TimeoutError) as exc:
                    log.debug("TLS handshake with %s failed: %s", peer,
                              exc or type(exc).__name__)
                    graceful = True  # so the alert saying why goes out before the close
                    return
                self._move(conn, _Phase.IDLE)
            graceful = await self._serve(conn, stream)
        except (OSError, TimeoutError) as exc:
            log.debug("connection from %s ended: %s", peer, exc or type(exc).__name__)
        except Exception:
            log.exception("error serving a connection from %s", peer)
        finally:
            self._forget(conn)
            self._tasks.discard(task)
            if graceful:
                stream.close()
                if stream.transport.get_write_buffer_size():
                    # close() waits for unsent bytes without limit; a client that
                    # stops reading must not keep the socket that way.
                    asyncio.get_running_loop().call_later(
                        self.limits.write_timeout, stream.transport.abort)
            else:
                stream.abort()

    async def _serve(self, conn: _Connection, stream: PlainStream) -> bool:
        """Answer requests until the connection ends; True if it may close gracefully."""
        loop = asyncio.get_running_loop()
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        # The first request gets no idle grace: a client that connects says something.
        deadline: float | None = loop.time() + self.limits.read_header_timeout
        while True:
            request, deadline = await self._read_head(conn, stream, h, deadline)
            if request is None:
                return h.their_state is h11.CLOSED or h.our_state is h11.MUST_CLOSE
            self._move(conn, _Phase.BUSY)
            keep_alive = await self._answer(conn, stream, h, request, deadline)
            if not keep_alive:
                return h.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
            h.start_next_cycle()
            self._move(conn, _Phase.IDLE)
            deadline = None

    async def _read_head(
        self, conn: _Connection, stream: PlainStream, h: h11.Connection,
        deadline: float | None,
    ) -> tuple[h11.Request | None, float]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                message = ("Request header fields too large.\n" if status == 431
                           else "Malformed request.\n")
                await self._reject(stream, h, status, message)
                return None, 0.0
            if isinstance(event, h11.Request):
                if deadline is None:  # pipelined: it was already here
                    deadline = loop.time() + self.limits.read_header_timeout
                return event, deadline
            if event is not h11.NEED_DATA:  # ConnectionClosed, or PAUSED after a close
                return None, 0.0
            idle = deadline is None
            try:
                async with asyncio.timeout_at(
                        loop.time() + self.limits.idle_timeout if deadline is None
                        else deadline):
                    data = await stream.read(_READ_CHUNK)
            except TimeoutError:
                if idle:
                    log.debug("closing %s: idle for %gs", conn.peer, self.limits.idle_timeout)
                else:
                    log.debug("closing %s: no complete request head within %gs", conn.peer,
                              self.limits.read_header_timeout)
                return None, 0.0
            if data:
                if deadline is None:
                    deadline = loop.time() + self.limits.read_header_timeout
                if conn.phase is _Phase.IDLE:
                    self._move(conn, _Phase.READING)
            h.receive_data(data)  # b"" tells h11 the client closed

    async def _finish_body(self, stream: PlainStream, h: h11.Connection,
                           deadline: float, wait: bool) -> str:
        """Read and drop the request body: "done", "pending" (not waited for), "too_large"."""
        received = 0
        while True:
            event = h.next_event()
            if isinstance(event, h11.EndOfMessage):
                return "done"
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > self.limits.max_body_bytes:
                    return "too_large"
                continue
            if event is not h11.NEED_DATA:
                return "pending"
            if not wait:
                return "pending"
            async with asyncio.timeout_at(deadline):
                data = await stream.read(_READ_CHUNK)
            if not data:
                return "pending"
            h.receive_data(data)

    def _request(self, event: h11.Request) -> Request:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = event.target.decode("latin-1")
        path = urlsplit(target).path or "/"
        return Request(event.method.decode("latin-1"), path, headers)

    async def _authorised(self, auth: BasicAuth, authorization: str | None) -> bool:
        verdict = auth.quick(authorization)
        if verdict is not None:
            return verdict
        return await self._bcrypt.run(auth.check, authorization)

    def _rate_limited(self, config: WebConfig | None) -> float:
        limit = config.rate_limit if config is not None else None
        if limit is None:
            self._bucket = None
            return 0.0
        if self._bucket is None or (self._bucket.interval, self._bucket.burst) != limit:
            self._bucket = TokenBucket(*limit)
        return self._bucket.take()

    async def _answer(self, conn: _Connection, stream: PlainStream, h: h11.Connection,
                      event: h11.Request, deadline: float) -> bool:
        """Answer one request; True if the connection may carry another."""
        request = self._request(event)
        config = self.web_config
        extra = config.headers if config is not None else ()
        close = False
        response: Response
        if _head_bytes(event) > self.limits.max_header_bytes:
            response = Response(431, b"Request header fields too large.\n")
            close = True
        elif retry_after := self._rate_limited(config):
            response = Response(429, b"Too many requests.\n",
                                headers=(("Retry-After", str(max(1, round(retry_after)))),))
        elif (config is not None and config.auth is not None
              and not await self._authorised(config.auth, request.header("authorization"))):
            response = Response(401, b"Unauthorized.\n",
                                headers=(("WWW-Authenticate", f'Basic realm="{REALM}"'),))
        else:
            body = await self._finish_body(stream, h, deadline, wait=True)
            if body == "too_large":
                response = Response(413, b"Request body too large.\n")
                close = True
            elif body == "pending":  # the client went away mid-body
                return False
            else:
                try:
                    response = await self.app.handle(request)
                except Exception:
                    log.exception("error serving %s %s", request.method, request.path)
                    response = Response(500, b"Internal error; see the exporter's log.\n")
        # Refused before its body was read: finish it only if it is already here.
        if h.their_state is not h11.DONE and await self._finish_body(
                stream, h, deadline, wait=False) != "done":
            close = True
        close = close or self._closing  # shutting down: this answer is the last
        await self._send(stream, h, request, response, extra, close)
        return not close and h.our_state is h11.DONE and h.their_state is h11.DONE

    async def _send(self, stream: PlainStream, h: h11.Connection, request: Request,
                    response: Response, extra: tuple[tuple[str, str], ...],
                    close: bool) -> None:
        body = response.body
        headers = [("Content-Type", response.content_type)]
        if len(body) >= GZIP_MIN_BYTES and _accepts_gzip(request.header("accept-encoding")):
            body = await self.app.workers.run(gzip_compress, body)
            headers.append(("Content-Encoding", "gzip"))
            headers.append(("Vary", "Accept-Encoding"))
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Date", email.utils.formatdate(usegmt=True)))
        headers.extend(response.headers)
        headers.extend(extra)
        if close:
            headers.append(("Connection", "close"))
        stream.write(h.send(h11.Response(
            status_code=response.status, headers=headers,
            reason=http.HTTPStatus(response.status).phrase.encode())) or b"")
        if request.method != "HEAD" and body:
            stream.write(h.send(h11.Data(data=body)) or b"")
        stream.write(h.send(h11.EndOfMessage()) or b"")
        async with asyncio.timeout(self.limits.write_timeout):
            await stream.drain()

    async def _reject(self, stream: PlainStream, h: h11.Connection, status: int,
                      message: str) -> None:
        """Answer a request h11 could not parse, then the caller closes."""
        if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = message.encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body))), ("Connection", "close")]
        config = self.web_config
        if config is not None:
            headers.extend(config.headers)
        try:
            stream.write(h.send(h11.Response(
                status_code=status, headers=headers,
                reason=http.HTTPStatus(status).phrase.encode())) or b"")
            stream.write(h.send(h11.Data(data=body)) or b"")
            stream.write(h.send(h11.EndOfMessage()) or b"")
            async with asyncio.timeout(self.limits.write_timeout):
                await stream.drain()
        except (h11.LocalProtocolError, OSError, TimeoutError) as exc:
            log.debug("could not answer %d: %s", status, exc)
