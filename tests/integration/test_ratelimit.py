"""Send buckets in real Redis, shared by every limiter that uses the same keys."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from fleet.ratelimit import Bucket, RateLimitTimeout, SendLimits, SendRateLimiter
from storage.keys import RedisKeys

SLOW = SendLimits(
    bot=Bucket(rate=1.0, burst=5.0),
    private_chat=Bucket(rate=0.5, burst=2.0),
    group=Bucket(rate=0.1, burst=3.0),
)


async def test_private_chat_burst_then_wait(redis: Redis, redis_keys: RedisKeys) -> None:
    limiter = SendRateLimiter(redis, redis_keys, SLOW)
    assert await limiter.try_acquire("b1", 10, "private") == 0
    assert await limiter.try_acquire("b1", 10, "private") == 0
    wait = await limiter.try_acquire("b1", 10, "private")
    assert 0 < wait <= 2.0  # one token at 0.5/s
    # Another chat of the same bot still has its own burst.
    assert await limiter.try_acquire("b1", 11, "private") == 0


async def test_bot_bucket_is_shared_across_limiters_and_chats(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    first = SendRateLimiter(redis, redis_keys, SLOW)
    second = SendRateLimiter(redis, redis_keys, SLOW)  # another instance, same Redis
    taken = 0
    for chat in range(10):
        limiter = first if chat % 2 else second
        if await limiter.try_acquire("b1", chat, "private") == 0:
            taken += 1
    assert taken == 5  # the bot's burst, whoever sends
    # A refused send took nothing from its chat bucket.
    assert await first.try_acquire("b2", 9, "private") == 0


async def test_group_and_other_bots_are_independent(redis: Redis, redis_keys: RedisKeys) -> None:
    limiter = SendRateLimiter(redis, redis_keys, SLOW)
    assert [await limiter.try_acquire("b1", -100, "group") for _ in range(3)] == [0, 0, 0]
    assert await limiter.try_acquire("b1", -100, "group") > 0
    assert await limiter.try_acquire("b2", -100, "group") == 0


async def test_pause_holds_every_send_of_the_bot(redis: Redis, redis_keys: RedisKeys) -> None:
    limiter = SendRateLimiter(redis, redis_keys, SLOW)
    await limiter.pause("b1", 30)
    await limiter.pause("b1", 1)  # a shorter pause never shortens the longer one
    wait = await limiter.try_acquire("b1", 10, "private")
    assert 29 < wait <= 30
    assert await limiter.try_acquire("b2", 10, "private") == 0
    with pytest.raises(RateLimitTimeout, match="bot b1"):
        await limiter.acquire("b1", 10, "private", max_wait=5)


async def test_acquire_waits_for_a_refill(redis: Redis, redis_keys: RedisKeys) -> None:
    fast = SendLimits(bot=Bucket(30, 30), private_chat=Bucket(rate=20.0, burst=1.0))
    limiter = SendRateLimiter(redis, redis_keys, fast)
    assert await limiter.acquire("b1", 10, "private") == 0
    waited = await limiter.acquire("b1", 10, "private")
    assert waited > 0
    keys = [k async for k in redis.scan_iter(match=redis_keys.everything())]
    assert keys and all(b":b1:" in k for k in keys)
    ttls = [await redis.pttl(k) for k in keys]
    # Buckets expire on their own: never -1 (no TTL); -2 means it already expired
    # between the scan and the PTTL (a full bucket of this fast one lives ~50 ms).
    assert all(ttl > 0 or ttl == -2 for ttl in ttls)
