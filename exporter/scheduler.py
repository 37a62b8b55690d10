"""A thin layer over APScheduler's asyncio scheduler.

Jobs are plain coroutines owned elsewhere (renewal, probes); this module only
says when they run. Renewals are one-shot jobs that the job itself re-plans
(the next time depends on what the token endpoint answered); probes run on an
interval with jitter. ``max_instances=1`` and ``coalesce`` keep a slow job
from piling up behind itself, and ``misfire_grace_time=None`` makes a job that
is late (a busy loop, a suspended laptop) run anyway rather than be dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

Job = Callable[[], Awaitable[None]]


class Scheduler:
    def __init__(self) -> None:
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        """Start on the running event loop."""
        self._aps.start()

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)

    def run_at(self, job_id: str, when: float, job: Job) -> None:
        """Run ``job`` once at wall-clock time ``when``, replacing any plan under ``job_id``."""
        self._aps.add_job(
            job,
            trigger="date",
            run_date=datetime.fromtimestamp(when, UTC),
            id=job_id,
            replace_existing=True,
        )

    def run_every(self, job_id: str, interval: float, jitter: float, job: Job,
                  first: float) -> None:
        """Run ``job`` every ``interval`` seconds (± ``jitter``), first at ``first``."""
        self._aps.add_job(
            job,
            trigger=IntervalTrigger(seconds=interval, jitter=jitter or None, timezone=UTC),
            next_run_time=datetime.fromtimestamp(first, UTC),
            id=job_id,
            replace_existing=True,
        )

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):
            self._aps.remove_job(job_id)
