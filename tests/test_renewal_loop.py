"""The renewal loop on virtual time: it never stops, and it keeps its policy exactly.

Every test runs the real ``Exporter`` / ``TokenManager`` on a virtual-time event
loop (``tests/virtual.py``) with the real ``httpx`` client over
``httpx.MockTransport`` (``tests/fakeapi.py``): hours of schedule run in
milliseconds, the same way every time, however busy the machine is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random

import httpx
import pytest

from exporter.app import Exporter
from exporter.config import Config, Provider, parse_config
from exporter.errors import ErrorClass
from exporter.ratelimit import HostLimiter
from exporter.renewal import TokenManager
from exporter.state import ProviderState
from tests.fakeapi import FakeApi, config_text, status, token_answer
from tests.virtual import clock_of_running_loop, run_virtual


class HighRandom(random.Random):
    """Every draw at the top of its range: backoff waits its whole ceiling, no jitter early."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowRandom(random.Random):
    """Every draw at the bottom of its range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def provider(names: list[str] | None = None, **changes: object) -> Provider:
    config = parse_config(config_text(names or ["cred"], probes=0), "test.yaml", {})
    return dataclasses.replace(config.providers[0], **changes)  # type: ignore[arg-type]


def config_of(*providers: Provider) -> Config:
    return Config(path="test.yaml", providers=tuple(providers))


async def until(predicate: object, limit: float = 36000) -> None:
    """Let virtual time run until ``predicate()`` holds (at most ``limit`` virtual s)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {limit} virtual seconds")
        await asyncio.sleep(0.01)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


# --------------------------------------------------------------------------- never stops


@pytest.mark.slow
def test_a_thousand_failures_with_zero_backoff_never_stop_the_schedule() -> None:
    """The old scheduler dropped a plan that was due while its job still ran."""
    api = FakeApi(token_handler=lambda r: status(500))

    async def scenario() -> None:
        clock = clock_of_running_loop()
        p = provider(backoff_initial=0.0, backoff_max=0.0)
        exporter = Exporter(config_of(p), client=api.client(), clock=clock.time)
        await exporter.start()
        await until(lambda: len(api.token_requests()) >= 1000)
        state = next(iter(exporter.provider_states()))
        assert state.consecutive_failures >= 1000
        assert state.failures[ErrorClass.SERVER_ERROR] >= 1000
        assert exporter.watchdog.check() == 0
        await until(lambda: len(api.token_requests()) >= 1100)
        await exporter.stop()

    run_virtual(scenario())


