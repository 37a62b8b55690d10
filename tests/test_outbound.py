"""Outbound options per provider: TLS trust and identity, proxies."""

from __future__ import annotations

from exporter.simulator import SimulatedProvider
from tests.harness import running_exporter, wait_for
from tests.scripted import forward_proxy

SECRET = "outbound-secret-Hk4"


def test_proxy_url_carries_token_requests_and_probes() -> None:
    with SimulatedProvider("simplestore") as sim, forward_proxy() as (proxy, seen):
        sim.add_client("app", SECRET)
        config = f"""
providers:
  - name: proxied
    preset: simplestore
    token_url: {sim.token_url}
    client_id: app
    client_secret: {SECRET}
    proxy_url: {proxy}
    probes:
      - name: api
        url: {sim.base_url}/api/v1/products
  - name: direct
    preset: simplestore
    token_url: {sim.token_url}
    client_id: app
    client_secret: {SECRET}
"""
        with running_exporter(config, log_level="info") as h:
            wait_for(lambda: h.value("oauth_probe_success", provider="proxied",
                                     probe="api") == 1.0, message="probe through proxy")
            wait_for(lambda: h.value("oauth_token_valid", provider="direct") == 1.0)
        # The proxied provider's two requests went through the proxy; the direct
        # provider's did not (one shared client per outbound setting, not one for all).
        assert seen == [("POST", sim.token_url), ("GET", f"{sim.base_url}/api/v1/products")]
        assert len(sim.token_requests()) == 2
