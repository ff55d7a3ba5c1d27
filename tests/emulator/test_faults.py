"""Faults set at runtime: latency, 5xx, dropped connections, 429 storms, restarts."""

from __future__ import annotations

import asyncio

import pytest
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError

from fleet.emulator import EmulatorServer, FaultPlan, RateLimits, TelegramEmulator
from tests.emulator.conftest import MakeBot


async def test_latency_delays_every_call(emulator: TelegramEmulator, make_bot: MakeBot) -> None:
    _, bot = await make_bot()
    emulator.set_faults(FaultPlan(latency=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bot.get_me()
    # A lower bound only: the call cannot have been faster than the injected delay.
    assert loop.time() - started >= 0.2


async def test_server_errors_only_for_the_faulty_bot(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    faulty, faulty_bot = await make_bot()
    _, healthy_bot = await make_bot()
    emulator.set_faults(FaultPlan(error_rate=1.0), faulty)
    with pytest.raises(TelegramServerError):
        await faulty_bot.get_me()
    assert (await healthy_bot.get_me()).is_bot
    emulator.clear_faults(faulty)
    assert (await faulty_bot.get_me()).id == faulty.id


async def test_dropped_connection_before_and_after_the_send(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    user = emulator.add_user()
    emulator.user_sends(emulated, user, "/start")
    emulator.set_rate_limits(RateLimits.off())

    emulator.set_faults(FaultPlan(drop_rate=1.0, methods=frozenset({"sendmessage"})))
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(user.id, "lost before")
    assert emulator.transcript(emulated) == []

    emulator.set_faults(FaultPlan(drop_after_rate=1.0, methods=frozenset({"sendmessage"})))
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(user.id, "sent, but the answer was lost")
    # The caller saw an error, yet the user got the message: why sends need a ledger.
    assert [entry.text for entry in emulator.transcript(emulated)] == [
        "sent, but the answer was lost"
    ]
    assert (await bot.get_me()).is_bot  # other methods are untouched


async def test_429_storm_hits_every_method_until_it_ends(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    _, bot = await make_bot()
    emulator.set_faults(FaultPlan.from_json({"storm_seconds": 60, "storm_retry_after": 7}))
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.get_me()
    assert caught.value.retry_after == 7
    emulator.clear_faults()
    assert (await bot.get_me()).is_bot
    assert emulator.counters()["faults_storms"] == 1


async def test_restart_refuses_connections_then_recovers_with_state(
    emulator_server: EmulatorServer, make_bot: MakeBot
) -> None:
    emulator = emulator_server.emulator
    emulated, bot = await make_bot()
    user = emulator.add_user()
    emulator.user_sends(emulated, user, "before")
    (first,) = await bot.get_updates()
    poll = asyncio.create_task(bot.get_updates(offset=first.update_id + 1, timeout=30))
    await emulator.wait_for(lambda: emulated.queue.polling)

    await emulator_server.stop()
    with pytest.raises(TelegramNetworkError):
        await poll  # the open long poll is cut
    with pytest.raises(TelegramNetworkError):
        await bot.get_me()  # connection refused while down

    await emulator_server.start()
    assert (await bot.get_me()).id == emulated.id
    emulator.user_sends(emulated, user, "after")
    updates = await bot.get_updates(timeout=1)
    assert [u.message.text for u in updates if u.message] == ["after"]
