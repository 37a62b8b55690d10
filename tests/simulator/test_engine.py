"""What the simulator does the same for every vendor: request parsing, limits, faults,
request logs, the admin API and the server's lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from exporter.errors import ErrorClass, classify_response
from exporter.simulator import DEMO_CLIENTS, KINDS, Faults, SimulatedProvider, Simulation
from tests.harness import wait_for
from tests.simulator.simclient import (
    CLIENT_ID,
    Factory,
    call_api,
    get_token,
    request_token,
)

# --- token endpoint -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "request_kwargs", "expected"),
    [
        ("simpledocs", {"method": "GET"}, "invalid_request"),
        ("smartdocumentor", {"json": {"grant_type": "client_credentials"}}, "invalid_request"),
        ("simplestore", {"data": {"grant_type": "password"}}, "unsupported_grant_type"),
        ("dokstamp", {"data": {"client_id": CLIENT_ID}}, "invalid_request"),
        ("simplifi", {"content": b"grant_type=client_credentials&grant_type=client_credentials",
                      "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         "invalid_request"),
        ("simplestore", {"content": b"grant_type=\xff",
                         "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         "invalid_request"),
    ],
)
def test_malformed_token_requests(
    kind: str, request_kwargs: dict[str, Any], expected: str, make: Factory, http: httpx.Client
) -> None:
    provider = make(kind)
    method = request_kwargs.pop("method", "POST")

    response = http.request(method, provider.token_url, **request_kwargs)

    assert response.status_code == 400
    body = response.json()
    assert body.get("type" if kind == "simpledocs" else "error") == expected
    assert provider.issued_token_count() == 0


@pytest.mark.slow
def test_rate_limit_sliding_window(make: Factory, http: httpx.Client) -> None:
    provider = make("simplestore", rate_limit=(2, 0.5))
    assert request_token(http, provider).status_code == 200
    assert request_token(http, provider, secret="wrong").status_code == 400  # counted too

    limited = request_token(http, provider)

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.json() == {"error": "rate_limited"}
    assert classify_response(429, limited.headers, limited.content,
                             "token") is ErrorClass.RATE_LIMITED
    # Polling would keep the window full (refused requests count), so let it pass.
    time.sleep(0.6)
    assert request_token(http, provider).status_code == 200


def test_rate_limit_must_be_positive() -> None:
    for bad in ((0, 60.0), (1, 0.0)):
        with pytest.raises(ValueError):
            SimulatedProvider("simplestore", rate_limit=bad)


def test_others_are_not_rate_limited_by_default(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    assert {request_token(http, provider).status_code for _ in range(15)} == {200}


# --- faults -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"server_error": True},
         lambda r: r.status_code == 503 and r.headers["content-type"].startswith("text/html")
         and r.text.startswith("<html>")),
        ({"non_json": True},
         lambda r: r.status_code == 200 and r.headers["content-type"].startswith("text/html")
         and r.text.startswith("<html>")),
        ({"lifetime": 5}, lambda r: r.status_code == 200 and r.json()["expires_in"] == 5),
        ({"wrong_credentials": True},
         lambda r: r.status_code == 401 and r.json()["error"] == "invalid_client"),
    ],
    ids=["server_error", "non_json", "lifetime", "wrong_credentials"],
)
def test_token_faults_and_clear(
    changes: dict[str, Any], check: Callable[[httpx.Response], bool],
    make: Factory, http: httpx.Client,
) -> None:
    provider = make("dokstamp")
    provider.set_faults(**changes)
    assert check(request_token(http, provider))
    assert provider.issued_token_count() == (1 if "lifetime" in changes else 0)

    provider.clear_faults()

    assert provider.faults == Faults()
    normal = request_token(http, provider)
    assert normal.status_code == 200 and normal.json()["expires_in"] == 43200


@pytest.mark.slow
def test_delay_fault(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    provider.set_faults(delay=0.3)

    started = time.monotonic()
    assert request_token(http, provider).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        request_token(http, provider, timeout=0.1)

    provider.clear_faults()
    started = time.monotonic()
    assert request_token(http, provider).status_code == 200
    assert time.monotonic() - started < 0.25


@pytest.mark.slow
def test_api_delay_fault(make: Factory, http: httpx.Client) -> None:
    provider = make("simplifi")
    token = get_token(http, provider)
    provider.set_faults(api_delay=0.3)

    started = time.monotonic()
    assert call_api(http, provider, token).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert get_token(http, provider)  # token side unaffected
    assert time.monotonic() - started < 0.25


def test_set_faults_validates(make: Factory) -> None:
    provider = make("simplestore")
    provider.set_faults(delay=2, lifetime=0)
    assert (provider.faults.delay, provider.faults.lifetime) == (2.0, 0)

    for bad in ({"nonsense": True}, {"delay": "slow"}, {"delay": -1}, {"delay": True},
                {"delay": float("inf")}, {"server_error": 1}, {"lifetime": 1.5},
                {"lifetime": True}, {"server_error": True, "oops": 1}):
        with pytest.raises(ValueError):
            provider.set_faults(**bad)
    assert provider.faults == Faults(delay=2.0, lifetime=0)  # failed updates change nothing


# --- request logs -------------------------------------------------------------


def test_api_requests_are_recorded_redacted(make: Factory, http: httpx.Client) -> None:
    provider = make("dokstamp")
    token = get_token(http, provider)
    call_api(http, provider, token)

    [record] = provider.api_requests()

    assert (record.method, record.path, record.status) == ("GET", "/api/v1/documents", 200)
    assert record.headers["authorization"] == "<redacted>"
    assert record.headers["x-tenant"] == "acme"
    assert token not in repr(provider.api_requests())


def test_nothing_is_written_to_stdout_or_stderr(
    make: Factory, http: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    provider = make("simplifi")
    token = get_token(http, provider)
    call_api(http, provider, token)
    request_token(http, provider, secret="wrong")
    provider.stop()

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --- admin over HTTP ----------------------------------------------------------


def test_admin_faults_revoke_and_stats(make: Factory, http: httpx.Client) -> None:
    provider = make("simpledocs")
    admin = provider.base_url + "/_sim"
    token = get_token(http, provider)

    flipped = http.post(admin + "/faults", json={"server_error": True, "delay": 0.05})
    assert flipped.status_code == 200
    assert flipped.json() == {**Faults().__dict__, "server_error": True, "delay": 0.05}
    assert provider.faults.server_error is True
    assert request_token(http, provider).status_code == 503

    for bad in ({"bogus": True}, {"server_error": "yes"}, [1, 2]):
        refused = http.post(admin + "/faults", json=bad)
        assert refused.status_code == 400
        assert "error" in refused.json()
    assert http.post(admin + "/faults", content=b"{not json").status_code == 400
    assert provider.faults.server_error is True

    cleared = http.delete(admin + "/faults")
    assert cleared.json() == Faults().__dict__
    assert http.get(admin + "/faults").json() == Faults().__dict__

    revoked = http.post(admin + "/revoke")
    assert (revoked.status_code, revoked.content) == (204, b"")
    assert call_api(http, provider, token).json()["type"] == "token_revoked"

    stats = http.get(admin + "/stats")
    assert stats.json() == {"token_requests": 2, "issued_tokens": 1, "api_requests": 1}
    assert len(provider.token_requests()) == 2  # admin calls are not recorded
    assert len(provider.api_requests()) == 1

    for method, path, allow in (("PUT", "/faults", "GET, POST, DELETE"),
                                ("GET", "/revoke", "POST"), ("POST", "/stats", "GET")):
        wrong = http.request(method, admin + path)
        assert (wrong.status_code, wrong.headers["allow"]) == (405, allow)
    assert http.get(admin + "/nothing").status_code == 404


# --- lifecycle ----------------------------------------------------------------


def test_stop_is_prompt_during_a_long_delay(make: Factory) -> None:
    provider = make("simplestore")
    provider.set_faults(delay=30)
    failures: list[Exception] = []

    def slow_request() -> None:
        with httpx.Client(timeout=10.0) as client:
            try:
                request_token(client, provider, timeout=10.0)
            except httpx.HTTPError as exc:
                failures.append(exc)

    caller = threading.Thread(target=slow_request)
    caller.start()
    with httpx.Client(timeout=2.0) as client:
        wait_for(lambda: client.get(provider.base_url + "/_sim/stats")
                 .json()["token_requests"] >= 1, timeout=2.0, interval=0.01,
                 message="the delayed request to arrive")

    started = time.monotonic()
    provider.stop()
    assert time.monotonic() - started < 1.0

    caller.join(timeout=2.0)
    assert not caller.is_alive()
    assert len(failures) == 1
    # The handler logs the cut-off request after stop() has hung up on the client.
    wait_for(lambda: provider.token_requests(), timeout=5.0, message="the request's record")
    assert [r.status for r in provider.token_requests()] == [0]
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(provider.base_url + "/_sim/stats")


def test_restart_keeps_the_port(make: Factory, http: httpx.Client) -> None:
    provider = make("smartdocumentor")
    url = provider.base_url
    token = get_token(http, provider)

    provider.stop()
    provider.stop()  # idempotent
    provider.start()

    assert provider.base_url == url
    assert call_api(http, provider, token).status_code == 200
    with pytest.raises(RuntimeError):
        provider.start()


def test_unknown_kind_and_unstarted_url() -> None:
    with pytest.raises(ValueError):
        SimulatedProvider("acme")
    with pytest.raises(RuntimeError):
        _ = SimulatedProvider("simplifi").base_url


def test_simulation_runs_all_five_with_demo_clients(http: httpx.Client) -> None:
    with Simulation(lifetimes={"dokstamp": 60}, rate_limit_window=1.0) as sim:
        assert set(sim.providers) == set(KINDS)
        assert len({p.base_url for p in sim.providers.values()}) == 5
        for kind, provider in sim.providers.items():
            client_id, secret = DEMO_CLIENTS[kind]
            response = request_token(http, provider, client_id=client_id, secret=secret)
            assert response.status_code == 200, kind
            token = response.json()["access_token"]
            if kind == "dokstamp":
                assert response.json()["expires_in"] == 60
            assert call_api(http, provider, token).status_code == 200, kind

        simpledocs = sim.providers["simpledocs"]
        token = get_token(http, simpledocs, client_id=DEMO_CLIENTS["simpledocs"][0],
                          secret=DEMO_CLIENTS["simpledocs"][1])
        write = http.post(simpledocs.base_url + "/v1/documents", json={},
                          headers={"Authorization": f"Bearer {token}"})
        assert (write.status_code, write.json()["type"]) == (403, "insufficient_scope")
    with pytest.raises(httpx.ConnectError):
        http.get(sim.providers["simplifi"].base_url + "/_sim/stats")


@pytest.mark.slow
def test_simulation_rate_limit_window_applies_to_the_limited_vendor(http: httpx.Client) -> None:
    with Simulation(rate_limit_window=0.5) as sim:
        simpledocs = sim.providers["simpledocs"]
        client_id, secret = DEMO_CLIENTS["simpledocs"]
        statuses = [request_token(http, simpledocs, client_id=client_id,
                                  secret=secret).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [429]
        time.sleep(0.6)  # the half-second window passes; polling would keep it full
        assert request_token(http, simpledocs, client_id=client_id,
                             secret=secret).status_code == 200


def test_simulation_rejects_unknown_lifetime_kind() -> None:
    with pytest.raises(ValueError):
        Simulation(lifetimes={"acme": 5})
