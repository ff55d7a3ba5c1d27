"""UpdateClaims in real Redis: batch admission and batch finishing under lease epochs."""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.asyncio import Redis

from storage.batching import CommandBatcher
from storage.keys import DEDUP_TTL_SECONDS, UPDATE_BLOCK, RedisKeys
from storage.updates import Candidate, Decision, Fencing, Finished, UpdateClaims

BOT = "bot1"
MINUTE = 29_000_000  # any fixed flood window
FLOOD = 3
DEBOUNCE = 30.0

RUN, DUP, THROTTLED, DEBOUNCED, BUSY = (
    Decision.RUN,
    Decision.DUPLICATE,
    Decision.THROTTLED,
    Decision.DEBOUNCED,
    Decision.BUSY,
)


@pytest.fixture
def keys(redis_keys: RedisKeys) -> RedisKeys:
    return redis_keys


@pytest.fixture
def claims(batcher: CommandBatcher, redis_keys: RedisKeys) -> UpdateClaims:
    return UpdateClaims(batcher, redis_keys, flood_limit=FLOOD, debounce_seconds=DEBOUNCE)


async def claim_of(redis: Redis, keys: RedisKeys, update_id: int, bot: str = BOT) -> bytes | None:
    value = await redis.hget(keys.update_block(bot, update_id // UPDATE_BLOCK), str(update_id))
    assert value is None or isinstance(value, bytes)
    return value


async def admit(
    claims: UpdateClaims,
    epoch: int,
    batch: list[Candidate],
    *,
    by_offset: bool = False,
    minute: int = MINUTE,
) -> list[Decision]:
    return await claims.admit(BOT, epoch, batch, minute=minute, by_offset=by_offset)


def ids(*update_ids: int) -> list[Candidate]:
    return [Candidate(u) for u in update_ids]


def done(*update_ids: int) -> list[Finished]:
    return [Finished(u) for u in update_ids]


# -- admission ------------------------------------------------------------------------------


async def test_decisions_for_one_batch(claims: UpdateClaims, redis: Redis, keys: RedisKeys) -> None:
    batch = [
        Candidate(100, user_id=1, chat_id=1),
        Candidate(101, user_id=2, chat_id=2, is_start=True),
        Candidate(102, user_id=2, chat_id=2, is_start=True),  # a second /start, same chat
        Candidate(103, user_id=4, chat_id=3, is_start=True),  # /start in another chat
        Candidate(104, user_id=3, chat_id=4),
        Candidate(105, user_id=3, chat_id=4),
        Candidate(106, user_id=3, chat_id=4),
        Candidate(107, user_id=3, chat_id=4),  # user 3's fourth message this minute
        Candidate(108),  # no user (e.g. a chat member update): never throttled
    ]
    expected = [RUN, RUN, DEBOUNCED, RUN] + [RUN] * FLOOD + [THROTTLED, RUN]
    assert await admit(claims, 1, batch) == expected
    assert await claim_of(redis, keys, 100) == b"p1"
    assert await claim_of(redis, keys, 102) == b"d"
    assert await claim_of(redis, keys, 107) == b"d"

    assert await claims.finish(BOT, Fencing(1), done(100))
    assert await admit(claims, 1, ids(100)) == [DUP]  # finished: a redelivery is a duplicate


async def test_the_flood_limit_is_per_user_and_minute(claims: UpdateClaims) -> None:
    user = [Candidate(200 + n, user_id=7, chat_id=7) for n in range(FLOOD + 2)]
    assert await admit(claims, 1, user) == [RUN] * FLOOD + [THROTTLED] * 2
    other_user = [Candidate(300 + n, user_id=8, chat_id=8) for n in range(FLOOD)]
    assert await admit(claims, 1, other_user) == [RUN] * FLOOD
    next_minute = [Candidate(400, user_id=7, chat_id=7)]
    assert await admit(claims, 1, next_minute, minute=MINUTE + 1) == [RUN]


async def test_a_redelivered_update_is_not_counted_again(claims: UpdateClaims) -> None:
    again = [Candidate(500, user_id=9, chat_id=9)]
    for _ in range(FLOOD + 2):  # our own claim comes back (a retry): counted once
        assert await admit(claims, 1, again) == [RUN]
    assert await admit(claims, 2, again) == [RUN]  # taken over by a newer epoch: not counted
    fresh = [Candidate(501 + n, user_id=9, chat_id=9) for n in range(FLOOD)]
    assert await admit(claims, 2, fresh) == [RUN] * (FLOOD - 1) + [THROTTLED]


async def test_a_redelivered_start_is_not_debounced(claims: UpdateClaims) -> None:
    start = [Candidate(600, user_id=5, chat_id=5, is_start=True)]
    assert await admit(claims, 1, start) == [RUN]
    assert await admit(claims, 1, start) == [RUN]  # the same update again: not a repeat
    assert await admit(claims, 2, start) == [RUN]  # nor when a newer owner takes it over
    repeat = [Candidate(601, user_id=5, chat_id=5, is_start=True)]
    assert await admit(claims, 2, repeat) == [DEBOUNCED]
    assert await admit(claims, 2, [Candidate(602, user_id=5, chat_id=5)]) == [RUN]  # not /start


async def test_without_a_debounce_window_every_start_runs(
    batcher: CommandBatcher, keys: RedisKeys, redis: Redis
) -> None:
    claims = UpdateClaims(batcher, keys, flood_limit=100, debounce_seconds=0)
    starts = [Candidate(700 + n, user_id=1, chat_id=1, is_start=True) for n in range(3)]
    assert await admit(claims, 1, starts) == [RUN] * 3
    assert not [k async for k in redis.scan_iter(match=f"{keys.prefix}:debounce:*")]


async def test_throttled_and_debounced_updates_are_settled_at_admission(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    batch = [Candidate(800 + n, user_id=3, chat_id=3) for n in range(FLOOD + 1)]
    batch += [
        Candidate(810, user_id=4, chat_id=4, is_start=True),
        Candidate(811, user_id=4, chat_id=4, is_start=True),
    ]
    decisions = await admit(claims, 1, batch)
    assert decisions == [RUN] * FLOOD + [THROTTLED, RUN, DEBOUNCED]
    assert await claim_of(redis, keys, 800 + FLOOD) == b"d"
    assert await claim_of(redis, keys, 811) == b"d"
    # Redelivered, to us or to a newer owner: nothing more to do.
    assert await admit(claims, 1, ids(800 + FLOOD, 811)) == [DUP, DUP]
    assert await admit(claims, 2, ids(800 + FLOOD, 811)) == [DUP, DUP]


async def test_claims_of_older_same_and_newer_epochs(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    assert await admit(claims, 9, ids(900)) == [RUN]
    assert await claim_of(redis, keys, 900) == b"p9"
    assert await admit(claims, 9, ids(900)) == [RUN]  # our own epoch: ours again
    assert await admit(claims, 10, ids(900)) == [RUN]  # an older epoch's claim: taken over
    assert await claim_of(redis, keys, 900) == b"p10"
    assert await admit(claims, 9, ids(900)) == [BUSY]  # a newer owner has it: we are stale
    assert await claim_of(redis, keys, 900) == b"p10"
    assert await claims.finish(BOT, Fencing(10), done(900))
    assert await admit(claims, 11, ids(900)) == [DUP]


async def test_ids_below_the_committed_offset_are_duplicates_when_polling(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    await redis.set(keys.offset(BOT), 1000)
    decisions = await admit(claims, 1, ids(998, 999, 1000, 1001), by_offset=True)
    assert decisions == [DUP, DUP, RUN, RUN]
    assert await claim_of(redis, keys, 999) is None  # nothing written for them
    # Webhook mode has no offset: the claim alone decides.
    assert await admit(claims, 1, ids(999), by_offset=False) == [RUN]


async def test_a_batch_over_several_blocks_is_one_round_trip(
    claims: UpdateClaims, batcher: CommandBatcher, redis: Redis, keys: RedisKeys
) -> None:
    update_ids = [5, UPDATE_BLOCK + 5, 2 * UPDATE_BLOCK + 5, 2 * UPDATE_BLOCK + 6]
    before = batcher.round_trips
    assert await admit(claims, 1, ids(*update_ids)) == [RUN] * 4
    assert batcher.round_trips == before + 1
    for block in range(3):
        assert await redis.exists(keys.update_block(BOT, block))
    assert await admit(claims, 1, []) == []
    assert batcher.round_trips == before + 1  # an empty batch asks nothing


# -- finishing ------------------------------------------------------------------------------


async def test_finish_settles_only_our_own_claims(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    assert await admit(claims, 1, ids(1100, 1101)) == [RUN, RUN]
    assert await admit(claims, 2, ids(1101)) == [RUN]  # a newer owner took 1101 over
    theirs = keys.idempotency(BOT, "welcome", 1, 1101)
    await redis.set(theirs, "c2", ex=60)

    finished = [Finished(1100), Finished(1101, send_keys=(theirs,))]
    assert await claims.finish(BOT, Fencing(1), finished)
    assert await claim_of(redis, keys, 1100) == b"d"
    assert await claim_of(redis, keys, 1101) == b"p2"  # the newer owner's claim stands
    assert await redis.get(theirs) == b"c2"  # and so do the send keys of its update
    assert await admit(claims, 2, ids(1101)) == [RUN]


async def test_finish_deletes_send_keys_of_handled_updates_and_keeps_dead_lettered_ones(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    assert await admit(claims, 3, ids(1200, 1201)) == [RUN, RUN]
    handled = [keys.idempotency(BOT, "welcome", 1, 1200), keys.idempotency(BOT, "menu", 1, 1200)]
    failed = [keys.idempotency(BOT, "welcome", 2, 1201)]
    for key in (*handled, *failed):
        await redis.set(key, "c3", ex=60)
    finished = [
        Finished(1200, send_keys=tuple(handled)),
        Finished(1201, dead_lettered=True, send_keys=tuple(failed)),
    ]
    assert await claims.finish(BOT, Fencing(3), finished)
    assert await redis.exists(*handled) == 0  # handled for good: it never runs again
    assert await redis.get(failed[0]) == b"done"  # a replay must not send it again
    assert 0 < await redis.ttl(failed[0]) <= DEDUP_TTL_SECONDS
    assert await claim_of(redis, keys, 1200) == b"d"
    assert await claim_of(redis, keys, 1201) == b"d"


async def test_the_offset_only_moves_forward(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    assert await claims.finish(BOT, Fencing(1), [], offset=500)
    assert await redis.get(keys.offset(BOT)) == b"500"
    assert await claims.finish(BOT, Fencing(1), [], offset=450, committed=500)
    assert await redis.get(keys.offset(BOT)) == b"500"
    assert await claims.finish(BOT, Fencing(1), [], offset=501, committed=500)
    assert await redis.get(keys.offset(BOT)) == b"501"
    assert await claims.finish(BOT, Fencing(1), done())  # no offset: nothing moves
    assert await redis.get(keys.offset(BOT)) == b"501"


async def test_blocks_entirely_below_the_new_offset_are_deleted(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    block = UPDATE_BLOCK
    update_ids = [10, block + 10, 2 * block + 10, 3 * block + 10]
    assert await admit(claims, 1, ids(*update_ids), by_offset=True) == [RUN] * 4
    # Finish the first three; the offset lands inside block 2 (its first id is still below).
    offset = 2 * block + 11
    assert await claims.finish(BOT, Fencing(1), done(*update_ids[:3]), offset=offset)
    assert not await redis.exists(keys.update_block(BOT, 0))
    assert not await redis.exists(keys.update_block(BOT, 1))
    assert await claim_of(redis, keys, 2 * block + 10) == b"d"  # block 2 holds the offset: kept
    assert await claim_of(redis, keys, 3 * block + 10) == b"p1"
    # What the deleted blocks held is still a duplicate, by the offset.
    assert await admit(claims, 1, ids(10, block + 10), by_offset=True) == [DUP, DUP]

    assert await claims.finish(
        BOT, Fencing(1), done(3 * block + 10), offset=3 * block + 11, committed=offset
    )
    assert not await redis.exists(keys.update_block(BOT, 2))
    assert await claim_of(redis, keys, 3 * block + 10) == b"d"


async def test_a_stale_lease_moves_nothing_but_settles_its_own_claims(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    await redis.set(keys.lease(BOT), "instance-b:n2", ex=60)
    await redis.set(keys.epoch(BOT), 3)
    await redis.set(keys.offset(BOT), 100)
    assert await admit(claims, 2, ids(100, 101), by_offset=True) == [RUN, RUN]
    assert await admit(claims, 3, ids(101), by_offset=True) == [RUN]  # the new owner's

    mine = keys.idempotency(BOT, "welcome", 1, 100)
    await redis.set(mine, "c2", ex=60)
    stale = Fencing(epoch=2, holder="instance-a:n1")
    finished = [Finished(100, send_keys=(mine,)), Finished(101)]
    assert not await claims.finish(BOT, stale, finished, offset=300, committed=100)
    assert await redis.get(keys.offset(BOT)) == b"100"  # not moved
    assert await claim_of(redis, keys, 100) == b"d"  # our own claim: settled all the same
    assert await redis.get(mine) is None
    assert await claim_of(redis, keys, 101) == b"p3"  # not ours: untouched
    assert await redis.exists(keys.update_block(BOT, 0))  # no block freed

    # The right holder with an old epoch, or a wrong holder with the current epoch: refused.
    assert not await claims.finish(BOT, Fencing(2, "instance-b:n2"), [], offset=300)
    assert not await claims.finish(BOT, Fencing(3, "instance-a:n1"), [], offset=300)
    assert await redis.get(keys.offset(BOT)) == b"100"
    # The current one moves it.
    assert await claims.finish(BOT, Fencing(3, "instance-b:n2"), done(101), offset=300)
    assert await redis.get(keys.offset(BOT)) == b"300"
    assert not await redis.exists(keys.update_block(BOT, 0))  # now entirely below: freed


async def test_every_key_left_behind_expires(
    claims: UpdateClaims, redis: Redis, keys: RedisKeys
) -> None:
    batch = [Candidate(2000 + n, user_id=1, chat_id=1) for n in range(FLOOD + 1)]
    batch += [
        Candidate(2010, user_id=2, chat_id=2, is_start=True),
        Candidate(2011, user_id=2, chat_id=2, is_start=True),
        Candidate(2200, user_id=3, chat_id=3),  # another block
        Candidate(2400),
    ]
    await admit(claims, 1, batch, by_offset=True)
    failed = keys.idempotency(BOT, "welcome", 2, 2010)
    await redis.set(failed, "c1", ex=60)
    finished = [Finished(2000), Finished(2010, dead_lettered=True, send_keys=(failed,))]
    await claims.finish(BOT, Fencing(1), finished, offset=2001)
    await admit(claims, 1, ids(2001, 2002), by_offset=True)

    found = [key async for key in redis.scan_iter(match=keys.everything())]
    assert len(found) >= 5
    ttls = {key.decode(): await redis.pttl(key) for key in found}
    # The committed offset is the bot's durable state (as the lease module writes it):
    # one small key per bot. Every other key must go away on its own.
    ttls.pop(keys.offset(BOT))
    assert ttls and all(ttl > 0 or ttl == -2 for ttl in ttls.values()), ttls
    assert await redis.ttl(keys.throttle(BOT, MINUTE)) <= 120
    assert 0 < await redis.pttl(keys.debounce(BOT, 2, "start")) <= DEBOUNCE * 1000
    assert 0 < await redis.ttl(keys.update_block(BOT, 2000 // UPDATE_BLOCK)) <= DEDUP_TTL_SECONDS


# -- two instances at once ------------------------------------------------------------------


async def test_concurrent_admits_of_two_epochs_leave_the_update_to_the_newer(
    redis: Redis, keys: RedisKeys
) -> None:
    """Two instances (their own batchers and connections) admit the same batch at once.

    Each batch is decided atomically: the older epoch either ran entirely first (RUN, then
    taken over) or entirely after (BUSY); the newer always runs and ends up owning every
    update, so only it can settle them."""
    old_b, new_b = CommandBatcher(redis), CommandBatcher(redis)
    try:
        old = UpdateClaims(old_b, keys, flood_limit=10_000, debounce_seconds=DEBOUNCE)
        new = UpdateClaims(new_b, keys, flood_limit=10_000, debounce_seconds=DEBOUNCE)
        rng = random.Random(7)
        for round_ in range(20):
            base = 10_000 + round_ * 300
            batch = [Candidate(base + n, user_id=n % 7, chat_id=n % 5) for n in range(300)]
            calls = [(old, 4), (new, 5)]
            rng.shuffle(calls)
            first, second = await asyncio.gather(*(admit(c, e, batch) for c, e in calls))
            by_epoch = dict(zip((e for _, e in calls), (first, second), strict=True))
            assert set(by_epoch[5]) == {RUN}
            assert set(by_epoch[4]) in ({RUN}, {BUSY})  # all before, or all after
            for candidate in batch[::37]:
                assert await claim_of(redis, keys, candidate.update_id) == b"p5"
            # The stale owner cannot settle what the newer one owns.
            assert await old.finish(BOT, Fencing(4), done(*(c.update_id for c in batch)))
            assert await claim_of(redis, keys, base) == b"p5"
            assert await new.finish(BOT, Fencing(5), done(*(c.update_id for c in batch)))
            assert await claim_of(redis, keys, base) == b"d"
    finally:
        await old_b.aclose()
        await new_b.aclose()


async def test_a_newer_owner_first_makes_the_older_busy_for_the_whole_batch(
    claims: UpdateClaims,
) -> None:
    batch = ids(*range(3000, 3050))
    assert await admit(claims, 8, batch) == [RUN] * 50
    assert await admit(claims, 7, batch) == [BUSY] * 50
