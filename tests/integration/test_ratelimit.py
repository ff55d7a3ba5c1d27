"""SendGate in real Redis: shared token buckets, local FIFO waiting, 429 pauses, claims."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from fleet.ratelimit import Bucket, Grant, RateLimitTimeout, SendGate, SendLimits
from storage.batching import CommandBatcher
from storage.idempotency import SendLedger
from storage.keys import RedisKeys

SLOW = SendLimits(
    bot=Bucket(rate=1.0, burst=5.0),
    private_chat=Bucket(rate=0.5, burst=2.0),
    group=Bucket(rate=0.1, burst=3.0),
)
# The bot bucket holds `burst` sends and then, for the length of any test, nothing more.
FROZEN_BOT = SendLimits(
    bot=Bucket(rate=0.001, burst=5.0),
    private_chat=Bucket(rate=1.0, burst=3.0),
    group=Bucket(rate=0.1, burst=3.0),
)


async def soon(condition: Callable[[], bool], within: float = 5) -> None:
    """Wait, one loop iteration at a time, for a condition nothing signals (with a deadline)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


class Instance:
    """What one botfleet process has: its batcher, its ledger, its gate."""

    def __init__(self, redis: Redis, keys: RedisKeys, limits: SendLimits) -> None:
        self.batcher = CommandBatcher(redis)
        self.ledger = SendLedger(self.batcher, keys)
        self.gate = SendGate(self.batcher, keys, self.ledger, limits)

    async def aclose(self) -> None:
        await self.gate.aclose()
        await self.batcher.aclose()


@pytest.fixture
async def instances(
    redis: Redis, redis_keys: RedisKeys
) -> AsyncIterator[Callable[[SendLimits], Instance]]:
    made: list[Instance] = []

    def make(limits: SendLimits) -> Instance:
        made.append(Instance(redis, redis_keys, limits))
        return made[-1]

    try:
        yield make
    finally:
        for instance in made:
            await instance.aclose()


async def tokens(redis: Redis, key: str) -> float:
    value = await redis.hget(key, "tokens")
    assert value is not None, f"no bucket at {key}"
    return float(value)


async def test_a_chat_spends_its_burst_then_waits_while_another_chat_goes_at_once(
    instances: Callable[[SendLimits], Instance], redis: Redis, redis_keys: RedisKeys
) -> None:
    gate = instances(SLOW).gate
    assert await gate.acquire("b1", 10, "private") == "granted"
    assert await gate.acquire("b1", 10, "private") == "granted"
    third = asyncio.create_task(gate.acquire("b1", 10, "private", max_wait=30))
    # The same bot, another chat: its own burst, not behind chat 10's wait (2 s at 0.5/s).
    async with asyncio.timeout(1.5):
        assert await gate.acquire("b1", 11, "private") == "granted"
    assert not third.done()
    assert await tokens(redis, redis_keys.rate("b1", "private", 10)) < 1
    third.cancel()
    await asyncio.gather(third, return_exceptions=True)


async def test_groups_have_their_own_buckets_and_other_bots_are_independent(
    instances: Callable[[SendLimits], Instance],
) -> None:
    gate = instances(SLOW).gate
    for _ in range(3):
        assert await gate.acquire("b1", -100, "group") == "granted"
    with pytest.raises(RateLimitTimeout, match="bot b1"):
        await gate.acquire("b1", -100, "group", max_wait=0.2)  # 10 s for the next token
    assert await gate.acquire("b2", -100, "group") == "granted"


async def test_the_bot_bucket_is_shared_by_two_instances(
    instances: Callable[[SendLimits], Instance],
) -> None:
    first, second = instances(FROZEN_BOT).gate, instances(FROZEN_BOT).gate
    gates = [first, second]
    results = await asyncio.gather(
        *(gates[chat % 2].acquire("b1", chat, "private", max_wait=0.3) for chat in range(12)),
        return_exceptions=True,
    )
    granted = [r for r in results if r == "granted"]
    refused = [r for r in results if isinstance(r, RateLimitTimeout)]
    assert len(granted) == 5  # the bot's burst, whichever instance sends
    assert len(refused) == 7
    assert await second.acquire("b2", 0, "private", max_wait=2) == "granted"


