"""Wiring one running exporter: config, renewal and probe loops, web app, web server.

``build_service`` is the one place that puts the parts together. The command
line, ``--demo``, the test harness and the benchmarks all call it, so each of
them runs the wiring users run::

    config ──> Exporter (renewal loops, probes, watchdog) ──> StateSource
                  │ on_token: every token to the log redactor
                  ▼
    WebApp (collector, /metrics, landing page, /-/reload) ──> WebServer (bounded)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from exporter.app import Exporter
from exporter.config import Config
from exporter.logsetup import Redactor
from exporter.ratelimit import HostLimiter
from exporter.web import Limits, WebApp, WebServer, build_web_app
from exporter.web.app import DEFAULT_MAX_REQUESTS, Reload
from exporter.webconfig import WebConfig


async def _no_reload() -> tuple[bool, str]:
    return False, "reload is not wired here"


@dataclass
class Service:
    """One exporter with its web server; ``start`` and ``stop`` on the running loop."""

    exporter: Exporter
    app: WebApp
    web: WebServer
    redactor: Redactor

    prerender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the port, then start the loops; a busy port fails before any token request."""
        await self.web.start()
        await self.exporter.start()
        exposition = self.app.exposition
        if exposition is not None and self.app.render is not None:
            # Renders changed metrics on the loop as results come in, so that a
            # scrape (in a worker thread) has little left to do.
            self.prerender = asyncio.create_task(exposition.keep_rendered(),
                                                 name="keep-rendered")

    async def stop(self) -> None:
        if self.prerender is not None:
            self.prerender.cancel()
            await asyncio.gather(self.prerender, return_exceptions=True)
        await self.web.stop()
        await self.exporter.stop()


def build_service(
    config: Config,
    *,
    redactor: Redactor,
    reload: Reload | None = None,
    listen: str = "127.0.0.1:0",
    web_config: WebConfig | None = None,
    limits: Limits | None = None,
    telemetry_path: str = "/metrics",
    max_requests: int = DEFAULT_MAX_REQUESTS,
    direct_render: bool = True,
    histogram_buckets: bool = False,
    config_check_interval: float = 1.0,
    on_token: Callable[[str], None] | None = None,
    on_probe_lateness: Callable[[float], None] | None = None,
    client: httpx.AsyncClient | None = None,
    limiter: HostLimiter | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> Service:
    """The exporter for ``config``, served on ``listen``; nothing runs until ``start``.

    Every secret in the config and every token obtained later is handed to
    ``redactor`` (the log handler's), so no log line can carry one.
    """
    redactor.add(*config.secrets())

    def token_obtained(value: str) -> None:
        redactor.add(value)
        if on_token is not None:
            on_token(value)

    exporter = Exporter(config, on_token=token_obtained, on_probe_lateness=on_probe_lateness,
                        client=client, limiter=limiter, clock=clock, rng=rng)
    app = build_web_app(exporter, reload or _no_reload, direct_render=direct_render,
                        telemetry_path=telemetry_path, max_requests=max_requests,
                        histogram_buckets=histogram_buckets)
    web = WebServer(app, listen, web_config, limits, config_check_interval=config_check_interval)
    return Service(exporter, app, web, redactor)
