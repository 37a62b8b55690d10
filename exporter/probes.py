"""Probing a provider's API with the token the renewal loop holds.

``ProbeRunner.run_forever`` is one long-lived task per probe: it starts once
its credential's first token request has come back (a pending credential's
probes wait rather than report ``no_token``), then runs every interval with
jitter. ``ProbeRunner.run`` is one run: it sends the configured request and
classifies any failure (``exporter.errors``).

A token that was issued is not a token that works. When the API says the token
itself is bad (``invalid_token``, ``token_expired``, ``token_revoked``) the
failure is counted and the renewal loop is told (``TokenManager.token_refused``);
within its budget it brings a renewal forward and the probe retries once with
the fresh token. It never loops, and it never sends a token request itself.
When no fresh token is to be had (the budget is spent, the token endpoint is
failing), the held token is still sent while it is unexpired: the probe reports
what the API says of it, and sees the moment the API takes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from exporter.errors import (
    TOKEN_REJECTED,
    ErrorClass,
    InvalidResponse,
    classify_exception,
    classify_response,
)
from exporter.http import read_capped, send_streamed
from exporter.introspection import introspect
from exporter.logsetup import log_for
from exporter.renewal import TokenManager
from exporter.scheduler import sleep_until
from exporter.state import ProbeState, ProviderState
from exporter.tokens import Token

log = logging.getLogger("exporter.probes")

#: Probes run every interval ± this fraction of it, so probes configured alike spread out.
PROBE_JITTER = 0.1


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no HTTP answer
    error: ErrorClass | None  # None: the probe met its expectation
    duration: float


class ProbeRunner:
    def __init__(
        self,
        state: ProviderState,
        probe_state: ProbeState,
        tokens: TokenManager,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_lateness: Callable[[float], None] | None = None,
    ) -> None:
        self.state = state
        self.probe_state = probe_state
        self._log = log_for(log, state.provider.name, probe_state.probe.name)
        self._tokens = tokens
        self._client = client
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_lateness = on_lateness
        # What every run sends alike is built once: the URL parsed, the client's
        # default headers merged with the probe's, the body encoded.
        probe = probe_state.probe
        self._url = httpx.URL(probe.url)
        headers = httpx.Headers(client.headers)
        headers.update(probe.headers)
        self._headers = headers.multi_items()
        # A bearer probe's own Authorization header gives way to the token.
        self._headers_for_token = [(k, v) for k, v in self._headers
                                   if k.lower() != "authorization"]
        self._body = probe.body.encode() if probe.body is not None else None
        self._extensions = {"timeout": httpx.Timeout(probe.timeout).as_dict()}

    @property
    def label(self) -> str:
        return f"{self.state.provider.name}/{self.probe_state.probe.name}"

    async def run_forever(self, first_at: Callable[[], Awaitable[float]]) -> None:
        """Run every interval (± jitter) from the start time ``first_at`` gives."""
        base = await first_at()
        interval = self.probe_state.probe.interval
        jitter = interval * PROBE_JITTER
        planned = base
        runs = 0
        while True:
            await sleep_until(self._clock, planned)
            if self._on_lateness is not None:
                self._on_lateness(self._clock() - planned)
            await self.run()
            runs += 1
            planned = base + runs * interval + self._rng.uniform(-jitter, jitter)
            now = self._clock()
            if planned < now:
                # Fell behind (a run longer than the interval, a busy loop): run
                # once now rather than once per missed interval.
                base += now - planned
                planned = now

    async def run(self) -> None:
        """One run. Never raises (but for cancellation): every failure becomes a metric."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("unexpected error in a probe run")

    async def _run(self) -> None:
        probe = self.probe_state.probe
        token: Token | None = None
        if probe.auth == "bearer":
            token = await self._token()
            if token is None:
                self._skipped(ErrorClass.NO_TOKEN, self._why_no_token())
                return
        outcome = await self._send(token)
        if token is None or outcome.error not in TOKEN_REJECTED:
            self._finish(token, outcome)
            return

        current = self.state.valid_token(self._clock())
        if self.state.token is not token and current is not None:
            # A renewal replaced our token while the probe was in flight (at a
            # one-active-token provider the new token revokes the old one).
            # That says nothing about the credential: retry with the new token.
            self._count_sent(outcome)
            self._finish(current, await self._send(current))
            return

        self._record(outcome)
        self._log_refusal(token, outcome)
        fresh = await self._refused(token)
        if fresh is None:
            return
        outcome = await self._send(fresh)
        self._finish(fresh, outcome)
        if outcome.error in TOKEN_REJECTED:
            await self._refused(fresh)

    async def _token(self) -> Token | None:
        """The token to send: a valid one, else the one a renewal in flight brings,
        else the held one even if the API refused it (while it is unexpired)."""
        token = self.state.valid_token(self._clock())
        if token is not None:
            return token
        if self.state.renewing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.probe_state.probe.timeout):
                    await self._tokens.wait_while_renewing()
        now = self._clock()
        return self.state.valid_token(now) or self.state.unexpired_token(now)

    async def _refused(self, token: Token) -> Token | None:
        """Tell the renewal loop; wait for a fresh token within our own timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.probe_state.probe.timeout):
                return await self._tokens.token_refused(token, self.probe_state.probe.name)
        return None

    def _why_no_token(self) -> str:
        state = self.state
        if state.last_error is not None and state.consecutive_failures:
            return f"no valid token: the token endpoint is failing ({state.last_error})"
        if state.token is not None:
            return "no valid token: the held token has expired"
        return "no token yet"

    def _log_refusal(self, token: Token, outcome: Outcome) -> None:
        newest = self.state.token is token
        if outcome.error is ErrorClass.TOKEN_REVOKED and newest:
            if self.state.provider.preset.one_active_token:
                self._log.warning(
                    "the API says our newest token was revoked; another client "
                    "is probably taking tokens with the same credentials (this provider "
                    "allows one active token per application, so each new token revokes "
                    "the last), or the token was revoked explicitly",
                )
            else:
                self._log.warning("the API says our newest token was revoked")
        else:
            self._log.info("token refused (%s)", outcome.error)

    async def _send(self, token: Token | None) -> Outcome:
        probe = self.probe_state.probe
        if probe.kind == "introspection" and token is not None:
            # RFC 7662: ask the server about the token (exporter.introspection).
            started = time.perf_counter()
            status, error = await introspect(self._client, self.state, probe, token,
                                             self._tokens.discovery, self._clock)
            return Outcome(status, error, time.perf_counter() - started)
        headers = self._headers
        if token is not None:
            headers = [*self._headers_for_token,
                       ("Authorization", "Bearer " + token.access_token.get_secret_value())]
        limit = self.state.provider.max_response_bytes
        started = time.perf_counter()
        try:
            async with asyncio.timeout(probe.timeout):
                request = httpx.Request(probe.method, self._url, headers=headers,
                                        content=self._body, extensions=self._extensions)
                response = await send_streamed(self._client, request)
                try:
                    body = await read_capped(response, limit)
                finally:
                    await response.aclose()
        except InvalidResponse as exc:
            # Too large once decoded (a decompression bomb), or undecodable: the
            # answer came, so its status is kept.
            return Outcome(exc.status or 0, ErrorClass.INVALID_RESPONSE,
                           time.perf_counter() - started)
        except Exception as exc:
            return Outcome(0, classify_exception(exc), time.perf_counter() - started)
        duration = time.perf_counter() - started
        status = response.status_code
        if status in probe.expect_status:
            return Outcome(status, None, duration)
        error = classify_response(status, response.headers, body, "probe",
                                  bearer=token is not None)
        return Outcome(status, error, duration)

    def _finish(self, token: Token | None, outcome: Outcome) -> None:
        if token is not None and outcome.error is None:
            self._tokens.token_accepted(token)
        self._record(outcome)

    def _count_sent(self, outcome: Outcome) -> None:
        self.probe_state.attempts += 1
        self.probe_state.duration.observe(outcome.duration)

    def _skipped(self, error: ErrorClass, reason: str) -> None:
        ps = self.probe_state
        ps.last_run = self._clock()
        ps.status = 0
        ps.success = False
        ps.last_error = error
        ps.skip_reason = reason
        ps.consecutive_failures += 1
        ps.failures[error] += 1

    def _record(self, outcome: Outcome) -> None:
        ps = self.probe_state
        now = self._clock()
        ps.last_run = now
        ps.status = outcome.status
        ps.success = outcome.error is None
        ps.last_error = outcome.error
        ps.skip_reason = None
        self._count_sent(outcome)
        if outcome.error is None:
            ps.last_success = now
            ps.consecutive_failures = 0
        else:
            ps.consecutive_failures += 1
            ps.failures[outcome.error] += 1
            self._log.debug("probe failed with %s (HTTP %d)", outcome.error, outcome.status)
