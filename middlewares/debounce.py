"""A double-tapped or repeated /start within the window produces one welcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject
from redis.asyncio import Redis

from storage.keys import RedisKeys

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# The window belongs to the update that opened it: its own redelivery is not a repeat.
_OPEN_WINDOW = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then return 1 end
return 0
"""


class StartDebounceMiddleware(BaseMiddleware):
    def __init__(self, redis: Redis, keys: RedisKeys, window: float) -> None:
        self._open = redis.register_script(_OPEN_WINDOW)
        self._keys = keys
        self._window_ms = int(window * 1000)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if (
            self._window_ms > 0
            and isinstance(event, Message)
            and event.text is not None
            and (event.text == "/start" or event.text.startswith(("/start ", "/start@")))
        ):
            key = self._keys.debounce(data["bot_id"], event.chat.id, "start")
            update_id = str(data["event_update_id"])
            if not await self._open(keys=[key], args=[update_id, self._window_ms]):
                return "debounced"
        return await handler(event, data)
