"""The token budget under refusal: an API that refuses tokens costs at most one extra.

Virtual time (``tests/virtual.py``), the real exporter and HTTP client over
``httpx.MockTransport`` (``tests/fakeapi.py``). The end-to-end counterpart
against the loopback simulator is in ``tests/test_probes.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random

import httpx
import pytest

from exporter.app import Exporter
from exporter.config import parse_config
from exporter.errors import ErrorClass
from exporter.state import ProviderState
from tests.fakeapi import FakeApi, config_text, status
from tests.virtual import clock_of_running_loop, run_virtual


def bare_401(request: httpx.Request) -> httpx.Response:
    """A gateway that refuses every token with a bare 401: no body, no WWW-Authenticate."""
    return status(401)


def exporter_for(api: FakeApi, *, probes: int = 1, interval: str = "30s") -> Exporter:
    config = parse_config(config_text(["cred"], probes=probes, probe_interval=interval),
                          "test.yaml", {})
    return Exporter(config, client=api.client(), clock=clock_of_running_loop().time)


def state_of(exporter: Exporter) -> ProviderState:
    return next(iter(exporter.provider_states()))


def probe_runs(state: ProviderState) -> int:
    return sum(p.attempts for p in state.probes.values())


async def until(predicate: object, limit: float = 36000) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {limit} virtual seconds")
        await asyncio.sleep(0.25)


def test_a_bare_401_to_every_probe_costs_at_most_two_token_requests_over_20_runs() -> None:
    api = FakeApi(api_handler=bare_401)

    async def scenario() -> None:
        exporter = exporter_for(api)
        await exporter.start()
        state = state_of(exporter)
        await until(lambda: state.probes["p0"].attempts >= 20)
        assert len(api.token_requests()) == 2
        assert state.refused_fresh
        probe = state.probes["p0"]
        assert probe.last_error is ErrorClass.INVALID_TOKEN
        assert probe.failures[ErrorClass.INVALID_TOKEN] >= 20
        assert probe.failures[ErrorClass.NO_TOKEN] == 0  # the held token is still sent
        await exporter.stop()

    run_virtual(scenario())


@pytest.mark.parametrize(("probes", "interval"), [
    (1, "30s"), (5, "30s"), pytest.param(3, "1s", marks=pytest.mark.slow)])
@pytest.mark.slow
def test_persistent_refusal_costs_one_extra_token_per_lifetime(probes: int,
                                                              interval: str) -> None:
    api = FakeApi(lifetime=3600, api_handler=bare_401)

    async def scenario() -> None:
        exporter = exporter_for(api, probes=probes, interval=interval)
        await exporter.start()
        await asyncio.sleep(6 * 3600)
        await exporter.stop()

    run_virtual(scenario())
    requests = api.token_requests()
    # Scheduled renewals every ~0.62-0.67 of an hour (9 or 10 in six hours), each
    # followed by exactly one renewal a refused fresh token brought forward.
    scheduled = [t for i, t in enumerate(requests) if i % 2 == 0]
    extra = [t for i, t in enumerate(requests) if i % 2 == 1]
    assert 9 <= len(scheduled) <= 10
    assert len(extra) == len(scheduled)
    for lifetime_start in range(0, 6 * 3600, 3600):
        in_lifetime = [t for t in requests if lifetime_start <= t < lifetime_start + 3600]
        assert len(in_lifetime) <= 4  # two scheduled cycles may start in one hour
    for s, e in zip(scheduled, extra, strict=True):
        assert 0 <= e - s < 60  # brought forward by the first probe run that met the token


def test_a_token_revoked_once_costs_one_renewal_and_the_retry_succeeds() -> None:
    api = FakeApi()
    revoked = {"token": ""}

    def revoke_the_first(request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        if sent == "token-000001":
            return status(401, b'{"error": "invalid_token"}')
        revoked["token"] = sent
        return status(200, b"{}")

    api.api_handler = revoke_the_first

    async def scenario() -> None:
        exporter = exporter_for(api)
        await exporter.start()
        state = state_of(exporter)
        await until(lambda: state.probes["p0"].attempts >= 10)
        assert len(api.token_requests()) == 2
        assert revoked["token"] == "token-000002"
        assert not state.refused_fresh and state.token_accepted
        assert state.valid_token(clock_of_running_loop().time()) is not None
        probe = state.probes["p0"]
        assert probe.failures[ErrorClass.INVALID_TOKEN] == 1
        assert probe.success and probe.consecutive_failures == 0
        await exporter.stop()

    run_virtual(scenario())


@pytest.mark.slow
def test_a_token_refused_again_after_it_worked_waits_for_the_scheduled_renewal() -> None:
    """Another client taking tokens with our credentials: we do not fight it."""
    api = FakeApi(lifetime=3600)
    refuse = {"on": False}

    def api_handler(request: httpx.Request) -> httpx.Response:
        return status(401) if refuse["on"] else status(200, b"{}")

    api.api_handler = api_handler

    async def scenario() -> None:
        exporter = exporter_for(api)
        await exporter.start()
        state = state_of(exporter)
        await until(lambda: state.probes["p0"].success)
        refuse["on"] = True  # first refusal: one renewal, and its token works
        await until(lambda: len(api.token_requests()) == 2)
        refuse["on"] = False
        await until(lambda: state.token_accepted)
        refuse["on"] = True  # refused again within the same cycle: budget spent
        await asyncio.sleep(600)
        assert len(api.token_requests()) == 2
        assert not state.refused_fresh  # the token worked; this is not "refuses fresh tokens"
        assert state.valid_token(clock_of_running_loop().time()) is None
        await until(lambda: len(api.token_requests()) == 3)  # the scheduled renewal
        await exporter.stop()

    run_virtual(scenario())


def test_refusals_never_cut_a_token_endpoint_backoff_short() -> None:
    answers = iter([None])  # the first token request succeeds, every later one fails

    def token_handler(request: httpx.Request) -> httpx.Response:
        return api.issue(request) if next(answers, "done") is None else status(500)

    api = FakeApi(lifetime=120, api_handler=bare_401, token_handler=token_handler)

    async def scenario() -> None:
        clock = clock_of_running_loop()
        config = parse_config(
            config_text(["cred"], probes=3, probe_interval="2s",
                        extra="backoff_initial: 60s\nbackoff_max: 60s"),
            "test.yaml", {})
        exporter = Exporter(config, client=api.client(), clock=clock.time)
        await exporter.start()
        await asyncio.sleep(1200)
        await exporter.stop()

    run_virtual(scenario())
    requests = api.token_requests()
    # Initial, one brought forward by the refusal (it fails: 500), then only backoff
    # (uniform up to 60 s): never closer together than a probe interval would make them.
    assert len(requests) <= 2 + 1200 / 1 and len(requests) >= 3
    assert requests[1] - requests[0] < 5
    later = [b - a for a, b in itertools.pairwise(requests[1:])]
    assert later and len(later) < 1200 / 2 / 3  # not one per probe run
    assert sum(later) / len(later) > 15  # mean of uniform(0, 60)


@pytest.mark.slow
def test_a_refusal_while_the_token_endpoint_fails_waits_for_the_backoff() -> None:
    """The token endpoint went down before the API refused the (still unexpired) token."""

    class HighRandom(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    answers = iter([None])

    def token_handler(request: httpx.Request) -> httpx.Response:
        return api.issue(request) if next(answers, "done") is None else status(500)

    api = FakeApi(lifetime=600)
    api.token_handler = token_handler
    refuse = {"on": False}
    api.api_handler = lambda r: status(401) if refuse["on"] else status(200, b"{}")

    async def scenario() -> None:
        clock = clock_of_running_loop()
        config = parse_config(
            config_text(["cred"], probes=2, probe_interval="2s",
                        extra="backoff_initial: 60s\nbackoff_max: 60s"),
            "test.yaml", {})
        exporter = Exporter(config, client=api.client(), clock=clock.time, rng=HighRandom())
        await exporter.start()
        state = state_of(exporter)
        await until(lambda: state.consecutive_failures == 1)  # renewal at 0.62 of 600 s
        refuse["on"] = True
        await asyncio.sleep(200)
        await exporter.stop()

    run_virtual(scenario())
    requests = api.token_requests()
    assert round(requests[1] - requests[0]) == 372
    assert [round(b - a) for a, b in itertools.pairwise(requests[1:])] == [60] * 3


def test_the_api_taking_tokens_again_clears_the_state_without_a_token_request(
        caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi(lifetime=3600)
    refuse = {"on": True}

    def api_handler(request: httpx.Request) -> httpx.Response:
        return status(401) if refuse["on"] else status(200, b"{}")

    api.api_handler = api_handler

    async def scenario() -> None:
        exporter = exporter_for(api)
        await exporter.start()
        state = state_of(exporter)
        await until(lambda: state.refused_fresh)
        refuse["on"] = False
        await until(lambda: state.probes["p0"].success)
        assert not state.refused_fresh and not state.token_rejected
        assert len(api.token_requests()) == 2
        await exporter.stop()

    with caplog.at_level(logging.WARNING):
        run_virtual(scenario())
    assert caplog.text.count("the API refused a fresh token too") == 1
