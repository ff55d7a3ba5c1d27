"""getMe, getUpdates, the webhook methods and the bot's command list."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleet.emulator.bots import EmulatedBot, WebhookConfig
from fleet.emulator.errors import WEBHOOK_CONFLICT, ApiError, bad_request
from fleet.emulator.params import Params

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")


class RawJson(bytes):
    """A result already encoded as JSON (updates are encoded once, when created)."""


async def get_me(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    return bot.get_me()


async def get_updates(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    if bot.webhook is not None:
        raise ApiError(409, WEBHOOK_CONFLICT)
    offset = p.integer("offset") or 0
    limit = p.integer("limit")
    limit = 100 if limit is None else min(max(limit, 1), 100)
    timeout = p.integer("timeout") or 0
    timeout = min(max(timeout, 0), int(emu.settings.max_long_poll))
    allowed = p.string_list("allowed_updates")
    if allowed is not None:
        bot.queue.set_allowed(allowed)
    if offset:
        bot.queue.confirm(offset)
        emu.changed()
    poll = bot.queue.begin_poll()
    try:
        entries = bot.queue.peek(limit)
        if not entries and timeout > 0:
            emu.changed()  # someone may wait for "the bot is polling"
            await asyncio.wait({poll}, timeout=timeout)
            if poll.done() and not poll.cancelled() and poll.exception() is not None:
                raise poll.exception()  # type: ignore[misc]
            entries = bot.queue.peek(limit)
    finally:
        bot.queue.end_poll(poll)
    bot.fetched([e.update_id for e in entries], [e.chat_id for e in entries])
    return RawJson(b"[" + b",".join(e.encoded for e in entries) + b"]")


async def set_webhook(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    url = p.string("url") or ""
    drop = p.boolean("drop_pending_updates")
    if not url:
        await emu.stop_webhook(bot, drop_pending=drop)
        return True
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("bad webhook: invalid webhook URL specified")
    secret = p.string("secret_token")
    if secret is not None and secret != "" and not _SECRET_RE.match(secret):
        raise bad_request("bad webhook: secret token contains unallowed characters")
    connections = p.integer("max_connections")
    connections = 40 if connections is None else min(max(connections, 1), 100)
    allowed = p.string_list("allowed_updates")
    p.string("ip_address")
    config = WebhookConfig(
        url=url,
        secret_token=secret or None,
        max_connections=connections,
        allowed_updates=allowed,
    )
    await emu.start_webhook(bot, config, drop_pending=drop)
    return True


async def delete_webhook(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    await emu.stop_webhook(bot, drop_pending=p.boolean("drop_pending_updates"))
    return True


async def get_webhook_info(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    info: dict[str, Any] = {
        "url": bot.webhook.url if bot.webhook else "",
        "has_custom_certificate": False,
        "pending_update_count": len(bot.queue),
    }
    if bot.webhook is not None:
        info["max_connections"] = bot.webhook.max_connections
        if bot.webhook.allowed_updates is not None:
            info["allowed_updates"] = sorted(bot.queue.allowed)
        if bot.webhook.last_error_date is not None:
            info["last_error_date"] = bot.webhook.last_error_date
            info["last_error_message"] = bot.webhook.last_error_message
    return info


async def set_my_commands(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    commands = p.array("commands")
    if commands is None:
        raise bad_request('parameter "commands" is required')
    if len(commands) > 100:
        raise bad_request("too many commands")
    for item in commands:
        if not isinstance(item, dict) or not _COMMAND_RE.match(str(item.get("command", ""))):
            raise bad_request("BOT_COMMAND_INVALID")
        description = item.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    p.obj("scope")
    p.string("language_code")
    bot.commands = [
        {"command": item["command"], "description": item["description"]} for item in commands
    ]
    return True


async def get_my_commands(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    return bot.commands


async def delete_my_commands(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    bot.commands = []
    return True


METHODS = {
    "getme": get_me,
    "getupdates": get_updates,
    "setwebhook": set_webhook,
    "deletewebhook": delete_webhook,
    "getwebhookinfo": get_webhook_info,
    "setmycommands": set_my_commands,
    "getmycommands": get_my_commands,
    "deletemycommands": delete_my_commands,
}
