"""Probes: classification of realistic answers, re-authentication, isolation."""

from __future__ import annotations

import itertools
import ssl
import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from exporter.config import Config
from exporter.errors import ErrorClass
from exporter.simulator import SimulatedProvider, Simulation
from tests.harness import running_exporter, wait_for
from tests.scripted import Answer, free_port, scripted_server, self_signed

SECRET = "probe-secret-Qm3x"

HTML_500 = "<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1></body></html>"
HTML_LOGIN = "<html><head><title>Login</title></head><body><form>...</form></body></html>"

# path -> (answer, expected class). Each answer is modelled on what a real API
# sends: SimpleDocs' `type` bodies, IdentityServer's body-less 401 with only a
# WWW-Authenticate header, Laravel's HTML pages, nginx's 5xx pages.
CASES: dict[str, tuple[Answer, ErrorClass]] = {
    "/sd-expired": (Answer(401, {"type": "token_expired", "message": "The token has expired."}),
                    ErrorClass.TOKEN_EXPIRED),
    "/sd-revoked": (Answer(401, {"type": "token_revoked", "message": "Revoked."}),
                    ErrorClass.TOKEN_REVOKED),
    "/sd-invalid-token": (Answer(401, {"type": "invalid_token"}), ErrorClass.INVALID_TOKEN),
    "/sd-invalid-client": (Answer(401, {"type": "invalid_client"}), ErrorClass.INVALID_CLIENT),
    "/sd-scope": (Answer(403, {"type": "insufficient_scope"}), ErrorClass.INSUFFICIENT_SCOPE),
    "/bodyless-401": (Answer(401, b"", {"WWW-Authenticate":
                      'Bearer error="invalid_token", error_description="The token expired at '
                      "'11/25/2026 10:00:00'\""}), ErrorClass.INVALID_TOKEN),
    "/bodyless-403-scope": (Answer(403, b"", {"WWW-Authenticate":
                            'Bearer realm="api", error="insufficient_scope", scope="write"'}),
                            ErrorClass.INSUFFICIENT_SCOPE),
    "/bearer-no-error": (Answer(401, b"", {"WWW-Authenticate": 'Bearer realm="api"'}),
                         ErrorClass.INVALID_TOKEN),
    "/laravel-unauth": (Answer(401, {"message": "Unauthenticated."}), ErrorClass.INVALID_TOKEN),
    "/html-login-401": (Answer(401, HTML_LOGIN), ErrorClass.INVALID_TOKEN),
    "/tenant-missing": (Answer(400, {"error": "invalid_request",
                                     "message": "X-Tenant header is required"}),
                        ErrorClass.INVALID_REQUEST),
    "/expired-token-alias": (Answer(401, {"error": "expired_token"}), ErrorClass.TOKEN_EXPIRED),
    "/grant": (Answer(400, {"error": "invalid_grant"}), ErrorClass.INVALID_GRANT),
    "/unauthorized-client": (Answer(403, {"error": "unauthorized_client"}),
                             ErrorClass.UNAUTHORIZED_CLIENT),
    "/scope": (Answer(400, {"error": "invalid_scope"}), ErrorClass.INVALID_SCOPE),
    "/grant-type": (Answer(400, {"error": "unsupported_grant_type"}),
                    ErrorClass.UNSUPPORTED_GRANT_TYPE),
    "/429": (Answer(429, "<html>Too Many Requests</html>", {"Retry-After": "30"}),
             ErrorClass.RATE_LIMITED),
    "/html-500": (Answer(500, HTML_500), ErrorClass.SERVER_ERROR),
    "/503": (Answer(503, {"error": "temporarily_unavailable"}), ErrorClass.SERVER_ERROR),
    "/404": (Answer(404, {"message": "Not Found"}), ErrorClass.UNEXPECTED_STATUS),
    "/redirect-login": (Answer(302, b"", {"Location": "https://sso.example/login"}),
                        ErrorClass.UNEXPECTED_STATUS),
    "/200-not-201": (Answer(200, {"ok": True}), ErrorClass.UNEXPECTED_STATUS),
    "/slow": (Answer(200, {"ok": True}, delay=6.0), ErrorClass.TIMEOUT),
}
TRANSPORT = ["connection_error", "tls_error_cert", "tls_error_protocol"]


