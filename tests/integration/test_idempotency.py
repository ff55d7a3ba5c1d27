"""SendLedger in real Redis: one claim per logical send, under lease epochs."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from storage.batching import CommandBatcher
from storage.idempotency import DONE, SendLedger
from storage.keys import DEDUP_TTL_SECONDS, RedisKeys

BOT = "bot1"


@pytest.fixture
def ledger(batcher: CommandBatcher, redis_keys: RedisKeys) -> SendLedger:
    return SendLedger(batcher, redis_keys)


async def test_keys_are_per_bot_purpose_and_parts(
    ledger: SendLedger, redis_keys: RedisKeys
) -> None:
    key = ledger.key(BOT, "welcome", 42, 1001)
    assert key == redis_keys.idempotency(BOT, "welcome", 42, 1001)
    assert key != ledger.key("bot2", "welcome", 42, 1001)
    assert key.startswith(f"{redis_keys.prefix}:")


async def test_an_at_most_once_claim_is_new_once_then_taken(
    ledger: SendLedger, redis: Redis
) -> None:
    key = ledger.key(BOT, "welcome", 1, 1)
    assert await ledger.claim(key, 3) == "new"
    assert await redis.get(key) == b"c3"
    assert 0 < await redis.ttl(key) <= DEDUP_TTL_SECONDS
    assert await ledger.claim(key, 3) == "taken"  # ours, in flight: never twice
    assert await ledger.claim(key, 2) == "taken"  # an older owner cannot take it either
    assert await ledger.claim(key, 2, at_least_once=True) == "taken"
    assert await redis.get(key) == b"c3"


async def test_concurrent_claims_give_exactly_one_new(
    batcher: CommandBatcher, redis: Redis, redis_keys: RedisKeys
) -> None:
    other_batcher = CommandBatcher(redis)  # a second instance, on its own connection
    try:
        ledgers = [SendLedger(batcher, redis_keys), SendLedger(other_batcher, redis_keys)]
        keys = [ledgers[0].key(BOT, "welcome", chat, 7) for chat in range(50)]
        results = await asyncio.gather(
            *(ledgers[n % 2].claim(key, 1) for key in keys for n in range(4))
        )
        for i in range(len(keys)):
            assert sorted(results[4 * i : 4 * i + 4]) == ["new", "taken", "taken", "taken"]
    finally:
        await other_batcher.aclose()


async def test_an_older_epochs_claim_is_orphaned_at_most_once_but_taken_over_at_least_once(
    ledger: SendLedger, redis: Redis
) -> None:
    key = ledger.key(BOT, "welcome", 1, 2)
    assert await ledger.claim(key, 4) == "new"  # the old owner died mid-send
    assert await ledger.claim(key, 5) == "orphaned"  # it may have gone out: not again
    assert await redis.get(key) == b"c4"  # and the claim is left as it was
    assert await ledger.claim(key, 5) == "orphaned"

    assert await ledger.claim(key, 5, at_least_once=True) == "new"  # a deliverable: resend
    assert await redis.get(key) == b"c5"
    assert 0 < await redis.ttl(key) <= DEDUP_TTL_SECONDS
    assert await ledger.claim(key, 5, at_least_once=True) == "taken"  # now ours, in flight
    assert await ledger.claim(key, 6) == "orphaned"


async def test_epochs_compare_as_numbers(ledger: SendLedger) -> None:
    key = ledger.key(BOT, "welcome", 1, 3)
    assert await ledger.claim(key, 9) == "new"
    assert await ledger.claim(key, 10) == "orphaned"  # 10 > 9, though "10" < "9"
    other = ledger.key(BOT, "welcome", 1, 4)
    assert await ledger.claim(other, 10) == "new"
    assert await ledger.claim(other, 9, at_least_once=True) == "taken"


async def test_a_confirmed_send_is_done_for_good(ledger: SendLedger, redis: Redis) -> None:
    key = ledger.key(BOT, "welcome", 1, 5)
    assert await ledger.claim(key, 1) == "new"
    assert not await SendLedger.is_done(redis, key)
    await ledger.confirm(key)
    assert await redis.get(key) == DONE
    assert await SendLedger.is_done(redis, key)
    assert 0 < await redis.ttl(key) <= DEDUP_TTL_SECONDS

    assert not await ledger.release(key, 1)  # never released
    assert await ledger.claim(key, 1) == "taken"  # never claimed again,
    assert await ledger.claim(key, 2) == "taken"  # by anyone,
    assert await ledger.claim(key, 2, at_least_once=True) == "taken"  # in any mode
    assert await SendLedger.is_done(redis, key)


async def test_release_lets_go_only_of_our_own_pending_claim(
    ledger: SendLedger, redis: Redis
) -> None:
    key = ledger.key(BOT, "welcome", 1, 6)
    assert not await ledger.release(key, 1)  # nothing to release
    assert await ledger.claim(key, 2) == "new"
    assert not await ledger.release(key, 1)  # another epoch's claim is not ours
    assert not await ledger.release(key, 3)
    assert await redis.get(key) == b"c2"
    assert await ledger.release(key, 2)  # the send surely did not go out: a retry may
    assert await redis.get(key) is None
    assert not await ledger.release(key, 2)
    assert await ledger.claim(key, 2) == "new"


async def test_is_done_is_false_for_a_missing_or_pending_key(
    ledger: SendLedger, redis: Redis
) -> None:
    key = ledger.key(BOT, "welcome", 1, 7)
    assert not await SendLedger.is_done(redis, key)
    await ledger.claim(key, 1)
    assert not await SendLedger.is_done(redis, key)
