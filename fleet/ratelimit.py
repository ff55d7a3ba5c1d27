"""Send rate limits shared by every instance: token buckets in Redis.

Telegram allows about 30 messages/s per bot, 1/s per private chat (short
bursts tolerated) and 20/min per group. Buckets live in Redis, so two
instances sending for the same bot share one budget. One Lua script checks
the bot's 429 pause and every bucket, and takes a token from each only when
all have one: a send never burns the chat budget while the bot bucket is dry.
Time comes from Redis ``TIME``, never from one host's clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from fleet.errors import FleetError
from storage.keys import RedisKeys

ChatKind = Literal["private", "group"]

# KEYS[1] pause key, KEYS[2..] buckets; ARGV: rate, burst per bucket.
# Returns seconds to wait as a string ("0": token taken from every bucket).
_ACQUIRE = """
local pause_ms = redis.call('PTTL', KEYS[1])
if pause_ms > 0 then return tostring(pause_ms / 1000) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, wait = {}, 0
for i = 2, #KEYS do
  local rate, burst = tonumber(ARGV[2*i-3]), tonumber(ARGV[2*i-2])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local have, ts = tonumber(v[1]), tonumber(v[2])
  if have == nil then have, ts = burst, now end
  have = math.min(burst, have + math.max(0, now - ts) * rate)
  tokens[i] = have
  if have < 1 then wait = math.max(wait, (1 - have) / rate) end
end
if wait > 0 then return tostring(wait) end
for i = 2, #KEYS do
  local rate, burst = tonumber(ARGV[2*i-3]), tonumber(ARGV[2*i-2])
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - 1), 'ts', tostring(now))
  -- A full bucket needs no key: expire once it would have refilled.
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
end
return '0'
"""

# Keep the longer of the current and the new pause, atomically (Redis 6 has no PEXPIRE GT).
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Bucket:
    rate: float  # tokens per second
    burst: float  # capacity


@dataclass(frozen=True, slots=True)
class SendLimits:
    bot: Bucket = Bucket(rate=30.0, burst=30.0)
    private_chat: Bucket = Bucket(rate=1.0, burst=3.0)
    group: Bucket = Bucket(rate=20 / 60, burst=20.0)


class RateLimitTimeout(FleetError):
    """No send slot within the caller's deadline."""


class SendRateLimiter:
    def __init__(self, redis: Redis, keys: RedisKeys, limits: SendLimits | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._limits = limits or SendLimits()
        self._script = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)

    async def try_acquire(self, bot_id: str, chat_id: int, kind: ChatKind) -> float:
        """Take a slot if one is free now (0.0); else the seconds to wait, taking nothing."""
        chat_bucket = self._limits.private_chat if kind == "private" else self._limits.group
        keys = [
            self._keys.send_pause(bot_id),
            self._keys.rate(bot_id, "bot"),
            self._keys.rate(bot_id, kind, chat_id),
        ]
        args = [self._limits.bot.rate, self._limits.bot.burst, chat_bucket.rate, chat_bucket.burst]
        return float(await self._script(keys=keys, args=args))

    async def acquire(
        self, bot_id: str, chat_id: int, kind: ChatKind, *, max_wait: float = 60.0
    ) -> float:
        """Wait for a slot; returns the seconds waited. Raises after ``max_wait``."""
        waited = 0.0
        while (wait := await self.try_acquire(bot_id, chat_id, kind)) > 0:
            if waited + wait > max_wait:
                raise RateLimitTimeout(f"bot {bot_id}: no send slot for chat within {max_wait:g} s")
            # Waiting for a rate to refill, not for another task: a timer is right here.
            await asyncio.sleep(wait)
            waited += wait
        return waited

    async def pause(self, bot_id: str, seconds: float) -> None:
        """After a 429: hold every instance's sends for this bot; never shortens a pause."""
        milliseconds = max(1, int(seconds * 1000))
        await self._pause(keys=[self._keys.send_pause(bot_id)], args=[milliseconds])
