"""Command line, environment and process lifecycle.

Flags are Prometheus-style (``--config.file``); each has a
``TOKEN_EXPORTER_*`` environment variable read through pydantic-settings. A
flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from exporter import __version__
from exporter.app import Exporter
from exporter.config import Config, ConfigError, load_config, summary
from exporter.logsetup import Redactor, setup_logging
from exporter.sharding import select
from exporter.sharding import validate as validate_shard
from exporter.web import WebServer, build_web_app
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKEN_EXPORTER_", extra="ignore")

    config_file: str = "providers.yaml"
    web_listen_address: str = ":10180"
    web_config_file: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shard: int = 0
    total_shards: int = 1
    metrics_histogram_buckets: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="token-health-exporter",
        description="Keeps OAuth 2.0 client-credentials tokens healthy and exports their "
        "state as Prometheus metrics.",
    )
    add = parser.add_argument
    add("--config.file", dest="config_file", metavar="PATH",
        help="provider file (env TOKEN_EXPORTER_CONFIG_FILE; default providers.yaml)")
    add("--web.listen-address", dest="web_listen_address", metavar="HOST:PORT",
        help="address to serve metrics on (env TOKEN_EXPORTER_WEB_LISTEN_ADDRESS; "
        "default :10180)")
    add("--web.config.file", dest="web_config_file", metavar="PATH",
        help="TLS and basic-auth config, exporter-toolkit format "
        "(env TOKEN_EXPORTER_WEB_CONFIG_FILE)")
    add("--log.level", dest="log_level", choices=["debug", "info", "warning", "error"],
        help="env TOKEN_EXPORTER_LOG_LEVEL; default info")
    add("--log.format", dest="log_format", choices=["text", "json"],
        help="env TOKEN_EXPORTER_LOG_FORMAT; default text")
    add("--shard", dest="shard", type=int, metavar="N",
        help="this replica's shard, 0-based (env TOKEN_EXPORTER_SHARD; default 0)")
    add("--total-shards", dest="total_shards", type=int, metavar="M",
        help="number of replicas sharing the provider file; each provider is held by "
        "exactly one (env TOKEN_EXPORTER_TOTAL_SHARDS; default 1)")
    add("--metrics.histogram-buckets", dest="metrics_histogram_buckets", action="store_const",
        const=True, help="export latency histograms with buckets (10 more series per "
        "credential and per probe) instead of _sum/_count only "
        "(env TOKEN_EXPORTER_METRICS_HISTOGRAM_BUCKETS; default off)")
    add("--demo", action="store_true",
        help="run simulated copies of the five seed providers on loopback and monitor them")
    add("--check-config", action="store_true",
        help="validate the config file, print a summary without secrets, exit 0 or 1")
    add("--version", action="version", version=f"token-health-exporter {__version__}")
    return parser


def load_settings(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    given = {
        k: v for k, v in vars(args).items()
        if k in Settings.model_fields and v is not None
    }
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKEN_EXPORTER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise SystemExit(f"token-health-exporter: invalid settings: {problems}") from None
    return settings, args


def demo_config(env: dict[str, str]) -> Config:
    from exporter.config import parse_config

    text = resources.files("exporter").joinpath("demo.yaml").read_text(encoding="utf-8")
    return parse_config(text, "<demo.yaml>", env)


class Runner:
    """One exporter process: config, exporter, web server, signals."""

    def __init__(self, settings: Settings, demo: bool, redactor: Redactor) -> None:
        self.settings = settings
        self.demo = demo
        #: The logging handler's redactor: told every secret and token.
        self.redactor = redactor
        self._demo_env: dict[str, str] = {}
        self.exporter: Exporter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def load(self) -> Config:
        if self.demo:
            config = demo_config(self._demo_env)
        else:
            config = load_config(self.settings.config_file)
        return shard_config(config, self.settings.shard, self.settings.total_shards)

    def load_web_config(self) -> WebConfig | None:
        path = self.settings.web_config_file
        return load_web_config(path) if path else None

    async def reload(self) -> tuple[bool, str]:
        assert self.exporter is not None
        try:
            config = self.load()
        except ConfigError as exc:
            self.exporter.config_reload_ok = False
            log.error("config reload failed; the previous config stays in force:\n%s", exc)
            return False, f"reload failed: {exc}"
        self.redactor.add(*config.secrets())
        self.exporter.apply(config)
        log.info("config reloaded: %d provider(s)", len(config.providers))
        return True, "Config reloaded."

    def reload_from_thread(self) -> tuple[bool, str]:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.reload(), self._loop)
        return future.result(timeout=60)

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        simulation = None
        if self.demo:
            from exporter.simulator import Simulation

            simulation = Simulation(lifetimes=DEMO_LIFETIMES).start()
            self._demo_env = demo_environment(simulation)
        try:
            config = self.load()
            web_config = self.load_web_config()
        except ConfigError as exc:
            log.error("invalid configuration:\n%s", exc)
            if simulation is not None:
                simulation.stop()
            return 1
        self.redactor.add(*config.secrets())
        exporter = Exporter(config, on_token=self.redactor.add)
        self.exporter = exporter
        app = build_web_app(exporter, self.reload_from_thread,
                            histogram_buckets=self.settings.metrics_histogram_buckets)
        try:
            web = WebServer(app, self.settings.web_listen_address, web_config)
        except (OSError, ValueError) as exc:
            log.error("cannot listen on %s: %s", self.settings.web_listen_address, exc)
            if simulation is not None:
                simulation.stop()
            return 1
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, stop.set)
        self._loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(self.reload())
        )
        await exporter.start()
        # Renders changed metrics on the loop as results come in, so that a
        # scrape (in the web thread) has little left to do.
        prerender = (asyncio.ensure_future(app.exposition.keep_rendered())
                     if app.exposition is not None else None)
        web.start()
        log.info("listening on %s (port %d, %s)", self.settings.web_listen_address, web.port,
                 web.scheme)
        if self.demo:
            print(
                f"\nDemo running: five simulated providers on loopback.\n"
                f"  Landing page: {web.scheme}://127.0.0.1:{web.port}/\n"
                f"  Metrics:      {web.scheme}://127.0.0.1:{web.port}/metrics\n"
                "Press Ctrl-C to stop.\n",
                flush=True,
            )
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            if prerender is not None:
                prerender.cancel()
            web.stop()
            await exporter.stop()
            if simulation is not None:
                simulation.stop()
        return 0


#: Demo lifetimes are minutes, not hours, so a newcomer sees renewals happen.
DEMO_LIFETIMES = {
    "simpledocs": 600,
    "smartdocumentor": 300,
    "simplifi": 240,
    "simplestore": 180,
    "dokstamp": 900,
}


def demo_environment(simulation: object) -> dict[str, str]:
    from exporter.simulator import DEMO_CLIENTS, Simulation

    assert isinstance(simulation, Simulation)
    env: dict[str, str] = {}
    for kind, provider in simulation.providers.items():
        client_id, secret = DEMO_CLIENTS[kind]
        prefix = f"DEMO_{kind.upper()}"
        env[f"{prefix}_URL"] = provider.base_url
        env[f"{prefix}_CLIENT_ID"] = client_id
        env[f"{prefix}_CLIENT_SECRET"] = secret
    return env


def shard_config(config: Config, shard: int, total_shards: int) -> Config:
    """Keep only the providers this replica owns (all of them with one shard)."""
    if total_shards == 1:
        return config
    owned = set(select((p.name for p in config.providers), shard, total_shards))
    return dataclasses.replace(
        config, providers=tuple(p for p in config.providers if p.name in owned)
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = load_settings(argv)
    try:
        validate_shard(settings.shard, settings.total_shards)
    except ValueError as exc:
        print(f"token-health-exporter: {exc}", file=sys.stderr)
        return 2
    redactor = Redactor()
    setup_logging(settings.log_level, settings.log_format, redactor)
    if args.check_config:
        try:
            config = load_config(settings.config_file)
            web_config = (
                load_web_config(settings.web_config_file) if settings.web_config_file else None
            )
        except ConfigError as exc:
            print(f"invalid configuration:\n{exc}", file=sys.stderr)
            return 1
        owned = shard_config(config, settings.shard, settings.total_shards)
        print(summary(config))
        if web_config is not None:
            print(web_config.summary())
        if settings.total_shards > 1:
            print(f"shard {settings.shard} of {settings.total_shards} holds: "
                  f"{', '.join(p.name for p in owned.providers) or 'none'}")
        return 0
    runner = Runner(settings, args.demo, redactor)
    try:
        return asyncio.run(runner.run())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
