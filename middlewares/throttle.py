"""Per-user flood limit (messages and button presses per minute), kept in Redis.

A fixed one-minute window per (bot, user): shared by every instance, and it
survives restarts. Updates over the limit are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, User
from redis.asyncio import Redis

from storage.keys import RedisKeys

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class ThrottleMiddleware(BaseMiddleware):
    def __init__(self, redis: Redis, keys: RedisKeys, per_minute: int) -> None:
        self._keys = keys
        self._limit = per_minute
        self._count = redis.register_script(_COUNT)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None:
            return await handler(event, data)
        count = int(
            await self._count(keys=[self._keys.throttle(data["bot_id"], user.id)], args=[60])
        )
        if count > self._limit:
            return "throttled"
        return await handler(event, data)
