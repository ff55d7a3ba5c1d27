"""Nothing stalls the fleet: a paused bot, an update that keeps failing, Redis away, a stop
during a back-off, a restart after a hard stop. Each test names what broke before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, FleetConfig, RedisConfig
from fleet.emulator import EmulatorServer, FaultPlan, TelegramEmulator, User
from fleet.ownership import StaticOwnership
from fleet.supervisor import Supervisor
from storage.services import DeadLetters
from tests.e2e.conftest import (
    FleetHandle,
    StartFleet,
    fleet_dict,
    metric,
    token_for,
    welcomes,
    write_config,
)
from tests.faultproxy import FaultProxy

A, B = token_for(0), token_for(1)


async def until(predicate: Callable[[], object], within: float, every: float = 0.05) -> None:
    """Poll ``predicate`` until it holds (for state that signals no change: metrics, DB)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - metrics and counters signal nothing
            await asyncio.sleep(every)  # polling interval of a deadline-bounded condition wait


def polls(emulator: TelegramEmulator) -> int:
    return int(emulator.counters()["requests"].get("getupdates", 0))


def pending(emulator: TelegramEmulator) -> int:
    return int(emulator.counters()["updates_pending"])


def redis_errors(supervisor: Supervisor, bot: int) -> float:
    return metric(supervisor, "botfleet_poll_errors_total", bot=f"bot-{bot:03d}", kind="redis")


def starts(emulator: TelegramEmulator, token: str, users: Iterable[User]) -> None:
    for user in users:
        emulator.user_sends(token, user, "/start")


def failing_chat(user: User) -> FaultPlan:
    """Every sendMessage to this user's chat answers 500/502."""
    return FaultPlan(error_rate=1.0, methods=frozenset({"sendmessage"}), chats=frozenset({user.id}))


def with_send_attempts(data: dict[str, Any], attempts: int) -> dict[str, Any]:
    data["telegram"]["send_attempts"] = attempts  # each try of the update: this many sends
    return data


async def launch(data: dict[str, Any], path: Path, **kwargs: Any) -> FleetHandle:
    """A Supervisor of our own (start_fleet takes no ownership), ready to serve."""
    supervisor = Supervisor(FleetConfig.model_validate(data), config_path=path, **kwargs)
    task = asyncio.create_task(supervisor.run())
    ready = asyncio.create_task(supervisor.wait_ready())
    await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise TimeoutError("fleet did not become ready")
    return FleetHandle(supervisor, task)


async def hard_stop(handle: FleetHandle) -> None:
    handle.task.cancel()
    await asyncio.gather(handle.task, return_exceptions=True)


async def stop(handle: FleetHandle) -> None:
    """Clean-up: a graceful stop, bounded; a fleet that will not stop is cancelled."""
    handle.supervisor.request_stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.gather(handle.task, return_exceptions=True)
    await hard_stop(handle)


# -- 1. a paused bot ------------------------------------------------------------------------


@pytest.mark.parametrize("per_bot", [None, 40], ids=["own-share", "floor-only"])
async def test_a_bot_paused_for_a_minute_does_not_stall_the_others(
    emulator: TelegramEmulator, start_fleet: StartFleet, per_bot: int | None
) -> None:
    """Before: updates waiting out a bot's 429 pause held slots of the one global cap, so
    150 updates to one paused bot filled it and every other bot waited the minute out;
    and a stop waited for those sends."""
    runtime: dict[str, Any] = {"max_concurrent_updates": 40}
    if per_bot is not None:
        runtime["max_updates_per_bot"] = per_bot  # the whole cap: only the floor lets B in
    fleet = await start_fleet(bots=2, **runtime)
    supervisor = fleet.supervisor
    emulator.set_faults(
        FaultPlan.from_json(
            {"storm_seconds": 60, "storm_retry_after": 60, "methods": ["sendMessage"]}
        ),
        A,
    )
    starts(emulator, A, [emulator.add_user(f"a{i}") for i in range(150)])
    held = min(per_bot or 32, 40)  # the default share is 32
    lane = supervisor.runners["bot-000"].lane
    await until(lambda: lane.admitted >= held and emulator.counters()["faults_storms"], 30)

    user = emulator.add_user("b")
    emulator.user_sends(B, user, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, B, user) == 1, 15)  # A: paused 60 s
    assert len(emulator.transcript(A)) == 0  # A really was paused all along
    assert lane.admitted == held  # and it never held more than its share

    supervisor.request_stop()
    deadline = supervisor.config.runtime.shutdown_deadline
    async with asyncio.timeout(deadline + 5):
        await fleet.task  # the paused sends are cancelled, not waited for


