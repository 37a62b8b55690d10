"""Outage longer than a token's lifetime, then recovery by itself."""

from __future__ import annotations

import time

import pytest

from exporter.simulator import SimulatedProvider
from tests.harness import running_exporter, wait_for

SECRET = "recovery-secret-Tt5"


@pytest.mark.slow
def test_token_endpoint_down_longer_than_a_lifetime_then_back() -> None:
    lifetime, backoff_max = 2, 1.0
    sim = SimulatedProvider("simplestore", lifetime=lifetime).start()
    sim.add_client("app", SECRET)
    config = f"""
providers:
  - name: p
    preset: simplestore
    token_url: {sim.token_url}
    client_id: app
    client_secret: {SECRET}
    timeout: 500ms
    backoff_initial: 100ms
    backoff_max: {backoff_max}s
    probes:
      - name: api
        url: {sim.base_url}/api/v1/products
        interval: 300ms
        timeout: 250ms
"""
    try:
        with running_exporter(config, log_level="info") as h:
            wait_for(lambda: h.value("oauth_token_valid", provider="p") == 1.0)
            sim.stop()  # the whole provider is gone: connections are refused
            # Down longer than a token lifetime: the token lapses, renewals keep
            # failing, and probes are skipped for want of a token.
            wait_for(lambda: h.value("oauth_token_valid", provider="p") == 0.0
                     and (h.value("oauth_token_refresh_failures_total", provider="p",
                                  error="connection_error") or 0) >= 3
                     and (h.value("oauth_probe_failures_total", provider="p", probe="api",
                                  error="no_token") or 0) >= 1,
                     timeout=lifetime * 2 + 30, message="the token to lapse while down")
            sim.start()  # same port
            back = time.monotonic()
            wait_for(lambda: h.value("oauth_token_valid", provider="p") == 1.0,
                     timeout=backoff_max + 3, message="recovery")
            recovered_in = time.monotonic() - back
            wait_for(lambda: h.value("oauth_probe_success", provider="p", probe="api") == 1.0,
                     timeout=3, message="probe recovery")
            print(f"recovered {recovered_in:.2f}s after the endpoint came back")
            # Within one backoff cap (plus scheduling slack), by itself.
            assert recovered_in <= backoff_max + 0.5
    finally:
        sim.stop()
