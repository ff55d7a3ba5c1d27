"""An emulator on a real port per test, and aiogram Bots that talk to it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from fleet.emulator import EmulatedBot, EmulatorServer, EmulatorSettings, TelegramEmulator

MakeBot = Callable[..., Awaitable[tuple[EmulatedBot, Bot]]]


@pytest.fixture
def emulator_settings() -> EmulatorSettings:
    # Small webhook back-off so retry tests finish quickly; limits stay on by default.
    return EmulatorSettings(seed=7, webhook_backoff_initial=0.05, webhook_backoff_max=0.2)


@pytest.fixture
async def emulator_server(emulator_settings: EmulatorSettings) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(settings=emulator_settings) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> TelegramEmulator:
    return emulator_server.emulator


def aiogram_bot(base_url: str, token: str) -> Bot:
    return Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))


@pytest.fixture
async def make_bot(emulator_server: EmulatorServer) -> AsyncIterator[MakeBot]:
    """Register a token in the emulator and return it with an aiogram Bot pointed at it."""
    made: list[Bot] = []
    counter = iter(range(1, 10_000))

    async def make(
        token: str | None = None, username: str | None = None
    ) -> tuple[EmulatedBot, Bot]:
        token = token or f"{7_100_000_000 + next(counter)}:test-token-{len(made)}"
        emulated = emulator_server.emulator.add_bot(token, username=username)
        bot = aiogram_bot(emulator_server.base_url, token)
        made.append(bot)
        return emulated, bot

    yield make
    for bot in made:
        await bot.session.close()
