"""The simulator on the wire: loopback HTTP servers and their lifecycle.

``SimulatedProvider`` is one vendor's ``Engine`` on its own port, served by a
``ThreadingHTTPServer`` on a background thread; it routes ``/_sim/`` to the
admin API, the vendor's token path to the token endpoint and everything else
to the vendor's API. ``Simulation`` runs all five seed vendors with their
``--demo`` clients registered.

It is test infrastructure: bind it to loopback only. It never logs requests,
secrets or tokens.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self, cast

from exporter.simulator.admin import admin_response, is_admin_path
from exporter.simulator.engine import Engine, Request, Response, json_response
from exporter.simulator.vendors import BY_KIND, VENDORS

_log = logging.getLogger(__name__)

_MAX_BODY = 1 << 20


class _Running:
    """``with x:`` starts x and stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatedProvider(Engine, _Running):
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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: a server-side context; the provider then serves https only."""
        vendor = BY_KIND.get(kind)
        if vendor is None:
            raise ValueError(
                f"unknown provider kind {kind!r}; expected one of {', '.join(BY_KIND)}"
            )
        super().__init__(
            vendor(),
            lifetime=lifetime,
            rate_limit=rate_limit,
            omit_expires_in=omit_expires_in,
            lifetime_field=lifetime_field,
        )
        self._host = host
        self._port = port
        self._tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<SimulatedProvider {self.kind} {self._base_url or 'not started'}>"

    def start(self) -> Self:
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"{self.kind} simulator is already running")
            server = _Server((self._host, self._port), self, self._tls)
            # A restart binds the same port again, so base_url stays valid.
            self._port = server.port
            host = f"[{self._host}]" if ":" in self._host else self._host
            scheme = "http" if self._tls is None else "https"
            self._base_url = f"{scheme}://{host}:{server.port}"
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

    def handle(self, request: Request, stopping: threading.Event) -> Response:
        """Route one request (handler threads)."""
        if is_admin_path(request.path):
            return admin_response(self, request)
        if self.vendor.is_token_path(request.path):
            return self.token_endpoint(request, stopping)
        return self.api_endpoint(request, stopping)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 resets connections when an exporter opens a
    # burst of them at once (all probes at start-up).
    request_queue_size = 128
    # Bounds handle_request()'s own wait should a client vanish between our
    # select and its accept; stop() is never held up longer than this.
    timeout = 0.5

    def __init__(
        self, address: tuple[str, int], provider: SimulatedProvider, tls: ssl.SSLContext | None
    ) -> None:
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
        if tls is not None:
            # The handshake happens in the handler thread (setup), so a slow
            # client cannot hold up the accept loop.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

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
        if isinstance(self.connection, ssl.SSLSocket):
            # A failed handshake raises OSError, which ends this connection quietly.
            try:
                self.connection.do_handshake()
            except BaseException:
                self._sim().untrack(self.connection)
                raise

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
            self._write(json_response(411, {"error": "length_required"}))
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._write(json_response(413 if length > 0 else 400, {"error": "invalid_request"}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = Request(
            method=self.command,
            path=urllib.parse.urlsplit(self.path).path or "/",
            headers=headers,
            body=body,
            client_ip=str(self.client_address[0]),
            client_cert=self._client_cert(),
        )
        try:
            response = server.provider.handle(request, server.stopping)
        except Exception:
            _log.exception("simulated %s failed to answer", server.provider.kind)
            response = json_response(500, {"error": "simulator_failure"})
        self._write(response)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _client_cert(self) -> bytes | None:
        # Present only if the context asked for one and the handshake verified it.
        if isinstance(self.connection, ssl.SSLSocket):
            return self.connection.getpeercert(binary_form=True)
        return None

    def _write(self, response: Response) -> None:
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


class Simulation(_Running):
    """All five providers, each on its own port, with the ``DEMO_CLIENTS`` registered."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        lifetimes: dict[str, int] | None = None,
        rate_limit_window: float | None = None,
    ) -> None:
        lifetimes = dict(lifetimes or {})
        unknown = sorted(set(lifetimes) - {vendor.kind for vendor in VENDORS})
        if unknown:
            raise ValueError(f"unknown provider kind(s) in lifetimes: {', '.join(unknown)}")
        self.providers: dict[str, SimulatedProvider] = {}
        for vendor in VENDORS:
            rate_limit: tuple[int, float] | Literal["default"] | None = "default"
            if vendor.rate_limit is not None and rate_limit_window is not None:
                rate_limit = (vendor.rate_limit[0], rate_limit_window)
            provider = SimulatedProvider(
                vendor.kind, host=host, lifetime=lifetimes.get(vendor.kind), rate_limit=rate_limit
            )
            client_id, client_secret = vendor.demo_client
            provider.add_client(client_id, client_secret, scopes=vendor.demo_scopes)
            self.providers[vendor.kind] = provider

    def start(self) -> Self:
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
