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
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from exporter import buildinfo
from exporter.app import Exporter
from exporter.config import Config, ConfigError, Duration, load_config, summary
from exporter.laglog import ENV as LAG_FILE_ENV
from exporter.laglog import LagLog
from exporter.logsetup import (
    FORMAT_ALIASES,
    FORMATS,
    LEVEL_ALIASES,
    LEVELS,
    Redactor,
    setup_logging,
)
from exporter.service import build_service
from exporter.sharding import select
from exporter.sharding import validate as validate_shard
from exporter.web import Limits, raise_open_files_limit
from exporter.web.app import DEFAULT_MAX_REQUESTS, check_telemetry_path
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKEN_EXPORTER_", extra="ignore")

    config_file: str = "providers.yaml"
    web_listen_address: str = ":10180"
    web_config_file: str | None = None
    web_telemetry_path: str = "/metrics"
    web_max_connections: int = Field(Limits.max_connections, ge=1)
    web_max_requests: int = Field(DEFAULT_MAX_REQUESTS, ge=1)
    web_read_header_timeout: Duration = Limits.read_header_timeout
    web_idle_timeout: Duration = Limits.idle_timeout
    # Prometheus' spellings; the aliases (warning, text) are accepted and
    # stored under the Prometheus name.
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_library_level: Literal["debug", "info", "warn", "error"] = "warn"
    shard: int = 0
    total_shards: int = 1
    metrics_histogram_buckets: bool = False

    @field_validator("log_level", "log_library_level", mode="before")
    @classmethod
    def _level_alias(cls, value: object) -> object:
        return LEVEL_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_alias(cls, value: object) -> object:
        return FORMAT_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("web_telemetry_path")
    @classmethod
    def _telemetry_path(cls, value: str) -> str:
        return check_telemetry_path(value)

    @field_validator("web_read_header_timeout", "web_idle_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive duration such as 5s")
        return value

    def web_limits(self) -> Limits:
        return Limits(max_connections=self.web_max_connections,
                      read_header_timeout=self.web_read_header_timeout,
                      idle_timeout=self.web_idle_timeout)


class _VersionAction(argparse.Action):
    """Prints the Prometheus-style version block; argparse's own would re-wrap it."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        sys.stdout.write(buildinfo.version_text(parser.prog))
        parser.exit()


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
    add("--web.telemetry-path", dest="web_telemetry_path", metavar="PATH",
        help="path to serve metrics on (env TOKEN_EXPORTER_WEB_TELEMETRY_PATH; "
        "default /metrics)")
    add("--web.max-connections", dest="web_max_connections", type=int, metavar="N",
        help="open connections at most; one more sheds the longest-idle "
        f"(env TOKEN_EXPORTER_WEB_MAX_CONNECTIONS; default {Limits.max_connections})")
    add("--web.max-requests", dest="web_max_requests", type=int, metavar="N",
        help="metrics requests answered at once; more get 503 "
        f"(env TOKEN_EXPORTER_WEB_MAX_REQUESTS; default {DEFAULT_MAX_REQUESTS})")
    add("--web.read-header-timeout", dest="web_read_header_timeout", metavar="DURATION",
        help="deadline for a whole request head, however slowly it trickles in "
        f"(env TOKEN_EXPORTER_WEB_READ_HEADER_TIMEOUT; default {Limits.read_header_timeout:g}s)")
    add("--web.idle-timeout", dest="web_idle_timeout", metavar="DURATION",
        help="close a keep-alive connection idle this long; keep it above the scrape "
        f"interval (env TOKEN_EXPORTER_WEB_IDLE_TIMEOUT; default {Limits.idle_timeout:g}s)")
    add("--log.level", dest="log_level", choices=list(LEVELS), metavar="LEVEL",
        help="debug, info, warn or error (warning: alias) for this program's own lines "
        "(env TOKEN_EXPORTER_LOG_LEVEL; default info)")
    add("--log.format", dest="log_format", choices=[*FORMATS, *FORMAT_ALIASES], metavar="FORMAT",
        help="logfmt or json (text: alias of logfmt) (env TOKEN_EXPORTER_LOG_FORMAT; "
        "default logfmt)")
    add("--log.library-level", dest="log_library_level", choices=list(LEVELS), metavar="LEVEL",
        help="level for other libraries' loggers (httpx, httpcore, asyncio, ...), never more "
        "verbose than --log.level (env TOKEN_EXPORTER_LOG_LIBRARY_LEVEL; default warn)")
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
    add("--config.check", "--check-config", dest="check_config", action="store_true",
        help="validate the config file, print a summary without secrets, exit 0 or 1 "
        "(--check-config: the older spelling)")
    add("--version", action=_VersionAction,
        help="print version, revision, build date, Python version and platform, and exit")
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
        old, new = raise_open_files_limit()
        if new != old:
            log.debug("open-files limit raised from %d to %d", old, new)
        limits = self.settings.web_limits()
        lag_path = os.environ.get(LAG_FILE_ENV)
        try:
            lag_log = LagLog(lag_path) if lag_path else None
        except OSError as exc:
            log.error("cannot write %s: %s", LAG_FILE_ENV, exc)
            if simulation is not None:
                simulation.stop()
            return 1
        try:
            service = build_service(
                config, redactor=self.redactor, reload=self.reload,
                listen=self.settings.web_listen_address, web_config=web_config,
                limits=limits, telemetry_path=self.settings.web_telemetry_path,
                max_requests=self.settings.web_max_requests,
                histogram_buckets=self.settings.metrics_histogram_buckets,
                on_probe_lateness=lag_log.record if lag_log is not None else None)
            self.exporter = service.exporter
            web = service.web
            # Bound before the exporter starts: a busy port fails before any token request.
            await service.start()
        except (OSError, ValueError) as exc:
            log.error("cannot listen on %s: %s", self.settings.web_listen_address, exc)
            if simulation is not None:
                simulation.stop()
            return 1
        if limits.max_connections + 64 > new:
            log.warning("--web.max-connections %d is close to the open-files limit %d: "
                        "accepting may fail before the cap sheds idle connections",
                        limits.max_connections, new)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, stop.set)
        self._loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(self.reload())
        )
        log.info("listening on %s (port %d, %s)", self.settings.web_listen_address, web.port,
                 web.scheme)
        lag_task = None
        if lag_log is not None:
            log.info("debug: writing every probe run's schedule lag to %s", lag_log.path)
            lag_task = asyncio.create_task(lag_log.run(), name="lag-log")
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
            if lag_task is not None:
                lag_task.cancel()
                await asyncio.gather(lag_task, return_exceptions=True)
            await service.stop()
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
    setup_logging(settings.log_level, settings.log_format, redactor,
                  library_level=settings.log_library_level)
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
    factory, name = event_loop_factory()
    log.info("event loop: %s", name)
    try:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(runner.run())
    except KeyboardInterrupt:
        return 130


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop's loop where it is installed (the ``speed`` extra), else asyncio's own.

    uvloop runs the same loops with less CPU per probe (benchmarks/README.md,
    capacity). Given to ``asyncio.Runner`` rather than set as the process-wide
    policy, so that nothing else in the process (tests calling ``main``) changes.
    """
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, "uvloop"


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
