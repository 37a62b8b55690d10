"""Discovery and client authentication in the token path, exactly, on virtual time.

The real ``Exporter`` and renewal loop run on a virtual-time loop
(``tests/virtual.py``) with the real ``httpx`` client over
``httpx.MockTransport``: a small authorization server below answers
discovery, token and introspection requests and records each one, so a test
can count metadata reads, see which URL a token request went to and decode
the client assertion it carried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import OctKey

from exporter.app import Exporter
from exporter.config import Config, parse_config
from exporter.errors import ErrorClass
from exporter.state import ProviderState
from tests.virtual import clock_of_running_loop, run_virtual

ISSUER = "https://id.example.com/realms/ops"
TOKEN = "https://id.example.com/realms/ops/protocol/openid-connect/token"
MTLS_TOKEN = "https://mtls.id.example.com/realms/ops/protocol/openid-connect/token"
DISCOVERY = ISSUER + "/.well-known/openid-configuration"
SECRET = "hs256-secret-of-enough-bytes"
ALL_METHODS = ["client_secret_basic", "client_secret_post", "client_secret_jwt",
               "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"]


@dataclass
class FakeIssuer:
    """An authorization server behind MockTransport; each answer a function of the request."""

    issuer: str = ISSUER
    discovery_status: int = 200
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    token_endpoint: str = TOKEN
    token_status: int = 200
    lifetime: int = 300
    #: (virtual time, method, URL, form) of every request.
    requests: list[tuple[float, str, str, dict[str, str]]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "token_endpoint": self.token_endpoint,
                "token_endpoint_auth_methods_supported": self.methods,
                "mtls_endpoint_aliases": {"token_endpoint": MTLS_TOKEN}}

    def handle(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        now = asyncio.get_running_loop().time()
        url = str(request.url)
        self.requests.append((now, request.method, url, form))
        if url == DISCOVERY:
            if self.discovery_status != 200:
                return httpx.Response(self.discovery_status, json={"error": "nope"})
            return httpx.Response(200, json=self.document())
        if url in (self.token_endpoint, MTLS_TOKEN):
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "not_found"})
            n = len(self.token_requests())
            return httpx.Response(200, json={"access_token": f"tok-{n}", "token_type": "Bearer",
                                             "expires_in": self.lifetime})
        return httpx.Response(404)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def metadata_reads(self) -> list[float]:
        return [t for t, _, url, _ in self.requests if url == DISCOVERY]

    def token_requests(self) -> list[tuple[str, dict[str, str]]]:
        return [(url, form) for _, method, url, form in self.requests
                if method == "POST" and url in (self.token_endpoint, MTLS_TOKEN, TOKEN)]


def config(tmp_path: Path | None = None, **entry: Any) -> Config:
    base: dict[str, Any] = {"name": "ops", "issuer": ISSUER, "client_id": "ops-exporter",
                            "client_secret": SECRET, "timeout": "5s", "backoff_initial": "1s",
                            "backoff_max": "1s"}
    base.update(entry)
    base = {k: v for k, v in base.items() if v is not None}
    return parse_config(yaml.safe_dump({"providers": [base]}), "test.yaml", {})


def run(server: FakeIssuer, cfg: Config,
        scenario: Callable[[Exporter, ProviderState], Any]) -> None:
    async def main() -> None:
        clock = clock_of_running_loop()
        exporter = Exporter(cfg, client=server.client(), clock=clock.time)
        await exporter.start()
        try:
            await scenario(exporter, next(iter(exporter.provider_states())))
        finally:
            await exporter.stop()

    run_virtual(main())


async def until(predicate: Callable[[], object], limit: float = 3600) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {limit} virtual seconds")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------- the document


@pytest.mark.slow
def test_the_document_is_read_once_and_its_token_endpoint_used() -> None:
    server = FakeIssuer(lifetime=60)

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: len(server.token_requests()) >= 5)
        assert len(server.metadata_reads()) == 1
        assert {url for url, _ in server.token_requests()} == {TOKEN}
        assert state.discovery_last_success is not None
        assert state.discovery_failures == {}

    run(server, config(), scenario)


def test_a_404_from_the_token_endpoint_reads_the_document_again() -> None:
    server = FakeIssuer(token_status=404)
    moved = TOKEN + "/v2"

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: state.completed >= 1)
        assert state.failures[ErrorClass.UNEXPECTED_STATUS] == 1
        # The server moved its endpoint and says so in a new document.
        server.token_endpoint, server.token_status = moved, 200
        await until(lambda: state.token is not None)
        assert len(server.metadata_reads()) == 2
        assert server.token_requests()[-1][0] == moved

    run(server, config(), scenario)


def test_a_reload_reads_every_issuers_document_again() -> None:
    server = FakeIssuer(lifetime=60)
    cfg = config()

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: state.token is not None)
        assert len(server.metadata_reads()) == 1
        exporter.apply(cfg)  # unchanged: keeps token and loop, but not the document
        kept = next(iter(exporter.provider_states()))
        assert kept is state
        before = len(server.token_requests())
        await until(lambda: len(server.token_requests()) > before)
        assert len(server.metadata_reads()) == 2

    run(server, cfg, scenario)


def test_a_reload_that_keeps_the_credential_keeps_token_and_discovery_time() -> None:
    server = FakeIssuer()
    cfg = config()

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: state.token is not None)
        changed = config(timeout="4s")  # not part of the credential
        assert changed.providers[0].credential_key == cfg.providers[0].credential_key
        exporter.apply(changed)
        new = next(iter(exporter.provider_states()))
        assert new is not state and new.token is state.token
        assert new.discovery_last_success == state.discovery_last_success
        assert len(server.token_requests()) == 1

    run(server, cfg, scenario)


@pytest.mark.parametrize(("fault", "discovery_class", "token_class"), [
    ({"issuer": ISSUER + "/"}, "issuer_mismatch", ErrorClass.INVALID_RESPONSE),
    ({"discovery_status": 503}, "server_error", ErrorClass.SERVER_ERROR),
    ({"discovery_status": 404}, "unexpected_status", ErrorClass.UNEXPECTED_STATUS),
])
def test_a_failed_read_is_the_first_token_attempt_and_counted_by_class(
    fault: dict[str, Any], discovery_class: str, token_class: ErrorClass
) -> None:
    server = FakeIssuer(**fault)
    cfg = config(probes=[{"name": "api", "url": "https://api.example.com/v1"}])

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(exporter.ready)
        assert state.attempts == state.completed == 1
        assert state.failures[token_class] == 1
        assert state.discovery_failures == {discovery_class: 1}
        assert state.discovery_last_success is None
        assert server.token_requests() == []
        # The probes started: they report that there is no token.
        probe = state.probes["api"]
        await until(lambda: probe.attempts or probe.failures[ErrorClass.NO_TOKEN])
        assert probe.failures[ErrorClass.NO_TOKEN] == 1
        # And it recovers once the server does.
        server.issuer, server.discovery_status = ISSUER, 200
        await until(lambda: state.token is not None)
        assert state.discovery_last_error is None

    run(server, cfg, scenario)


def test_a_hanging_document_read_and_the_token_request_share_one_timeout() -> None:
    server = FakeIssuer()
    inner = server.handle

    async def slow(request: httpx.Request) -> httpx.Response:
        if str(request.url) == DISCOVERY:
            await asyncio.sleep(4)  # of the 5 s timeout
        elif request.method == "POST":
            await asyncio.sleep(2)
        return inner(request)

    server.handle = slow  # type: ignore[method-assign,assignment]

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await until(lambda: state.completed >= 1)
        # Each part alone is within the 5 s; together they are not.
        assert state.failures[ErrorClass.TIMEOUT] == 1
        assert loop.time() - started <= 5.1

    run(server, config(backoff_initial="1h", backoff_max="1h"), scenario)


# ------------------------------------------------------------------------- auth methods


def test_an_unlisted_auth_method_is_refused_without_a_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeIssuer(methods=["client_secret_basic", "private_key_jwt"])

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: state.completed >= 3)
        assert state.failures[ErrorClass.INVALID_CLIENT] == 3
        assert server.token_requests() == []
        assert exporter.ready()

    with caplog.at_level("DEBUG", logger="exporter"):
        run(server, config(auth_method="client_secret_post"), scenario)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    # Said once at error, not at every retry; the server's list is quoted.
    assert len(errors) == 1
    assert "does not take auth_method client_secret_post" in errors[0].getMessage()
    assert "client_secret_basic, private_key_jwt" in errors[0].getMessage()


@pytest.mark.parametrize("method", ["tls_client_auth", "self_signed_tls_client_auth"])
def test_mutual_tls_methods_go_to_the_alias_with_only_a_client_id(
    method: str, tmp_path: Path, pki: Any
) -> None:
    server = FakeIssuer()
    cfg = config(auth_method=method, client_secret=None,
                 tls_config={"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)})

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: state.token is not None)
        [(url, form)] = server.token_requests()
        assert url == MTLS_TOKEN
        assert form == {"grant_type": "client_credentials", "client_id": "ops-exporter"}

    run(server, cfg, scenario)


@pytest.mark.parametrize(("audience", "expected"), [
    (None, TOKEN), ("issuer", ISSUER), ("https://login.example/aud", "https://login.example/aud"),
])
@pytest.mark.slow
def test_each_attempt_carries_a_fresh_assertion(audience: str | None, expected: str) -> None:
    server = FakeIssuer(lifetime=60)
    cfg = config(auth_method="client_secret_jwt", assertion_audience=audience)

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: len(server.token_requests()) >= 3)

    run(server, cfg, scenario)
    key = OctKey.import_key(SECRET.encode())
    seen = set()
    for _, form in server.token_requests():
        assert "client_secret" not in form
        assert form["client_assertion_type"] == ("urn:ietf:params:oauth:client-assertion-type:"
                                                 "jwt-bearer")
        claims = jwt.decode(form["client_assertion"], key, algorithms=["HS256"]).claims
        assert claims["iss"] == claims["sub"] == form["client_id"] == "ops-exporter"
        assert claims["aud"] == expected
        assert claims["exp"] - claims["iat"] == 60
        seen.add(claims["jti"])
    assert len(seen) == 3


def test_a_provider_without_an_issuer_never_reads_a_document() -> None:
    server = FakeIssuer()
    cfg = config(issuer=None, token_url=TOKEN)

    async def scenario(exporter: Exporter, state: ProviderState) -> None:
        await until(lambda: state.token is not None)
        assert server.metadata_reads() == []
        assert state.discovery_last_success is None

    run(server, cfg, scenario)


def test_the_configured_token_url_keeps_its_credential_across_an_unrelated_change() -> None:
    cfg = config(issuer=None, token_url=TOKEN)
    p = cfg.providers[0]
    assert dataclasses.replace(p, timeout=1.0).credential_key == p.credential_key
    assert dataclasses.replace(p, auth_method="client_secret_basic").credential_key != \
        p.credential_key
    assert json.dumps(p.credential_key)  # plain values, comparable across reloads
