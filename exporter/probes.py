"""Probing a provider's API with the token the renewal job holds.

``ProbeRunner.run`` is the scheduled job for one probe. A token that was
issued is not a token that works, so each run sends the configured request and
classifies any failure (body ``error``/``type``, then ``WWW-Authenticate``,
then status, then transport). When the API says the token itself is bad
(``invalid_token``, ``token_expired``, ``token_revoked``) the failure is
counted, the token is renewed at once (through the same manager, lock and rate
limiter as scheduled renewals) and the probe is retried once with the new
token. It never loops: a second refusal is simply the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from exporter.errors import TOKEN_REJECTED, ErrorClass, classify_exception, classify_response
from exporter.renewal import TokenManager
from exporter.state import ProbeState, ProviderState
from exporter.tokens import Token, read_capped

log = logging.getLogger("exporter.probes")


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
    ) -> None:
        self.state = state
        self.probe_state = probe_state
        self._tokens = tokens
        self._client = client
        self._clock = clock

    @property
    def label(self) -> str:
        return f"{self.state.provider.name}/{self.probe_state.probe.name}"

    async def run(self) -> None:
        """The scheduled job. Never raises: every failure becomes a metric."""
        try:
            await self._run()
        except asyncio.CancelledError:
            return  # shutting down
        except Exception:
            log.exception("probe %s: unexpected error", self.label)

    async def _run(self) -> None:
        probe = self.probe_state.probe
        token: Token | None = None
        if probe.auth == "bearer":
            token = self.state.valid_token(self._clock())
            if token is None:
                # A renewal in flight (say, after another probe's token was
                # refused) will likely bring one: wait for it, within our timeout.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(probe.timeout):
                        await self._tokens.wait_while_renewing()
                token = self.state.valid_token(self._clock())
            if token is None:
                self._record(Outcome(0, ErrorClass.NO_TOKEN, 0.0))
                return
        outcome = await self._send(token)
        if token is None or outcome.error not in TOKEN_REJECTED:
            self._record(outcome)
            return

        current = self.state.valid_token(self._clock())
        if self.state.token is not token and current is not None:
            # A renewal replaced our token while the probe was in flight (at a
            # one-active-token provider the new token revokes the old one).
            # That says nothing about the credential: retry with the new token.
            self._count_sent(outcome)
            self._record(await self._send(current))
            return

        self._record(outcome)
        newest = self.state.token is token
        if newest:
            self.state.token_rejected = True
        if outcome.error is ErrorClass.TOKEN_REVOKED and newest:
            if self.state.provider.preset.one_active_token:
                log.warning(
                    "probe %s: the API says our newest token was revoked; another client "
                    "is probably taking tokens with the same credentials (this provider "
                    "allows one active token per application, so each new token revokes "
                    "the last), or the token was revoked explicitly",
                    self.label,
                )
            else:
                log.warning("probe %s: the API says our newest token was revoked", self.label)
        else:
            log.info("probe %s: token refused (%s); renewing", self.label, outcome.error)
        fresh = await self._tokens.renew_rejected(token)
        if fresh is None or fresh is token:
            return
        self._record(await self._send(fresh))

    async def _send(self, token: Token | None) -> Outcome:
        probe = self.probe_state.probe
        headers = dict(probe.headers)
        if token is not None:
            headers["Authorization"] = "Bearer " + token.access_token.get_secret_value()
        limit = self.state.provider.max_response_bytes
        started = time.perf_counter()
        try:
            async with asyncio.timeout(probe.timeout):
                async with self._client.stream(
                    probe.method,
                    probe.url,
                    headers=headers,
                    content=probe.body.encode() if probe.body is not None else None,
                    timeout=probe.timeout,
                    follow_redirects=False,
                ) as response:
                    body = await read_capped(response, limit)
        except Exception as exc:
            return Outcome(0, classify_exception(exc), time.perf_counter() - started)
        duration = time.perf_counter() - started
        status = response.status_code
        if status in probe.expect_status:
            return Outcome(status, None, duration)
        # An oversized error body is still classified by its header and status.
        return Outcome(status, classify_response(status, response.headers, body or b"", "probe"),
                       duration)

    def _count_sent(self, outcome: Outcome) -> None:
        self.probe_state.attempts += 1
        self.probe_state.duration.observe(outcome.duration)

    def _record(self, outcome: Outcome) -> None:
        ps = self.probe_state
        now = self._clock()
        ps.last_run = now
        ps.status = outcome.status
        ps.success = outcome.error is None
        ps.last_error = outcome.error
        ps.consecutive_failures = 0 if outcome.error is None else ps.consecutive_failures + 1
        if outcome.error is ErrorClass.NO_TOKEN:
            ps.failures[outcome.error] += 1
            return  # nothing was sent: no attempt, no latency
        self._count_sent(outcome)
        if outcome.error is None:
            ps.last_success = now
        else:
            ps.failures[outcome.error] += 1
            log.debug("probe %s: failed with %s (HTTP %d)", self.label, outcome.error,
                      outcome.status)
