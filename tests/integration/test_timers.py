"""Durable timers against real PostgreSQL: scheduled once per key, fired once across
instances, retried after a failing handler, re-claimed after a dead instance's lease."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.metrics import build_metrics
from fleet.timers import TimerDispatcher
from storage.models import Timer, TimerState
from storage.repositories.timers import NewTimer
from storage.timers import Timers
from tests.integration.test_storage import T0, bot, registered

Sessions = async_sessionmaker[AsyncSession]


def downsell(user: int, due_in: float = 0, key: str | None = None) -> NewTimer:
    return NewTimer(
        "a", user, "downsell", key or f"downsell:d1:{user}", T0 + timedelta(seconds=due_in),
        {"downsell": "d1"},
    )  # fmt: skip


async def states(sessions: Sessions) -> Counter[str]:
    async with sessions() as session:
        return Counter((await session.scalars(select(Timer.state))).all())


@pytest.fixture
async def timers(session_factory: Sessions) -> Timers:
    await registered(session_factory, bot("a", 1))
    return Timers(session_factory)


async def test_a_timer_is_scheduled_once_per_key_and_not_fired_early(
    timers: Timers, session_factory: Sessions
) -> None:
    assert await timers.schedule([downsell(1, 600), downsell(2, 600)]) == 2
    assert await timers.schedule([downsell(1, 600), downsell(1, 60)]) == 0  # same keys
    fired: list[int] = []

    async def handler(timer: Timer) -> str:
        fired.append(timer.telegram_user_id)
        return "sent"

    dispatcher = TimerDispatcher(timers, build_metrics())
    dispatcher.handle("downsell", handler)
    assert await dispatcher.fire_due(T0 + timedelta(seconds=599)) == 0
    assert await dispatcher.fire_due(T0 + timedelta(seconds=600)) == 2
    assert sorted(fired) == [1, 2]
    assert await dispatcher.fire_due(T0 + timedelta(hours=1)) == 0  # once
    assert await states(session_factory) == {"done": 2}


async def test_two_instances_firing_at_once_fire_each_timer_once(
    timers: Timers, session_factory: Sessions
) -> None:
    await timers.schedule([downsell(user) for user in range(200)])
    fired: Counter[str] = Counter()

    async def handler(timer: Timer) -> str:
        fired[timer.key] += 1
        await asyncio.sleep(0)  # let the other instance run in between
        return "sent"

    instances = [TimerDispatcher(timers, build_metrics(), batch=20) for _ in range(2)]
    for instance in instances:
        instance.handle("downsell", handler)

    async def drain(instance: TimerDispatcher) -> int:
        total = 0
        while claimed := await instance.fire_due(T0):
            total += claimed
        return total

    claimed = await asyncio.gather(*(drain(instance) for instance in instances))
    assert sum(claimed) == 200 and all(claimed)  # both worked, nothing twice
    assert len(fired) == 200 and set(fired.values()) == {1}
    assert await states(session_factory) == {"done": 200}


async def test_a_failing_handler_is_retried_then_the_timer_fails(
    timers: Timers, session_factory: Sessions
) -> None:
    await timers.schedule([downsell(1), downsell(2)])
    calls: Counter[int] = Counter()

    async def handler(timer: Timer) -> str:
        calls[timer.telegram_user_id] += 1
        if timer.telegram_user_id == 2 or calls[1] == 1:
            raise RuntimeError("Telegram is away")
        return "sent"

    dispatcher = TimerDispatcher(timers, build_metrics(), attempts=3)
    dispatcher.handle("downsell", handler)
    at = T0
    for _ in range(5):
        await dispatcher.fire_due(at)
        at += timedelta(minutes=1)  # past every back-off
    assert calls == {1: 2, 2: 3}
    assert await states(session_factory) == {"done": 1, "failed": 1}


async def test_a_dead_instances_lease_runs_out_and_a_cancelled_timer_never_fires(
    timers: Timers, session_factory: Sessions
) -> None:
    await timers.schedule([downsell(1), downsell(2)])
    (taken, _) = await timers.claim(T0, timedelta(seconds=60), 10)  # then the instance dies
    assert await timers.cancel("a", 2, ["downsell"]) == 1
    fired: list[int] = []

    async def handler(timer: Timer) -> str:
        fired.append(timer.telegram_user_id)
        return "sent"

    survivor = TimerDispatcher(timers, build_metrics())
    survivor.handle("downsell", handler)
    assert await survivor.fire_due(T0 + timedelta(seconds=30)) == 0  # still leased
    assert await survivor.fire_due(T0 + timedelta(seconds=61)) == 1
    assert fired == [taken.telegram_user_id] == [1]
    assert await states(session_factory) == {TimerState.DONE: 1, TimerState.CANCELLED: 1}
