"""APScheduler setup for the periodic jobs (``scheduler.jobs``), started by the supervisor.

Each job runs every ``interval`` seconds and soon after :meth:`Jobs.wake`
asks (a webhook was stored, an event was written): ``linger`` later, so that a
burst is one batch (one claim, one transaction) rather than one round of
queries per webhook. Never two of one job at a time on this instance: a wake
while it runs makes it run again right after (not lost, and not refused by
APScheduler with a warning per wake). Stopping
cancels what runs and waits for it: every job leaves a claimed row to its
lease, which runs out, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from scheduler.jobs import (
    JobContext,
    deliver_outbox,
    fire_timers,
    measure_backlogs,
    process_inbox,
    reconcile_payments,
)

log = logging.getLogger(__name__)

Job = Callable[[JobContext], Awaitable[int]]
JOBS: dict[str, Job] = {
    "payments-inbox": process_inbox,
    "payments-reconcile": reconcile_payments,
    "outbox": deliver_outbox,
    "timers": fire_timers,
    "backlogs": measure_backlogs,
}


class Jobs:
    def __init__(
        self,
        ctx: JobContext,
        interval: float,
        jobs: dict[str, Job] | None = None,
        *,
        linger: float = 0.2,
        intervals: dict[str, float] | None = None,
    ) -> None:
        """``interval``: every job's period; ``intervals``: a job's own (``timers``: the
        resolution of a downsell's delay)."""
        self._ctx = ctx
        self._interval = interval
        self._intervals = intervals or {}
        self._linger = timedelta(seconds=linger)
        self._waking: set[str] = set()  # woken, not started yet
        self._jobs = JOBS if jobs is None else jobs
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()
        self._busy: set[str] = set()  # jobs running now
        self._again: set[str] = set()  # woken while running: run once more right after
        self._stopping = False

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for name, job in self._jobs.items():
            scheduler.add_job(
                self._run,
                "interval",
                args=[name, job],
                id=name,
                seconds=self._intervals.get(name, self._interval),
                next_run_time=datetime.now(UTC),
                max_instances=2,  # the second only marks "again" (see _run)
                coalesce=True,
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler

    def wake(self, name: str) -> None:
        """Run ``name`` within ``linger``, or once more right after the run under way."""
        if name in self._busy:
            self._again.add(name)
            return
        if name in self._waking:  # already due within ``linger``: not put off again
            return
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            job = scheduler.get_job(name)
            if job is not None:
                self._waking.add(name)
                job.modify(next_run_time=datetime.now(UTC) + self._linger)

    async def _run(self, name: str, job: Job) -> None:
        self._waking.discard(name)
        if name in self._busy:  # the interval came round during a run: once more after it
            self._again.add(name)
            return
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        self._busy.add(name)
        try:
            while True:
                self._again.discard(name)
                await job(self._ctx)
                if name not in self._again:
                    break
        except asyncio.CancelledError:
            if self._stopping:  # our own shutdown: the row's lease covers it, nothing to log
                return
            raise
        except Exception as exc:  # a database or gateway away: the next round tries again
            log.warning("job %s failed (%s)", name, exc)
        finally:
            self._busy.discard(name)
            if task is not None:
                self._running.discard(task)

    async def shutdown(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        self._stopping = True
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)  # cancels the running jobs
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
