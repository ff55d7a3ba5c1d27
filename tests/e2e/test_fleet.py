"""Acceptance for the runtime: many bots and users, faults, storms, revoked tokens."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from fleet.emulator import FaultPlan, TelegramEmulator, User
from tests.e2e.conftest import MODES, StartFleet, metric, token_for, welcomes


async def _all_confirmed(emulator: TelegramEmulator, within: float = 60) -> None:
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, within)


@MODES
async def test_fifty_bots_twenty_users_one_welcome_each(
    emulator: TelegramEmulator, start_fleet: StartFleet, mode: str
) -> None:
    fleet = await start_fleet(bots=50, mode=mode)
    users = [emulator.add_user(f"u{i}") for i in range(20)]
    for bot in range(50):
        for user in users:
            emulator.user_sends(token_for(bot), user, "/start ads")
    expected = 50 * 20
    await emulator.wait_for(lambda: emulator.counters()["sent"] >= expected, 90)
    await _all_confirmed(emulator)
    counts = {
        (bot, u.id): welcomes(emulator, token_for(bot), u) for bot in range(50) for u in users
    }
    assert set(counts.values()) == {1}
    handled = sum(
        metric(fleet.supervisor, "botfleet_updates_total", bot=f"bot-{b:03d}", outcome="handled")
        for b in range(50)
    )
    assert handled == expected
    assert emulator.counters()["sent"] == expected
    if mode == "webhook":  # they really came through the route, each accepted once
        accepted = metric(fleet.supervisor, "botfleet_webhook_requests_total", result="accepted")
        assert accepted == expected


@MODES
async def test_faults_lose_nothing_and_duplicate_nothing(
    emulator: TelegramEmulator, start_fleet: StartFleet, mode: str
) -> None:
    fleet = await start_fleet(bots=5, mode=mode)
    emulator.set_faults(
        FaultPlan(
            latency=0.0,
            latency_max=0.03,
            latency_kind="uniform",
            error_rate=0.1,
            drop_rate=0.05,
            drop_after_rate=0.05,
        )
    )
    users = [emulator.add_user(f"f{i}") for i in range(20)]
    for bot in range(5):
        for user in users:
            emulator.user_sends(token_for(bot), user, "/start")
    await _all_confirmed(emulator, 120)
    emulator.clear_faults()
    handled = sum(
        metric(fleet.supervisor, "botfleet_updates_total", bot=f"bot-{b:03d}", outcome="handled")
        for b in range(5)
    )
    assert handled == 100  # every update once: none lost, none twice
    counts = [welcomes(emulator, token_for(b), u) for b in range(5) for u in users]
    assert max(counts) == 1  # never a duplicate welcome
    # Only sends whose answer was lost may be missing (at-most-once when uncertain).
    uncertain = sum(
        metric(
            fleet.supervisor,
            "botfleet_sends_total",
            bot=f"bot-{b:03d}",
            method="sendMessage",
            result="uncertain",
        )
        for b in range(5)
    )
    assert counts.count(0) <= uncertain


async def test_429_storm_delays_sends_and_drops_nothing(
    emulator: TelegramEmulator, start_fleet: StartFleet
) -> None:
    fleet = await start_fleet(bots=2)
    emulator.set_faults(
        FaultPlan.from_json(
            {"storm_seconds": 2, "storm_retry_after": 1, "methods": ["sendMessage"]}
        )
    )
    users = [emulator.add_user(f"s{i}") for i in range(10)]
    for bot in range(2):
        for user in users:
            emulator.user_sends(token_for(bot), user, "/start")
    await emulator.wait_for(lambda: emulator.counters()["sent"] >= 20, 60)
    assert [welcomes(emulator, token_for(b), u) for b in range(2) for u in users] == [1] * 20
    assert emulator.counters()["faults_storms"] > 0
    paused = sum(
        metric(fleet.supervisor, "botfleet_send_retry_after_total", bot=f"bot-{b:03d}")
        for b in range(2)
    )
    assert paused > 0


async def test_revoked_token_stops_one_bot_and_the_others_go_on(
    emulator: TelegramEmulator, start_fleet: StartFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet = await start_fleet(bots=5)
    emulator.revoke_token(token_for(2))
    await emulator.wait_for(lambda: "bot-002" in fleet.supervisor.failed, 30)
    user: User = emulator.add_user("r")
    for bot in (0, 1, 3, 4):
        emulator.user_sends(token_for(bot), user, "/start")
    await emulator.wait_for(
        lambda: all(welcomes(emulator, token_for(b), user) == 1 for b in (0, 1, 3, 4)), 30
    )
    port = fleet.supervisor.web_port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/health") as response:
            assert response.status == 200
            health = await response.json()
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            exposition = await response.text()
    assert "401" in health["bots"]["failed"]["bot-002"]
    assert "bot-002" not in health["bots"]["running"]
    assert len(health["bots"]["running"]) == 4
    assert 'botfleet_poll_errors_total{bot="bot-002",kind="unauthorized"} 1.0' in exposition
    assert token_for(2) not in exposition and token_for(2) not in str(health)
    secret = token_for(2).split(":", 1)[1]
    assert secret not in caplog.text  # nor in any log line, aiogram's and aiohttp's included