@pytest.mark.slow
def test_every_probe_error_class_from_a_realistic_answer(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    script = {path: answer for path, (answer, _) in CASES.items()}
    script["/token"] = Answer(200, {"access_token": "tok-abc-123", "expires_in": 3600,
                                    "token_type": "Bearer"})
    script["/ok"] = Answer(200, {"ok": True})
    with scripted_server(script) as base, scripted_server({"/": Answer(200)}, tls) as tls_base:
        probes = [
            # Generous timeouts: a loaded CI machine must not turn answers into timeouts.
            {"name": path.strip("/"), "url": base + path,
             "timeout": "1s" if path == "/slow" else "4s",
             "expect_status": [201] if path == "/200-not-201" else [200]}
            for path in CASES
        ]
        probes += [
            {"name": "connection_error", "url": f"http://127.0.0.1:{free_port()}/"},
            {"name": "tls_error_cert", "url": tls_base + "/"},  # self-signed: not trusted
            {"name": "tls_error_protocol", "url": base.replace("http:", "https:") + "/ok"},
            {"name": "ok", "url": base + "/ok"},
        ]
        config = {
            "providers": [{
                "name": "api", "token_url": base + "/token", "client_id": "c",
                "client_secret": SECRET, "probe_interval": "1h", "probes": probes,
            }, {
                # Its token endpoint refuses us, so its probe is never sent.
                "name": "tokenless", "token_url": base + "/sd-invalid-client",
                "client_id": "c", "client_secret": SECRET, "backoff_initial": "1h",
                "backoff_max": "1h", "probes": [{"name": "p", "url": base + "/ok"}],
            }],
        }
        import yaml

        with running_exporter(yaml.safe_dump(config), log_level="info") as h:
            def ran(provider: str, probe: str) -> bool:
                return (h.value("oauth_probe_attempts_total", provider=provider, probe=probe)
                        or 0) >= 1 or (h.value("oauth_probe_failures_total", provider=provider,
                                               probe=probe, error="no_token") or 0) >= 1

            for p in probes:
                name = str(p["name"])
                wait_for(partial(ran, "api", name), timeout=8, message=name)
            wait_for(lambda: ran("tokenless", "p"), message="tokenless probe")

            expected = {path.strip("/"): cls for path, (_, cls) in CASES.items()}
            expected |= {"connection_error": ErrorClass.CONNECTION_ERROR,
                         "tls_error_cert": ErrorClass.TLS_ERROR,
                         "tls_error_protocol": ErrorClass.TLS_ERROR}
            problems = []
            for name, cls in expected.items():
                got = {e.value: h.value("oauth_probe_failures_total", provider="api",
                                        probe=name, error=e.value) for e in ErrorClass}
                nonzero = {k for k, v in got.items() if v}
                if nonzero != {cls.value}:
                    problems.append(f"{name}: expected {cls.value}, got {nonzero}")
                if h.value("oauth_probe_success", provider="api", probe=name) != 0.0:
                    problems.append(f"{name}: success is not 0")
            assert not problems, "\n".join(problems)
            assert h.value("oauth_probe_success", provider="api", probe="ok") == 1.0
            assert h.value("oauth_probe_http_status_code", provider="api",
                           probe="html-500") == 500.0
            assert h.value("oauth_probe_http_status_code", provider="api",
                           probe="connection_error") == 0.0
            assert h.value("oauth_probe_failures_total", provider="tokenless", probe="p",
                           error="no_token") == 1.0
            assert h.value("oauth_probe_attempts_total", provider="tokenless",
                           probe="p") == 0.0
            # Every class a probe can produce from an answer, plus no_token, was seen.
            seen = set(expected.values()) | {ErrorClass.NO_TOKEN}
            assert seen == set(ErrorClass) - {ErrorClass.INVALID_RESPONSE, ErrorClass.OTHER}


def simpledocs_config(sim: SimulatedProvider, interval: str = "300ms",
                      probes: str = "", timeout: str = "10s") -> str:
    return f"""
providers:
  - name: sd
    preset: simpledocs
    token_url: {sim.token_url}
    client_id: app
    client_secret: {SECRET}
    probe_interval: {interval}
    timeout: {timeout}
    probes:
      - name: read
        url: {sim.base_url}/v1/documents
{probes}"""


def token_requests(sim: SimulatedProvider) -> int:
    return len(sim.token_requests())


def test_revoked_token_means_one_failure_one_renewal_and_a_good_retry() -> None:
    with SimulatedProvider("simpledocs") as sim:
        sim.add_client("app", SECRET, scopes="read")
        with running_exporter(simpledocs_config(sim, interval="1h")) as h:
            wait_for(lambda: h.value("oauth_probe_success", provider="sd", probe="read") == 1)
            assert token_requests(sim) == 1
            sim.revoke_all()
            # The probe job, run now rather than in an hour.
            h.call(h.exporter.probe_job("sd", "read")())
            assert token_requests(sim) == 2  # exactly one renewal
            assert h.value("oauth_probe_failures_total", provider="sd", probe="read",
                           error="token_revoked") == 1.0
            assert h.value("oauth_probe_attempts_total", provider="sd", probe="read") == 3.0
            assert h.value("oauth_probe_success", provider="sd", probe="read") == 1.0
            assert h.value("oauth_token_valid", provider="sd") == 1.0
            assert h.value("oauth_token_refresh_attempts_total", provider="sd") == 2.0
            assert "another client" in h.logs.getvalue()


@pytest.mark.parametrize("kind", ["simplestore", "simpledocs"])
def test_an_api_refusing_every_token_costs_at_most_two_token_requests_over_20_runs(
        kind: str) -> None:
    """A gateway that answers every probe with a bare 401, end to end.

    At SimpleStore each needless token request would revoke the token production
    uses; at SimpleDocs it would spend the per-IP budget production shares.
    """
    with SimulatedProvider(kind) as sim:
        sim.add_client("app", SECRET, scopes="read")
        sim.set_faults(api_refuses_tokens=True)
        config = f"""
providers:
  - name: gw
    preset: {kind}
    token_url: {sim.token_url}
    client_id: app
    client_secret: {SECRET}
    probe_interval: 1h
    timeout: 5s
    probes:
      - name: a
        url: {sim.base_url}{"/v1/documents" if kind == "simpledocs" else "/api/v1/products"}
      - name: b
        url: {sim.base_url}{"/v1/documents" if kind == "simpledocs" else "/api/v1/products"}
"""
        with running_exporter(config) as h:
            wait_for(lambda: (h.value("oauth_probe_attempts_total", provider="gw", probe="a")
                              or 0) >= 1, message="the first probe runs")
            for _ in range(10):  # 20 probe runs in all, back to back
                for probe in ("a", "b"):
                    h.call(h.exporter.probe_job("gw", probe)())
            runs = sum(h.value("oauth_probe_attempts_total", provider="gw", probe=p) or 0
                       for p in ("a", "b"))
            assert runs >= 20
            assert token_requests(sim) <= 2
            state = h.state("gw")
            assert state.refused_fresh
            for probe in ("a", "b"):
                assert h.value("oauth_probe_success", provider="gw", probe=probe) == 0.0
                assert (h.value("oauth_probe_failures_total", provider="gw", probe=probe,
                                error="invalid_token") or 0) >= 10
                assert not h.value("oauth_probe_failures_total", provider="gw", probe=probe,
                                   error="no_token")
            assert "the API refused a fresh token too" in h.logs.getvalue()
            # The API takes tokens again: the next probe run sees it, no token request.
            sim.clear_faults()
            before = token_requests(sim)
            h.call(h.exporter.probe_job("gw", "a")())
            assert h.value("oauth_probe_success", provider="gw", probe="a") == 1.0
            assert token_requests(sim) == before
            assert not state.refused_fresh


def test_another_client_taking_a_token_is_reported_as_such() -> None:
    with SimulatedProvider("simpledocs") as sim:
        sim.add_client("app", SECRET, scopes="read")
        with running_exporter(simpledocs_config(sim, interval="1h")) as h:
            wait_for(lambda: h.value("oauth_probe_success", provider="sd", probe="read") == 1)
            # Someone else (a colleague's script, a second exporter) uses our credentials.
            other = httpx.post(sim.token_url, data={"grant_type": "client_credentials",
                                                    "client_id": "app", "client_secret": SECRET})
            assert other.status_code == 200
            h.call(h.exporter.probe_job("sd", "read")())
            logs = h.logs.getvalue()
            assert "level=warn" in logs and "another client" in logs
            assert "one active token per application" in logs
            assert other.json()["access_token"] not in logs
            assert h.value("oauth_probe_success", provider="sd", probe="read") == 1.0


@pytest.mark.slow
def test_read_only_token_on_a_write_endpoint_is_insufficient_scope_without_renewal() -> None:
    write = """      - name: write
        method: POST
        url: {url}/v1/documents
        body: '{{"title": "x"}}'
        expect_status: [201]
"""
    with SimulatedProvider("simpledocs") as sim:
        sim.add_client("app", SECRET, scopes="read")
        # A timeout below the interval, as the config requires, and generous for CI.
        config = simpledocs_config(sim, interval="1s", timeout="800ms",
                                   probes=write.format(url=sim.base_url))
        with running_exporter(config, log_level="info") as h:
            wait_for(lambda: (h.value("oauth_probe_failures_total", provider="sd",
                                      probe="write", error="insufficient_scope") or 0) >= 3,
                     message="three insufficient_scope failures")
            assert token_requests(sim) == 1
            assert h.value("oauth_token_refresh_attempts_total", provider="sd") == 1.0
            assert h.value("oauth_probe_http_status_code", provider="sd", probe="write") == 403
            assert h.value("oauth_probe_success", provider="sd", probe="read") == 1.0
            assert h.value("oauth_token_valid", provider="sd") == 1.0


@pytest.mark.slow
def test_a_hanging_probe_does_not_delay_other_providers() -> None:
    """Provider A's API hangs until the probe times out, on every probe; provider
    B's probes and renewals must keep their schedule. Lateness is measured from
    B's simulator's own request log."""
    interval, lifetime, fraction = 0.5, 2, 0.5
    with SimulatedProvider("simplestore", lifetime=60) as hanging, \
            SimulatedProvider("simplifi", lifetime=lifetime) as healthy:
        hanging.add_client("a", SECRET)
        healthy.add_client("b", SECRET)
        hanging.set_faults(api_delay=30.0)
        config = f"""
providers:
  - name: hanging
    preset: simplestore
    token_url: {hanging.token_url}
    client_id: a
    client_secret: {SECRET}
    timeout: 2s
    probes:
""" + "".join(f"""      - name: p{i}
        url: {hanging.base_url}/api/v1/products
        interval: 2100ms
""" for i in range(5)) + f"""
  - name: healthy
    preset: simplifi
    token_url: {healthy.token_url}
    client_id: b
    client_secret: {SECRET}
    renew_at_fraction: {fraction}
    renew_jitter: 0
    probes:
      - name: p
        url: {healthy.base_url}/api/v1/employees
        interval: {interval}s
        timeout: 400ms
"""
        with running_exporter(config, log_level="info") as h:
            wait_for(lambda: (h.value("oauth_probe_failures_total", provider="hanging",
                                      probe="p0", error="timeout") or 0) >= 1, timeout=6)
            start = time.time()
            time.sleep(4.0)
            assert h.value("oauth_probe_success", provider="healthy", probe="p") == 1.0
        probe_times = [r.time for r in healthy.api_requests() if r.time >= start]
        token_times = [r.time for r in healthy.token_requests()]
    probe_gaps = [b - a for a, b in itertools.pairwise(probe_times)]
    token_gaps = [b - a for a, b in itertools.pairwise(token_times)]
    # Interval ± 10% jitter; anything beyond that is lateness caused by A.
    probe_lateness = max(g - interval * 1.1 for g in probe_gaps)
    token_lateness = max(g - lifetime * fraction for g in token_gaps)
    assert len(probe_gaps) >= 6, probe_gaps
    print(f"healthy provider: probe lateness {probe_lateness:.3f}s, "
          f"renewal lateness {token_lateness:.3f}s")
    # A hanging answer holds a probe for its 2 s timeout; had it held the loop,
    # the healthy provider would be late by about that much. The bound leaves
    # room for a loaded machine's scheduling, and stays well below 2 s.
    assert probe_lateness < 1.0, f"probe lateness {probe_lateness:.3f}s: {probe_gaps}"
    assert token_lateness < 1.0, f"renewal lateness {token_lateness:.3f}s: {token_gaps}"


def test_demo_config_probes_all_five_providers(demo: Config, simulation: Simulation) -> None:
    assert {p.preset.name for p in demo.providers} == set(simulation.providers)
    with running_exporter(demo, log_level="info") as h:
        for p in demo.providers:
            for probe in p.probes:
                wait_for(partial(h.value, "oauth_probe_attempts_total", provider=p.name,
                                 probe=probe.name), message=f"{p.name}/{probe.name}")
                expected = 0.0 if probe.name == "create-document" else 1.0
                assert h.value("oauth_probe_success", provider=p.name,
                               probe=probe.name) == expected, (p.name, probe.name)
    dok = simulation.providers["dokstamp"].api_requests()
    documents = [r for r in dok if r.path == "/api/v1/documents"]
    assert documents and documents[0].headers["x-tenant"] == "demo-tenant"
    assert documents[0].headers["accept"] == "application/json"
    public = [r for r in dok if r.path.startswith("/files/")]
    assert public and "authorization" not in public[0].headers


@pytest.mark.parametrize("kind", ["smartdocumentor", "simplestore", "simplifi", "dokstamp"])
def test_revocation_is_recovered_at_every_provider(kind: str) -> None:
    """Each provider refuses a revoked token its own way; each is renewed and retried."""
    with SimulatedProvider(kind) as sim:
        sim.add_client("app", SECRET)
        path = {"smartdocumentor": "/api/v1/templates", "simplestore": "/api/v1/products",
                "simplifi": "/api/v1/employees", "dokstamp": "/api/v1/documents"}[kind]
        config = f"""
providers:
  - name: p
    preset: {kind}
    token_url: {sim.token_url}
    client_id: app
    client_secret: {SECRET}
    headers: {{X-Tenant: t}}
    probe_interval: 1h
    probes:
      - name: api
        url: {sim.base_url}{path}
"""
        with running_exporter(config, log_level="info") as h:
            wait_for(lambda: h.value("oauth_probe_success", provider="p", probe="api") == 1)
            sim.revoke_all()
            h.call(h.exporter.probe_job("p", "api")())
            assert len(sim.token_requests()) == 2
            failures = {e.value: h.value("oauth_probe_failures_total", provider="p",
                                         probe="api", error=e.value) for e in ErrorClass}
            assert {k for k, v in failures.items() if v} == {"invalid_token"}, failures
            assert h.value("oauth_probe_success", provider="p", probe="api") == 1.0


@pytest.mark.slow
def test_a_token_replaced_mid_probe_is_not_a_revocation() -> None:
    """At SimpleDocs a renewal revokes the old token. A probe still in flight
    with the old token gets token_revoked; that is our own renewal, not another
    client, so it is retried with the new token and not counted as a failure."""
    with SimulatedProvider("simpledocs") as sim:
        sim.add_client("app", SECRET, scopes="read")
        with running_exporter(simpledocs_config(sim, interval="1h")) as h:
            wait_for(lambda: h.value("oauth_probe_success", provider="sd", probe="read") == 1)
            sim.set_faults(api_delay=0.5)

            async def race() -> None:
                import asyncio

                probe = asyncio.ensure_future(h.exporter.probe_job("sd", "read")())
                await asyncio.sleep(0.2)  # the probe is waiting on the API now
                await h.exporter.renew_job("sd")()
                await probe

            h.call(race())
            assert token_requests(sim) == 2  # only the scheduled renewal
            assert h.value("oauth_probe_failures_total", provider="sd", probe="read",
                           error="token_revoked") is None
            assert h.value("oauth_probe_success", provider="sd", probe="read") == 1.0
            assert h.value("oauth_probe_attempts_total", provider="sd", probe="read") == 3.0
            assert "another client" not in h.logs.getvalue()