@pytest.mark.slow
def test_ten_credentials_against_an_always_500_endpoint_keep_retrying() -> None:
    """Ten credentials, 50 ms backoff: the old scheduler lost all ten within seconds.

    One virtual minute here (~24,000 requests); ``benchmarks/never_stops.py`` runs the
    real CLI against a real always-500 server for ten real minutes.
    """
    api = FakeApi(token_handler=lambda r: status(500))

    async def scenario() -> None:
        clock = clock_of_running_loop()
        names = [f"c{i}" for i in range(10)]
        config = parse_config(config_text(names, probes=0), "test.yaml", {})
        config = config_of(*(dataclasses.replace(p, backoff_initial=0.05, backoff_max=0.05)
                             for p in config.providers))
        exporter = Exporter(config, client=api.client(), clock=clock.time)
        await exporter.start()
        await asyncio.sleep(60)
        states = list(exporter.provider_states())
        await exporter.stop()
        # Backoff uniform(0, 50 ms): ~40 a second each; every 6 s, every credential asked.
        per_slice = [0] * 10
        for t in api.token_requests():
            per_slice[min(int(t // 6), 9)] += 1
        assert all(n > 10 * 6 * 20 for n in per_slice), per_slice
        for state in states:
            assert state.consecutive_failures > 1200
        assert exporter.watchdog.stalls == 0

    run_virtual(scenario())


def test_an_attempt_cancelled_mid_flight_is_followed_by_the_next_one() -> None:
    release = asyncio.Event()

    async def hang_then_issue(request: httpx.Request) -> httpx.Response:
        if api.issued == 0 and not release.is_set():
            await asyncio.sleep(3600)
        return api.issue(request)

    api = FakeApi(token_handler=hang_then_issue)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        p = provider(timeout=7200.0, backoff_initial=1.0, backoff_max=1.0)
        state = ProviderState(p)
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=LowRandom())
        manager.start(first_at=clock.time())
        await until(lambda: state.renewing)
        manager.restart()  # what the watchdog does to a request stuck past its deadline
        release.set()
        await until(lambda: state.token is not None)
        assert state.failures[ErrorClass.OTHER] == 1
        assert state.attempts == 2
        assert not state.renewing and state.next_renewal is not None
        assert state.next_renewal > clock.time()
        await manager.stop()

    run_virtual(scenario())


def test_a_cancellation_raised_inside_the_request_is_a_failure_not_the_end() -> None:
    """A library may raise CancelledError without anyone cancelling our task."""
    calls = {"n": 0}

    def cancel_once(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise asyncio.CancelledError
        return api.issue(request)

    api = FakeApi(token_handler=cancel_once)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(config_of(provider(backoff_initial=1.0)), client=api.client(),
                            clock=clock.time)
        await exporter.start()
        state = next(iter(exporter.provider_states()))
        await until(lambda: state.token is not None)
        assert state.failures[ErrorClass.OTHER] == 1
        assert state.next_renewal is not None and state.next_renewal > clock.time()
        await exporter.stop()

    run_virtual(scenario())


def test_a_bug_in_the_request_path_is_logged_and_planned_around(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise KeyError("a bug of ours")

    api = FakeApi(token_handler=broken)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(config_of(provider(backoff_initial=1.0, backoff_max=2.0)),
                            client=api.client(), clock=clock.time)
        await exporter.start()
        await until(lambda: len(api.token_requests()) >= 20)
        assert exporter.watchdog.check() == 0
        await exporter.stop()

    with caplog.at_level(logging.WARNING):
        run_virtual(scenario())
    assert "token request failed (other" in caplog.text


def test_a_reload_during_a_renewal_leaves_exactly_one_plan() -> None:
    gate = asyncio.Event()

    async def slow_issue(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return api.issue(request)

    api = FakeApi(token_handler=slow_issue)

    def renew_tasks(name: str) -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks()
                if t.get_name() == f"renew:{name}" and not t.done()]

    async def scenario() -> None:
        clock = clock_of_running_loop()
        first = parse_config(config_text(["cred"], probes=1), "test.yaml", {})
        exporter = Exporter(first, client=api.client(), clock=clock.time)
        await exporter.start()
        state = next(iter(exporter.provider_states()))
        await until(lambda: state.renewing)
        # Same credential, another probe interval: the provider is rebuilt, the token kept.
        exporter.apply(parse_config(config_text(["cred"], probes=2, probe_interval="45s"),
                                    "test.yaml", {}))
        await asyncio.sleep(0.01)
        assert len(renew_tasks("cred")) == 1
        # A changed credential (another secret) while the new loop is in flight.
        await until(lambda: next(iter(exporter.provider_states())).renewing)
        exporter.apply(parse_config(
            config_text(["cred"], probes=2).replace("secret-value-0123", "another-secret-99"),
            "test.yaml", {}))
        await asyncio.sleep(0.01)
        assert len(renew_tasks("cred")) == 1
        gate.set()
        newest = next(iter(exporter.provider_states()))
        await until(lambda: newest.token is not None)
        await asyncio.sleep(1)
        assert len(renew_tasks("cred")) == 1
        assert newest.next_renewal is not None and newest.next_renewal > clock.time()
        assert exporter.watchdog.check() == 0
        await exporter.stop()
        assert renew_tasks("cred") == []

    run_virtual(scenario())


# --------------------------------------------------------------------------- watchdog


def test_the_watchdog_restarts_a_loop_that_died_and_counts_it(
        caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()

    async def scenario() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(config_of(provider()), client=api.client(), clock=clock.time,
                            watchdog_interval=5.0, watchdog_grace=30.0)
        await exporter.start()
        state = next(iter(exporter.provider_states()))
        await until(lambda: state.token is not None)
        issued = api.issued
        # Kill the loop from outside, as a bug elsewhere might.
        task = next(t for t in asyncio.all_tasks() if t.get_name() == "renew:cred")
        task.cancel()
        await asyncio.sleep(6)
        assert exporter.renewal_stalls == 1
        await until(lambda: api.issued > issued)
        assert exporter.renewal_stalls == 1
        await exporter.stop()

    with caplog.at_level(logging.ERROR):
        run_virtual(scenario())
    stalls = [r for r in caplog.records if "renewal stalled" in r.getMessage()]
    assert [(r.getMessage(), getattr(r, "provider", None)) for r in stalls] == [
        ("renewal stalled (the renewal task ended); re-planning it now", "cred")]


def test_the_watchdog_wakes_a_plan_left_in_the_past() -> None:
    api = FakeApi()

    async def scenario() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(config_of(provider()), client=api.client(), clock=clock.time,
                            watchdog_interval=5.0, watchdog_grace=30.0)
        await exporter.start()
        state = next(iter(exporter.provider_states()))
        await until(lambda: state.token is not None)
        # The loop sleeps towards its plan; pretend the plan says an hour ago.
        state.next_renewal = clock.time() - 3600
        await asyncio.sleep(6)
        assert exporter.renewal_stalls == 1
        await until(lambda: api.issued == 2, limit=10)
        assert state.next_renewal is not None and state.next_renewal > clock.time()
        await asyncio.sleep(60)
        assert exporter.renewal_stalls == 1
        await exporter.stop()

    run_virtual(scenario())


@pytest.mark.slow
def test_the_watchdog_finds_nothing_on_a_healthy_fleet_over_a_day() -> None:
    api = FakeApi(lifetime=600)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        names = [f"c{i}" for i in range(20)]
        exporter = Exporter(parse_config(config_text(names, probes=1, probe_interval="300s"),
                                         "test.yaml", {}),
                            client=api.client(), clock=clock.time)
        await exporter.start()
        await asyncio.sleep(86400)
        assert exporter.renewal_stalls == 0
        # 20 credentials renewing at 0.62-0.67 of 600 s for a day: 215-232 tokens each.
        assert 20 * 214 < api.issued < 20 * 234
        await exporter.stop()

    run_virtual(scenario())


# --------------------------------------------------------------------------- policy, exactly


def test_success_renews_at_the_configured_fraction_of_the_lifetime() -> None:
    api = FakeApi(lifetime=1000)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        p = provider(renew_at_fraction=0.5, renew_jitter=0.1)
        state = ProviderState(p)
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=LowRandom())
        manager.start(first_at=clock.time())
        await asyncio.sleep(4200)
        await manager.stop()

    run_virtual(scenario())
    # fraction 0.5 minus jitter drawn at 0: exactly half the lifetime.
    assert gaps(api.token_requests()) == [500.0] * 8


def test_renewal_jitter_brings_renewals_earlier_by_at_most_the_jitter() -> None:
    api = FakeApi(lifetime=1000)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        p = provider(renew_at_fraction=0.5, renew_jitter=0.1)
        state = ProviderState(p)
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=HighRandom())
        manager.start(first_at=clock.time())
        await asyncio.sleep(2100)
        await manager.stop()

    run_virtual(scenario())
    assert gaps(api.token_requests()) == [400.0] * 5


@pytest.mark.slow
def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    api = FakeApi(token_handler=lambda r: status(503))

    async def scenario() -> None:
        clock = clock_of_running_loop()
        p = provider(backoff_initial=1.0, backoff_max=60.0)
        state = ProviderState(p)
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=HighRandom())
        manager.start(first_at=clock.time())
        await until(lambda: len(api.token_requests()) >= 10)
        await manager.stop()

    run_virtual(scenario())
    # Full jitter drawn at its ceiling: 1, 2, 4, ... doubling, then held at the cap.
    assert gaps(api.token_requests())[:9] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    draws: list[tuple[float, float]] = []

    class Recording(random.Random):
        def uniform(self, a: float, b: float) -> float:
            draws.append((a, b))
            return (a + b) / 2

    api = FakeApi(token_handler=lambda r: status(500))

    async def scenario() -> None:
        clock = clock_of_running_loop()
        state = ProviderState(provider(backoff_initial=2.0, backoff_max=10.0))
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=Recording())
        manager.start(first_at=clock.time())
        await until(lambda: len(api.token_requests()) >= 5)
        await manager.stop()

    run_virtual(scenario())
    assert draws[:4] == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0), (0.0, 10.0)]
    assert gaps(api.token_requests())[:4] == [1.0, 2.0, 4.0, 5.0]


