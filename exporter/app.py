"""The running exporter: providers' state, their jobs, and config reloads.

``Exporter`` owns one ``ProviderState``, one ``TokenManager`` and one
``ProbeRunner`` per probe for each configured provider, wires their jobs into
the scheduler, and is the ``StateSource`` the collector and landing page read.
A provider's probes start after its first token attempt, so a fresh start does
not report ``no_token`` for tokens that are merely still on their way.
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
from exporter.http import ClientPool
from exporter.probes import ProbeRunner
from exporter.ratelimit import HostLimiter
from exporter.renewal import TokenManager
from exporter.scheduler import Scheduler
from exporter.state import ProviderState
from exporter.tokens import revoke_token

log = logging.getLogger("exporter.app")

#: Probes run every interval ± this fraction of it, so probes configured alike spread out.
PROBE_JITTER = 0.1
#: First token requests of new providers, and first runs of new probes, are
#: started at most this many a second (each kind on its own). A few providers
#: start as before; thousands (a start or reload with thousands of credentials)
#: are spread over seconds instead of all firing in the same instant, where
#: their requests queued behind each other until they timed out, and where the
#: probes' later runs, anchored on the first, stayed bunched together
#: (benchmarks/README.md, scheduler_capacity).
STARTS_PER_SECOND = 250.0


@dataclass
class _Running:
    state: ProviderState
    manager: TokenManager
    probes: list[ProbeRunner] = field(default_factory=list)


class Exporter:
    def __init__(
        self,
        config: Config,
        *,
        scheduler: Scheduler | None = None,
        client: httpx.AsyncClient | None = None,
        limiter: HostLimiter | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._on_token = on_token
        self._scheduler = scheduler or Scheduler()
        self._clients = ClientPool(client)
        self._limiter = limiter or HostLimiter()
        self._clock = clock
        self._rng = rng or random.Random()
        self._running: dict[str, _Running] = {}
        # The next free start slot for a first token request and a first probe run.
        self._next_renewal_start = 0.0
        self._next_probe_start = 0.0
        self.config_reload_ok = True
        self.config_reload_time = clock()

    # -- StateSource -------------------------------------------------------------------

    def provider_states(self) -> Iterable[ProviderState]:
        return [r.state for r in list(self._running.values())]

    def probe_job(self, provider: str, probe: str) -> Callable[[], Awaitable[None]]:
        """The scheduled job of one probe, for running it now (tests, debugging)."""
        running = self._running[provider]
        return next(r.run for r in running.probes if r.probe_state.probe.name == probe)

    def renew_job(self, provider: str) -> Callable[[], Awaitable[None]]:
        """The renewal job of one provider, for running it now (tests, debugging)."""
        return self._running[provider].manager.renew

    def ready(self) -> bool:
        """True once every provider has had its first token attempt."""
        return all(r.state.attempted for r in list(self._running.values()))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._scheduler.start()
        for provider in self.config.providers:
            self._add(provider)
        log.info("monitoring %d provider(s)", len(self.config.providers))

    async def stop(self, revoke_timeout: float = 10.0) -> None:
        """Stop all jobs; revoke tokens where configured; close connections."""
        self._scheduler.shutdown()
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
        await self._limiter.acquire(provider.token_host, provider.token_rate_limit)
        status = await revoke_token(self._clients.get(provider.outbound), provider, token)
        if status == 200:
            log.info("provider %s: token revoked at shutdown", provider.name)
        else:
            log.warning("provider %s: token revocation at shutdown failed (%s)",
                        provider.name, f"HTTP {status}" if status else "no answer")

    def apply(self, config: Config) -> None:
        """Switch to a new, already validated config.

        A provider whose settings are unchanged keeps everything: its token,
        counters and schedule. One whose credential (URL, id, secret, scope,
        params) is unchanged keeps its token, so a reload never costs a token
        request, which matters at rate-limited and one-active-token providers.
        Removed providers' jobs stop and their series disappear.
        """
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
            log.warning(
                "provider %s: TLS certificate verification is DISABLED "
                "(tls.insecure_skip_verify); anyone on the path can read its client secret",
                name,
            )
        client = self._clients.get(provider.outbound)
        state = ProviderState(provider)
        renew_id = f"renew:{name}"
        manager = TokenManager(
            state,
            client,
            self._limiter,
            schedule=lambda when: self._scheduler.run_at(renew_id, when, manager.renew),
            clock=self._clock,
            rng=self._rng,
            on_token=self._on_token,
        )
        running = _Running(state, manager)
        for ps in state.probes.values():
            running.probes.append(
                ProbeRunner(state, ps, manager, client, clock=self._clock)
            )
        self._running[name] = running

        if kept is not None and kept.token is not None:
            manager.adopt(kept.token)
            state.token_rejected = kept.token_rejected
            manager.plan_next()
            self._start_probes(running)
            return

        async def first_renewal() -> None:
            await manager.renew()
            if self._running.get(name) is running:
                self._start_probes(running)

        first = max(self._clock(), self._next_renewal_start)
        self._next_renewal_start = first + 1.0 / STARTS_PER_SECOND
        self._scheduler.run_at(renew_id, first, first_renewal)

    def _start_probes(self, running: _Running) -> None:
        # A provider's probes still start together (they share one token, and
        # what one of them learns about it is seen by the others as before);
        # the next provider's probes wait for as many slots as these took.
        first = max(self._clock(), self._next_probe_start)
        self._next_probe_start = first + len(running.probes) / STARTS_PER_SECOND
        for runner in running.probes:
            probe = runner.probe_state.probe
            self._scheduler.run_every(
                f"probe:{running.state.provider.name}:{probe.name}",
                probe.interval,
                probe.interval * PROBE_JITTER,
                runner.run,
                first=first,
            )

    def _remove(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        self._scheduler.remove(f"renew:{name}")
        for runner in running.probes:
            self._scheduler.remove(f"probe:{name}:{runner.probe_state.probe.name}")
