"""editMessageText / Caption / ReplyMarkup, deleteMessage and answerCallbackQuery."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fleet.emulator.bots import EmulatedBot
from fleet.emulator.errors import NOT_MODIFIED, bad_request
from fleet.emulator.methods.content import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    formatted_text,
    reply_markup,
    with_text,
)
from fleet.emulator.params import Params
from fleet.emulator.world import CallbackAnswer, Sent, StoredMessage

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator

_QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"


def _target(emu: TelegramEmulator, bot: EmulatedBot, p: Params, missing: str) -> StoredMessage:
    if p.has("inline_message_id"):
        raise bad_request("MESSAGE_ID_INVALID")
    chat = emu.known_chat(bot, p.chat_id())
    message_id = p.need_integer("message_id", empty="message identifier is not specified")
    stored = bot.find(chat.id, message_id)
    if stored is None:
        raise bad_request(missing)
    if not stored.from_bot:
        raise bad_request("message can't be edited")
    return stored


def _apply(
    emu: TelegramEmulator,
    bot: EmulatedBot,
    stored: StoredMessage,
    changes: dict[str, Any],
    drop: tuple[str, ...],
    method: str,
) -> dict[str, Any]:
    current = stored.data
    after = {k: v for k, v in current.items() if k not in drop and k != "edit_date"}
    after.update(changes)
    before = {k: v for k, v in current.items() if k != "edit_date"}
    if after == before:
        raise bad_request(NOT_MODIFIED)
    after["edit_date"] = int(time.time())
    stored.data = after
    text = after.get("text", after.get("caption"))
    media = next((k for k in ("photo", "video", "audio", "document") if k in after), None)
    return emu.sent(bot, after, method, text=text, media=media)


async def edit_message_text(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    stored = _target(emu, bot, p, "message to edit not found")
    if "text" not in stored.data:
        raise bad_request("there is no text in the message to edit")
    text, entities = formatted_text(p, "text", "entities", required=True, limit=TEXT_LIMIT)
    changes: dict[str, Any] = {}
    with_text(changes, "text", text, entities)
    markup = reply_markup(p)
    if markup is not None:
        changes["reply_markup"] = markup
    return _apply(
        emu, bot, stored, changes, ("text", "entities", "reply_markup"), "editMessageText"
    )


async def edit_message_caption(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    stored = _target(emu, bot, p, "message to edit not found")
    if "text" in stored.data:
        raise bad_request("there is no caption in the message to edit")
    caption, entities = formatted_text(
        p, "caption", "caption_entities", required=False, limit=CAPTION_LIMIT
    )
    changes: dict[str, Any] = {}
    with_text(changes, "caption", caption, entities)
    markup = reply_markup(p)
    if markup is not None:
        changes["reply_markup"] = markup
    drop = ("caption", "caption_entities", "reply_markup")
    return _apply(emu, bot, stored, changes, drop, "editMessageCaption")


async def edit_message_reply_markup(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    stored = _target(emu, bot, p, "message to edit not found")
    markup = reply_markup(p)
    changes = {"reply_markup": markup} if markup is not None else {}
    return _apply(emu, bot, stored, changes, ("reply_markup",), "editMessageReplyMarkup")


async def delete_message(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.known_chat(bot, p.chat_id())
    message_id = p.need_integer("message_id", empty="message identifier is not specified")
    stored = bot.messages.pop((chat.id, message_id), None)
    if stored is None:
        raise bad_request("message to delete not found")
    if not stored.from_bot and chat.type == "private":
        # A bot may delete incoming private messages too; nothing to record in its transcript.
        emu.changed()
        return True
    bot.record(_deleted(bot, chat.id, message_id))
    emu.changed()
    return True


def _deleted(bot: EmulatedBot, chat_id: int, message_id: int) -> Sent:
    return Sent(time.time(), bot.id, chat_id, message_id, "deleteMessage")


async def answer_callback_query(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    query_id = p.need_string("callback_query_id", empty=_QUERY_INVALID)
    text = p.string("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    show_alert = p.boolean("show_alert")
    url = p.string("url")
    p.integer("cache_time", lo=0)
    found = emu.callbacks.get(query_id)
    if found is None or found[0] != bot.id:
        raise bad_request(_QUERY_INVALID)
    _, action, created = found
    if action.answer is not None or time.monotonic() - created > emu.settings.callback_query_ttl:
        raise bad_request(_QUERY_INVALID)
    action.answer = CallbackAnswer(text=text, show_alert=show_alert, url=url)
    emu.changed()
    return True


METHODS = {
    "editmessagetext": edit_message_text,
    "editmessagecaption": edit_message_caption,
    "editmessagereplymarkup": edit_message_reply_markup,
    "deletemessage": delete_message,
    "answercallbackquery": answer_callback_query,
}