async def test_a_taken_or_orphaned_send_costs_no_token(
    instances: Callable[[SendLimits], Instance], redis: Redis, redis_keys: RedisKeys
) -> None:
    limits = SendLimits(bot=Bucket(rate=0.001, burst=2.0), private_chat=Bucket(0.001, 1.0))
    instance = instances(limits)
    gate, ledger = instance.gate, instance.ledger
    taken, orphan = ledger.key("b1", "welcome", 1, 1), ledger.key("b1", "welcome", 2, 2)
    assert await ledger.claim(taken, 1) == "new"  # in flight under our epoch
    assert await ledger.claim(orphan, 1) == "new"  # to be found by a newer epoch

    assert await gate.acquire("b1", 1, "private", key=taken, mode="m", epoch=1) == "taken"
    assert await gate.acquire("b1", 2, "private", key=orphan, mode="m", epoch=2) == "orphaned"
    bucket_keys = [
        redis_keys.rate("b1", "bot"),
        *(redis_keys.rate("b1", "private", c) for c in (1, 2)),
    ]
    assert await redis.exists(*bucket_keys) == 0  # no bucket was touched
    assert await redis.get(taken) == b"c1" and await redis.get(orphan) == b"c1"

    # At least once, the orphan is taken over: that one costs a token.
    assert await gate.acquire("b1", 2, "private", key=orphan, mode="l", epoch=2) == "granted"
    assert await redis.get(orphan) == b"c2"
    assert await gate.acquire("b1", 3, "private") == "granted"  # the burst's second token
    with pytest.raises(RateLimitTimeout):
        await gate.acquire("b1", 4, "private", max_wait=0.2)


async def test_a_granted_claim_is_written_with_a_ttl(
    instances: Callable[[SendLimits], Instance], redis: Redis
) -> None:
    instance = instances(SLOW)
    key = instance.ledger.key("b1", "welcome", 1, 3)
    assert await instance.gate.acquire("b1", 1, "private", key=key, mode="m", epoch=4) == "granted"
    assert await redis.get(key) == b"c4"
    assert 0 < await redis.ttl(key) <= instance.ledger.ttl
    assert await instance.gate.acquire("b1", 2, "private", key=key, mode="m", epoch=4) == "taken"
    # 'r': our own claim that surely did not go out is ours to send again.
    assert await instance.gate.acquire("b1", 3, "private", key=key, mode="r", epoch=4) == "granted"
    # 'h': the caller holds the claim already; nothing is checked or written.
    assert await instance.gate.acquire("b1", 4, "private", key=key, mode="h", epoch=9) == "granted"
    assert await redis.get(key) == b"c4"


async def test_a_pause_holds_every_send_of_that_bot_and_is_never_shortened(
    instances: Callable[[SendLimits], Instance], redis: Redis, redis_keys: RedisKeys
) -> None:
    gate = instances(SLOW).gate
    other_instance = instances(SLOW).gate
    await gate.pause("b1", 30)
    await gate.pause("b1", 0.05)  # a shorter pause after a longer one
    assert 29_000 < await redis.pttl(redis_keys.send_pause("b1")) <= 30_000
    with pytest.raises(RateLimitTimeout, match="bot b1"):
        await gate.acquire("b1", 10, "private", max_wait=0.5)  # 0.05 s would have passed
    with pytest.raises(RateLimitTimeout, match="bot b1"):
        await other_instance.acquire("b1", 11, "private", max_wait=0.2)  # in Redis: shared
    assert await gate.acquire("b2", 10, "private", max_wait=2) == "granted"
    assert await other_instance.acquire("b2", 11, "private", max_wait=2) == "granted"


async def test_a_pause_holds_sends_already_waiting(
    instances: Callable[[SendLimits], Instance],
) -> None:
    limits = SendLimits(bot=Bucket(100.0, 100.0), private_chat=Bucket(rate=20.0, burst=1.0))
    gate = instances(limits).gate
    assert await gate.acquire("b1", 1, "private") == "granted"
    waiting = asyncio.create_task(gate.acquire("b1", 1, "private", max_wait=0.5))
    await gate.pause("b1", 30)  # while the chat refills (50 ms)
    with pytest.raises(RateLimitTimeout):
        await waiting


