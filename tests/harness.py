"""Run a real Exporter (scheduler, HTTP client, web server) on a background loop.

Tests stay synchronous: they sleep, poll and make plain HTTP calls while the
exporter runs its jobs on its own thread, exactly as in production.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from prometheus_client import CollectorRegistry

from exporter.app import Exporter
from exporter.config import Config, parse_config
from exporter.logsetup import Redactor, setup_logging
from exporter.service import build_service
from exporter.web import Limits, WebApp, WebServer
from exporter.webconfig import WebConfig

T = TypeVar("T")


@dataclass
class Harness:
    exporter: Exporter
    registry: CollectorRegistry
    loop: asyncio.AbstractEventLoop
    port: int
    logs: io.StringIO
    #: Every access token the exporter obtained, for grepping outputs.
    tokens: list[str]
    #: "https" when a web config turns TLS on.
    scheme: str = "http"
    web: WebServer | None = None
    app: WebApp | None = None

    def call(self, awaitable: Awaitable[T], timeout: float = 30) -> T:
        """Await ``awaitable`` on the exporter's loop and return its result."""

        async def wait() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout)

    def run(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the exporter's loop (state is written there)."""

        async def wrap() -> T:
            return fn()

        return self.call(wrap())

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url(path), timeout=10)

    def state(self, provider: str) -> Any:
        return next(s for s in self.exporter.provider_states() if s.provider.name == provider)


def wait_for(predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Call ``predicate`` until it returns something truthy, and return that; fail
    with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


@contextmanager
def running_exporter(config: Config | str, env: dict[str, str] | None = None,
                     log_level: str = "debug",
                     web_config: WebConfig | None = None,
                     limits: Limits | None = None,
                     telemetry_path: str = "/metrics",
                     config_check_interval: float = 1.0) -> Iterator[Harness]:
    if isinstance(config, str):
        config = parse_config(config, "test.yaml", env or {})
    logs = io.StringIO()
    redactor = Redactor()
    redactor.add(*config.secrets())
    handler = setup_logging(log_level, "text", redactor, stream=logs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    tokens: list[str] = []

    def on_token(value: str) -> None:
        tokens.append(value)

    service = build_service(config, redactor=redactor, on_token=on_token,
                            web_config=web_config, limits=limits,
                            telemetry_path=telemetry_path,
                            config_check_interval=config_check_interval)
    exporter, app, web = service.exporter, service.app, service.web
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(10)
    try:
        yield Harness(exporter, app.registry, loop, web.port, logs, tokens, web.scheme,
                      web, app)
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(40)

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        logging.getLogger().removeHandler(handler)
