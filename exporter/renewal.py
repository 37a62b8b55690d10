"""Keeping one token per provider fresh: the renewal job and its policy.

``TokenManager.renew`` is the scheduled job. It is a plain coroutine, so tests
drive it without a scheduler; it reports when it wants to run next through the
``schedule`` callback. Policy:

* success: renew when ``renew_at_fraction`` of the lifetime has passed, up to
  ``renew_jitter`` of the lifetime earlier, at random, so credentials that
  started together drift apart;
* failure: exponential backoff with full jitter, ``uniform(0, min(cap,
  initial * 2**(n-1)))``, never sooner than the server's ``Retry-After``;
* every request first takes a slot from the token host's rate limiter;
* a lock per provider means a renewal asked for by a probe (token rejected)
  and a scheduled one never both go out: the second finds the new token.

No exception escapes ``renew``: a failure is counted, logged and rescheduled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import httpx

from exporter.ratelimit import HostLimiter
from exporter.state import ProviderState
from exporter.tokens import Token, TokenError, request_token

log = logging.getLogger("exporter.renewal")


class TokenManager:
    def __init__(
        self,
        state: ProviderState,
        client: httpx.AsyncClient,
        limiter: HostLimiter,
        schedule: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self._on_token = on_token
        self._client = client
        self._limiter = limiter
        self._schedule = schedule
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = asyncio.Lock()
        self._retry_after: float | None = None

    @property
    def provider_name(self) -> str:
        return self.state.provider.name

    async def renew(self) -> None:
        """The scheduled job: obtain a new token, then plan the next run."""
        planned = self.state.next_renewal
        try:
            async with self._lock:
                if self.state.next_renewal != planned:
                    # A probe's renewal ran while we waited and planned anew.
                    return
                await self._refresh()
        except asyncio.CancelledError:
            return  # shutting down: end quietly, plan nothing
        except Exception:  # a bug of ours must not stop the schedule
            log.exception("provider %s: unexpected error during renewal", self.provider_name)
        self.plan_next()

    async def renew_rejected(self, rejected: Token) -> Token | None:
        """Replace a token the API refused; return the token to retry with, if any."""
        async with self._lock:
            if self.state.token is rejected:
                await self._refresh()
                self.plan_next()
        return self.state.valid_token(self._clock())

    async def wait_while_renewing(self) -> None:
        """Return once no renewal of this provider is in flight."""
        if self._lock.locked():
            async with self._lock:
                pass

    def adopt(self, token: Token) -> None:
        """Take over a token obtained earlier (config reload kept this credential)."""
        self.state.token = token
        self.state.last_success = token.issued_at

    async def _refresh(self) -> None:
        provider = self.state.provider
        await self._limiter.acquire(provider.token_host, provider.token_rate_limit)
        self.state.attempts += 1
        started = time.perf_counter()
        try:
            token = await request_token(self._client, provider, self._clock)
        except TokenError as exc:
            self.state.completed += 1
            self.state.duration.observe(time.perf_counter() - started)
            self._failed(exc)
            return
        self.state.completed += 1
        self.state.duration.observe(time.perf_counter() - started)
        if self._on_token is not None:
            self._on_token(token.access_token.get_secret_value())
        previous_failures = self.state.consecutive_failures
        self.state.token = token
        self.state.token_rejected = False
        self.state.consecutive_failures = 0
        self.state.last_error = None
        self.state.last_success = token.issued_at
        self._retry_after = None
        level = logging.INFO if previous_failures else logging.DEBUG
        log.log(
            level,
            "provider %s: token obtained, lifetime %.0fs (from %s)%s",
            provider.name,
            token.lifetime,
            token.lifetime_source,
            f" after {previous_failures} failure(s)" if previous_failures else "",
        )

    def _failed(self, exc: TokenError) -> None:
        state = self.state
        state.failures[exc.error] += 1
        state.consecutive_failures += 1
        state.last_error = exc.error
        self._retry_after = exc.retry_after
        if exc.retry_after and state.provider.token_rate_limit is not None:
            # Where the budget is per IP (a host with a known limit), the wait
            # applies to every credential on the host; elsewhere only to this one.
            self._limiter.close_until(state.provider.token_host, exc.retry_after)
        log.warning(
            "provider %s: token request failed (%s, %d in a row): %s",
            state.provider.name,
            exc.error,
            state.consecutive_failures,
            exc.detail,
        )

    def next_run(self) -> float:
        """When the next renewal should happen, by the policy above."""
        state, provider, now = self.state, self.state.provider, self._clock()
        if state.consecutive_failures:
            ceiling = min(
                provider.backoff_max,
                provider.backoff_initial * 2 ** min(state.consecutive_failures - 1, 62),
            )
            delay = self._rng.uniform(0.0, ceiling)
            if self._retry_after is not None:
                delay = max(delay, self._retry_after)
            return now + delay
        token = state.token
        if token is None:  # only reachable if _refresh itself broke
            return now + provider.backoff_initial
        fraction = provider.renew_at_fraction - self._rng.uniform(0.0, provider.renew_jitter)
        return max(token.issued_at + token.lifetime * max(fraction, 0.05), now)

    def plan_next(self) -> None:
        try:
            when = self.next_run()
            self.state.next_renewal = when
            self._schedule(when)
        except Exception:
            log.exception("provider %s: could not schedule the next renewal", self.provider_name)
