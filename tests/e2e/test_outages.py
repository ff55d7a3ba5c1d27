"""Outages of Redis and PostgreSQL at the worst moments: nothing is handled twice, nothing
dies, nothing is lost. Each test names what broke before."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import EmulatorServer, FaultPlan, TelegramEmulator
from storage.models import Bot, BotUser, Message
from tests.e2e.conftest import (
    StartFleet,
    fleet_dict,
    metric,
    through,
    token_for,
    welcomes,
    write_config,
)
from tests.faultproxy import FaultProxy

A, B = token_for(0), token_for(1)


async def until(predicate: Callable[[], object], within: float, every: float = 0.05) -> None:
    """Poll ``predicate`` until it holds (for state that signals no change: metrics, logs)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - metrics and counters signal nothing
            await asyncio.sleep(every)  # polling interval of a deadline-bounded condition wait


async def rows_until(
    session_factory: async_sessionmaker[AsyncSession],
    predicate: Callable[[set[tuple[Any, ...]]], bool],
    query: Any,
    within: float,
) -> set[tuple[Any, ...]]:
    """Poll the database (directly, not through the proxy) until ``predicate(rows)``."""
    async with asyncio.timeout(within):
        while True:
            async with session_factory() as session:
                rows = {tuple(row) for row in (await session.execute(query)).all()}
            if predicate(rows):
                return rows
            await asyncio.sleep(0.2)  # polling interval of a deadline-bounded condition wait


async def bot_ids(session_factory: async_sessionmaker[AsyncSession]) -> set[str]:
    async with session_factory() as session:
        return set((await session.scalars(select(Bot.id))).all())


def pending(emulator: TelegramEmulator) -> int:
    return int(emulator.counters()["updates_pending"])


def requests(emulator: TelegramEmulator, method: str) -> int:
    return int(emulator.counters()["requests"].get(method, 0))


# -- 1. finishing fails after the send went out ------------------------------------------------


async def test_an_update_whose_completion_failed_is_never_handled_again(
    emulator_server: EmulatorServer,
    redis_proxy: FaultProxy,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: when the done mark failed (Redis away right after the welcome went out), the
    update kept a "busy" claim for 120 s and was then handled again: a second welcome.

    Redis is cut while the welcome is inside Telegram's latency, and restored only once the
    completion has failed. Long leases keep the lease through the cut on any machine.
    """
    caplog.set_level(logging.WARNING, logger="fleet.completion")
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 1)
    data["redis"]["url"] = redis_proxy.url("redis", urlsplit(data["redis"]["url"]).path)
    data["leases"] = {"ttl": 30, "renew_deadline": 20, "retry_period": 0.5, "takeover_grace": 1}
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    emulator.set_faults(FaultPlan(latency=1.5, methods=frozenset({"sendmessage"})), A)
    user = emulator.add_user("Ana")
    emulator.user_sends(A, user, "/start")
    await until(lambda: requests(emulator, "sendmessage") == 1, 15)  # in Telegram's latency
    redis_proxy.cut()
    try:
        await emulator.wait_for(lambda: welcomes(emulator, A, user) == 1, 10)
        await until(lambda: "finished updates not settled yet" in caplog.text, 10)
    finally:
        redis_proxy.restore()
    await emulator.wait_for(lambda: pending(emulator) == 0, 20)  # confirmed: never seen again

    handled = metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled")
    assert handled == 1
    assert welcomes(emulator, A, user) == 1
    assert requests(emulator, "sendmessage") == 1
    assert metric(supervisor, "botfleet_lease_events_total", event="lost") == 0  # as planned
    await fleet.stop()  # while the proxy still stands


# -- 2. PostgreSQL away at start-up and during a reload ----------------------------------------


async def test_the_fleet_starts_and_answers_without_postgres(
    emulator_server: EmulatorServer,
    pg_proxy: FaultProxy,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Before: the fleet refused to start without PostgreSQL (the bot registry was written
    on the way up, unguarded). Now bots answer at once; rows follow once it is back."""
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 2)
    data["database"]["url"] = through(pg_proxy, db_config)
    pg_proxy.cut()
    fleet = await start_fleet(data=data)
    user = emulator.add_user("Bia")
    emulator.user_sends(A, user, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, A, user) == 1, 30)
    assert await bot_ids(session_factory) == set()  # it really was away

    pg_proxy.restore()
    await rows_until(
        session_factory, lambda rows: rows == {("bot-000",), ("bot-001",)}, select(Bot.id), 40
    )
    users = select(BotUser.bot_id, BotUser.telegram_user_id)
    await rows_until(session_factory, lambda rows: ("bot-000", user.id) in rows, users, 20)
    messages = select(Message.bot_id, Message.chat_id, Message.text)
    logged = await rows_until(session_factory, bool, messages, 20)
    assert logged == {("bot-000", user.id, data["funnels"]["main"]["welcome"]["text"])}
    assert not fleet.task.done()
    await fleet.stop()


async def test_a_reload_without_postgres_is_applied_and_the_fleet_lives(
    emulator_server: EmulatorServer,
    pg_proxy: FaultProxy,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Before: a reload with PostgreSQL away crashed the whole instance (the registry sync
    ran unguarded inside the reload)."""
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 1)
    data["database"]["url"] = through(pg_proxy, db_config)
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    await rows_until(session_factory, lambda rows: rows == {("bot-000",)}, select(Bot.id), 20)

    pg_proxy.cut()
    new = copy.deepcopy(data)
    new["bots"].append({"id": "bot-001", "token": B, "funnel": "main"})
    emulator.add_bot(B)
    assert supervisor.config_path is not None
    write_config(supervisor.config_path, new)
    supervisor.request_reload()
    user = emulator.add_user("Caio")
    emulator.user_sends(B, user, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, B, user) == 1, 30)
    assert metric(supervisor, "botfleet_config_reloads_total", result="applied") >= 1
    assert not fleet.task.done()
    assert await bot_ids(session_factory) == {"bot-000"}  # it really was away

    pg_proxy.restore()
    await rows_until(
        session_factory, lambda rows: rows == {("bot-000",), ("bot-001",)}, select(Bot.id), 40
    )
    assert not fleet.task.done()
    await fleet.stop()
