"""exporter/transport.py against a loopback server that counts its connections.

The server is h11's server side on asyncio streams, in the test's own event
loop; each path scripts one behaviour (answer, close, hang, chunk...). Every
test runs on asyncio's loop and on uvloop's, which the exporter uses where it
is installed: their transports differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import h11
import httpx
import pytest
import uvloop

from exporter.errors import ErrorClass, classify_exception
from exporter.http import new_http_client, read_body, send_streamed
from exporter.transport import KeepAliveTransport
from tests.scripted import free_port, self_signed

T = TypeVar("T")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    factory = LOOPS[request.param]

    def run(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


@dataclass
class Server:
    """What the server saw: connections opened and closed, requests and their bodies."""

    port: int = 0
    opened: int = 0
    closed: int = 0
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: /junk-later sends its junk when this is set.
    junk_now: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._request(conn, reader)
                if request is None:
                    return
                target = request.target.decode()
                self.requests.append((target, body))
                if not await self._answer(target.split("?")[0], conn, reader, writer):
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            self.closed += 1
            writer.close()

    async def _request(self, conn: h11.Connection,
                       reader: asyncio.StreamReader) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            else:  # ConnectionClosed
                return None, b""

    async def _answer(self, path: str, conn: h11.Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer; False to end the connection."""
        def send(*events: Any) -> None:
            for event in events:
                writer.write(conn.send(event) or b"")

        ok = [("Content-Type", "text/plain"), ("Content-Length", "2")]
        if path == "/hang":  # until the client goes away, or the test ends
            hung_up = asyncio.ensure_future(reader.read(1))
            released = asyncio.ensure_future(self.release.wait())
            await asyncio.wait([hung_up, released], return_when=asyncio.FIRST_COMPLETED)
            hung_up.cancel()
            released.cancel()
            return False
        if path == "/drop":
            return False  # close without a word
        if path == "/garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            return False
        if path == "/close":  # asks to close
            send(h11.Response(status_code=200, headers=[*ok, ("Connection", "close")]),
                 h11.Data(data=b"ok"), h11.EndOfMessage())
            await writer.drain()
            return False
        if path == "/junk-after":  # a second answer nobody asked for, in the same write
            for status in (200, 418):
                send(h11.Response(status_code=status, headers=ok), h11.Data(data=b"ok"),
                     h11.EndOfMessage())
                conn.start_next_cycle() if status == 200 else None
            await writer.drain()
            await self.release.wait()
            return False
        if path == "/junk-later":  # answers, then sends bytes while the connection is idle
            send(h11.Response(status_code=200, headers=ok), h11.Data(data=b"ok"),
                 h11.EndOfMessage())
            await writer.drain()
            await self.junk_now.wait()  # once the client has the answer
            writer.write(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n")
            await self.release.wait()
            return False
        if path == "/then-close":  # answers as if keeping it, then closes it
            send(h11.Response(status_code=200, headers=ok), h11.Data(data=b"ok"),
                 h11.EndOfMessage())
            await writer.drain()
            return False
        if path == "/chunked":
            send(h11.InformationalResponse(status_code=103, headers=[("Link", "</a>")]),
                 h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
            for piece in (b"one,", b"two,", b"three"):
                send(h11.Data(data=piece))
                await writer.drain()
            send(h11.EndOfMessage())
        elif path == "/big":
            data = bytes(range(256)) * 4096  # 1 MiB
            send(h11.Response(status_code=200, headers=[("Content-Length", str(len(data)))]),
                 h11.Data(data=data), h11.EndOfMessage())
        elif path == "/echo":
            body = self.requests[-1][1]
            send(h11.Response(status_code=201, headers=[("Content-Length", str(len(body))),
                                                         ("X-Mixed-Case", "Kept")]),
                 h11.Data(data=body), h11.EndOfMessage())
        else:
            send(h11.Response(status_code=200, headers=ok), h11.Data(data=b"ok"),
                 h11.EndOfMessage())
        await writer.drain()
        return True


def tls_server(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for localhost, and a server context serving it."""
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    return cert, served


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[Server]:
    srv = Server()
    listener = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = listener.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        srv.release.set()
        listener.close()


@contextlib.asynccontextmanager
async def client(per_host: int = 8, **kwargs: Any) -> AsyncIterator[
        tuple[httpx.AsyncClient, KeepAliveTransport]]:
    transport = KeepAliveTransport(ssl.create_default_context(), per_host, **kwargs)
    async with httpx.AsyncClient(transport=transport) as http:
        yield http, transport


class Clock:
    """A clock the test moves by hand (the transport's keep-alive expiry reads it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition, the event loop running meanwhile (a generous deadline)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- reuse


def test_requests_to_one_host_share_kept_alive_connections(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client() as (http, transport):
            for _ in range(5):
                assert (await http.get(srv.base + "/")).text == "ok"
            assert srv.opened == 1  # one connection, reused
            # Three at once need three; afterwards all three are kept and reused.
            answers = await asyncio.gather(*(http.get(srv.base + "/") for _ in range(3)))
            assert [a.status_code for a in answers] == [200] * 3
            assert srv.opened == 3
            assert transport.idle_connections() == 3
            for _ in range(6):
                await http.get(srv.base + "/")
            assert srv.opened == 3
            assert srv.closed == 0

    run(go())


def test_a_connection_the_server_closed_while_idle_is_replaced(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client() as (http, transport):
            assert (await http.get(srv.base + "/then-close")).text == "ok"
            # The event loop tells the connection of the close; no poll is needed.
            await until(lambda: srv.closed == 1)
            await until(lambda: transport.idle_connections() == 0)
            assert (await http.get(srv.base + "/")).text == "ok"
            assert srv.opened == 2

    run(go())


def test_an_answer_asking_to_close_is_not_kept(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client() as (http, transport):
            assert (await http.get(srv.base + "/close")).text == "ok"
            assert transport.idle_connections() == 0
            assert (await http.get(srv.base + "/")).text == "ok"
            assert srv.opened == 2

    run(go())


def test_an_idle_connection_expires(run: Any) -> None:
    clock = Clock()

    async def go() -> None:
        async with server() as srv, client(keepalive_expiry=5.0, clock=clock) as (http, transport):
            await http.get(srv.base + "/")
            clock.now += 4.9
            await http.get(srv.base + "/")
            assert srv.opened == 1  # younger than the expiry: reused
            clock.now += 5.0
            assert transport.idle_connections() == 0
            await http.get(srv.base + "/")
            assert srv.opened == 2  # expired: a new one, and the old one closed
            await until(lambda: srv.closed == 1)

    run(go())


def test_expired_idle_connections_are_closed_as_others_come_back(run: Any) -> None:
    clock = Clock()

    async def go() -> None:
        async with server() as srv, client(keepalive_expiry=5.0, clock=clock) as (http, _):
            await asyncio.gather(*(http.get(srv.base + "/") for _ in range(3)))
            assert srv.opened == 3
            clock.now += 10
            # One request: it takes the newest connection (expired, closed) and
            # opens a fresh one; when it comes back, the two others are closed.
            await http.get(srv.base + "/")
            await until(lambda: srv.closed == 3)
            assert srv.opened == 4

    run(go())


def test_the_newest_idle_connection_is_taken_so_the_others_expire(run: Any) -> None:
    clock = Clock()

    async def go() -> None:
        async with server() as srv, client(keepalive_expiry=5.0, clock=clock) as (http, transport):
            await asyncio.gather(*(http.get(srv.base + "/") for _ in range(3)))
            assert srv.opened == 3
            # A request every 2 s: each takes the connection the last one used,
            # so one stays warm while the two left below it age and are closed.
            for _ in range(5):
                clock.now += 2
                await http.get(srv.base + "/")
            assert srv.opened == 3
            await until(lambda: srv.closed == 2)
            assert transport.idle_connections() == 1

    run(go())


def test_a_connection_with_an_answer_nobody_asked_for_is_not_reused(run: Any) -> None:
    async def go() -> None:
        # (kept alive longer than the test waits: expiry must not be what closes it)
        async with server() as srv, client(keepalive_expiry=60) as (http, transport):
            # The server sends two answers to one request: the second must never
            # be taken as the answer to the next request.
            answer = await http.get(srv.base + "/junk-after")
            assert answer.status_code == 200
            assert transport.idle_connections() == 0
            assert (await http.get(srv.base + "/")).status_code == 200
            assert srv.opened == 2
            # Bytes that come while the connection sits idle: the same.
            assert (await http.get(srv.base + "/junk-later")).status_code == 200
            srv.junk_now.set()
            await until(lambda: transport.idle_connections() == 0)
            assert (await http.get(srv.base + "/")).status_code == 200
            # (on the connection the second request opened, still idle)
            assert srv.opened == 3

    run(go())


# --------------------------------------------------------------------------- what is sent and read


def test_bodies_headers_chunks_and_big_answers(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client() as (http, _):
            answer = await http.post(srv.base + "/echo", content=b"grant_type=x&scope=y")
            assert answer.status_code == 201
            assert answer.content == b"grant_type=x&scope=y"
            assert srv.requests[-1] == ("/echo", b"grant_type=x&scope=y")
            assert answer.headers.raw[-1] == (b"X-Mixed-Case", b"Kept")  # as sent
            assert answer.http_version == "HTTP/1.1"
            chunked = await http.get(srv.base + "/chunked?x=1")
            assert chunked.status_code == 200  # the 103 before it skipped
            assert chunked.content == b"one,two,three"
            assert srv.requests[-1][0] == "/chunked?x=1"
            big = await http.get(srv.base + "/big")
            assert big.content == bytes(range(256)) * 4096
            # HEAD: the answer has no body, and the connection goes on.
            head = await http.head(srv.base + "/")
            assert head.content == b""
            assert srv.opened == 1

    run(go())


def test_the_exporters_client_speaks_through_it(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, new_http_client() as http:
            request = httpx.Request("GET", srv.base + "/big",
                                    extensions={"timeout": httpx.Timeout(5).as_dict()})
            response = await send_streamed(http, request)
            try:
                body = await read_body(response, 2 << 20)
            finally:
                await response.aclose()
            assert body == bytes(range(256)) * 4096
            async with http.stream("GET", srv.base + "/") as streamed:
                assert await read_body(streamed, 100) == b"ok"
            assert srv.opened == 1

    run(go())


# --------------------------------------------------------------------------- limits


def test_at_most_per_host_requests_at_once_and_the_wait_is_bounded(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, server() as other, client(per_host=1) as (http, _):
            held = await http.send(http.build_request("GET", srv.base + "/"), stream=True)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(srv.base + "/", timeout=httpx.Timeout(5, pool=0.05))
            # Another host has a slot of its own.
            assert (await http.get(other.base + "/")).text == "ok"
            waiting = asyncio.ensure_future(http.get(srv.base + "/"))
            # Let it run up to the host's slots (no I/O before them): it waits there.
            for _ in range(20):
                await asyncio.sleep(0)
            assert not waiting.done()
            await held.aread()
            await held.aclose()
            assert (await waiting).text == "ok"
            assert srv.opened == 1  # the waiting request took the freed connection

    run(go())


def test_a_cancelled_request_closes_its_connection_and_frees_its_slot(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client(per_host=1) as (http, transport):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await http.get(srv.base + "/hang")
            await until(lambda: srv.closed == 1)  # not left half-used
            answer = await http.get(srv.base + "/", timeout=httpx.Timeout(5, pool=5))
            assert answer.text == "ok"
            assert srv.opened == 2
            assert transport.idle_connections() == 1

    run(go())


def test_a_body_closed_unread_does_not_come_back(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client() as (http, transport):
            async with http.stream("GET", srv.base + "/big"):
                pass  # closed before it was read
            assert transport.idle_connections() == 0
            await until(lambda: srv.closed == 1)

    run(go())


# --------------------------------------------------------------------------- failures


def test_failures_are_the_exceptions_httpx_raises(run: Any) -> None:
    async def go() -> None:
        async with server() as srv, client() as (http, transport):
            with pytest.raises(httpx.ReadTimeout) as timeout:
                await http.get(srv.base + "/hang", timeout=httpx.Timeout(0.1))
            assert classify_exception(timeout.value) is ErrorClass.TIMEOUT
            with pytest.raises(httpx.RemoteProtocolError) as dropped:
                await http.get(srv.base + "/drop")
            assert classify_exception(dropped.value) is ErrorClass.CONNECTION_ERROR
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(srv.base + "/garbage")
            with pytest.raises(httpx.ConnectError) as refused:
                await http.get(f"http://127.0.0.1:{free_port()}/")
            assert classify_exception(refused.value) is ErrorClass.CONNECTION_ERROR
            with pytest.raises(httpx.UnsupportedProtocol):
                await transport.handle_async_request(httpx.Request("GET", "ftp://x/"))
            # After all that, the host still answers, on a fresh connection.
            assert (await http.get(srv.base + "/")).text == "ok"
            assert transport.idle_connections() == 1

    run(go())


def test_tls_verified_and_a_failure_is_a_connect_error_caused_by_the_ssl_error(
        run: Any, tmp_path: Path) -> None:
    cert, served = tls_server(tmp_path)

    async def go() -> None:
        srv = Server()
        listener = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=served)
        port = listener.sockets[0].getsockname()[1]
        try:
            # Not trusted: the handshake fails, and says why.
            async with client() as (http, _):
                with pytest.raises(httpx.ConnectError) as failed:
                    await http.get(f"https://127.0.0.1:{port}/")
                assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
                assert classify_exception(failed.value) is ErrorClass.TLS_ERROR
            # Trusted, and the name checked (the certificate is for localhost):
            # answered, over one connection kept alive.
            trusting = ssl.create_default_context(cafile=str(cert))
            transport = KeepAliveTransport(trusting, 4)
            async with httpx.AsyncClient(transport=transport) as http:
                for _ in range(3):
                    assert (await http.get(f"https://localhost:{port}/")).text == "ok"
            assert srv.opened == 1
        finally:
            srv.release.set()
            listener.close()

    run(go())


def test_a_closed_tls_connection_frees_its_socket_at_once(tmp_path: Path) -> None:
    # A TLS peer that answers once and then never reads again, so never answers
    # a close_notify. Closing must not wait for it: the socket is freed before
    # the event loop stops, or it would be left open (a ResourceWarning at GC).
    cert, served = tls_server(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        raw, _ = listener.accept()
        with served.wrap_socket(raw, server_side=True) as tls:
            conn = h11.Connection(h11.SERVER)
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    conn.receive_data(tls.recv(65536))
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            done.wait(30)  # and never read again

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def go() -> None:
        transport = KeepAliveTransport(ssl.create_default_context(cafile=str(cert)), 4)
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.get(f"https://localhost:{port}/")).text == "ok"
            assert transport.idle_connections() == 1

    try:
        # asyncio's own loop: it is the one that warns of a socket left open.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            asyncio.run(go())
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    finally:
        done.set()
        listener.close()


def test_a_tls_handshake_that_never_ends_is_a_connect_timeout(run: Any) -> None:
    async def go() -> None:
        release = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.close()

        listener = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            async with client() as (http, _):
                with pytest.raises(httpx.ConnectTimeout) as failed:
                    await http.get(f"https://127.0.0.1:{port}/",
                              timeout=httpx.Timeout(5, connect=0.1))
                assert classify_exception(failed.value) is ErrorClass.TIMEOUT
        finally:
            release.set()
            listener.close()

    run(go())


def test_closing_the_transport_closes_idle_connections(run: Any) -> None:
    async def go() -> None:
        async with server() as srv:
            async with client() as (http, _):
                await asyncio.gather(*(http.get(srv.base + "/") for _ in range(2)))
            await until(lambda: srv.closed == 2)

    run(go())

