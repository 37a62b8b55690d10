"""A loopback HTTP(S) server that answers each path with a scripted response.

For answers the provider simulator does not give (other vendors' error pages,
redirects, odd statuses, decompression bombs), so classification and reading
are tested against real HTTP.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Answer:
    status: int
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Seconds between single bytes of the body (a slow-drip response).
    drip: float = 0.0
    #: Drop the connection with a TCP reset instead of answering.
    reset: bool = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.hits.append((self.command, self.path))
        self.server.headers.append(dict(self.headers.items()))
        answer = self.server.script.get(self.path, Answer(404, {"error": "not_found"}))
        if answer.delay and self.server.stopping.wait(answer.delay):
            return
        if answer.reset:
            # SO_LINGER with a zero timeout makes close() send RST, not FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        body = answer.body
        headers = dict(answer.headers)
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
            headers.setdefault("Content-Type", "text/html; charset=utf-8")
        self.send_response(answer.status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return  # the headers of a GET, Content-Length included, and no body
        if not answer.drip:
            try:
                self.wfile.write(body)
            except OSError:
                # The client stopped reading (a bomb it refused): not our failure.
                self.close_connection = True
            return
        for i in range(len(body)):
            if self.server.stopping.wait(answer.drip):
                return
            try:
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            except OSError:
                return

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 resets connections when dozens arrive at once.
    request_queue_size = 128
    script: dict[str, Answer]
    hits: list[tuple[str, str]]
    headers: list[dict[str, str]]
    stopping: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (it refused a bomb half-read) is not a server fault.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Served(str):
    """The base URL of a scripted server, which also knows what it was asked."""

    hits: list[tuple[str, str]]
    #: The request headers of each hit, in the same order.
    headers: list[dict[str, str]]


@contextmanager
def scripted_server(script: dict[str, Answer],
                    tls: ssl.SSLContext | None = None) -> Iterator[Served]:
    """Serve ``script`` on 127.0.0.1; yield the base URL (with ``.hits``)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.script, server.hits, server.stopping = script, [], threading.Event()
    server.headers = []
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        served = Served(f"{scheme}://127.0.0.1:{server.server_address[1]}")
        served.hits = server.hits
        served.headers = server.headers
        yield served
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


#: Zeros compressed per block. After a full flush the compressor starts afresh,
#: so every further block compresses to the very same bytes: a bomb of any
#: size is built by repeating them, in milliseconds instead of minutes.
_BOMB_BLOCK = 16 << 20


def bomb(decoded_size: int, coding: str = "gzip") -> bytes:
    """A body that ``coding`` (gzip, deflate, or "gzip, gzip") expands to ``decoded_size`` zeros.

    ``decoded_size`` is rounded down to 16 MiB. 1 GiB is about 1 MB as gzip,
    and about 2 KB as "gzip, gzip". The result is a valid stream (checked by
    tests/test_outbound.py), trailer included.
    """
    return _bomb(decoded_size, coding)


@functools.lru_cache(maxsize=8)
def _bomb(decoded_size: int, coding: str) -> bytes:
    if coding == "gzip, gzip":
        inner = _bomb(decoded_size, "gzip")
        outer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return outer.compress(inner) + outer.flush()
    gzip = coding == "gzip"
    blocks = max(1, decoded_size // _BOMB_BLOCK)
    zeros = bytes(_BOMB_BLOCK)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    # The final empty block, without the trailer written for the 2 blocks seen.
    final = compressor.flush()[: -8 if gzip else -4]
    check = 0 if gzip else 1
    for _ in range(blocks):
        check = (zlib.crc32 if gzip else zlib.adler32)(zeros, check)
    size = blocks * _BOMB_BLOCK
    trailer = (struct.pack("<II", check, size & 0xFFFFFFFF) if gzip
               else struct.pack(">I", check))
    return first + again * (blocks - 1) + final + trailer


def bomb_answer(decoded_size: int, coding: str = "gzip", status: int = 200) -> Answer:
    """A JSON-typed answer whose body decodes to ``decoded_size`` bytes."""
    return Answer(status, bomb(decoded_size, coding),
                  {"Content-Encoding": coding, "Content-Type": "application/json"})


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key, made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, "openssl is required (apt-get install openssl): " + \
        proc.stderr.decode()
    return cert, key


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



class _ProxyHandler(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: the request line carries the absolute URL."""

    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        import httpx

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "proxy-connection", "connection",
                                        "content-length")}
        upstream = httpx.request(self.command, self.path, headers=headers, content=body,
                                 timeout=10)
        self.send_response(upstream.status_code)
        for k, v in upstream.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                 "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    do_GET = do_POST = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    seen: list[tuple[str, str]]


@contextmanager
def forward_proxy() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A loopback HTTP proxy; yields its URL and the (method, URL) list it forwarded."""
    server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.shutdown()
        server.server_close()
