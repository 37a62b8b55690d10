"""Outbound HTTP: TLS trust and identity, proxies, shared clients, and bounded reading.

The decompression-bomb tests serve 1 GiB bombs (gzip, deflate, "gzip, gzip")
from a loopback server: read as the exporter reads them they are refused at
``max_response_bytes`` within milliseconds, in a subprocess whose peak RSS is
measured, and a running exporter keeps its schedule through them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.config import Outbound, parse_config
from exporter.errors import ErrorClass, InvalidResponse, classify_exception
from exporter.http import (
    ClientPool,
    HostPools,
    ResponseTooLarge,
    UndecodableResponse,
    new_http_client,
    read_body,
    read_capped,
)
from exporter.simulator import SimulatedProvider
from exporter.tokens import TokenError, request_token
from tests.harness import running_exporter, wait_for
from tests.pki import Pki
from tests.scripted import Answer, bomb, bomb_answer, forward_proxy, scripted_server
from tests.virtual import run_virtual

ROOT = Path(__file__).resolve().parent.parent

SECRET = "outbound-secret-Hk4"


@pytest.mark.slow
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


@pytest.mark.slow
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
            def probe_ok(name: str) -> bool:
                return h.value("oauth_probe_success", provider=name, probe="api") == 1.0

            for name in ("trusted", "insecure", "mtls", "mtls13"):
                wait_for(partial(probe_ok, name), message=name)
            for name in ("untrusted", "mtls-no-cert", "mtls-rogue-cert"):
                assert h.value("oauth_token_valid", provider=name) == 0.0, name
                assert h.value("oauth_token_refresh_failures_total", provider=name,
                               error="tls_error") == 1.0, name
            assert h.value("oauth_token_valid", provider="mtls13-no-cert") == 0.0
            assert sum(h.value("oauth_token_refresh_failures_total", provider="mtls13-no-cert",
                               error=e) or 0 for e in ("tls_error", "connection_error")) == 1
            logs = h.logs.getvalue()
        assert "provider=insecure msg=\"TLS certificate verification is DISABLED" in logs
        assert "level=warn" in logs


# --------------------------------------------------------------------------- shared clients


def test_one_client_per_outbound_option_set(pki: Pki) -> None:
    async def go() -> None:
        pool = ClientPool()
        try:
            default, same = pool.get(Outbound()), pool.get(Outbound())
            trusted = pool.get(Outbound(ca_file=str(pki.ca)))
            assert default is same  # every credential with default options shares one
            assert trusted is not default
            assert pool.get(Outbound(ca_file=str(pki.ca))) is trusted
        finally:
            await pool.aclose()

    asyncio.run(go())


def test_the_client_asks_only_for_codings_it_decodes_with_a_bound() -> None:
    async def go(url: str) -> None:
        async with new_http_client() as client:
            for _ in range(3):
                async with client.stream("GET", url) as response:
                    await read_body(response, 1024)

    with scripted_server({"/": Answer(200, {"ok": True})}) as base:
        asyncio.run(go(base + "/"))
        assert [h["Accept-Encoding"] for h in base.headers] == ["gzip, deflate"] * 3
        assert {h["User-Agent"] for h in base.headers} == {"token-health-exporter"}


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class _Gate(httpx.AsyncBaseTransport):
    """An inner transport whose requests wait for ``open`` and record what befell them."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.hosts: list[str] = []
        self.cancelled = 0
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        gate = self

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield b"ok"

            async def aclose(self) -> None:
                gate.closed += 1

        return httpx.Response(200, stream=Body())


def test_a_caller_giving_up_never_cancels_the_request_and_its_slot_waits_for_the_end() -> None:
    # httpcore leaves a connection behind for good when a request is cancelled at
    # the wrong moment (encode/httpcore#1093); a probe's deadline must not do that,
    # so the request runs on, within httpx's own timeouts, and holds its slot.
    async def go() -> None:
        gate = _Gate()
        pools = HostPools(lambda: gate, per_host=1)
        async with httpx.AsyncClient(transport=pools) as client:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.get("http://a.invalid/")
            await asyncio.sleep(0.05)
            assert gate.cancelled == 0
            # Its slot is still taken: the host's next request waits for it.
            with pytest.raises(httpx.PoolTimeout):
                await client.get("http://a.invalid/", timeout=httpx.Timeout(5, pool=0.05))
            # Another host has slots of its own.
            other = asyncio.ensure_future(client.get("http://b.invalid/"))
            await _until(lambda: gate.hosts == ["a.invalid", "b.invalid"])
            gate.open.set()
            assert (await other).content == b"ok"
            # The abandoned answer was closed, and its slot is free again.
            await _until(lambda: gate.closed == 2)
            response = await client.get("http://a.invalid/", timeout=httpx.Timeout(5, pool=1))
            assert response.status_code == 200
            assert gate.cancelled == 0

    # On virtual time: the deadlines above are exact, whatever the machine's load.
    run_virtual(go())


