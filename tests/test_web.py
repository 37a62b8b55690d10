"""The HTTP endpoints, and what promtool thinks of our exposition."""

from __future__ import annotations

import gzip
import re
import subprocess

import httpx
import pytest

from exporter.config import Config
from exporter.simulator import Simulation
from tests.harness import running_exporter, wait_for
from tests.promtool import promtool_path


@pytest.mark.slow
def test_metrics_pass_promtool_check_metrics(demo: Config) -> None:
    with running_exporter(demo, log_level="info") as h:
        wait_for(h.exporter.ready, message="first token attempts")
        wait_for(lambda: h.value("oauth_probe_attempts_total", provider="dokstamp-demo",
                                 probe="documents"), message="a probe run")
        body = h.get("/metrics").content
    proc = subprocess.run([str(promtool_path()), "check", "metrics"], input=body,
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    text = body.decode()
    # (Failure counters by class appear once a class happens: the demo's
    # write probe fails with insufficient_scope; no token request fails.)
    for family in ("oauth_token_valid", "oauth_probe_success", "oauth_provider_info",
                   "oauth_exporter_build_info", "oauth_probe_failures_total",
                   "oauth_token_refresh_duration_seconds_count",
                   "oauth_exporter_config_last_reload_successful", "process_cpu_seconds_total",
                   "python_info"):
        assert f"\n{family}" in text, family


@pytest.mark.slow
def test_openmetrics_and_gzip(demo: Config) -> None:
    with running_exporter(demo, log_level="info") as h:
        wait_for(h.exporter.ready)
        om = httpx.get(h.url("/metrics"),
                       headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        with httpx.stream("GET", h.url("/metrics"),
                          headers={"Accept-Encoding": "gzip"}) as raw:
            assert raw.headers.get("content-encoding") == "gzip"
            wire = b"".join(raw.iter_raw())  # the bytes as sent, not decoded
        assert b"oauth_token_valid" in gzip.decompress(wire)


def test_landing_page_has_a_row_per_provider_with_probes(demo: Config) -> None:
    with running_exporter(demo, log_level="info") as h:
        wait_for(h.exporter.ready)
        wait_for(lambda: h.value("oauth_probe_attempts_total", provider="simpledocs-demo",
                                 probe="create-document"), message="write probe")
        page = h.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        rows = re.findall(r'data-provider="([^"]+)"', html)
        assert sorted(rows) == sorted(p.name for p in demo.providers)
        for p in demo.providers:
            for probe in p.probes:
                assert f"{probe.name}: " in html
        # The demo's read-only SimpleDocs credential fails its write probe: that row
        # needs attention, so it comes first and the summary counts it.
        assert rows[0] == "simpledocs-demo"
        assert re.search(r'id="summary">[1-5] of 5 credentials? needs? attention', html)
        assert "insufficient_scope" in html
        assert 'class="valid">valid' in html
        assert 'href="/metrics"' in html
        assert "HTTP 0" not in html


@pytest.mark.slow
def test_health_ready_and_unknown_paths(simulation: Simulation) -> None:
    slow = simulation.providers["simplestore"]
    slow.set_faults(delay=1.5)
    config = (
        "providers:\n  - name: slow\n    preset: simplestore\n"
        f"    token_url: {slow.token_url}\n    client_id: x\n    client_secret: y\n"
        "    timeout: 5s\n"
    )
    with running_exporter(config, log_level="info") as h:
        assert h.get("/-/healthy").status_code == 200
        assert h.get("/-/ready").status_code == 503  # first attempt still in flight
        wait_for(lambda: h.get("/-/ready").status_code == 200, timeout=6)
        assert h.get("/nope").status_code == 404
        assert httpx.get(h.url("/-/reload")).status_code == 405
        head = httpx.head(h.url("/metrics"))
        assert head.status_code == 200 and head.content == b""


def test_direct_renderer_matches_prometheus_client_byte_for_byte(demo: Config) -> None:
    """/metrics is written by TokenHealthCollector.render() plus the web server's own
    families; it must be exactly what prometheus-client's encoders produce."""
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.collector import TokenHealthCollector
    from exporter.web import WebApp
    from tests.promclient import om_latest

    with running_exporter(demo, log_level="info") as h:
        wait_for(h.exporter.ready)
        wait_for(lambda: h.value("oauth_probe_attempts_total", provider="simpledocs-demo",
                                 probe="create-document"), message="a failing probe")
    # The exporter has stopped: its state no longer moves, and the clock is fixed.
    collector = TokenHealthCollector(h.exporter, clock=lambda: 1_900_000_000.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = collector.render(False)
    assert text == generate_latest(registry)
    assert collector.render(True) == om_latest(registry)
    assert b'error="insufficient_scope",probe="create-document"' in text

    async def no_reload() -> tuple[bool, str]:
        return False, "no"

    plain = CollectorRegistry(auto_describe=False)
    plain.register(collector)
    apps = [WebApp(reg, h.exporter.provider_states, h.exporter.ready, no_reload,
                   render=render)
            for reg, render in ((registry, collector.render), (plain, None))]
    for app in apps:
        app.http.open, app.http.shed = 7, 3
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        direct, encoded = (app.metrics(accept)[0] for app in apps)
        assert direct == encoded
        assert b"oauth_exporter_http_connections_open 7.0\n" in direct
        assert direct.count(b"# EOF") == (1 if accept else 0)
