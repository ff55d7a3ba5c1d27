"""A real aiogram 3 Bot against the emulator over HTTP: the issue's acceptance list."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import (
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from fleet.emulator import EmulatorServer, RateLimits, TelegramEmulator
from tests.emulator.conftest import MakeBot


def shop_router() -> Router:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message, command: CommandObject) -> None:
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Comprar", callback_data="buy:basic")]]
        )
        await message.answer(f"Olá! origem={command.args}", reply_markup=keyboard)

    @router.callback_query(F.data.startswith("buy:"))
    async def buy(query: CallbackQuery) -> None:
        await query.answer("Gerando o Pix…")
        assert query.message is not None
        await query.message.answer(f"Plano {query.data}")

    return router


@contextlib.asynccontextmanager
async def polling(bot: Bot) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher()
    dispatcher.include_router(shop_router())
    task = asyncio.create_task(
        dispatcher.start_polling(
            bot, handle_signals=False, close_bot_session=False, polling_timeout=1
        )
    )
    try:
        yield dispatcher
    finally:
        await dispatcher.stop_polling()
        await asyncio.wait_for(task, 10)


async def test_get_me(make_bot: MakeBot) -> None:
    emulated, bot = await make_bot(username="loja_bot")
    me = await bot.get_me()
    assert me.id == emulated.id
    assert me.is_bot and me.username == "loja_bot"


async def test_start_reaches_a_polling_bot_and_the_reply_is_in_the_transcript(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    user = emulator.add_user("Ana")
    async with polling(bot):
        action = emulator.user_sends(emulated, user, "/start ads_tiktok")
        replies = await emulator.wait_for_replies(action)
    assert replies[0].text == "Olá! origem=ads_tiktok"
    assert replies[0].chat_id == user.id
    assert [entry.message_id for entry in emulator.transcript(emulated, user)] == [
        replies[0].message_id
    ]


async def test_inline_button_round_trip_with_answer_callback_query(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    user = emulator.add_user("Bia")
    async with polling(bot):
        start = emulator.user_sends(emulated, user, "/start")
        (welcome,) = await emulator.wait_for_replies(start)
        press = emulator.press_button(emulated, user, welcome, data="buy:basic")
        replies = await emulator.wait_for_replies(press)
        await emulator.wait_for(lambda: press.answer)
    assert press.answer is not None and press.answer.text == "Gerando o Pix…"
    assert replies[0].text == "Plano buy:basic"


async def test_media_by_url_upload_file_id_and_album(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    user = emulator.add_user()
    emulator.user_sends(emulated, user, "/start")
    emulator.set_rate_limits(RateLimits.off())

    by_url = await bot.send_photo(user.id, "https://cdn.example.com/plano.jpg", caption="Plano")
    upload = await bot.send_document(
        user.id, BufferedInputFile(b"%PDF-1.4 recibo", filename="recibo.pdf")
    )
    again = await bot.send_document(user.id, upload.document.file_id if upload.document else "")
    album = await bot.send_media_group(
        user.id,
        [
            InputMediaPhoto(media=BufferedInputFile(b"\x89PNG one", "1.png")),
            InputMediaPhoto(media="https://cdn.example.com/2.jpg", caption="dois"),
        ],
    )

    assert by_url.photo and by_url.caption == "Plano"
    assert upload.document and upload.document.file_name == "recibo.pdf"
    assert again.document and again.document.file_unique_id == upload.document.file_unique_id
    assert len(album) == 2 and album[0].media_group_id == album[1].media_group_id
    media = [entry.media for entry in emulator.transcript(emulated, user)]
    assert media == ["photo", "document", "document", "photo", "photo"]


async def test_webhook_delivery_carries_the_secret_and_a_wrong_secret_is_rejected(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    good, good_bot = await make_bot()
    bad, bad_bot = await make_bot()
    dispatcher = Dispatcher()
    dispatcher.include_router(shop_router())
    app = web.Application()
    SimpleRequestHandler(dispatcher, good_bot, secret_token="right-secret").register(
        app, path="/hook/good"
    )
    SimpleRequestHandler(dispatcher, bad_bot, secret_token="right-secret").register(
        app, path="/hook/bad"
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        assert await good_bot.set_webhook(
            f"http://127.0.0.1:{port}/hook/good", secret_token="right-secret"
        )
        assert await bad_bot.set_webhook(
            f"http://127.0.0.1:{port}/hook/bad", secret_token="wrong-secret"
        )
        user = emulator.add_user()
        ok = emulator.user_sends(good, user, "/start webhook")
        rejected = emulator.user_sends(bad, user, "/start webhook")
        (reply,) = await emulator.wait_for_replies(ok)
        assert reply.text == "Olá! origem=webhook"

        def refused() -> bool:
            return bool(bad.webhook and bad.webhook.last_error_message)

        await emulator.wait_for(refused)
        info = await bad_bot.get_webhook_info()
        assert info.pending_update_count == 1
        assert "401" in (info.last_error_message or "")
        assert emulator.replies_to(rejected) == []
        assert (await good_bot.get_webhook_info()).pending_update_count == 0
        with pytest.raises(TelegramConflictError):
            await good_bot.get_updates()
    finally:
        await runner.cleanup()


async def test_second_concurrent_poller_ends_the_first_with_409(
    emulator_server: EmulatorServer, make_bot: MakeBot
) -> None:
    emulated, first = await make_bot()
    _, second = await make_bot(token=emulated.token)
    waiting = asyncio.create_task(first.get_updates(timeout=30))
    await emulator_server.emulator.wait_for(lambda: emulated.queue.polling)
    assert await second.get_updates(timeout=0) == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await waiting


async def test_hundred_messages_in_one_second_get_429_with_retry_after(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    users = [emulator.add_user(f"u{i}") for i in range(100)]
    for user in users:
        emulator.user_sends(emulated, user, "/start")
    results = await asyncio.gather(
        *(bot.send_message(user.id, "promo") for user in users), return_exceptions=True
    )
    limited = [r for r in results if isinstance(r, TelegramRetryAfter)]
    sent = [r for r in results if isinstance(r, Message)]
    assert len(limited) + len(sent) == 100
    assert limited and all(r.retry_after >= 1 for r in limited)
    assert len(sent) < 100
    assert len(emulator.transcript(emulated)) == len(sent)


async def test_revoked_token_gets_401_also_on_a_waiting_poll(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    await bot.get_me()
    waiting = asyncio.create_task(bot.get_updates(timeout=30))
    await emulator.wait_for(lambda: emulated.queue.polling)
    emulator.revoke_token(emulated)
    with pytest.raises(TelegramUnauthorizedError):
        await waiting
    with pytest.raises(TelegramUnauthorizedError):
        await bot.get_me()


async def test_updates_are_redelivered_until_confirmed(
    emulator: TelegramEmulator, make_bot: MakeBot
) -> None:
    emulated, bot = await make_bot()
    user = emulator.add_user()
    for text in ("um", "dois", "três"):
        emulator.user_sends(emulated, user, text)
    first = await bot.get_updates()
    again = await bot.get_updates()
    assert [u.update_id for u in first] == [u.update_id for u in again]
    assert [u.message.text for u in first if u.message] == ["um", "dois", "três"]
    partial = await bot.get_updates(offset=first[1].update_id)
    assert [u.update_id for u in partial] == [u.update_id for u in first[1:]]
    assert await bot.get_updates(offset=first[-1].update_id + 1) == []
    assert (await bot.get_webhook_info()).pending_update_count == 0