# -- 2. an update that keeps failing -------------------------------------------------------


async def test_a_failing_update_backs_off_and_is_dead_lettered_with_its_reason(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Before: an update failing on a passing error was tried again and again without
    end, its bot's poll loop spun meanwhile (hundreds of getUpdates), its other chats
    waited, and the offset never passed it."""
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 1, update_attempts=3)
    fleet = await start_fleet(data=with_send_attempts(data, 2))
    stuck, calm = emulator.add_user("stuck"), emulator.add_user("calm")
    emulator.set_faults(failing_chat(stuck), A)
    before = polls(emulator)
    emulator.user_sends(A, stuck, "/start")
    emulator.user_sends(A, calm, "/start")

    await emulator.wait_for(lambda: welcomes(emulator, A, calm) == 1, 10)
    supervisor = fleet.supervisor
    assert metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="failed") == 0
    assert welcomes(emulator, A, stuck) == 0  # still being retried while calm was served

    letters = DeadLetters(session_factory)
    await until(
        lambda: metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="failed"), 30
    )
    [letter] = await letters.unresolved("bot-000")
    assert letter.error_type == "TelegramUnavailable"
    assert "gave up after 3 attempts" in letter.error
    assert letter.payload["message"]["chat"]["id"] == stuck.id
    assert metric(supervisor, "botfleet_update_retries_total", bot="bot-000") == 2
    await emulator.wait_for(lambda: pending(emulator) == 0, 15)  # the offset passed it
    assert polls(emulator) - before < 30  # a spinning loop makes hundreds


# -- 3. Redis away ------------------------------------------------------------------------


async def test_with_redis_gone_polling_backs_off_and_loses_nothing(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    redis_proxy: FaultProxy,
) -> None:
    """Before: with Redis away every batch failed admission and was fetched again at once:
    about 50 getUpdates a second per bot for as long as Redis was gone.

    The outage outlasts the lease renew deadline (4 s), so it is deterministic: every bot
    stops (its lease cannot be renewed), and resumes under a new epoch once Redis is back.
    """
    emulator = emulator_server.emulator
    bots = (A, B)
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, len(bots))
    data["redis"]["url"] = redis_proxy.url("redis", urlsplit(data["redis"]["url"]).path)
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    early = [emulator.add_user(f"e{i}") for i in range(5)]
    late = [emulator.add_user(f"l{i}") for i in range(5)]
    everyone = [(bot, user) for bot in bots for user in early + late]
    for bot in bots:
        starts(emulator, bot, early)
    await emulator.wait_for(lambda: all(welcomes(emulator, b, u) for b in bots for u in early), 30)
    await emulator.wait_for(lambda: pending(emulator) == 0, 15)
    try:
        redis_proxy.cut()
        before = polls(emulator)
        for bot in bots:
            starts(emulator, bot, late)
        # Every bot's batch fails admission (it backs off and fails again), then its lease
        # lapses (renew deadline 4 s) and it stops: the outage covers the whole back-off.
        await until(lambda: all(redis_errors(supervisor, b) for b in range(len(bots))), 15)
        await supervisor.wait_for(lambda: not supervisor.runners, 15)
        during = polls(emulator) - before
    finally:
        redis_proxy.restore()
    assert during < 8 * len(bots), during  # a few per bot over ~4 s, not ~50 a second
    assert not any(welcomes(emulator, b, u) for b in bots for u in late)

    await emulator.wait_for(lambda: all(welcomes(emulator, b, u) for b, u in everyone), 45)
    await emulator.wait_for(lambda: pending(emulator) == 0, 15)
    assert [welcomes(emulator, b, u) for b, u in everyone] == [1] * len(everyone)
    await fleet.stop()  # while the proxy still stands


# -- 4. a stop during a back-off ------------------------------------------------------------


async def test_stopping_never_waits_out_a_back_off(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Before: a stop drained for the whole grace period (or the deadline) while an update
    slept between tries; now that update is left unconfirmed for the next owner."""
    emulator = emulator_server.emulator
    runtime: dict[str, Any] = {"update_attempts": 50, "shutdown_grace": 30, "shutdown_deadline": 40}
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 1, **runtime)
    fleet = await start_fleet(data=with_send_attempts(data, 2))
    supervisor = fleet.supervisor
    stuck = emulator.add_user("stuck")
    emulator.set_faults(failing_chat(stuck), A)
    emulator.user_sends(A, stuck, "/start")
    await until(lambda: metric(supervisor, "botfleet_update_retries_total", bot="bot-000"), 30)

    supervisor.request_stop()
    async with asyncio.timeout(10):  # the grace is 30 s
        await fleet.task
    assert supervisor.clean_exit
    assert await DeadLetters(session_factory).unresolved("bot-000") == []
    assert pending(emulator) == 1  # unconfirmed at Telegram: the next owner handles it
    assert welcomes(emulator, A, stuck) == 0


