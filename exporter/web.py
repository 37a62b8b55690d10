"""The exporter's HTTP endpoints, served from a thread beside the event loop.

``/metrics`` (text or OpenMetrics by ``Accept``, gzip when asked), ``/`` (the
landing page: one row per provider), ``/-/healthy``, ``/-/ready`` and
``POST /-/reload``. Handlers only read state; a reload is handed to the event
loop and awaited there, so all state is still written from one thread.

With a web config (``exporter.webconfig``) the server speaks TLS, handshaking
in each connection's thread, asks every endpoint for basic auth, and adds the
configured response headers.
"""

from __future__ import annotations

import gzip
import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.collector import Exposition, StateSource
from exporter.state import ProviderState
from exporter.webconfig import REALM, TLS_HANDSHAKE_TIMEOUT, BasicAuth, WebConfig

log = logging.getLogger("exporter.web")


class WebApp:
    """What the handlers need; kept apart from the server so tests can call it."""

    def __init__(
        self,
        registry: CollectorRegistry,
        states: Callable[[], Iterable[ProviderState]],
        ready: Callable[[], bool],
        reload: Callable[[], tuple[bool, str]],
        clock: Callable[[], float] = time.time,
        render: Callable[[bool], bytes] | None = None,
        render_gzip: Callable[[bool], bytes] | None = None,
    ) -> None:
        self.registry = registry
        self.states = states
        self.ready = ready
        self.reload = reload
        self.clock = clock
        #: A direct renderer for a registry that holds only our collector
        #: (``TokenHealthCollector.render``): the same bytes as the encoder,
        #: 12-19x faster at 1,000 credentials (benchmarks/README.md).
        self.render = render
        #: The same, gzip-compressed (``Exposition.render_gzip``: recompresses
        #: only what changed since the last scrape).
        self.render_gzip = render_gzip
        self.exposition: Exposition | None = None

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        # Our names are legacy-valid, so every escaping scheme but "dots"
        # leaves them as they are and the direct renderer's bytes are exact.
        if self.render is not None and "escaping=dots" not in content_type:
            openmetrics = content_type.startswith("application/openmetrics-text")
            return self.render(openmetrics), content_type
        return encoder(self.registry), content_type

    def metrics_gzip(self, accept: str | None) -> tuple[bytes, str] | None:
        """``metrics()`` gzip-compressed by the renderer, or None where it cannot."""
        _, content_type = choose_encoder(accept or "")
        if self.render_gzip is None or "escaping=dots" in content_type:
            return None
        openmetrics = content_type.startswith("application/openmetrics-text")
        return self.render_gzip(openmetrics), content_type

    def landing(self) -> bytes:
        now = self.clock()
        rows = []
        for st in sorted(self.states(), key=lambda s: s.provider.name):
            prov = st.provider
            token = st.token
            if token is None:
                state, left = "none", "-"
            elif st.valid_token(now) is not None:
                state, left = "valid", _duration(token.expires_at - now)
            elif st.token_rejected:
                state, left = "rejected", _duration(token.expires_at - now)
            else:
                state, left = "expired", "-"
            probes = "".join(
                f'<li class="{_probe_word(ps.success)}">{html.escape(ps.probe.name)}: '
                f"{_probe_word(ps.success)}"
                f" (HTTP {ps.status}{', ' + html.escape(ps.last_error) if ps.last_error else ''})"
                "</li>"
                for ps in st.probes.values()
            )
            secret = "-"
            if prov.client_secret_expires_at is not None:
                days = (prov.client_secret_expires_at - now) / 86400
                css = "expired" if days < 14 else ("soon" if days < 28 else "")
                secret = f'<span class="{css}">{days:.0f} days</span>'

            rows.append(
                "<tr>"
                f"<td>{html.escape(prov.name)}</td>"
                f"<td>{html.escape(prov.preset.name)}</td>"
                f"<td>{html.escape(prov.token_host)}</td>"
                f'<td class="{state}">{state}</td>'
                f"<td>{left}</td>"
                f"<td>{_when(st.next_renewal, now)}</td>"
                f'<td class="{"expired" if st.last_error else ""}">'
                f"{html.escape(st.last_error or '-')}</td>"
                f"<td>{secret}</td>"
                f"<td><ul>{probes or '<li>-</li>'}</ul></td>"
                "</tr>"
            )
        body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Token health exporter</title>
