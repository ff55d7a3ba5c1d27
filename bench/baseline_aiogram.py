"""The baseline for bench/throughput.py: plain aiogram ``start_polling(*bots)``.

The same welcome text, sent with ``message.answer``; no dedup, no ordering, no
database. Usage: ``python bench/baseline_aiogram.py API_BASE TOKENS_FILE``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import CommandStart
from aiogram.types import Message

WELCOME = "Bem-vindo! Escolha um plano abaixo."


async def main(api_base: str, tokens: list[str]) -> None:
    # One pool for polls and sends: its default of 100 connections is all taken by the
    # long polls of 100 bots and sends time out; a sane deployment raises it.
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base), limit=len(tokens) + 100)
    bots = [Bot(token, session=session) for token in tokens]
    router = Router()

    @router.message(CommandStart())
    async def welcome(message: Message) -> None:
        await message.answer(WELCOME)

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    await dispatcher.start_polling(*bots, polling_timeout=10, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]).read_text().split()))
