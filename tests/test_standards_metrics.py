"""The standards families on /metrics: certificate expiry, discovery success and failures.

Checked through both ways the exposition is made (the registry's encoders
over ``collect()``, and the direct ``render()``), which must agree byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from exporter.assertion import certificate_not_after
from exporter.collector import TokenHealthCollector
from exporter.config import parse_config
from exporter.state import ProviderState
from tests.pki import Pki
from tests.promclient import om_latest
from tests.servers import keys

NOW = 1_800_000_000.0


class Source:
    def __init__(self, states: list[ProviderState]) -> None:
        self.states = states
        self.config_reload_ok = True
        self.config_reload_time = NOW

    def provider_states(self) -> Iterable[ProviderState]:
        return self.states


def states(pki: Pki, tmp_path: Path) -> list[ProviderState]:
    rsa = keys.generate_key("RSA")
    keys.self_signed_certificate(rsa, tmp_path / "s.crt", "signing")
    entries = [
        {"name": "mtls", "issuer": "https://id.example.com", "client_id": "a",
         "auth_method": "tls_client_auth",
         "tls_config": {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}},
        {"name": "jwt", "issuer": "https://id.example.com", "client_id": "b",
         "auth_method": "private_key_jwt",
         "private_key_file": str(keys.write_pem(rsa, tmp_path / "s.pem")),
         "signing_certificate_file": str(tmp_path / "s.crt")},
        {"name": "plain", "token_url": "https://id.example.com/token", "client_id": "c",
         "client_secret": "plain-secret"},
    ]
    cfg = parse_config(yaml.safe_dump({"providers": entries}), "p.yaml", {})
    mtls, jwt, plain = (ProviderState(p) for p in cfg.providers)
    mtls.discovery_last_success = NOW - 60
    jwt.discovery_failures = {"issuer_mismatch": 2, "timeout": 1}
    return [mtls, jwt, plain]


def test_render_and_the_registry_agree(pki: Pki, tmp_path: Path) -> None:
    collector = TokenHealthCollector(Source(states(pki, tmp_path)), clock=lambda: NOW)
    registry = CollectorRegistry()
    registry.register(collector)
    assert collector.render() == generate_latest(registry)
    assert collector.render(openmetrics=True) == om_latest(registry)


@pytest.mark.slow
def test_the_values(pki: Pki, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(TokenHealthCollector(Source(states(pki, tmp_path)), clock=lambda: NOW))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    expiry = "oauth_client_certificate_expiration_timestamp_seconds"
    assert value(expiry, provider="mtls", use="tls") == certificate_not_after(pki.client_cert)
    assert value(expiry, provider="jwt", use="signing") == certificate_not_after(tmp_path / "s.crt")
    assert value(expiry, provider="plain", use="tls") is None
    success = "oauth_discovery_last_success_timestamp_seconds"
    assert value(success, provider="mtls") == NOW - 60
    assert value(success, provider="jwt") is None
    failures = "oauth_discovery_failures_total"
    assert value(failures, provider="jwt", error="issuer_mismatch") == 2.0
    assert value(failures, provider="jwt", error="timeout") == 1.0
    # A class that never happened has no series; a provider without failures neither.
    text = generate_latest(registry).decode()
    assert text.count("oauth_discovery_failures_total{") == 2