<meta http-equiv="refresh" content="30">
<style>
body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}
ul{{margin:0;padding-left:1.1em}} .valid,.ok{{color:#1a7f37}} .soon{{color:#9a6700}}
.expired,.rejected,.none,.failing{{color:#cf222e}}
</style></head><body>
<h1>Token health exporter</h1>
<p>Version {html.escape(__version__)}.
<a href="/metrics">Metrics</a> · <a href="/-/healthy">Health</a> · <a href="/-/ready">Ready</a></p>
<table><thead><tr><th>Provider</th><th>Preset</th><th>Token host</th><th>Token</th>
<th>Time left</th><th>Next renewal</th><th>Last error</th><th>Client secret</th>
<th>Probes</th></tr></thead>
<tbody>
{"".join(rows) or '<tr><td colspan="9">No providers configured.</td></tr>'}
</tbody></table></body></html>
"""
        return body.encode()


class Monitored(StateSource, Protocol):
    """What the web app serves: the collector's state source, plus readiness."""

    def ready(self) -> bool: ...


def build_web_app(source: Monitored, reload: Callable[[], tuple[bool, str]], *,
                  direct_render: bool = True, histogram_buckets: bool = False) -> WebApp:
    """The web app for an exporter: its metrics (``exporter.collector.Exposition``).

    ``direct_render=False`` serves through prometheus-client's encoder instead
    of ``Exposition.render`` (same bytes, slower; for benchmarks).
    """
    exposition = Exposition(source, histogram_buckets=histogram_buckets)
    app = WebApp(exposition.registry, source.provider_states, source.ready, reload,
                 render=exposition.render if direct_render else None,
                 render_gzip=exposition.render_gzip if direct_render else None)
    #: For the event loop's ``exposition.keep_rendered()`` task (cli.py).
    app.exposition = exposition
    return app


def _probe_word(success: bool | None) -> str:
    return "not run yet" if success is None else ("ok" if success else "failing")


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")
    return f"{stamp} (in {_duration(ts - now)})"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes (separate records with TLS);
    # with Nagle's algorithm on, each keep-alive response waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server_version = f"token-health-exporter/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        for name, value in self.server.extra_headers:
            self.send_header(name, value)
        super().end_headers()

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        if ("gzip" in self.headers.get("Accept-Encoding", "") and len(body) > 1024
                and "Content-Encoding" not in (extra or {})):
            body = gzip.compress(body, compresslevel=1)
            extra = {**(extra or {}), "Content-Encoding": "gzip"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        auth = self.server.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            self._send(401, b"Unauthorized.\n",
                       extra={"WWW-Authenticate": f'Basic realm="{REALM}"'})
            return
        app = self.server.app
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics" and self.command in ("GET", "HEAD"):
                accept = self.headers.get("Accept")
                zipped = (app.metrics_gzip(accept)
                          if "gzip" in self.headers.get("Accept-Encoding", "") else None)
                if zipped is not None:
                    self._send(200, zipped[0], zipped[1], extra={"Content-Encoding": "gzip"})
                    return
                body, ctype = app.metrics(accept)
                self._send(200, body, ctype)
            elif path == "/" and self.command in ("GET", "HEAD"):
                self._send(200, app.landing(), "text/html; charset=utf-8")
            elif path == "/-/healthy" and self.command in ("GET", "HEAD"):
                self._send(200, b"Healthy.\n")
            elif path == "/-/ready" and self.command in ("GET", "HEAD"):
                if app.ready():
                    self._send(200, b"Ready.\n")
                else:
                    self._send(503, b"Not ready: first token attempts still running.\n")
            elif path == "/-/reload":
                if self.command != "POST":
                    self._send(405, b"Use POST to reload.\n", extra={"Allow": "POST"})
                    return
                ok, message = app.reload()
                self._send(200 if ok else 500, (message + "\n").encode())
            else:
                self._send(404, b"Not found.\n")
        except Exception:
            log.exception("error serving %s %s", self.command, path)
            self._send(500, b"Internal error; see the exporter's log.\n")

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and 0 < int(length) <= 65536:
            self.rfile.read(int(length))
        self._route()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: WebApp
    auth: BasicAuth | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # With TLS the listening socket does not handshake in accept(); each
        # connection does it here, in its own thread, so a slow or silent
        # client cannot hold up the others.
        if isinstance(request, ssl.SSLSocket):
            previous = request.gettimeout()
            try:
                request.settimeout(TLS_HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(previous)
            except (OSError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return  # process_request_thread closes the connection
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Dropped connections and the like: not worth a traceback on stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:10180``, ``0.0.0.0:10180``, ``[::1]:10180`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {address!r}: use HOST:PORT or :PORT")
    host = host.strip("[]")
    return host, int(port)


class WebServer:
    def __init__(self, app: WebApp, address: str, web_config: WebConfig | None = None) -> None:
        host, port = parse_listen_address(address)
        server_cls = _Server
        if ":" in host:
            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_cls = _Server6
        self._server = server_cls((host or "0.0.0.0", port), _Handler)
        self._server.app = app
        self.scheme = "http"
        if web_config is not None:
            self._server.auth = web_config.auth
            self._server.extra_headers = web_config.headers
            if web_config.ssl_context is not None:
                self._server.socket = web_config.ssl_context.wrap_socket(
                    self._server.socket, server_side=True, do_handshake_on_connect=False
                )
                self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="web", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
