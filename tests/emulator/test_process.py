"""``botfleet emulator`` as its own process, driven through the control API and aiogram."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from aiogram.exceptions import TelegramUnauthorizedError

from fleet.emulator import EmulatorClient, EmulatorControlError
from tests.emulator.conftest import aiogram_bot

TOKEN = "7400000001:process-token"


async def test_emulator_process_with_control_api() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "emulator", "--port", "0", "--bot", TOKEN,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base_url = line.split()[-1]
        bot = aiogram_bot(base_url, TOKEN)
        async with EmulatorClient(base_url) as control:
            user = await control.add_user(first_name="Rui")
            action = await control.user_sends(bot=TOKEN, user=user["id"], text="/start ig")
            (update,) = await bot.get_updates()
            assert update.message is not None and update.message.text == "/start ig"
            await bot.send_message(user["id"], "bem-vindo")
            replies = await control.replies_to(action_id=action["id"], count=1, within=5)
            assert [r["text"] for r in replies] == ["bem-vindo"]
            counters = await control.counters()
            assert counters["sent"] == 1 and counters["requests"]["sendmessage"] == 1
            with pytest.raises(EmulatorControlError, match="missing field"):
                await control.user_sends(bot=TOKEN)
            await control.revoke_token(bot=TOKEN)
            with pytest.raises(TelegramUnauthorizedError):
                await bot.get_me()
        await bot.session.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
