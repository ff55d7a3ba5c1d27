"""APScheduler setup for the periodic jobs (``scheduler.jobs``), started by the supervisor.

Each job runs every ``interval`` seconds and at once when :meth:`Jobs.wake`
asks (a webhook was stored, an event was written), never two of one job at a
time on this instance. Stopping cancels what runs and waits for it: every job
leaves a claimed row to its lease, which runs out, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from scheduler.jobs import JobContext, deliver_outbox, process_inbox, reconcile_payments

log = logging.getLogger(__name__)

Job = Callable[[JobContext], Awaitable[int]]
JOBS: dict[str, Job] = {
    "payments-inbox": process_inbox,
    "payments-reconcile": reconcile_payments,
    "outbox": deliver_outbox,
}


class Jobs:
    def __init__(self, ctx: JobContext, interval: float) -> None:
        self._ctx = ctx
        self._interval = interval
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()
        self._stopping = False

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for name, job in JOBS.items():
            scheduler.add_job(
                self._run,
                "interval",
                args=[name, job],
                id=name,
                seconds=self._interval,
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler

    def wake(self, name: str) -> None:
        """Run ``name`` now (it runs again after its own result if it is running)."""
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            job = scheduler.get_job(name)
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))

    async def _run(self, name: str, job: Job) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job(self._ctx)
        except asyncio.CancelledError:
            if self._stopping:  # our own shutdown: the row's lease covers it, nothing to log
                return
            raise
        except Exception as exc:  # a database or gateway away: the next round tries again
            log.warning("job %s failed (%s)", name, exc)
        finally:
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
