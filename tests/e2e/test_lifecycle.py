"""Reload, hard cancellation, SIGTERM with systemd notify, and bad input."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import EmulatorServer, FaultPlan, TelegramEmulator
from storage.services import DeadLetters
from tests.e2e.conftest import (
    FALLBACK,
    StartFleet,
    fleet_dict,
    metric,
    token_for,
    welcomes,
    write_config,
)


async def test_reload_applies_a_diff_and_refuses_a_broken_file(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
) -> None:
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 3)
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    untouched = supervisor.runners["bot-000"]
    path = supervisor.config_path
    assert path is not None

    new = copy.deepcopy(data)
    new["funnels"]["vip"] = {
        "welcome": {"text": "Bem-vindo ao VIP"},
        "fallback": {"text": FALLBACK},
    }
    new["bots"] = [
        data["bots"][0],
        {**data["bots"][2], "funnel": "vip"},
        {"id": "bot-003", "token": token_for(3), "funnel": "main"},
    ]
    emulator.add_bot(token_for(3))
    write_config(path, new)
    supervisor.request_reload()  # what SIGHUP does; the file watcher would see it too
    await supervisor.wait_for(
        lambda: "bot-003" in supervisor.runners and "bot-001" not in supervisor.runners
    )
    assert supervisor.runners["bot-000"] is untouched

    user = emulator.add_user("Lia")
    for bot in (0, 2, 3):
        emulator.user_sends(token_for(bot), user, "/start")
    await emulator.wait_for(
        lambda: (
            welcomes(emulator, token_for(0), user) == 1
            and welcomes(emulator, token_for(3), user) == 1
            and welcomes(emulator, token_for(2), user, "Bem-vindo ao VIP") == 1
        ),
        30,
    )

    path.write_text("bots: [\n", encoding="utf-8")
    supervisor.request_reload()
    await supervisor.wait_for(
        lambda: metric(supervisor, "botfleet_config_reloads_total", result="rejected") >= 1
    )
    assert set(supervisor.runners) == {"bot-000", "bot-002", "bot-003"}
    other = emulator.add_user("Teo")
    emulator.user_sends(token_for(0), other, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, token_for(0), other) == 1, 30)


async def test_cancelled_mid_batch_then_restarted_handles_each_update_once(
    emulator: TelegramEmulator, start_fleet: StartFleet
) -> None:
    emulator.set_faults(
        FaultPlan(
            latency=0.05,
            latency_max=3.0,
            latency_kind="uniform",
            methods=frozenset({"sendmessage"}),
        )
    )
    first = await start_fleet(bots=1)
    users = [emulator.add_user(f"c{i}") for i in range(20)]
    for user in users:
        emulator.user_sends(token_for(0), user, "/start")
    await emulator.wait_for(lambda: len(emulator.transcript(token_for(0))) >= 3, 30)
    first.task.cancel()  # a hard stop in the middle of the batch
    await asyncio.gather(first.task, return_exceptions=True)
    handled_first = metric(
        first.supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled"
    )
    assert 0 < handled_first < 20

    emulator.clear_faults()
    second = await start_fleet(bots=1)
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 60)
    handled_second = metric(
        second.supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled"
    )
    outcomes = {
        o: metric(second.supervisor, "botfleet_updates_total", bot="bot-000", outcome=o)
        for o in ("handled", "duplicate", "failed", "throttled", "debounced", "malformed")
    }
    assert handled_first + handled_second == 20, (handled_first, outcomes, emulator.counters())
    counts = [welcomes(emulator, token_for(0), user) for user in users]
    assert max(counts) == 1


async def test_malformed_update_and_start_flood_leave_everyone_else_served(
    emulator: TelegramEmulator, start_fleet: StartFleet
) -> None:
    fleet = await start_fleet(bots=2, user_messages_per_minute=5)
    bot = emulator.bot(token_for(0))
    spammer = emulator.add_user("Spam")
    emulator.user_sends(bot, spammer, "/start")
    bot.queue.push("message", spammer.id, {"message_id": "not a number", "chat": "?"})
    for _ in range(30):
        emulator.user_sends(bot, spammer, "/start")
    calm = emulator.add_user("Calma")
    emulator.user_sends(token_for(1), calm, "/start")
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 60)
    assert welcomes(emulator, token_for(0), spammer) == 1  # debounced and throttled
    assert welcomes(emulator, token_for(1), calm) == 1
    supervisor = fleet.supervisor
    assert metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="malformed") == 1
    assert metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="throttled") > 0
    assert metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="debounced") > 0


async def test_sigterm_under_load_exits_zero_and_notifies_systemd(
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    tmp_path: Path,
) -> None:
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 3)
    for bot in data["bots"]:
        emulator.add_bot(bot["token"])
    path = write_config(tmp_path / "config.yaml", data)
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    received: list[str] = []

    async def until_notified(field: str, within: float = 60) -> None:
        async with asyncio.timeout(within):
            while not any(field in message for message in received):
                received.append((await loop.sock_recv(listener, 4096)).decode())

    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    users = [emulator.add_user(f"t{i}") for i in range(30)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "run", "-c", str(path), env=env
    )
    try:
        await until_notified("READY=1")
        await until_notified("WATCHDOG=1")
        for user in users:
            for bot in range(3):
                emulator.user_sends(token_for(bot), user, "/start")
        await emulator.wait_for(lambda: emulator.counters()["sent"] >= 10, 30)
        process.send_signal(signal.SIGTERM)
        await until_notified("STOPPING=1")
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # The next start takes what was left; nothing twice, nothing missing.
    received.clear()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "run", "-c", str(path), env=env
    )
    try:
        await until_notified("READY=1")
        await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 60)
        await emulator.wait_for(lambda: emulator.counters()["sent"] >= 90, 60)
        counts = [welcomes(emulator, token_for(b), u) for b in range(3) for u in users]
        assert counts == [1] * 90
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        listener.close()


async def test_handler_failure_goes_to_dead_letters_and_the_bot_lives_on(
    emulator: TelegramEmulator,
    start_fleet: StartFleet,
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 2)
    data["funnels"]["broken"] = {"welcome": {"text": "<b>Olá"}, "fallback": {"text": FALLBACK}}
    data["bots"][0]["funnel"] = "broken"  # Telegram refuses its welcome: "can't parse entities"
    fleet = await start_fleet(data=data)
    user = emulator.add_user("d")
    emulator.user_sends(token_for(0), user, "/start")
    emulator.user_sends(token_for(0), user, "oi")
    emulator.user_sends(token_for(1), user, "/start")
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 30)
    assert [s.text for s in emulator.transcript(token_for(0), user)] == [FALLBACK]
    assert welcomes(emulator, token_for(1), user) == 1
    [letter] = await DeadLetters(session_factory).unresolved("bot-000")
    assert letter.error_type == "SendFailed" and "can't parse entities" in letter.error
    assert letter.payload["message"]["text"] == "/start"
    supervisor = fleet.supervisor
    assert metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="failed") == 1
    assert metric(supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled") == 1
    assert "bot bot-000: update" in caplog.text and "SendFailed" in caplog.text
