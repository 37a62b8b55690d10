"""The web server's bounds and HTTP semantics, over real loopback sockets.

Each limit is set small (``Limits``) so that its effect shows within a second
or two; tests wait for the server to act (a close, an answer) with a generous
deadline and assert on how long it took, never sleep and then look.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.cli import load_settings
from exporter.web import Limits, WebApp, WebServer
from tests.harness import running_exporter, wait_for

#: One provider whose token endpoint refuses connections (the discard port on
#: loopback), tried once an hour: the web server has something to serve.
NO_PROVIDERS = ("providers:\n  - name: idle\n    token_url: http://127.0.0.1:9/token\n"
                "    client_id: web-test\n    client_secret: web-test-secret\n"
                "    backoff_initial: 1h\n    backoff_max: 1h\n")
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), or None if it did not."""
    started = time.monotonic()
    deadline = started + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        except TimeoutError:
            return None
    return None


def is_open(sock: socket.socket) -> bool:
    """True if the server has not closed ``sock`` (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One response from a keep-alive connection: status, headers, body (by Content-Length)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return status, headers, rest


def request(sock: socket.socket, method: str, path: str, extra: str = "",
            body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)
    return read_response(sock)


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in the exposition"
    return float(match.group(1))


@dataclass
class Served:
    web: WebServer
    app: WebApp
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.web.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def serving(limits: Limits, render: Callable[[bool], bytes] | None = None,
            max_requests: int = 40) -> Iterator[Served]:
    """A WebServer on its own loop thread, serving a WebApp with no providers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def reload() -> tuple[bool, str]:
        return True, "Reloaded."

    app = WebApp(CollectorRegistry(auto_describe=False), list, lambda: True, reload,
                 render=render, max_requests=max_requests, workers=2)
    web = WebServer(app, "127.0.0.1:0", None, limits)
    asyncio.run_coroutine_threadsafe(web.start(), loop).result(10)
    try:
        yield Served(web, app, loop)
    finally:
        asyncio.run_coroutine_threadsafe(web.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Gate:
    """A render that blocks until released, to hold requests in progress."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, openmetrics: bool) -> bytes:
        self.calls += 1
        self.entered.release()
        assert self.release.wait(30), "gate never released"
        return b"# gated\n"


# --------------------------------------------------------------------------- the three clocks


@pytest.mark.slow
def test_a_slow_header_is_cut_at_the_head_deadline_however_it_trickles() -> None:
    """One byte every 0.2 s never leaves the connection quiet for the 1 s deadline,
    so a timer restarted by each byte would never fire; the absolute deadline does."""
    limits = Limits(read_header_timeout=1.0, idle_timeout=30.0)
    with serving(limits) as s, connect(s.port) as sock:
        started = time.monotonic()
        head = b"GET /-/healthy HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 100
        sent = 0
        closed_after = None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            sent += 1
            if closed_within(sock, 0.2) is not None:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "the trickling client was never cut"
        assert 0.9 <= closed_after < 3.0, closed_after
        assert sent >= 4  # bytes kept arriving well inside the deadline


@pytest.mark.slow
def test_a_silent_connection_is_cut_at_the_head_deadline() -> None:
    limits = Limits(read_header_timeout=0.5, idle_timeout=30.0)
    with serving(limits) as s, connect(s.port) as sock:
        waited = closed_within(sock, 10)
        assert waited is not None and 0.4 <= waited < 3.0, waited


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    """Between requests the idle timeout applies, not the (shorter) head deadline."""
    limits = Limits(read_header_timeout=0.3, idle_timeout=1.2)
    with serving(limits) as s, connect(s.port) as sock:
        status, _, body = request(sock, "GET", "/-/healthy")
        assert (status, body) == (200, b"Healthy.\n")
        idle_from = time.monotonic()
        waited = closed_within(sock, 10)
        assert waited is not None
        assert 1.0 <= time.monotonic() - idle_from < 4.0


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    with serving(Limits()) as s, connect(s.port) as sock:
        for _ in range(3):
            assert request(sock, "GET", "/-/healthy")[0] == 200


# --------------------------------------------------------------------------- the connection cap


def test_one_connection_past_the_cap_sheds_the_longest_idle() -> None:
    limits = Limits(max_connections=3, read_header_timeout=30.0, idle_timeout=30.0)
    with serving(limits) as s:
        first = connect(s.port)   # silent: idle since it opened
        second = connect(s.port)  # silent too
        wait_for(lambda: s.app.http.open == 2, message="two connections open")
        third = connect(s.port)
        assert request(third, "GET", "/-/healthy")[0] == 200  # idle again, most recently
        assert s.app.http.shed == 0
        fourth = connect(s.port)
        try:
            assert closed_within(first, 10) is not None, "the longest-idle was not shed"
            assert is_open(second) and is_open(third)
            assert request(fourth, "GET", "/-/healthy")[0] == 200
            assert request(third, "GET", "/-/healthy")[0] == 200
            assert s.app.http.shed == 1
            # The next newcomer sheds the next longest-idle: the second.
            fifth = connect(s.port)
            assert closed_within(second, 10) is not None
            status, _, _ = request(fifth, "GET", "/-/healthy")
            assert status == 200 and s.app.http.shed == 2
            assert s.app.http.open == 3
            fifth.close()
        finally:
            for sock in (first, second, third, fourth):
                sock.close()


def test_a_connection_answering_a_request_is_never_shed() -> None:
    gate = Gate()
    limits = Limits(max_connections=2, read_header_timeout=30.0, idle_timeout=30.0)
    with serving(limits, render=gate) as s:
        busy = connect(s.port)
        busy.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        assert gate.entered.acquire(timeout=10)
        idle = connect(s.port)
        wait_for(lambda: s.app.http.open == 2, message="two connections open")
        newcomer = connect(s.port)
        try:
            assert closed_within(idle, 10) is not None  # the idle one, though younger
            assert request(newcomer, "GET", "/-/healthy")[0] == 200
            gate.release.set()
            status, _, body = read_response(busy)
            assert status == 200 and body.startswith(b"# gated\n")
        finally:
            gate.release.set()
            for sock in (busy, idle, newcomer):
                sock.close()


def test_connection_metrics_are_exported() -> None:
    limits = Limits(max_connections=2, read_header_timeout=30.0, idle_timeout=30.0)
    with running_exporter(NO_PROVIDERS, log_level="info", limits=limits) as h:
        idle = [connect(h.port) for _ in range(2)]
        try:
            # The scrape's own connection sheds the longest-idle of the two.
            assert h.web is not None and h.app is not None
            text = h.get("/metrics").text
            assert sample(text, "oauth_exporter_http_connections_open") == 2
            assert sample(text, "oauth_exporter_http_connections_shed_total") == 1
            assert h.value("oauth_exporter_http_connections_shed_total") is not None
        finally:
            for sock in idle:
                sock.close()


# --------------------------------------------------------------------------- sizes


def test_an_oversized_header_gets_431() -> None:
    limits = Limits(max_header_bytes=4096)
    with serving(limits) as s:
        # Far past the limit: h11 stops buffering and refuses it.
        with connect(s.port) as sock:
            status, headers, _ = request(sock, "GET", "/-/healthy", f"X-Big: {'a' * 20000}\r\n")
            assert status == 431 and headers["connection"] == "close"
            assert closed_within(sock, 5) is not None
        # Just past it, arriving whole: measured after parsing, refused the same.
        with connect(s.port) as sock:
            status, _, _ = request(sock, "GET", "/-/healthy", f"X-Big: {'a' * 4100}\r\n")
            assert status == 431
        # Under it: served.
        with connect(s.port) as sock:
            assert request(sock, "GET", "/-/healthy", f"X-Big: {'a' * 3000}\r\n")[0] == 200


def test_a_body_beyond_the_limit_gets_413_and_a_small_one_is_dropped() -> None:
    limits = Limits(max_body_bytes=1024)
    with serving(limits) as s:
        with connect(s.port) as sock:
            status, _, body = request(sock, "POST", "/-/reload", body=b"x" * 100)
            assert (status, body) == (200, b"Reloaded.\n")
            assert request(sock, "GET", "/-/healthy")[0] == 200  # still usable
        with connect(s.port) as sock:
            status, headers, _ = request(sock, "POST", "/-/reload", body=b"x" * 5000)
            assert status == 413 and headers["connection"] == "close"


def test_malformed_requests_get_400() -> None:
    with serving(Limits()) as s, connect(s.port) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert read_response(sock)[0] == 400
        assert closed_within(sock, 5) is not None


# --------------------------------------------------------------------------- work bounds


def test_scrapes_beyond_max_requests_get_503_while_the_loop_stays_free() -> None:
    gate = Gate()
    with serving(Limits(), render=gate, max_requests=1) as s, httpx.Client(timeout=10) as client:
        first = connect(s.port)
        try:
            first.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            assert gate.entered.acquire(timeout=10)
            # The render holds a worker thread; the event loop still answers.
            assert client.get(s.url("/-/healthy")).status_code == 200
            refused = client.get(s.url("/metrics"))
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            gate.release.set()
            assert read_response(first)[0] == 200
            assert client.get(s.url("/metrics")).status_code == 200
            assert gate.calls == 2
        finally:
            gate.release.set()
            first.close()


def test_shutdown_lets_an_answer_in_progress_finish_and_closes_idle_connections() -> None:
    gate = Gate()
    with serving(Limits(shutdown_timeout=10.0), render=gate) as s:
        idle = connect(s.port)
        busy = connect(s.port)
        busy.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        assert gate.entered.acquire(timeout=10)
        stopping = asyncio.run_coroutine_threadsafe(s.web.stop(), s.loop)
        try:
            assert closed_within(idle, 10) is not None
            assert not stopping.done()
            gate.release.set()
            status, _, body = read_response(busy)
            assert status == 200 and body.startswith(b"# gated\n")
            stopping.result(10)
            # No longer listening.
            with pytest.raises(OSError):
                connect(s.port).close()
        finally:
            gate.release.set()
            idle.close()
            busy.close()


# --------------------------------------------------------------------------- HTTP semantics


def test_methods_paths_and_head() -> None:
    with running_exporter(NO_PROVIDERS, log_level="info") as h, connect(h.port) as sock:
        status, headers, _ = request(sock, "POST", "/metrics")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, _ = request(sock, "PUT", "/")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, _ = request(sock, "GET", "/-/reload")
        assert status == 405 and headers["allow"] == "POST"
        assert request(sock, "GET", "/nope")[0] == 404
        assert request(sock, "GET", "/metrics/")[0] == 404
        assert request(sock, "GET", "/metrics?x=1")[0] == 200  # the query is not the path
        _, got, body = request(sock, "GET", "/metrics")
        assert body.startswith(b"# HELP")
        assert got["content-type"].startswith("text/plain")
        # HEAD: the same headers, no body (the next response follows at once).
        # /metrics changes between two requests (process_* figures), so the
        # exact length is checked on an endpoint whose body does not.
        for path, length in ((b"/metrics", None), (b"/-/healthy", len(b"Healthy.\n"))):
            sock.sendall(b"HEAD " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n"
                         b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n")
            sock.settimeout(10)
            data = b""
            while data.count(b"\r\n\r\n") < 2 or not data.endswith(b"Healthy.\n"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            head_response, _, rest = data.partition(b"\r\n\r\n")
            assert head_response.startswith(b"HTTP/1.1 200")
            declared = int(head_response.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert declared == length if length is not None else declared > 1000
            assert rest.startswith(b"HTTP/1.1 200")  # no body between the two


def test_gzip_when_asked() -> None:
    with running_exporter(NO_PROVIDERS, log_level="info") as h, connect(h.port) as sock:
        _, headers, body = request(sock, "GET", "/metrics", "Accept-Encoding: gzip\r\n")
        assert headers["content-encoding"] == "gzip" and body[:2] == b"\x1f\x8b"
        assert headers["vary"] == "Accept-Encoding"
        unzipped = gzip.decompress(body)
        _, headers, body = request(sock, "GET", "/metrics", "Accept-Encoding: gzip;q=0\r\n")
        assert "content-encoding" not in headers and body.startswith(b"# HELP")
        # The same exposition (up to the process' own figures, which moved).
        ours = body.split(b"\n# HELP process_")[0]
        assert b"oauth_exporter_build_info" in ours
        assert unzipped.split(b"\n# HELP process_")[0] == ours


def test_telemetry_path() -> None:
    with running_exporter(NO_PROVIDERS, log_level="info", telemetry_path="/prom") as h:
        resp = h.get("/prom")
        assert resp.status_code == 200 and "oauth_exporter_build_info" in resp.text
        assert h.get("/metrics").status_code == 404
        assert 'href="/prom"' in h.get("/").text


@pytest.mark.parametrize("path", ["metrics", "/", "/-/healthy", "/-/x", "/a b", "/m?x"])
def test_bad_telemetry_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="telemetry path"):
        WebApp(CollectorRegistry(), list, lambda: True, _no_reload, telemetry_path=path)


async def _no_reload() -> tuple[bool, str]:
    return False, "no"


# --------------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "exporter", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_cli_web_flags_reach_the_server(tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_cli("--config.file", str(providers), "--web.listen-address",
                   f"127.0.0.1:{port}", "--web.telemetry-path", "/prom",
                   "--web.read-header-timeout", "700ms", "--web.max-connections", "2")
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/prom", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=30, message="the exporter")
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        with connect(port) as silent:
            waited = closed_within(silent, 10)
            assert waited is not None and 0.5 <= waited < 3.0, waited
        idle = [connect(port) for _ in range(2)]
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/prom").text
            assert sample(text, "oauth_exporter_http_connections_shed_total") == 1
        finally:
            for sock in idle:
                sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--web.telemetry-path", "metrics", "TOKEN_EXPORTER_WEB_TELEMETRY_PATH"),
    ("--web.telemetry-path", "/-/healthy", "is taken by another endpoint"),
    ("--web.read-header-timeout", "0s", "must be a positive duration"),
    ("--web.idle-timeout", "soon", "invalid duration"),
    ("--web.max-connections", "0", "TOKEN_EXPORTER_WEB_MAX_CONNECTIONS"),
])
def test_cli_refuses_bad_web_flags(flag: str, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings([flag, value])
    assert message in str(exited.value)


def test_cli_web_flags_become_limits() -> None:
    settings, _ = load_settings(["--web.max-connections", "10", "--web.idle-timeout", "2m",
                                 "--web.read-header-timeout", "1500ms"])
    limits = settings.web_limits()
    assert (limits.max_connections, limits.idle_timeout, limits.read_header_timeout) == (
        10, 120.0, 1.5)
    defaults, _ = load_settings([])
    assert defaults.web_limits() == Limits()
    assert defaults.web_telemetry_path == "/metrics"
