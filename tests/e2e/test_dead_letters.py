"""Dead letters: what fails for good is stored, replayed on request; what passes is retried."""

from __future__ import annotations

import asyncio
import copy
import sys

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import EmulatorServer, FaultPlan
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

FIXED = "Bem-vindo de volta!"


async def _replay_cli(config_path: str, bot_id: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "dead-letters", "replay", "-c", config_path,
        "--bot", bot_id, "--all",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return await process.wait(), output.decode()


async def test_a_dead_letter_is_replayed_on_request_once_its_cause_is_fixed(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 2, replay_interval=0.2)
    data["funnels"]["broken"] = {"welcome": {"text": "<b>Olá"}, "fallback": {"text": FALLBACK}}
    data["bots"][0]["funnel"] = "broken"  # Telegram refuses it: "can't parse entities"
    fleet = await start_fleet(data=data)
    user = emulator.add_user("Rita")
    emulator.user_sends(token_for(0), user, "/start")
    dead_letters = DeadLetters(session_factory)

    async def stored() -> bool:
        return len(await dead_letters.unresolved("bot-000")) == 1

    await _eventually(stored)
    assert welcomes(emulator, token_for(0), user) == 0

    fixed = copy.deepcopy(data)
    fixed["funnels"]["broken"]["welcome"]["text"] = FIXED
    path = fleet.supervisor.config_path
    assert path is not None
    write_config(path, fixed)
    fleet.supervisor.request_reload()
    await fleet.supervisor.wait_for(
        lambda: (
            "bot-000" in fleet.supervisor.runners
            and fleet.supervisor.runners["bot-000"].funnel.welcome.text == FIXED
            and fleet.supervisor.runners["bot-000"].state == "running"
        )
    )
    code, output = await _replay_cli(str(path), "bot-000")
    assert code == 0, output

    await emulator.wait_for(lambda: welcomes(emulator, token_for(0), user, FIXED) == 1, 30)

    async def resolved() -> bool:
        return not await dead_letters.unresolved("bot-000")

    await _eventually(resolved)
    supervisor = fleet.supervisor
    assert metric(supervisor, "botfleet_dead_letter_replays_total", result="handled") == 1
    # Replayed once: a second mark finds nothing unresolved to replay.
    code, output = await _replay_cli(str(path), "bot-000")
    assert code != 0 and "no" in output.lower()
    assert welcomes(emulator, token_for(0), user, FIXED) == 1


async def test_a_wait_longer_than_the_send_deadline_is_retried_not_dead_lettered(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Before: a RateLimitTimeout (or a Redis timeout) made a permanent dead letter."""
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 1, update_attempts=20)
    data["telegram"]["send_max_wait"] = 1  # the 429 pause below lasts longer
    fleet = await start_fleet(data=data)
    emulator.set_faults(
        FaultPlan.from_json(
            {"storm_seconds": 4, "storm_retry_after": 4, "methods": ["sendMessage"]}
        ),
        token_for(0),
    )
    user = emulator.add_user("Lia")
    emulator.user_sends(token_for(0), user, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, token_for(0), user) == 1, 60)
    assert not await DeadLetters(session_factory).unresolved("bot-000")
    assert metric(fleet.supervisor, "botfleet_update_retries_total", bot="bot-000") >= 1


async def _eventually(check: object, within: float = 30) -> None:
    """Poll a database condition (no event to wait on) until it holds."""
    assert callable(check)
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state lives in PostgreSQL
            await asyncio.sleep(0.1)
