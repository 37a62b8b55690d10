"""Keeping one token per credential fresh: the renewal loop and its policy.

``TokenManager.run`` is one long-lived task per credential. It sleeps until the
planned time, asks for a token, plans the next time, and goes round again, for
as long as the credential is configured. It is the only place that sends token
requests, so at every moment a credential has exactly one renewal either
running or planned in the future (``exporter.scheduler.Watchdog`` checks that
from outside). Policy:

* success: renew when ``renew_at_fraction`` of the lifetime has passed, up to
  ``renew_jitter`` of the lifetime earlier, at random, so credentials that
  started together drift apart;
* failure: exponential backoff with full jitter, ``uniform(0, min(cap,
  initial * 2**(n-1)))``, never sooner than the server's ``Retry-After``;
* every request first takes a slot from the token host's rate limiter.

Probes do not send token requests; when the API refuses a token they tell the
manager (``token_refused``), which may wake the loop early, within a budget:

* a refused token may bring forward one renewal per scheduled cycle, and only
  while the token endpoint is healthy (a probe never cuts a backoff short);
* if that fresh token is refused too before any probe succeeded with it, the
  API refuses fresh tokens (``ProviderState.refused_fresh``): no probe brings
  another renewal forward until the next scheduled one, so an API that refuses
  every token costs at most one extra token request per token lifetime, however
  often and however many probes run. At one-active-token providers each
  needless request would revoke the token production is using; at per-IP
  limited hosts it would spend the budget production shares.

Nothing escapes the loop but its own cancellation: a failure is counted, logged
and planned around; a bug of ours is logged and planned around the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import httpx

from exporter.discovery import MetadataCache
from exporter.endpoints import obtain_token
from exporter.errors import ErrorClass
from exporter.logsetup import log_for
from exporter.ratelimit import HostLimiter
from exporter.scheduler import sleep_until
from exporter.state import ProviderState
from exporter.tokens import Token, TokenError

log = logging.getLogger("exporter.renewal")

#: Renewals a refused token may bring forward per scheduled cycle.
REFUSAL_BUDGET = 1
#: The plan used when planning itself failed (a bug): soon, but never a busy loop.
FALLBACK_DELAY = 5.0


class TokenManager:
    def __init__(
        self,
        state: ProviderState,
        client: httpx.AsyncClient,
        limiter: HostLimiter,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_token: Callable[[str], None] | None = None,
        discovery: MetadataCache | None = None,
    ) -> None:
        self.state = state
        #: Issuer metadata (providers with an ``issuer``); the exporter shares one.
        self.discovery = discovery or MetadataCache(clock=clock)
        self._log = log_for(log, state.provider.name)
        self._on_token = on_token
        self._client = client
        self._limiter = limiter
        self._clock = clock
        self._rng = rng or random.Random()
        self._retry_after: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempt: asyncio.Task[None] | None = None
        #: Wall-clock time the current request was sent (after the rate limiter).
        self._sending_since: float | None = None
        #: Attempts finished, whatever their outcome; waiters count on it.
        self._finished = 0
        self._finished_event = asyncio.Event()
        self._first_done = asyncio.Event()
        #: Renewals brought forward by refused tokens since the last scheduled one.
        self._refusal_renewals = 0
        #: A refused token asked for the next attempt to come early.
        self._refusal_wake = False
        #: The held token came from a renewal a refused token brought forward.
        self._token_from_refusal = False

    @property
    def name(self) -> str:
        return self.state.provider.name

    # -- the loop -------------------------------------------------------------------------

    def start(self, first_at: float | None = None) -> None:
        """Start the loop: first at ``first_at``, else when the held token says."""
        self.state.next_renewal = first_at if first_at is not None else self._safe_next_run()
        self._task = asyncio.create_task(self.run(), name=f"renew:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """The credential's renewal loop; ends only when cancelled."""
        while True:
            when = self.state.next_renewal
            if when is None:
                when = self.state.next_renewal = self._safe_next_run()
            await sleep_until(self._clock, when, self._wake)
            self._wake.clear()
            await self.attempt()
            self.plan_next()

    async def attempt(self) -> None:
        """One token request, as a task of its own so that it can be cancelled alone.

        Cancelling the attempt (the watchdog does, for one stuck past its
        deadline) counts as a failure and the loop goes on; cancelling the loop
        (shutdown, the credential removed) cancels the attempt with it.
        """
        self.state.renewing = True
        by_refusal, self._refusal_wake = self._refusal_wake, False
        self._attempt = asyncio.create_task(self._refresh(by_refusal), name=f"token:{self.name}")
        try:
            await self._attempt
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            self._failed(TokenError(ErrorClass.OTHER, "token request cancelled"))
        except Exception:  # a bug of ours must not stop the schedule
            self._log.exception("unexpected error during renewal")
            self._failed(TokenError(ErrorClass.OTHER, "unexpected error"))
        finally:
            self._attempt = None
            self._sending_since = None
            self.state.renewing = False
            self._finished += 1
            self._first_done.set()
            event, self._finished_event = self._finished_event, asyncio.Event()
            event.set()

    def plan_next(self) -> None:
        self.state.next_renewal = self._safe_next_run()

    def _safe_next_run(self) -> float:
        try:
            return self.next_run()
        except Exception:
            self._log.exception("could not plan the next renewal")
            return self._clock() + FALLBACK_DELAY

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
        if token is None:  # not reachable after a request; the first plan of a new loop
            return now
        fraction = provider.renew_at_fraction - self._rng.uniform(0.0, provider.renew_jitter)
        return max(token.issued_at + token.lifetime * max(fraction, 0.05), now)

    # -- what probes and the exporter ask of it --------------------------------------------

    async def first_attempt(self) -> None:
        """Return once the credential's first token request has come back."""
        await self._first_done.wait()

    def adopt(self, token: Token) -> None:
        """Take over a token obtained earlier (config reload kept this credential)."""
        self.state.token = token
        self.state.last_success = token.issued_at
        self._first_done.set()

    async def renew_now(self) -> None:
        """Bring a renewal forward to now and wait for its answer (tests, debugging)."""
        target = self._finished + (2 if self.state.renewing else 1)
        self._wake.set()
        await self._wait_finished(target)

    async def wait_while_renewing(self) -> None:
        """Return once no renewal of this credential is in flight."""
        if self.state.renewing:
            await self._wait_finished(self._finished + 1)

    async def token_refused(self, token: Token, probe: str) -> Token | None:
        """The API refused ``token``. Returns a fresh token to retry with, or None.

        Never sends a token request itself: it may wake the loop early, within
        the budget the module docstring describes, and wait for its answer.
        """
        state = self.state
        if state.token is not token:
            return state.valid_token(self._clock())
        state.token_rejected = True
        if state.renewing:
            # A renewal is already on its way (scheduled, or for another probe).
            await self._wait_finished(self._finished + 1)
            return self._fresh_instead_of(token)
        if state.consecutive_failures:
            return None  # the token endpoint is failing: its backoff stands
        if self._refusal_renewals >= REFUSAL_BUDGET:
            if self._token_from_refusal and not state.token_accepted and not state.refused_fresh:
                state.refused_fresh = True
                self._log.warning(
                    "the API refused a fresh token too; it refuses this credential's "
                    "tokens, so no probe asks for another before the scheduled renewal",
                    extra={"probe": probe},
                )
            return None
        self._refusal_renewals += 1
        target = self._finished + 1
        self._refusal_wake = True
        self._wake.set()
        await self._wait_finished(target)
        return self._fresh_instead_of(token)

    def token_accepted(self, token: Token) -> None:
        """A probe succeeded with ``token``: the API takes it."""
        state = self.state
        if state.token is token:
            state.token_rejected = False
            state.token_accepted = True
            state.refused_fresh = False

    def _fresh_instead_of(self, token: Token) -> Token | None:
        fresh = self.state.valid_token(self._clock())
        return fresh if fresh is not None and fresh is not token else None

    async def _wait_finished(self, target: int) -> None:
        while self._finished < target:
            await self._finished_event.wait()

    # -- the watchdog's view ----------------------------------------------------------------

    def stalled(self, now: float, grace: float) -> str | None:
        task = self._task
        if task is None:
            return "no renewal task"
        if task.done():
            return "the renewal task ended"
        if self.state.renewing:
            since = self._sending_since
            deadline = self.state.provider.timeout + grace
            if since is not None and now - since > deadline:
                return f"a token request has run for {now - since:.0f}s"
            return None
        planned = self.state.next_renewal
        if planned is None:
            return "no renewal planned"
        if planned < now - grace:
            return f"planned {now - planned:.0f}s ago and not started"
        return None

    def restart(self) -> None:
        task = self._task
        if task is None or task.done():
            self.state.renewing = False
            self.state.next_renewal = self._clock()
            self._task = asyncio.create_task(self.run(), name=f"renew:{self.name}")
        elif self._attempt is not None and not self._attempt.done():
            self._attempt.cancel()
        else:
            self.state.next_renewal = self._clock()
            self._wake.set()

    # -- one token request --------------------------------------------------------------------

    async def _refresh(self, by_refusal: bool = False) -> None:
        provider = self.state.provider
        wait = self._limiter.wait_time(provider.token_host, provider.token_rate_limit)
        if wait > 0:
            # Waiting for the host's budget: say when it will go, not a time long past.
            self.state.next_renewal = self._clock() + wait
        token: Token | None = None
        error: TokenError | None = None
        async with self._limiter.slot(provider.token_host, provider.token_rate_limit):
            self.state.attempts += 1
            self._sending_since = self._clock()
            started = time.perf_counter()
            try:
                token = await obtain_token(self._client, self.state, self._clock,
                                           self.discovery)
            except TokenError as exc:
                error = exc
        self.state.completed += 1
        self.state.duration.observe(time.perf_counter() - started)
        if error is not None:
            self._failed(error)
            return
        assert token is not None
        if self._on_token is not None:
            self._on_token(token.access_token.get_secret_value())
        state = self.state
        previous_failures = state.consecutive_failures
        state.token = token
        state.token_rejected = False
        state.token_accepted = False
        state.consecutive_failures = 0
        state.last_error = None
        state.last_success = token.issued_at
        self._retry_after = None
        self._token_from_refusal = by_refusal
        if not by_refusal:
            # A scheduled renewal: the refusal budget starts afresh with its token.
            self._refusal_renewals = 0
            state.refused_fresh = False
        level = logging.INFO if previous_failures else logging.DEBUG
        self._log.log(
            level,
            "token obtained, lifetime %.0fs (from %s)%s",
            token.lifetime,
            token.lifetime_source,
            f" after {previous_failures} failure(s)" if previous_failures else "",
        )

    def _failed(self, exc: TokenError) -> None:
        state = self.state
        previous = state.last_error
        state.failures[exc.error] += 1
        state.consecutive_failures += 1
        state.last_error = exc.error
        self._retry_after = exc.retry_after
        if exc.retry_after and state.provider.token_rate_limit is not None:
            # Where the budget is per IP (a host with a known limit), the wait
            # applies to every credential on the host; elsewhere only to this one.
            self._limiter.close_until(state.provider.token_host, exc.retry_after)
        # A long run of the same failure logs at doubling counts (1, 2, 4, ...),
        # not at every retry: the metrics carry each one.
        n = state.consecutive_failures
        changed = previous is not exc.error
        level = logging.WARNING if changed or n & (n - 1) == 0 else logging.DEBUG
        self._log.log(
            level,
            "token request failed (%s, %d in a row): %s",
            exc.error,
            n,
            exc.detail,
        )
