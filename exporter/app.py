"""The running exporter: providers' state, their loops, and config reloads.

``Exporter`` owns one ``ProviderState``, one ``TokenManager`` (the renewal
loop) and one ``ProbeRunner`` per probe for each configured provider, and is
the ``StateSource`` the collector and landing page read. A provider's probes
start after its first token request has come back, so a fresh start does not
report ``no_token`` for tokens that are merely still on their way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from exporter.config import Config, Provider
from exporter.discovery import MetadataCache
from exporter.http import ClientPool
from exporter.logsetup import log_for
from exporter.probes import ProbeRunner
from exporter.ratelimit import HostLimiter
from exporter.renewal import TokenManager
from exporter.scheduler import StartPacer, Watchdog
from exporter.state import ProviderState
from exporter.tokens import revoke_token

log = logging.getLogger("exporter.app")

#: First token requests of new providers and first runs of new probes are
#: started at most this many a second, both kinds from one budget (see
#: ``exporter.scheduler.StartPacer``). One budget, not one each: a start with
#: each kind at this rate sent twice as many requests a second while both ran,
#: more than one core sends (2,000 credentials: token requests timed out while
#: probes started; benchmarks/README.md, capacity). Every first token request
#: still goes out within N/250 s, so readiness takes no longer; probes' first
#: runs follow.
STARTS_PER_SECOND = 250.0


@dataclass
class _Running:
    state: ProviderState
    manager: TokenManager
    probes: list[ProbeRunner] = field(default_factory=list)
    #: The probes' tasks (started once the first token request has come back).
    probe_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    starter: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        tasks = [t for t in (self.starter, *self.probe_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.manager.stop()


class Exporter:
    """Every configured credential's renewal loop and probes, and config reloads.

    One ``TokenManager`` task per credential and one ``ProbeRunner`` task per
    probe; a ``Watchdog`` checks that every credential keeps exactly one
    renewal running or planned in the future.
    """

    def __init__(
        self,
        config: Config,
        *,
        client: httpx.AsyncClient | None = None,
        limiter: HostLimiter | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_token: Callable[[str], None] | None = None,
        on_probe_lateness: Callable[[float], None] | None = None,
        watchdog_interval: float = 5.0,
        watchdog_grace: float = 30.0,
    ) -> None:
        self.config = config
        self._on_token = on_token
        self._on_probe_lateness = on_probe_lateness
        self._clients = ClientPool(client)
        self._limiter = limiter or HostLimiter()
        self._clock = clock
        self._rng = rng or random.Random()
        self._running: dict[str, _Running] = {}
        self._states: tuple[ProviderState, ...] | None = None
        #: Issuer metadata, shared by the credentials at one issuer; a reload
        #: empties it, so every issuer's document is read again.
        self._discovery = MetadataCache(clock=clock)
        self._starts = StartPacer(STARTS_PER_SECOND, clock)
        self.watchdog = Watchdog(
            lambda: [r.manager for r in self._running.values()],
            clock,
            interval=watchdog_interval,
            grace=watchdog_grace,
        )
        self._watchdog_task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self.config_reload_ok = True
        self.config_reload_time = clock()

    # -- StateSource -------------------------------------------------------------------

    def provider_states(self) -> Iterable[ProviderState]:
        """The providers' states; the same tuple until a provider is added or removed,
        so that a reader can tell "unchanged" by identity (the renderer asks every
        second per block of 128 providers)."""
        states = self._states
        if states is None:
            states = self._states = tuple(r.state for r in list(self._running.values()))
        return states

    @property
    def renewal_stalls(self) -> int:
        """Renewals the watchdog found stalled and re-planned (it should find none)."""
        return self.watchdog.stalls

    def manager(self, provider: str) -> TokenManager:
        return self._running[provider].manager

    def probe_job(self, provider: str, probe: str) -> Callable[[], Awaitable[None]]:
        """One run of one probe, for running it now (tests, debugging)."""
        running = self._running[provider]
        return next(r.run for r in running.probes if r.probe_state.probe.name == probe)

    def renew_job(self, provider: str) -> Callable[[], Awaitable[None]]:
        """One token request of one provider, for running it now (tests, debugging).

        It goes through the same loop as a scheduled renewal would: the loop is
        woken and this waits for the attempt to come back.
        """
        manager = self._running[provider].manager

        async def renew_now() -> None:
            await manager.renew_now()

        return renew_now

    def ready(self) -> bool:
        """True once every provider has had its first token attempt."""
        return all(r.state.attempted for r in list(self._running.values()))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        for provider in self.config.providers:
            self._add(provider)
        self._watchdog_task = asyncio.create_task(self.watchdog.run(), name="watchdog")
        log.info("monitoring %d provider(s)", len(self.config.providers))

    async def stop(self, revoke_timeout: float = 10.0) -> None:
        """Stop all loops; revoke tokens where configured; close connections."""
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            await asyncio.gather(self._watchdog_task, return_exceptions=True)
        await asyncio.gather(*(r.stop() for r in self._running.values()), *self._stopping,
                             return_exceptions=True)
        revocations = [
            self._revoke(r) for r in self._running.values()
            if r.state.provider.revoke_on_shutdown and r.state.token is not None
        ]
        if revocations:
            try:
                async with asyncio.timeout(revoke_timeout):
                    await asyncio.gather(*revocations)
            except TimeoutError:
                log.warning("token revocation at shutdown did not finish in %ss",
                            revoke_timeout)
        await self._clients.aclose()

    async def _revoke(self, running: _Running) -> None:
        provider, token = running.state.provider, running.state.token
        assert token is not None
        # A revocation counts against the host's per-IP budget like a token request.
        async with self._limiter.slot(provider.token_host, provider.token_rate_limit):
            status = await revoke_token(self._clients.get(provider.outbound), provider, token)
        if status == 200:
            log_for(log, provider.name).info("token revoked at shutdown")
        else:
            log_for(log, provider.name).warning(
                "token revocation at shutdown failed (%s)",
                f"HTTP {status}" if status else "no answer")

    def apply(self, config: Config) -> None:
        """Switch to a new, already validated config.

        A provider whose settings are unchanged keeps everything: its token,
        counters and renewal loop. One whose credential (URL, id, secret, scope,
        params) is unchanged keeps its token, so a reload never costs a token
        request, which matters at rate-limited and one-active-token providers.
        Removed providers' loops stop and their series disappear. Each
        credential still has exactly one renewal loop afterwards: the old loop
        is cancelled (with any request it had in flight) before the new starts.
        """
        self._discovery.invalidate()
        new_names = {p.name for p in config.providers}
        for name in list(self._running):
            if name not in new_names:
                self._remove(name)
        for provider in config.providers:
            current = self._running.get(provider.name)
            if current is not None and current.state.provider == provider:
                continue
            kept = None
            if current is not None:
                if current.state.provider.credential_key == provider.credential_key:
                    kept = current.state
                self._remove(provider.name)
            self._add(provider, kept)
        self.config = config
        self.config_reload_ok = True
        self.config_reload_time = self._clock()

    # -- internals -----------------------------------------------------------------------

    def _add(self, provider: Provider, kept: ProviderState | None = None) -> None:
        name = provider.name
        if provider.outbound.insecure_skip_verify:
            log_for(log, name).warning(
                "TLS certificate verification is DISABLED (tls_config.insecure_skip_verify); "
                "anyone on the path can read its client secret")
        client = self._clients.get(provider.outbound)
        state = ProviderState(provider)
        manager = TokenManager(
            state, client, self._limiter, clock=self._clock, rng=self._rng,
            on_token=self._on_token, discovery=self._discovery,
        )
        running = _Running(state, manager)
        for ps in state.probes.values():
            running.probes.append(
                ProbeRunner(state, ps, manager, client, clock=self._clock, rng=self._rng,
                            on_lateness=self._on_probe_lateness)
            )
        self._running[name] = running
        self._states = None

        if kept is not None and kept.token is not None:
            manager.adopt(kept.token)
            state.token_rejected = kept.token_rejected
            state.discovery_last_success = kept.discovery_last_success
            manager.start()
        else:
            manager.start(first_at=self._starts.take())
        if running.probes:
            running.starter = asyncio.create_task(self._start_probes(running),
                                                  name=f"probes:{name}")

    async def _start_probes(self, running: _Running) -> None:
        """Start a credential's probes once its first token request has come back.

        A provider's probes start together (they share one token, and what one
        of them learns about it is seen by the others); the next provider's
        probes wait for as many start slots as these took.
        """
        await running.manager.first_attempt()
        first = self._starts.take(len(running.probes))

        async def start_at() -> float:
            return first

        for runner in running.probes:
            probe = runner.probe_state.probe
            running.probe_tasks.append(asyncio.create_task(
                runner.run_forever(start_at),
                name=f"probe:{running.state.provider.name}:{probe.name}",
            ))

    def _remove(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        self._states = None
        task = asyncio.ensure_future(running.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
