"""What each endpoint answers: routes, methods, and the work behind them.

``/metrics`` (or ``--web.telemetry-path``: text or OpenMetrics by ``Accept``),
``/`` (the landing page, ``exporter.web.landing``), ``/-/healthy``,
``/-/ready`` and ``POST /-/reload``. Any other path is 404; a known path asked
with a method it does not take is 405 with ``Allow``; ``HEAD`` is answered
wherever ``GET`` is (the server sends the headers without the body).

Handlers run on the event loop and only read state. What costs CPU (rendering
``/metrics``, the landing page) runs in worker threads (``Workers``), so the
loop keeps serving connections and running jobs meanwhile. Connections,
TLS, authentication and compression are the server's (``exporter.web.server``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.collector import Exposition, StateSource
from exporter.state import ProviderState
from exporter.web.landing import render_landing_page
from exporter.web.stats import HTTPServerCollector, HTTPStats

T = TypeVar("T")

#: Paths the exporter serves besides the telemetry path, which may not take one of them.
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload")

_GET = ("GET", "HEAD")

#: /metrics requests answered at once; more get 503 rather than a queue
#: (exporter-toolkit's --web.max-requests, default 40): a scraper that times out
#: and retries would otherwise pile renders up behind each other.
DEFAULT_MAX_REQUESTS = 40
#: Threads rendering /metrics or the landing page, or compressing, at once. Two
#: let a slow scrape of thousands of credentials overlap a quick one; more would
#: only contend for the GIL.
WORKER_THREADS = 2


def check_telemetry_path(path: str) -> str:
    """The path, if it can serve metrics; ValueError saying why not."""
    if not path.startswith("/") or any(c in path for c in "?#") or any(
            c.isspace() or ord(c) < 32 for c in path):
        raise ValueError(f"telemetry path {path!r} must start with / and hold no query, "
                         "fragment or spaces")
    if path in RESERVED_PATHS or path.startswith("/-/"):
        raise ValueError(f"telemetry path {path!r} is taken by another endpoint "
                         f"({', '.join(RESERVED_PATHS)}, /-/...)")
    return path


@dataclass(frozen=True)
class Request:
    """A request head as the app sees it: the server has parsed and authorised it."""

    method: str
    #: The path without query string.
    path: str
    #: Header names in lower case; repeated headers joined with ", ".
    headers: Mapping[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class Workers:
    """Runs CPU-bound work in threads, at most ``size`` at a time.

    ``asyncio.to_thread`` keeps the event loop free while ``/metrics`` renders
    (about 50 ms per 1,000 credentials); the semaphore keeps a burst of scrapes
    from taking every thread of the loop's default executor, which DNS lookups
    for token and probe requests also use. Waiters queue in arrival order.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("Workers needs at least one thread")
        self.size = size
        self._slots = asyncio.Semaphore(size)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        async with self._slots:
            return await asyncio.to_thread(fn, *args)


class Monitored(StateSource, Protocol):
    """What the web app serves: the collector's state source, plus readiness."""

    def ready(self) -> bool: ...


Reload = Callable[[], Awaitable[tuple[bool, str]]]


