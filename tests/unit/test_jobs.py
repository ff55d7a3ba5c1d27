"""Jobs: a wake while a job runs is not lost (nor refused with a warning); stop cancels."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from scheduler import Jobs


class Blocking:
    """A job whose first run waits for ``release``; counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.changed = asyncio.Condition()

    async def __call__(self, ctx: Any) -> int:
        self.runs += 1
        self.started.set()
        if self.runs == 1:
            await self.release.wait()
        async with self.changed:
            self.changed.notify_all()
        return 0

    async def wait_runs(self, n: int) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: self.runs >= n)


async def test_a_wake_during_a_run_runs_the_job_again_right_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = Blocking()
    jobs = Jobs(ctx=None, interval=3600, jobs={"inbox": job})  # type: ignore[arg-type]
    jobs.start()
    try:
        async with asyncio.timeout(5):
            await job.started.wait()  # the first run, at start
        for _ in range(5):  # webhooks stored while it runs
            jobs.wake("inbox")
        job.release.set()
        await job.wait_runs(2)  # not an hour later
        assert job.runs == 2  # five wakes: one more run
        jobs.wake("inbox")  # idle: at once
        await job.wait_runs(3)
    finally:
        await jobs.shutdown()
    refused = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert refused == []


async def test_shutdown_cancels_a_running_job_quietly(caplog: pytest.LogCaptureFixture) -> None:
    job = Blocking()
    jobs = Jobs(ctx=None, interval=3600, jobs={"outbox": job})  # type: ignore[arg-type]
    jobs.start()
    async with asyncio.timeout(5):
        await job.started.wait()
    async with asyncio.timeout(5):
        await jobs.shutdown()
    assert not job.release.is_set() and job.runs == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
