"""A double-tapped or repeated /start within the window produces one welcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject
from redis.asyncio import Redis

from storage.keys import RedisKeys

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class StartDebounceMiddleware(BaseMiddleware):
    def __init__(self, redis: Redis, keys: RedisKeys, window: float) -> None:
        self._redis = redis
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
            if not await self._redis.set(key, b"1", nx=True, px=self._window_ms):
                return "debounced"
        return await handler(event, data)
