"""An in-process token endpoint and API behind ``httpx.MockTransport``.

For the exact tests on virtual time (``tests/virtual.py``): each answer is a
plain function of the request, set per test, and every request is logged with
the (virtual) time it arrived. No exporter code is replaced: the exporter's own
HTTP client sends real ``httpx`` requests through this transport.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

from tests.virtual import EPOCH

TOKEN_PATH = "/oauth/token"
API_PATH = "/api/things"
BASE = "http://127.0.0.1:8999"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def token_answer(token: str, lifetime: float = 3600, scope: str | None = None) -> httpx.Response:
    doc: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
    if scope is not None:
        doc["scope"] = scope
    return httpx.Response(200, json=doc)


def status(code: int, body: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.Response(code, content=body, headers=headers)


@dataclass
class FakeApi:
    """A token endpoint and one API path; behaviour set by assigning the handlers."""

    lifetime: float = 3600
    issued: int = 0
    #: (virtual seconds, path) of every request, in arrival order.
    log: list[tuple[float, str]] = field(default_factory=list)
    token_handler: Handler | None = None
    api_handler: Handler | None = None

    def __post_init__(self) -> None:
        if self.token_handler is None:
            self.token_handler = self.issue
        if self.api_handler is None:
            self.api_handler = self.accept_latest

    #: The newest token issued to each client id (one active token per client).
    latest: dict[str, str] = field(default_factory=dict)

    def issue(self, request: httpx.Request) -> httpx.Response:
        self.issued += 1
        token = f"token-{self.issued:06d}"
        client_id = parse_qs(request.content.decode()).get("client_id", [""])[0]
        self.latest[client_id] = token
        return token_answer(token, self.lifetime)

    def accept_latest(self, request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        if sent in self.latest.values():
            return status(200, b"{}")
        return status(401, b"", **{"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def token_requests(self) -> list[float]:
        return [t for t, path in self.log if path == TOKEN_PATH]

    def api_requests(self) -> list[float]:
        return [t for t, path in self.log if path == API_PATH]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        self.log.append((loop.time(), request.url.path))
        handler = self.token_handler if request.url.path == TOKEN_PATH else self.api_handler
        if request.url.path not in (TOKEN_PATH, API_PATH):
            return status(404)
        assert handler is not None
        answer = handler(request)
        if not isinstance(answer, httpx.Response):
            answer = await answer
        return answer

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._handle))


def config_text(names: list[str], *, probes: int = 1, probe_interval: str = "30s",
                extra: str = "", timeout: str = "") -> str:
    """A provider file for ``names``, each with ``probes`` probes at the fake API."""
    # The request timeout must stay below the probe interval (a config rule).
    timeout = timeout or ("500ms" if probe_interval in ("1s", "2s") else "5s")
    lines = ["providers:"]
    for name in names:
        lines += [
            f"  - name: {name}",
            "    preset: generic",
            f"    token_url: {BASE}{TOKEN_PATH}",
            f"    client_id: id-{name}",
            "    client_secret: secret-value-0123",
            f"    timeout: {timeout}",
            f"    probe_interval: {probe_interval}",
        ]
        lines += [f"    {line}" for line in extra.splitlines() if line]
        if probes:
            lines.append("    probes:")
            for i in range(probes):
                lines += [f"      - name: p{i}", f"        url: {BASE}{API_PATH}"]
    return "\n".join(lines) + "\n"


def wall(virtual: float) -> float:
    return EPOCH + virtual


def dump(doc: object) -> bytes:
    return json.dumps(doc).encode()
