"""Per-user quotas in Redis, shared by every instance (never in process memory).

A hash per bot, action and minute; the field is the user id. One round trip:
``HINCRBY`` then ``EXPIRE`` in a transaction, so the key never outlives two
minutes and a restart forgets nothing that still counts.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from storage.keys import RedisKeys

_KEEP_SECONDS = 120  # the minute being counted and the one before


class UserQuota:
    """At most ``per_minute`` of one action per user and bot in a calendar minute."""

    def __init__(self, redis: Redis, keys: RedisKeys, action: str, per_minute: int) -> None:
        self._redis = redis
        self._keys = keys
        self._action = action
        self._limit = per_minute

    async def take(self, bot_id: str, user_id: int) -> float:
        """0.0 when the user may go on (and it is counted); else seconds until the next
        minute, when they may try again."""
        now = time.time()
        minute = int(now // 60)
        key = self._keys.quota(bot_id, self._action, minute)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, str(user_id), 1)
            pipe.expire(key, _KEEP_SECONDS)
            count, _ = await pipe.execute()
        if int(count) <= self._limit:
            return 0.0
        return max(0.1, (minute + 1) * 60 - now)