# -- 5. a restart after a hard stop, without leases -----------------------------------------

StartStatic = Callable[[], Awaitable[FleetHandle]]


@pytest.fixture
async def start_static(
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    tmp_path: Path,
) -> AsyncIterator[StartStatic]:
    """``await start_static()``: a process with static ownership (epoch 0, no leases) running
    bot A; each call another one on the same database and Redis. All are stopped after."""
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 1, update_attempts=50)
    path = write_config(tmp_path / "config.yaml", with_send_attempts(data, 2))
    emulator_server.emulator.add_bot(A)
    handles: list[FleetHandle] = []

    async def start() -> FleetHandle:
        handles.append(await launch(data, path, ownership=StaticOwnership()))
        return handles[-1]

    yield start
    for handle in handles:
        await stop(handle)


async def restart_mid_send(
    emulator: TelegramEmulator, start_static: StartStatic, user: User
) -> FleetHandle:
    """Hard-stop a process while its welcome's request is at Telegram; start another."""
    emulator.set_faults(FaultPlan(latency=3.0, methods=frozenset({"sendmessage"})))
    first = await start_static()
    emulator.user_sends(A, user, "/start")
    await until(lambda: emulator.counters()["requests"].get("sendmessage"), 20)
    await hard_stop(first)  # the emulator held the request; it is dropped with its client
    emulator.clear_faults()
    return await start_static()


async def test_static_owner_restarted_after_a_hard_stop_retries_a_waiting_update_at_once(
    emulator: TelegramEmulator, start_static: StartStatic
) -> None:
    """Before: without leases every process has epoch 0, and the claim a hard stop left on
    an update in flight read as another runner's for its 120 s lease: the update waited
    that long. Here it waits for its next try (its send failed with 5xx: nothing left)."""
    first = await start_static()
    user = emulator.add_user("w")
    emulator.set_faults(failing_chat(user), A)
    emulator.user_sends(A, user, "/start")
    retries = "botfleet_update_retries_total"
    await until(lambda: metric(first.supervisor, retries, bot="bot-000"), 20)
    await hard_stop(first)
    emulator.clear_faults()

    await start_static()
    await emulator.wait_for(lambda: welcomes(emulator, A, user) and pending(emulator) == 0, 20)
    assert welcomes(emulator, A, user) == 1


async def test_static_owner_restarted_mid_send_handles_the_update_at_once_never_twice(
    emulator: TelegramEmulator, start_static: StartStatic
) -> None:
    """Before: as above, 120 s. The welcome's request had left when the process died, so
    whether Telegram acted is unknown: the restart handles the update at once and does not
    send that reply again (at most once; here the emulator had dropped it, so none)."""
    user = emulator.add_user("s")
    second = await restart_mid_send(emulator, start_static, user)
    await emulator.wait_for(lambda: pending(emulator) == 0, 20)  # handled, and confirmed
    handled = metric(second.supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled")
    assert handled == 1
    assert emulator.counters()["requests"]["sendmessage"] == 1  # the first process's only
    assert welcomes(emulator, A, user) <= 1


async def test_static_owner_restarted_mid_send_knows_the_claim_is_orphaned(
    emulator: TelegramEmulator, start_static: StartStatic
) -> None:
    """The fence's epoch must rise with each acquisition (``BotFence.epoch``); without it a
    restart cannot tell a claim its predecessor left from one in flight now, and an
    at-least-once send would be skipped, not taken over."""
    user = emulator.add_user("o")
    second = await restart_mid_send(emulator, start_static, user)
    await emulator.wait_for(lambda: pending(emulator) == 0, 20)
    sends = {
        result: metric(
            second.supervisor,
            "botfleet_sends_total",
            bot="bot-000",
            method="sendMessage",
            result=result,
        )
        for result in ("skipped", "orphaned")
    }
    assert sends == {"skipped": 0, "orphaned": 1}
