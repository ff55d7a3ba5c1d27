"""Dedup and send idempotency in real Redis, raced by concurrent callers."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from storage.idempotency import SendLedger, UpdateDeduplicator
from storage.keys import DEDUP_TTL_SECONDS, RedisKeys


async def test_each_update_is_first_exactly_once_under_a_race(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    # Two "instances" with their own objects over the same Redis.
    a, b = UpdateDeduplicator(redis, redis_keys), UpdateDeduplicator(redis, redis_keys)
    results = await asyncio.gather(
        *(dedup.first_time("bot1", update) for update in range(100) for dedup in (a, b, a))
    )
    assert sum(results) == 100
    assert await a.first_time("bot2", 5)  # another bot, same update id: independent
    assert 0 < await redis.ttl(redis_keys.dedup("bot1", 7)) <= DEDUP_TTL_SECONDS


async def test_a_forgotten_update_may_be_handled_again(redis: Redis, redis_keys: RedisKeys) -> None:
    dedup = UpdateDeduplicator(redis, redis_keys)
    assert await dedup.first_time("bot1", 1)
    await dedup.forget("bot1", 1)
    assert await dedup.first_time("bot1", 1)
    assert not await dedup.first_time("bot1", 1)


async def test_send_claims_are_exclusive_and_release_only_pending(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    ledger = SendLedger(redis, redis_keys)
    key = ledger.key("bot1", "welcome", 42, 1001)
    assert key == redis_keys.idempotency("bot1", "welcome", 42, 1001)
    claims = await asyncio.gather(*(ledger.claim(key) for _ in range(20)))
    assert claims.count(True) == 1

    assert await ledger.release(key)  # the send failed for sure: a retry may go
    assert await ledger.claim(key)
    await ledger.confirm(key)
    assert await ledger.is_done(key)
    assert not await ledger.release(key)  # a confirmed send is never released
    assert not await ledger.claim(key)
