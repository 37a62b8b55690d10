"""Token lifecycle against the provider simulator: real HTTP, real scheduler."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from functools import partial

import pytest

from exporter.errors import ErrorClass
from exporter.simulator import KINDS, TOKEN_PATHS, SimulatedProvider
from tests.harness import running_exporter, wait_for

SECRET = "lifecycle-secret-Zq81"
EXPECTED_AUTH = {
    "simpledocs": "client_secret_post",
    "smartdocumentor": "client_secret_post",
    "simplifi": "client_secret_basic",
    "simplestore": "client_secret_post",
    "dokstamp": "client_secret_post",
}
EXPECTED_SCOPE = {"simpledocs": "read", "smartdocumentor": "WebAPI"}


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimulatedProvider]:
    kind, kwargs = request.param
    provider = SimulatedProvider(kind, **kwargs).start()
    provider.add_client("client-1", SECRET)
    try:
        yield provider
    finally:
        provider.stop()


def provider_yaml(sim: SimulatedProvider, name: str = "p", client_id: str = "client-1",
                  **extra: object) -> str:
    fields: dict[str, object] = {
        "name": name, "preset": sim.kind, "token_url": sim.token_url,
        "client_id": client_id, "client_secret": SECRET,
        "backoff_initial": "100ms", "backoff_max": "500ms", **extra,
    }
    return "  - " + "\n    ".join(f"{k}: {v}" for k, v in fields.items()) + "\n"


@pytest.mark.parametrize(
    "sim",
    [
        ("simpledocs", {}),
        ("smartdocumentor", {}),
        ("simplifi", {}),
        ("simplestore", {}),  # answers with the documented "expiries_in" field
        ("dokstamp", {"omit_expires_in": True}),  # lifetime only in the JWT's exp
    ],
    ids=list(KINDS),
    indirect=True,
)
def test_each_preset_gets_a_token_with_the_right_request(sim: SimulatedProvider) -> None:
    config = "providers:\n" + provider_yaml(sim, renew_at_fraction=0.5, renew_jitter=0.1)
    # Let the preset supply the token URL path the provider documents.
    assert sim.token_url.endswith(TOKEN_PATHS[sim.kind])
    before = time.time()
    with running_exporter(config) as h:
        wait_for(lambda: h.value("oauth_token_valid", provider="p") == 1.0, message="token")
        after = time.time()
        (req,) = sim.token_requests()
        assert req.method == "POST"
        assert req.content_type.startswith("application/x-www-form-urlencoded")
        assert req.grant_type == "client_credentials"
        assert req.auth_method == EXPECTED_AUTH[sim.kind]
        assert req.scope == EXPECTED_SCOPE.get(sim.kind)
        assert "client_secret" in req.form_keys if req.auth_method.endswith("post") else (
            "client_secret" not in req.form_keys)

        lifetime = {"simpledocs": 7200, "smartdocumentor": 3600, "simplifi": 3600,
                    "simplestore": 3600, "dokstamp": 43200}[sim.kind]
        issued = h.value("oauth_token_issued_timestamp_seconds", provider="p")
        expiry = h.value("oauth_token_expiration_timestamp_seconds", provider="p")
        renewal = h.value("oauth_token_next_renewal_timestamp_seconds", provider="p")
        left = h.value("oauth_token_expires_in_seconds", provider="p")
        assert issued is not None and expiry is not None and renewal is not None
        assert left is not None
        assert before <= issued <= after
        # The JWT exp is whole seconds; everything else is exact.
        assert abs(expiry - (issued + lifetime)) <= (1.0 if sim.kind == "dokstamp" else 1e-6)
        assert issued + lifetime * 0.4 - 1e-6 <= renewal <= issued + lifetime * 0.5 + 1e-6
        assert lifetime - 5 < left <= lifetime
        assert h.value("oauth_token_refresh_attempts_total", provider="p") == 1.0
        assert h.value("oauth_token_refresh_duration_seconds_count", provider="p") == 1.0
        assert h.value("oauth_token_last_refresh_success_timestamp_seconds",
                       provider="p") == issued
        if sim.kind in EXPECTED_SCOPE:
            assert h.value("oauth_token_scope_granted", provider="p",
                           scope=EXPECTED_SCOPE[sim.kind]) == 1.0
        info = h.value("oauth_provider_info", provider="p", preset=sim.kind,
                       token_host=sim.base_url.removeprefix("http://"),
                       auth_method=EXPECTED_AUTH[sim.kind])
        assert info == 1.0
        # No failure class has happened, so none has a series (SPEC: lazily).
        for err in ErrorClass:
            assert h.value("oauth_token_refresh_failures_total", provider="p",
                           error=err.value) is None
        assert h.value("oauth_token_refresh_consecutive_failures", provider="p") == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("sim", [("simplestore", {"lifetime": 4})], indirect=True)
def test_short_lifetimes_renew_before_expiry_without_extra_requests(
    sim: SimulatedProvider,
) -> None:
    # The exact schedule is checked on virtual time (test_renewal_loop.py); here
    # it runs for real, over real HTTP, with slack for a loaded machine: a 4 s
    # lifetime renewed at about 2 s leaves 2 s before the token could lapse.
    fraction, jitter, lifetime, window, slack = 0.5, 0.1, 4.0, 12.0, 0.6
    config = "providers:\n" + provider_yaml(sim, renew_at_fraction=fraction,
                                            renew_jitter=jitter)
    with running_exporter(config, log_level="info") as h:
        wait_for(lambda: h.value("oauth_token_valid", provider="p") == 1.0)
        start = time.monotonic()
        lowest_left = lifetime
        while time.monotonic() - start < window:
            assert h.value("oauth_token_valid", provider="p") == 1.0, "token lapsed"
            left = h.value("oauth_token_expires_in_seconds", provider="p")
            assert left is not None
            lowest_left = min(lowest_left, left)
            time.sleep(0.02)
        requests = sim.token_requests()
    times = [r.time for r in requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Policy: each renewal comes (fraction - U(0, jitter)) * lifetime after the
    # previous token was issued; 0.15 s of slack for scheduling and loopback.
    assert gaps, "no renewal happened"
    for gap in gaps:
        assert lifetime * (fraction - jitter) - 0.05 <= gap <= lifetime * fraction + slack, gaps
    # No extra requests: the count is what those gaps allow over the window, no more.
    span = times[-1] - times[0]
    assert len(requests) - 1 <= span / (lifetime * (fraction - jitter)) + 1e-9
    assert len(requests) >= 1 + int(window / (lifetime * fraction + slack))
    assert all(r.status == 200 for r in requests)
    # Renewed well before expiry: the token never had less than half its life left
    # (minus the same slack).
    assert lowest_left >= lifetime * (1 - fraction) - slack


FAULTS = [
    ("wrong_credentials", True, ErrorClass.INVALID_CLIENT),
    ("server_error", True, ErrorClass.SERVER_ERROR),
    ("delay", 1.5, ErrorClass.TIMEOUT),
    ("non_json", True, ErrorClass.INVALID_RESPONSE),
    ("rate_limited", True, ErrorClass.RATE_LIMITED),
]


@pytest.mark.slow
@pytest.mark.parametrize("sim", [("smartdocumentor", {"lifetime": 3})], indirect=True)
@pytest.mark.parametrize(("fault", "value", "error"), FAULTS, ids=[f[0] for f in FAULTS])
def test_faults_are_classified_and_recovered_from(
    sim: SimulatedProvider, fault: str, value: object, error: ErrorClass
) -> None:
    sim.set_faults(**{fault: value})
    config = "providers:\n" + provider_yaml(sim, timeout="400ms")
    with running_exporter(config, log_level="info") as h:
        def failures() -> float:
            return h.value("oauth_token_refresh_failures_total", provider="p",
                           error=error.value) or 0.0

        # Two failures in the right class: the schedule kept running after the first.
        wait_for(lambda: failures() >= 2, timeout=8, message=f"two {error} failures")
        assert h.value("oauth_token_valid", provider="p") == 0.0
        others = sum(
            h.value("oauth_token_refresh_failures_total", provider="p", error=e.value) or 0
            for e in ErrorClass if e is not error
        )
        assert others == 0
        assert h.get("/").text.count(error.value) >= 1  # landing page shows the class
        sim.clear_faults()
        wait_for(lambda: h.value("oauth_token_valid", provider="p") == 1.0, timeout=8,
                 message="recovery")
        assert h.value("oauth_token_last_refresh_success_timestamp_seconds",
                       provider="p") is not None


@pytest.mark.parametrize("sim", [("simpledocs", {})], indirect=True)
def test_wrong_credentials_for_every_provider_shape(sim: SimulatedProvider) -> None:
    """Each provider refuses differently; all land in invalid_client."""
    others = [SimulatedProvider(k).start() for k in KINDS if k != "simpledocs"]
    try:
        config = "providers:\n" + provider_yaml(sim, name="simpledocs") + "".join(
            provider_yaml(o, name=o.kind) for o in others)
        for o in [sim, *others]:
            o.set_faults(wrong_credentials=True)
        with running_exporter(config, log_level="info") as h:
            def refused(kind: str) -> bool:
                return (h.value("oauth_token_refresh_failures_total", provider=kind,
                                error="invalid_client") or 0) >= 1

            for kind in KINDS:
                wait_for(partial(refused, kind), message=f"{kind} invalid_client")
    finally:
        for o in others:
            o.stop()


@pytest.mark.slow
def test_fifty_credentials_on_one_simpledocs_host_stay_within_the_limit() -> None:
    # The preset's 10/60 s is checked on a virtual clock in test_ratelimit.py;
    # here the same mechanism runs for real with the window scaled to 2 s, on
    # both sides, so the test takes seconds instead of minutes.
    window = 2.0
    sim = SimulatedProvider("simpledocs", lifetime=3, rate_limit=(10, window)).start()
    try:
        providers = ""
        for i in range(50):
            sim.add_client(f"app-{i}", SECRET)
            providers += provider_yaml(sim, name=f"sd-{i}", client_id=f"app-{i}",
                                       token_rate_limit=f"10/{window}s")
        with running_exporter("providers:\n" + providers, log_level="info") as h:
            # 50 first requests at 10 per 2 s window: done after ~5 windows.
            wait_for(lambda: len(sim.token_requests()) >= 50, timeout=120,
                     message="fifty first token requests")
            assert h.exporter.ready()
        requests = sim.token_requests()
    finally:
        sim.stop()
    times = sorted(r.time for r in requests)
    busiest = max(sum(1 for t in times if s <= t < s + window) for s in times)
    assert busiest <= 10, busiest
    assert all(r.status == 200 for r in requests), {r.status for r in requests}
    # That the budget is used, not wasted (no slower than it must be), is shown
    # exactly on virtual time in test_ratelimit.py; wall-clock pace is not.
