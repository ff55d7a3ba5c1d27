"""The cheaper aiogram middleware chains call the same things, in the same order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import Message, TelegramObject, Update

from fleet.dispatch import cheaper_middleware_chains

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class Record(BaseMiddleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        self.calls.append(f"{self.name}>")
        data[self.name] = True
        result = await handler(event, data)
        self.calls.append(f"<{self.name}")
        return result


def update(text: str) -> Update:
    return Update.model_validate(
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 1,
                "chat": {"id": 5, "type": "private"},
                "from": {"id": 5, "is_bot": False, "first_name": "A"},
                "text": text,
            },
        }
    )


async def run(text: str) -> tuple[list[str], Any]:
    calls: list[str] = []
    dispatcher = Dispatcher(disable_fsm=True, flag="set once")
    dispatcher.update.outer_middleware(Record("update_outer", calls))
    router = Router()
    router.message.outer_middleware(Record("message_outer", calls))
    router.message.middleware(Record("message_inner", calls))
    dispatcher.message.middleware(Record("dispatcher_inner", calls))

    @router.message(F.text == "hi")
    async def hello(message: Message, flag: str, update_outer: bool, message_inner: bool) -> str:
        calls.append(f"handler {flag} {update_outer} {message_inner}")
        return "answered"

    dispatcher.include_router(router)
    bot = Bot("42:" + "a" * 35, session=AiohttpSession())
    try:
        result = await dispatcher.feed_update(bot, update(text))
    finally:
        await bot.session.close()
    return calls, result


async def test_cheaper_chains_keep_every_middleware_its_order_and_the_data() -> None:
    before = await run("hi")  # aiogram's own chains (unless an earlier test installed ours)
    cheaper_middleware_chains()
    cheaper_middleware_chains()  # idempotent
    after = await run("hi")
    expected = [
        "update_outer>",
        "message_outer>",
        "dispatcher_inner>",
        "message_inner>",
        "handler set once True True",
        "<message_inner",
        "<dispatcher_inner",
        "<message_outer",
        "<update_outer",
    ]
    assert after == (expected, "answered")
    assert before == after


async def test_an_update_no_handler_takes_is_unhandled_as_before() -> None:
    cheaper_middleware_chains()
    calls, result = await run("something else")
    assert result is UNHANDLED
    assert calls == ["update_outer>", "message_outer>", "<message_outer", "<update_outer"]
