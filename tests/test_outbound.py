"""Outbound options per provider: TLS trust and identity, proxies."""

from __future__ import annotations

import ssl

import yaml

from exporter.simulator import SimulatedProvider
from tests.harness import running_exporter, wait_for
from tests.pki import Pki
from tests.scripted import Answer, forward_proxy, scripted_server

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


def tls_server(pki: Pki, require_client_cert: bool,
               max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    if max_version is not None:
        context.maximum_version = max_version
    return context


TOKEN = Answer(200, {"access_token": "tls-token-1", "expires_in": 3600, "token_type": "Bearer"})


def tls_provider(name: str, url: str, tls: dict[str, object] | None) -> dict[str, object]:
    provider: dict[str, object] = {
        "name": name, "token_url": url + "/token", "client_id": "c", "client_secret": SECRET,
        "backoff_initial": "1h", "backoff_max": "1h",
        "probes": [{"name": "api", "url": url + "/api"}],
    }
    if tls is not None:
        provider["tls"] = tls
    return provider


def test_tls_trust_identity_and_insecure_skip_verify(pki: Pki) -> None:
    script = {"/token": TOKEN, "/api": Answer(200, {"ok": True})}
    # Under TLS 1.2 a refused client certificate fails the handshake itself. Under
    # TLS 1.3 the server judges it after the client's handshake is done, so the
    # client may see only a reset: tls_error or connection_error, both honest.
    tls12 = ssl.TLSVersion.TLSv1_2
    with scripted_server(script, tls_server(pki, False)) as plain_tls, \
            scripted_server(script, tls_server(pki, True, tls12)) as mutual, \
            scripted_server(script, tls_server(pki, True)) as mutual13:
        providers = [
            tls_provider("untrusted", plain_tls, None),  # the test CA is not a public CA
            tls_provider("trusted", plain_tls, {"ca_file": str(pki.ca)}),
            tls_provider("insecure", plain_tls, {"insecure_skip_verify": True}),
            tls_provider("mtls-no-cert", mutual, {"ca_file": str(pki.ca)}),
            tls_provider("mtls-rogue-cert", mutual, {
                "ca_file": str(pki.ca), "cert_file": str(pki.rogue_cert),
                "key_file": str(pki.rogue_key)}),
            tls_provider("mtls", mutual, {
                "ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key)}),
            tls_provider("mtls13-no-cert", mutual13, {"ca_file": str(pki.ca)}),
            tls_provider("mtls13", mutual13, {
                "ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key)}),
        ]
        with running_exporter(yaml.safe_dump({"providers": providers}),
                              log_level="info") as h:
            wait_for(h.exporter.ready, message="first attempts")
            for name in ("trusted", "insecure", "mtls", "mtls13"):
                wait_for(lambda n=name: h.value("oauth_probe_success", provider=n,
                                                probe="api") == 1.0, message=name)
            for name in ("untrusted", "mtls-no-cert", "mtls-rogue-cert"):
                assert h.value("oauth_token_valid", provider=name) == 0.0, name
                assert h.value("oauth_token_refresh_failures_total", provider=name,
                               error="tls_error") == 1.0, name
            assert h.value("oauth_token_valid", provider="mtls13-no-cert") == 0.0
            assert sum(h.value("oauth_token_refresh_failures_total", provider="mtls13-no-cert",
                               error=e) or 0 for e in ("tls_error", "connection_error")) == 1
            logs = h.logs.getvalue()
        assert "provider insecure: TLS certificate verification is DISABLED" in logs
        assert "level=warn" in logs