async def test_sends_to_one_chat_are_granted_in_order(
    instances: Callable[[SendLimits], Instance],
) -> None:
    limits = SendLimits(bot=Bucket(1000.0, 1000.0), private_chat=Bucket(rate=100.0, burst=1.0))
    instance = instances(limits)
    order: list[int] = []

    async def send(n: int) -> None:
        assert await instance.gate.acquire("b1", 5, "private", max_wait=10) == "granted"
        order.append(n)

    before = instance.batcher.round_trips
    sends = 10
    tasks = [asyncio.create_task(send(n)) for n in range(sends)]
    await asyncio.gather(*tasks)
    assert order == list(range(sends))
    # Only the head of the chat's line is asked: a grant, then a call that learns the
    # chat's refill time (and, on a loaded host, an early retry); never one per waiter.
    assert instance.batcher.round_trips - before <= 3 * sends + 3


async def test_many_waiters_on_an_empty_bot_bucket_cost_one_call_per_grant(
    instances: Callable[[SendLimits], Instance],
) -> None:
    limits = SendLimits(bot=Bucket(rate=200.0, burst=1.0), private_chat=Bucket(1.0, 5.0))
    instance = instances(limits)
    assert await instance.gate.acquire("b1", 0, "private") == "granted"  # bucket now empty
    before = instance.batcher.round_trips
    waiters = 40
    results = await asyncio.gather(
        *(instance.gate.acquire("b1", chat, "private", max_wait=30) for chat in range(1, 41))
    )
    assert results == ["granted"] * waiters
    trips = instance.batcher.round_trips - before
    # The gate asks once per refill for the whole line (polling per waiter would cost about
    # waiters / 2 calls per grant here). The margin covers the early retries a loaded host
    # causes (test_a_slow_round_trip_does_not_make_the_gate_ask_too_early); on an idle host
    # trips == waiters + 1.
    assert trips <= 2 * waiters + 3, trips


async def test_bucket_keys_expire_on_their_own(
    instances: Callable[[SendLimits], Instance], redis: Redis, redis_keys: RedisKeys
) -> None:
    limits = SendLimits(
        bot=Bucket(rate=100.0, burst=3.0),
        private_chat=Bucket(rate=20.0, burst=1.0),
        group=Bucket(rate=10.0, burst=2.0),
    )
    instance = instances(limits)
    gate = instance.gate
    key = instance.ledger.key("b1", "welcome", 1, 1)
    sends: list[Any] = [
        gate.acquire("b1", 1, "private", key=key, mode="m", epoch=1),
        gate.acquire("b1", 1, "private"),
        gate.acquire("b1", 2, "private"),
        gate.acquire("b1", -5, "group"),
        gate.acquire("b1", -5, "group"),
        gate.acquire("b1", -5, "group"),
    ]
    assert await asyncio.gather(*sends) == ["granted"] * 6
    await gate.pause("b2", 5)
    found = [k async for k in redis.scan_iter(match=redis_keys.everything())]
    assert len(found) >= 5
    ttls = {k: await redis.pttl(k) for k in found}
    # Never -1 (no TTL); -2 means it expired between the SCAN and the PTTL.
    assert all(ttl > 0 or ttl == -2 for ttl in ttls.values()), ttls


async def test_a_send_given_up_while_waiting_locally_claims_nothing(
    instances: Callable[[SendLimits], Instance], redis: Redis
) -> None:
    limits = SendLimits(bot=Bucket(100.0, 100.0), private_chat=Bucket(rate=0.01, burst=1.0))
    instance = instances(limits)
    assert await instance.gate.acquire("b1", 1, "private") == "granted"
    key = instance.ledger.key("b1", "welcome", 1, 9)
    with pytest.raises(RateLimitTimeout):
        await instance.gate.acquire("b1", 1, "private", key=key, mode="m", epoch=1, max_wait=0.1)
    assert await redis.get(key) is None


