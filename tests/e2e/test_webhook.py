"""Webhook mode: the route's checks, and hand-back to Telegram on stop."""

from __future__ import annotations

import aiohttp

from fleet.emulator import TelegramEmulator
from fleet.webhook import SECRET_HEADER, bot_webhook_secret
from tests.e2e.conftest import WEBHOOK_SECRET, StartFleet, metric, token_for, welcomes


def _secret(bot_id: str) -> str:
    return bot_webhook_secret(WEBHOOK_SECRET.encode(), bot_id)


async def test_route_refuses_forged_and_unknown_requests(
    emulator: TelegramEmulator, start_fleet: StartFleet
) -> None:
    fleet = await start_fleet(bots=2, mode="webhook")
    await emulator.wait_for(lambda: emulator.bot(token_for(0)).webhook is not None, 10)
    hook = emulator.bot(token_for(0)).webhook
    assert hook is not None and hook.url.endswith("/webhook/telegram/bot-000")
    assert hook.secret_token == _secret("bot-000")
    url = f"http://127.0.0.1:{fleet.supervisor.web_port}/webhook/telegram"
    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 1}}}
    cases = [
        ("bot-000", {}, update, 403),  # no secret
        ("bot-000", {SECRET_HEADER: "x" * 64}, update, 403),  # wrong secret
        ("bot-000", {SECRET_HEADER: _secret("bot-001")}, update, 403),  # another bot's
        ("bot-404", {SECRET_HEADER: _secret("bot-404")}, update, 503),  # not served here
        ("bot-000", {SECRET_HEADER: _secret("bot-000")}, b"not json", 400),
        ("bot-000", {SECRET_HEADER: _secret("bot-000")}, {"update_id": "1"}, 400),
    ]
    bodies = []
    async with aiohttp.ClientSession() as http:
        for bot_id, headers, body, status in cases:
            kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
            async with http.post(f"{url}/{bot_id}", headers=headers, **kwargs) as response:
                assert response.status == status, (bot_id, headers, body)
                bodies.append(await response.text())
    assert not any(_secret("bot-000") in body or WEBHOOK_SECRET in body for body in bodies)
    counts = {
        result: metric(fleet.supervisor, "botfleet_webhook_requests_total", result=result)
        for result in ("forbidden", "unknown", "malformed", "accepted")
    }
    assert counts == {"forbidden": 3, "unknown": 1, "malformed": 2, "accepted": 0}
    # The forged requests touched nothing: a real user is still served.
    user = emulator.add_user("w")
    emulator.user_sends(token_for(0), user, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, token_for(0), user) == 1, 30)


async def test_stop_deletes_webhook_and_restart_delivers_what_waited(
    emulator: TelegramEmulator, start_fleet: StartFleet
) -> None:
    fleet = await start_fleet(bots=2, mode="webhook")
    users = [emulator.add_user(f"h{i}") for i in range(5)]
    for user in users:
        emulator.user_sends(token_for(0), user, "/start")
    await emulator.wait_for(lambda: emulator.counters()["sent"] == 5, 30)
    await fleet.stop()
    assert all(emulator.bot(token_for(b)).webhook is None for b in range(2))
    # While nobody serves the bots, Telegram keeps their updates.
    for user in users:
        emulator.user_sends(token_for(1), user, "/start")
    assert emulator.counters()["updates_pending"] == 5
    again = await start_fleet(bots=2, mode="webhook")
    await emulator.wait_for(lambda: emulator.counters()["sent"] == 10, 30)
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 30)
    assert [welcomes(emulator, token_for(b), u) for b in range(2) for u in users] == [1] * 10
    assert metric(again.supervisor, "botfleet_webhook_requests_total", result="accepted") == 5