def test_a_cookie_one_answer_sets_is_never_sent_with_a_later_request() -> None:
    # One client serves every credential with the same outbound options: a session
    # cookie from one credential's answer must not ride along with another's.
    async def go(base: str) -> None:
        async with new_http_client() as client:
            for path in ("/login", "/api", "/api"):
                async with client.stream("GET", base + path) as response:
                    await read_body(response, 1024)

    cookie = {"Set-Cookie": "session=credential-a; Path=/", "Content-Type": "application/json"}
    with scripted_server({"/login": Answer(200, {"ok": True}, cookie),
                          "/api": Answer(200, {"ok": True}, cookie)}) as base:
        asyncio.run(go(base))
        assert [h.get("Cookie") for h in base.headers] == [None, None, None]


# --------------------------------------------------------------------------- read_body


class Chunks(httpx.AsyncByteStream):
    """A body delivered in pieces of ``size`` bytes, as a network would."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size = data, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), self._size):
            yield self._data[i:i + self._size]


def read(data: bytes, coding: str | None, limit: int, chunk: int = 4096,
         headers: dict[str, str] | None = None) -> bytes | InvalidResponse:
    """``read_body`` of one streamed answer served by httpx.MockTransport."""
    def handler(request: httpx.Request) -> httpx.Response:
        h = dict(headers or {})
        if coding is not None:
            h["Content-Encoding"] = coding
        return httpx.Response(200, headers=h, stream=Chunks(data, chunk))

    async def go() -> bytes | InvalidResponse:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client, \
                client.stream("GET", "http://api.test/") as response:
            try:
                return await read_body(response, limit)
            except InvalidResponse as exc:
                return exc

    return asyncio.run(go())


JSON_TYPE = {"Content-Type": "application/json"}
DOC = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(2000)]}).encode()


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(("coding", "encoded"), [
    (None, DOC),
    ("identity", DOC),
    ("gzip", gzip.compress(DOC)),
    ("x-gzip", gzip.compress(DOC)),
    ("GZIP", gzip.compress(DOC)),
    ("deflate", zlib.compress(DOC)),  # RFC 9110: the zlib format
    ("deflate", deflate_raw(DOC)),  # what some servers send instead
    ("gzip, gzip", gzip.compress(gzip.compress(DOC))),
    ("deflate, gzip", gzip.compress(zlib.compress(DOC))),
])
@pytest.mark.parametrize("chunk", [1, 7, 65536])
def test_read_body_undoes_each_coding(coding: str | None, encoded: bytes, chunk: int) -> None:
    assert read(encoded, coding, 1 << 20, chunk) == DOC


def test_a_coding_it_does_not_decode_is_read_as_it_came() -> None:
    # As httpx does when it lacks the library: the bytes are then judged as
    # they are (a token answer that is not JSON is invalid_response).
    assert read(b"\x1b\x00compressed", "br", 1024) == b"\x1b\x00compressed"
    assert read(gzip.compress(DOC), "br, gzip", 1 << 20) == gzip.compress(DOC)


@pytest.mark.parametrize(("coding", "encoded", "message"), [
    (None, DOC, "body larger than 1024 bytes"),
    ("gzip", gzip.compress(b"x" * 5000), "decoded body larger than 1024 bytes"),
    ("deflate", zlib.compress(b"x" * 5000), "decoded body larger than 1024 bytes"),
    ("gzip, gzip", gzip.compress(gzip.compress(b"x" * 5000)),
     "decoded body larger than 1024 bytes"),
    ("gzip", bytes(range(256)) * 20, "body larger than 1024 bytes"),  # too big as sent
])
def test_read_body_caps_sent_and_decoded_bytes(coding: str | None, encoded: bytes,
                                               message: str) -> None:
    result = read(encoded, coding, 1024)
    assert isinstance(result, ResponseTooLarge)
    assert str(result) == message
    assert classify_exception(result) is ErrorClass.INVALID_RESPONSE


def test_the_cap_is_inclusive() -> None:
    assert read(gzip.compress(b"x" * 1024), "gzip", 1024) == b"x" * 1024
    assert isinstance(read(gzip.compress(b"x" * 1025), "gzip", 1024), ResponseTooLarge)


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    result = read(b"{}", None, 1024, headers={"Content-Length": "999999"})
    assert isinstance(result, ResponseTooLarge) and not result.decoded


def test_the_length_of_a_body_not_sent_is_no_reason_to_refuse() -> None:
    # A HEAD probe of a large resource: Content-Length is the GET body's size.
    async def head(url: str) -> bytes:
        async with new_http_client() as client, client.stream("HEAD", url) as response:
            assert response.headers["content-length"] == str(len(DOC))
            return await read_body(response, 1024)

    with scripted_server({"/": Answer(200, DOC, JSON_TYPE)}) as base:
        assert asyncio.run(head(base + "/")) == b""


@pytest.mark.parametrize(("coding", "encoded"), [
    ("gzip", b"this is not gzip at all"),
    ("gzip", gzip.compress(DOC)[:40] + b"\xff" * 40),
    ("deflate", b"\xff\xfe\xfd\xfc" * 10),
])
def test_a_body_that_does_not_decode_is_invalid_response(coding: str, encoded: bytes) -> None:
    result = read(encoded, coding, 1 << 20)
    assert isinstance(result, UndecodableResponse)
    assert str(result) == f"body is not valid {coding}"
    assert classify_exception(result) is ErrorClass.INVALID_RESPONSE


@pytest.mark.slow
def test_bombs_are_valid_streams() -> None:
    # The same construction as the 1 GiB bombs below, at a size that can be checked.
    size = 48 << 20
    assert gzip.decompress(bomb(size)) == bytes(size)
    assert zlib.decompress(bomb(size, "deflate")) == bytes(size)
    assert gzip.decompress(gzip.decompress(bomb(size, "gzip, gzip"))) == bytes(size)
    assert len(bomb(1 << 30, "gzip, gzip")) < 4096  # 1 GiB


# --------------------------------------------------------------------------- decompression bombs

GIB = 1 << 30
CAP = 1 << 20  # max_response_bytes' default
REFUSED = f"decoded body larger than {CAP} bytes"
BOMBS = {"/gzip": "gzip", "/deflate": "deflate", "/gzip-gzip": "gzip, gzip"}


def bomb_script() -> dict[str, Answer]:
    script = {path: bomb_answer(GIB, coding) for path, coding in BOMBS.items()}
    # An error status is no excuse: its body is read (to classify it) under the same cap.
    script["/401-gzip"] = bomb_answer(GIB, "gzip", status=401)
    script["/token"] = Answer(200, {"access_token": "bomb-test-token", "expires_in": 3600,
                                    "token_type": "Bearer"})
    script["/small"] = Answer(200, gzip.compress(b'{"ok": true}'),
                              {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    return script


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def rss_child(base: str, mode: str) -> None:
    """Run in a fresh interpreter: read every bomb; print what happened and the peak RSS growth.

    mode "exporter": token requests through ``request_token`` and probe reads
    through ``read_capped``, as the exporter makes them. mode "httpx": the
    same reads through httpx's own decoding (``aiter_bytes``) under the same
    cap, for comparison: it shows that the measurement can see a bomb.
    """
    async def probe(client: httpx.AsyncClient, path: str) -> str:
        async with client.stream("GET", base + path) as response:
            if mode == "exporter":
                await read_capped(response, CAP)
                return "read"
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > CAP:
                    return "refused"
            return "read"

    async def token(client: httpx.AsyncClient, path: str) -> str:
        provider = parse_config(f"providers:\n  - name: p\n    token_url: {base}{path}\n"
                                f"    client_id: c\n    client_secret: {SECRET}\n",
                                "t.yaml", {}).providers[0]
        try:
            await request_token(client, provider)
        except TokenError as exc:
            return f"{exc.error}: {exc.detail}"
        return "token"

    async def main() -> dict[str, object]:
        results: dict[str, object] = {}
        async with new_http_client() as client:
            await probe(client, "/small")  # warm up: imports, the connection, zlib
            await token(client, "/token")
            # Linux: "5" resets the peak (VmHWM) to the current RSS.
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            before = _status_mib("VmRSS")
            kinds = ("probe",) if mode == "httpx" else ("probe", "token")
            paths = ["/gzip", "/deflate"] if mode == "httpx" else [*BOMBS, "/401-gzip"]
            for kind in kinds:
                for path in paths:
                    started = time.perf_counter()
                    try:
                        outcome = await (probe if kind == "probe" else token)(client, path)
                    except InvalidResponse as exc:
                        outcome = f"invalid_response: {exc}"
                    results[f"{kind} {path}"] = [outcome, time.perf_counter() - started]
            results["growth_mib"] = _status_mib("VmHWM") - before
        return results

    print(json.dumps(asyncio.run(main())))


def run_rss_child(base: str, mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_outbound import rss_child; "
         "rss_child(sys.argv[1], sys.argv[2])", base, mode],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_bombs_are_refused_quickly_with_bounded_memory() -> None:
    with scripted_server(bomb_script()) as base:
        ours = run_rss_child(base, "exporter")
        theirs = run_rss_child(base, "httpx")
    growth = ours.pop("growth_mib")
    assert set(ours) == {f"{kind} {path}" for kind in ("probe", "token")
                         for path in [*BOMBS, "/401-gzip"]}
    for name, (outcome, seconds) in ours.items():
        assert outcome == f"invalid_response: {REFUSED}", name
        assert seconds < 5, name  # in practice tens of milliseconds
    # 1 GiB bombs, refused at 1 MiB: the cap, a few 64 KiB pieces, nothing more.
    assert growth < 16, ours
    # The same measurement sees httpx's own decoding inflate a whole network
    # chunk at once (64 KiB of this bomb is 64 MiB).
    assert theirs.pop("growth_mib") > 48, theirs
    assert {outcome for outcome, _ in theirs.values()} == {"refused"}


@pytest.mark.slow
def test_bombs_at_the_token_endpoint_and_every_probe_keep_the_schedule_running() -> None:
    with scripted_server(bomb_script()) as base:
        probes = [{"name": path.strip("/"), "url": base + path, "interval": "1s",
                   "timeout": "900ms"} for path in [*BOMBS, "/401-gzip"]]
        probes.append({"name": "small", "url": base + "/small", "interval": "1s",
                       "timeout": "900ms"})
        config = {"providers": [
            {"name": "api", "token_url": base + "/token", "client_id": "c",
             "client_secret": SECRET, "probes": probes},
            # One attempt each (the backoff outlasts the test): the next is planned.
            *({"name": f"token-{path.strip('/')}", "token_url": base + path, "client_id": "c",
               "client_secret": SECRET, "backoff_initial": "1h", "backoff_max": "1h"}
              for path in [*BOMBS, "/401-gzip"]),
        ]}
        with running_exporter(yaml.safe_dump(config), log_level="info") as h:
            def failures(metric: str, **labels: str) -> float:
                return h.value(metric, error="invalid_response", **labels) or 0.0

            def refused(times: int, metric: str, **labels: str) -> Callable[[], bool]:
                return lambda: failures(metric, **labels) >= times

            def renewal_planned(name: str) -> bool:
                # In the future, not "an hour away": the backoff is full jitter,
                # uniform(0, 1h), so it is under a minute about once in 60 runs.
                next_renewal = h.value("oauth_token_next_renewal_timestamp_seconds",
                                       provider=name)
                return (next_renewal or 0) > time.time()

            # Three refusals each: every probe's schedule goes on after a bomb.
            for p in probes[:-1]:
                wait_for(refused(3, "oauth_probe_failures_total", provider="api",
                                 probe=str(p["name"])),
                         timeout=30, message=f"probe {p['name']}")
            wait_for(lambda: (h.value("oauth_probe_attempts_total", provider="api",
                                      probe="small") or 0) >= 3, timeout=30, message="small")
            # A renewal refused a bomb, ended normally and planned the next one.
            for path in [*BOMBS, "/401-gzip"]:
                name = f"token-{path.strip('/')}"
                wait_for(refused(1, "oauth_token_refresh_failures_total", provider=name),
                         timeout=30, message=name)
                wait_for(partial(renewal_planned, name), message=f"{name}'s next renewal")
            assert h.value("oauth_probe_success", provider="api", probe="small") == 1.0
            assert h.value("oauth_token_valid", provider="api") == 1.0
            logs = h.logs.getvalue()
    for p in probes[:-1]:
        assert f"answer from {p['url']} refused (invalid_response): {REFUSED}" in logs
    assert f"token request failed (invalid_response, 1 in a row): {REFUSED}" in logs
    assert SECRET not in logs