class SlowBatcher(CommandBatcher):
    """Every other round trip reaches Redis ``delay`` s late (a loaded host or network)."""

    def __init__(self, redis: Redis, delay: float) -> None:
        super().__init__(redis)
        self.delay = delay
        self.sent = 0

    async def _send(self, packed: Sequence[bytes]) -> list[Any]:
        self.sent += 1
        if self.sent % 2:
            await asyncio.sleep(self.delay)  # injected latency, not synchronisation
        return await super()._send(packed)


async def test_a_slow_round_trip_does_not_make_the_gate_ask_too_early(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    batcher = SlowBatcher(redis, delay=0.01)
    limits = SendLimits(bot=Bucket(rate=50.0, burst=1.0), private_chat=Bucket(1.0, 5.0))
    gate = SendGate(batcher, redis_keys, SendLedger(batcher, redis_keys), limits)
    try:
        assert await gate.acquire("b1", 0, "private") == "granted"  # the bucket is empty
        before = batcher.round_trips
        waiters = 8
        results = await asyncio.gather(
            *(gate.acquire("b1", chat, "private", max_wait=30) for chat in range(1, 9))
        )
        assert results == ["granted"] * waiters
        assert batcher.round_trips - before <= waiters + 2
    finally:
        await gate.aclose()
        await batcher.aclose()


class HeldBatcher(CommandBatcher):
    """Holds replies back (after Redis ran the commands) while ``hold`` is clear."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.hold = asyncio.Event()
        self.hold.set()
        self.holding = asyncio.Event()

    async def _send(self, packed: Sequence[bytes]) -> list[Any]:
        replies = await super()._send(packed)
        if not self.hold.is_set():
            self.holding.set()
            await self.hold.wait()
        return replies


async def test_a_grant_that_comes_after_its_caller_gave_up_releases_the_claim(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    batcher = HeldBatcher(redis)
    ledger = SendLedger(batcher, redis_keys)
    gate = SendGate(batcher, redis_keys, ledger, SLOW)
    try:
        key = ledger.key("b1", "welcome", 1, 10)
        batcher.hold.clear()
        caller = asyncio.create_task(
            gate.acquire("b1", 1, "private", key=key, mode="m", epoch=3, max_wait=0.2)
        )
        async with asyncio.timeout(5):
            await batcher.holding.wait()  # Redis granted and claimed; the reply is held
        assert await redis.get(key) == b"c3"
        with pytest.raises(RateLimitTimeout):
            await caller  # the caller's deadline passes first
        batcher.hold.set()  # now the grant arrives: nobody will send it

        async def released() -> None:
            while await redis.get(key) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

        async with asyncio.timeout(5):
            await released()
        # The update's retry (same epoch, at most once) may send it.
        assert await gate.acquire("b1", 2, "private", key=key, mode="m", epoch=3) == "granted"
    finally:
        batcher.hold.set()
        await gate.aclose()
        await batcher.aclose()


async def test_a_caller_that_gives_up_as_its_grant_lands_leaves_nothing_claimed(
    instances: Callable[[SendLimits], Instance], redis: Redis
) -> None:
    instance = instances(SLOW)
    gate = instance.gate
    key = instance.ledger.key("b1", "welcome", 1, 11)
    loop = asyncio.get_running_loop()
    caller = asyncio.create_task(
        gate.acquire("b1", 1, "private", key=key, mode="m", epoch=3, max_wait=30)
    )
    await soon(lambda: "b1" in gate._queues and bool(gate._queues["b1"].waiters))
    future = gate._queues["b1"].waiters[0].future

    def give_up_once_granted() -> None:
        # The deadline (or a lane cancel) fires after the asker set the grant and before
        # the caller resumed: what asyncio.timeout does when both land in one iteration.
        if future.done():
            caller.cancel()
        else:
            loop.call_soon(give_up_once_granted)

    loop.call_soon(give_up_once_granted)
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert future.done() and not future.cancelled() and future.result() == "granted"

    async def released() -> None:
        while await redis.get(key) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    async with asyncio.timeout(1):
        await released()
    retry: Grant = await gate.acquire("b1", 2, "private", key=key, mode="m", epoch=3)
    assert retry == "granted"
