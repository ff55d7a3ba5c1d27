"""sendMessage, the media sends, sendMediaGroup and sendChatAction."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from fleet.emulator.bots import EmulatedBot
from fleet.emulator.errors import bad_request
from fleet.emulator.methods.content import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    formatted_text,
    input_file,
    reply_markup,
    with_text,
)
from fleet.emulator.params import Params

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator

_MEDIA = ("photo", "video", "audio", "document")
_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)


async def send_message(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.writable_chat(bot, p.chat_id())
    text, entities = formatted_text(p, "text", "entities", required=True, limit=TEXT_LIMIT)
    markup = reply_markup(p)
    emu.flood.check(bot.id, chat.id, chat.type != "private")
    content: dict[str, Any] = {}
    with_text(content, "text", text, entities)
    if markup is not None:
        content["reply_markup"] = markup
    message = emu.new_message(bot, chat, bot.user, content)
    return emu.sent(bot, message, "sendMessage", text=text)


def _media_sender(kind: str) -> Any:
    method = "send" + kind.title()

    async def send_media(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
        chat = emu.writable_chat(bot, p.chat_id())
        caption, entities = formatted_text(
            p, "caption", "caption_entities", required=False, limit=CAPTION_LIMIT
        )
        markup = reply_markup(p)
        file = input_file(emu, p, kind, kind)
        emu.flood.check(bot.id, chat.id, chat.type != "private")
        content: dict[str, Any] = {kind: file}
        with_text(content, "caption", caption, entities)
        if markup is not None:
            content["reply_markup"] = markup
        message = emu.new_message(bot, chat, bot.user, content)
        return emu.sent(bot, message, method, text=caption, media=kind)

    send_media.__name__ = f"send_{kind}"
    return send_media


async def send_media_group(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.writable_chat(bot, p.chat_id())
    items = p.array("media")
    if items is None:
        raise bad_request('parameter "media" is required')
    if not 2 <= len(items) <= 10:
        raise bad_request("media group must include 2-10 items")
    kinds = set()
    prepared: list[tuple[str, Any, str | None, list[Any]]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") not in _MEDIA:
            raise bad_request(f"can't parse InputMedia at position {index}: unsupported type")
        kind = str(item["type"])
        kinds.add(kind)
        caption_params = Params(
            {k: item.get(k) for k in ("caption", "parse_mode", "caption_entities")}
        )
        caption, entities = formatted_text(
            caption_params, "caption", "caption_entities", required=False, limit=CAPTION_LIMIT
        )
        file = input_file(emu, p, f"media[{index}].media", kind, item.get("media"))
        prepared.append((kind, file, caption, entities))
    if len(kinds) > 1 and kinds & {"audio", "document"}:
        raise bad_request("audio and document can be grouped only with the same type")
    emu.flood.check(bot.id, chat.id, chat.type != "private", count=len(prepared))
    group_id = str(secrets.randbits(62))
    messages = []
    for kind, file, caption, entities in prepared:
        content: dict[str, Any] = {kind: file, "media_group_id": group_id}
        with_text(content, "caption", caption, entities)
        message = emu.new_message(bot, chat, bot.user, content)
        messages.append(emu.sent(bot, message, "sendMediaGroup", text=caption, media=kind))
    return messages


async def send_chat_action(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    emu.writable_chat(bot, p.chat_id())
    action = p.need_string("action", empty='parameter "action" is required')
    if action not in _ACTIONS:
        raise bad_request("wrong parameter action in request")
    return True


METHODS = {
    "sendmessage": send_message,
    "sendphoto": _media_sender("photo"),
    "sendvideo": _media_sender("video"),
    "sendaudio": _media_sender("audio"),
    "senddocument": _media_sender("document"),
    "sendmediagroup": send_media_group,
    "sendchataction": send_chat_action,
}