class WebApp:
    """The endpoints; kept apart from the server so tests can call them directly."""

    def __init__(
        self,
        registry: CollectorRegistry,
        states: Callable[[], Iterable[ProviderState]],
        ready: Callable[[], bool],
        reload: Reload,
        *,
        clock: Callable[[], float] = time.time,
        render: Callable[[bool], bytes] | None = None,
        telemetry_path: str = "/metrics",
        max_requests: int = DEFAULT_MAX_REQUESTS,
        workers: int = WORKER_THREADS,
    ) -> None:
        self.registry = registry
        self.states = states
        self.ready = ready
        self.reload = reload
        self.clock = clock
        #: A direct renderer for the token-health families
        #: (``TokenHealthCollector.render``): the same bytes as the encoder,
        #: 12-19x faster at 1,000 credentials (benchmarks/README.md).
        self.render = render
        self.exposition: Exposition | None = None
        self.telemetry_path = check_telemetry_path(telemetry_path)
        self.max_requests = max_requests
        #: Shared by the app's renders and the server's gzip.
        self.workers = Workers(workers)
        #: The server's connection figures, exported by a collector of their own.
        self.http = HTTPStats()
        http_collector = HTTPServerCollector(self.http)
        registry.register(http_collector)
        # The direct renderer writes only the token-health families; these follow.
        self._server_registry = CollectorRegistry(auto_describe=False)
        self._server_registry.register(http_collector)
        self._in_flight = 0
        self._routes: dict[str, tuple[tuple[str, ...], Callable[[Request], Awaitable[Response]]]]
        self._routes = {
            self.telemetry_path: (_GET, self._metrics),
            "/": (_GET, self._landing),
            "/-/healthy": (_GET, self._healthy),
            "/-/ready": (_GET, self._ready),
            "/-/reload": (("POST",), self._reload),
        }

    # ------------------------------------------------------------------ the pieces

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header; CPU-bound, run it in a worker."""
        encoder, content_type = choose_encoder(accept or "")
        # Our names are legacy-valid, so every escaping scheme but "dots"
        # leaves them as they are and the direct renderer's bytes are exact.
        if self.render is not None and "escaping=dots" not in content_type:
            openmetrics = content_type.startswith("application/openmetrics-text")
            body = self.render(openmetrics)
            server = encoder(self._server_registry)
            if openmetrics:  # one "# EOF" at the very end
                body = body.removesuffix(b"# EOF\n")
            return body + server, content_type
        return encoder(self.registry), content_type

    def landing(self) -> bytes:
        """The landing page; CPU-bound at thousands of credentials, run it in a worker."""
        return render_landing_page(self.states(), self.clock(), self.telemetry_path)

    # ------------------------------------------------------------------ routing

    async def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return Response(404, b"Not found.\n")
        methods, handler = route
        if request.method not in methods:
            allow = ", ".join(methods)
            return Response(405, f"Method not allowed; use {allow}.\n".encode(),
                            headers=(("Allow", allow),))
        return await handler(request)

    async def _metrics(self, request: Request) -> Response:
        if self._in_flight >= self.max_requests:
            return Response(503, b"Too many scrapes in flight; try again.\n",
                            headers=(("Retry-After", "1"),))
        self._in_flight += 1
        try:
            body, content_type = await self.workers.run(self.metrics, request.header("accept"))
        finally:
            self._in_flight -= 1
        return Response(200, body, content_type)

    async def _landing(self, request: Request) -> Response:
        return Response(200, await self.workers.run(self.landing), "text/html; charset=utf-8")

    async def _healthy(self, request: Request) -> Response:
        return Response(200, b"Healthy.\n")

    async def _ready(self, request: Request) -> Response:
        if self.ready():
            return Response(200, b"Ready.\n")
        return Response(503, b"Not ready: first token attempts still running.\n")

    async def _reload(self, request: Request) -> Response:
        ok, message = await self.reload()
        return Response(200 if ok else 500, (message + "\n").encode())


def build_web_app(source: Monitored, reload: Reload, *, direct_render: bool = True,
                  telemetry_path: str = "/metrics",
                  max_requests: int = DEFAULT_MAX_REQUESTS,
                  histogram_buckets: bool = False) -> WebApp:
    """The web app for an exporter: a registry holding its families, the standard
    process/Python collectors and the server's own.

    ``direct_render=False`` serves through prometheus-client's encoder instead
    of ``Exposition.render`` (same bytes, slower; for benchmarks).
    """
    exposition = Exposition(source, histogram_buckets=histogram_buckets)
    app = WebApp(exposition.registry, source.provider_states, source.ready, reload,
                 render=exposition.render if direct_render else None,
                 telemetry_path=telemetry_path, max_requests=max_requests)
    #: For the event loop's ``exposition.keep_rendered()`` task (``exporter.service``).
    app.exposition = exposition
    return app