@pytest.mark.slow
@pytest.mark.parametrize("retry_after", ["120", "Mon, 01 Jun 2026 00:02:00 GMT"])
def test_retry_after_is_honoured_over_a_shorter_backoff(retry_after: str) -> None:
    answers = iter([status(429, b"", **{"Retry-After": retry_after}), status(429)])
    api = FakeApi(token_handler=lambda r: next(answers, None) or api.issue(r))

    async def scenario() -> None:
        clock = clock_of_running_loop()
        state = ProviderState(provider(backoff_initial=1.0, backoff_max=300.0))
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=LowRandom())
        manager.start(first_at=clock.time())
        await until(lambda: state.token is not None)
        await manager.stop()
        assert state.failures[ErrorClass.RATE_LIMITED] == 2

    run_virtual(scenario())
    # The first 429 asks for 120 s (the date form: 00:02:00 is 120 s after the epoch);
    # backoff alone would have retried at once (drawn at 0); the second has no header.
    assert gaps(api.token_requests()) == [120.0, 0.0]


def test_a_success_resets_the_backoff() -> None:
    answers = iter([status(500), status(500), status(500)])
    api = FakeApi(lifetime=100, token_handler=lambda r: next(answers, None) or api.issue(r))

    async def scenario() -> None:
        clock = clock_of_running_loop()
        state = ProviderState(provider(backoff_initial=1.0, backoff_max=300.0,
                                       renew_at_fraction=0.5, renew_jitter=0.0))
        manager = TokenManager(state, api.client(), HostLimiter(), clock=clock.time,
                               rng=HighRandom())
        manager.start(first_at=clock.time())
        await until(lambda: api.issued >= 1)
        assert state.consecutive_failures == 0 and state.last_error is None
        # Fail again once the token is due: the backoff starts over at its first step.
        answers_again = iter([status(500)])
        api.token_handler = lambda r: next(answers_again, None) or api.issue(r)
        await until(lambda: api.issued >= 2)
        await manager.stop()

    run_virtual(scenario())
    assert gaps(api.token_requests()) == [1.0, 2.0, 4.0, 50.0, 1.0]


@pytest.mark.slow
def test_first_renewals_of_many_credentials_are_paced() -> None:
    api = FakeApi()

    async def scenario() -> None:
        clock = clock_of_running_loop()
        names = [f"c{i}" for i in range(500)]
        exporter = Exporter(parse_config(config_text(names, probes=0), "test.yaml", {}),
                            client=api.client(), clock=clock.time)
        await exporter.start()
        await until(lambda: api.issued == 500)
        await exporter.stop()

    run_virtual(scenario())
    times = api.token_requests()
    # 250 a second: 500 first requests take two seconds, each 4 ms after the last.
    assert times[-1] - times[0] == pytest.approx(2.0 - 1 / 250, abs=1e-3)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1 / 250 - 1e-5


def test_probes_start_only_after_the_first_token_request_came_back() -> None:
    gate = asyncio.Event()

    async def slow_issue(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return api.issue(request)

    api = FakeApi(token_handler=slow_issue)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(parse_config(config_text(["cred"], probes=2), "test.yaml", {}),
                            client=api.client(), clock=clock.time)
        await exporter.start()
        state = next(iter(exporter.provider_states()))
        await asyncio.sleep(4.5)  # the token request is still within its 5 s timeout
        assert state.renewing and not state.attempted
        assert api.api_requests() == []
        assert all(p.attempts == 0 and p.last_error is None for p in state.probes.values())
        gate.set()
        await until(lambda: all(p.success for p in state.probes.values()))
        await exporter.stop()
        assert all(p.failures[ErrorClass.NO_TOKEN] == 0 for p in state.probes.values())

    run_virtual(scenario())


def test_a_token_of_a_failing_credential_is_never_sent_after_it_expired() -> None:
    answers = iter([token_answer("only-token", 100)])
    api = FakeApi(token_handler=lambda r: next(answers, None) or status(500))
    api.api_handler = lambda r: status(200, b"{}")

    async def scenario() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(parse_config(config_text(["cred"], probes=1, probe_interval="10s"),
                                         "test.yaml", {}),
                            client=api.client(), clock=clock.time)
        await exporter.start()
        state = next(iter(exporter.provider_states()))
        await asyncio.sleep(300)
        probe = state.probes["p0"]
        assert probe.last_error is ErrorClass.NO_TOKEN
        assert probe.skip_reason == "no valid token: the token endpoint is failing (server_error)"
        await exporter.stop()

    run_virtual(scenario())
    # Probes sent the token while it lived (100 s), never after.
    assert all(t < 100 for t in api.api_requests())
    assert len(api.api_requests()) >= 8
