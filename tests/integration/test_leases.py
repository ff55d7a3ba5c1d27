"""LeaseCoordinator on real Redis, in one process: fencing, deadlines, hand-off."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable

import orjson
import pytest
from redis.asyncio import Redis

from fleet import leases
from fleet.assignment import desired_owner
from fleet.config import BotConfig, InstanceConfig, LeasesConfig
from fleet.leases import LeaseCoordinator
from fleet.ownership import BotFence, BotReport, OpenFence
from fleet.status import read_status
from storage.keys import RedisKeys

TIMING = LeasesConfig(ttl=4, renew_deadline=3, retry_period=0.5, takeover_grace=0)


def bots(count: int) -> list[BotConfig]:
    return [
        BotConfig(id=f"b{i}", token=f"{100 + i}:lease-test-token-abcdef", funnel="main")
        for i in range(count)
    ]


def coordinator(redis: Redis, keys: RedisKeys, name: str, **timing: float) -> LeaseCoordinator:
    return LeaseCoordinator(redis, keys, InstanceConfig(id=name), TIMING.model_copy(update=timing))


async def test_only_the_holder_renews_and_a_stale_epoch_cannot_move_the_offset(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    desired = bots(1)
    a = coordinator(redis, redis_keys, "a")
    await a.owned(desired)
    assert await a.tick()
    fence = a.fence("b0")
    assert (fence.epoch, fence.start_offset) == (1, None)
    assert await fence.commit_offset(41)
    lost: list[str] = []
    fence.on_lost(lost.append)

    # The lease expires (a paused owner) and b takes it: epoch 2, starting at 41.
    await redis.delete(redis_keys.lease("b0"))
    b = coordinator(redis, redis_keys, "b", takeover_grace=0)
    await b.owned(desired)
    await b.tick()
    assert (b.fence("b0").epoch, b.fence("b0").start_offset) == (2, 41)

    assert not await fence.commit_offset(99)  # the stale epoch is refused...
    assert lost == ["offset refused: epoch 1 is stale"]  # ...and its runner told at once
    assert await redis.get(redis_keys.offset("b0")) == b"41"
    await a.tick()  # a lost fence is not renewed, and a does not take the bot back
    assert await a.owned(desired) == set()
    assert await redis.get(redis_keys.lease("b0")) == b.holder.encode()
    assert await b.owned(desired) == {"b0"}


async def test_renew_deadline_stops_a_runner_before_the_ttl(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    a = coordinator(redis, redis_keys, "a")
    await a.owned(bots(1))
    await a.tick()
    fence = a.fence("b0")
    stopped = asyncio.Event()
    fence.on_lost(lambda reason: stopped.set())
    task = asyncio.create_task(a._deadline_loop())  # no tick loop: nothing renews
    try:
        async with asyncio.timeout(TIMING.renew_deadline + 2):
            await stopped.wait()
        assert not fence.valid()
        ttl_ms = await redis.pttl(redis_keys.lease("b0"))
        assert ttl_ms > 0  # still held in Redis: the runner stopped before expiry
    finally:
        task.cancel()


async def test_a_joiner_gets_its_hrw_bots_by_cooperative_hand_off(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    desired = bots(40)
    a = coordinator(redis, redis_keys, "a")
    await a.owned(desired)
    await a.tick()
    assert len(await a.owned(desired)) == 40
    b = coordinator(redis, redis_keys, "b")
    await b.owned(desired)
    await b.tick()  # b is live now; every lease is still a's
    assert await b.owned(desired) == set()
    await a.tick()  # a sees b and marks b's share for hand-off
    theirs = {bot.id for bot in desired if desired_owner(bot.id, {"a": 1, "b": 1}) == "b"}
    assert await a.owned(desired) == {bot.id for bot in desired} - theirs
    assert a.held() == {bot.id for bot in desired}  # held until drained and released
    for bot_id in theirs:
        await a.release(bot_id)
    await b.tick()
    assert await b.owned(desired) == theirs
    assert a.held().isdisjoint(b.held())


async def test_leave_drops_out_of_the_live_set(redis: Redis, redis_keys: RedisKeys) -> None:
    a, b = coordinator(redis, redis_keys, "a"), coordinator(redis, redis_keys, "b")
    await a.tick()
    await b.tick()
    assert set(b.live) == {"a", "b"}
    await a.leave()
    await b.tick()
    assert set(b.live) == {"b"}


# -- what `botfleet status` reads: small heartbeats, per-bot state keys -------------------------


async def state_ttls(redis: Redis, keys: RedisKeys, bot_ids: list[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for bot_id in bot_ids:
            pipe.pttl(keys.bot_state(bot_id))
        return [int(ttl) for ttl in await pipe.execute()]


async def test_heartbeats_stay_small_and_bot_states_are_written_only_on_change(
    redis: Redis, redis_keys: RedisKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = bots(5000)
    ids = [bot.id for bot in desired]
    started = time.monotonic()
    reports = {bot_id: BotReport("running", 0, started) for bot_id in ids}
    a = LeaseCoordinator(redis, redis_keys, InstanceConfig(id="a"), TIMING, status=lambda: reports)
    await a.owned(desired)
    assert await a.tick()
    assert len(a.held()) == 5000

    beat = await redis.get(redis_keys.heartbeat("a"))
    assert beat is not None and len(beat) < 1024  # was ~330 KB with every bot in it
    assert "bots" not in orjson.loads(beat)
    written = await redis.mget([redis_keys.bot_state(b) for b in ids])
    assert all(orjson.loads(v)["state"] == "running" for v in written if v is not None)
    assert sum(v is not None for v in written) == 5000

    # Nothing changed: the next round writes no state key (no value, no TTL refreshed).
    ttls = await state_ttls(redis, redis_keys, ids)
    await asyncio.sleep(0.05)
    await a.tick()
    assert await redis.mget([redis_keys.bot_state(b) for b in ids]) == written
    assert all(
        after < before
        for after, before in zip(await state_ttls(redis, redis_keys, ids), ttls, strict=True)
    )

    # A new state is written in the next round, and only that bot's key.
    reports["b7"] = BotReport("stopping", 3, started)
    await a.tick()
    after = await redis.mget([redis_keys.bot_state(b) for b in ids])
    assert [b for b, old, new in zip(ids, written, after, strict=True) if old != new] == ["b7"]
    status = await read_status(redis, redis_keys, ["b6", "b7"])
    assert [(b.state, b.pending, b.owner) for b in status.bots] == [
        ("running", 0, "a"),
        ("stopping", 3, "a"),
    ]

    # Pending and last update move all the time: written at most every STATE_COALESCE s.
    reports["b8"] = BotReport("running", 5, time.monotonic())
    await a.tick()
    assert (await read_status(redis, redis_keys, ["b8"])).bots[0].pending == 0
    monkeypatch.setattr(leases, "STATE_COALESCE", 0.0)
    await a.tick()
    (b8,) = (await read_status(redis, redis_keys, ["b8"])).bots
    assert (b8.state, b8.pending) == ("running", 5)
    assert b8.last_update_age_s is not None and b8.last_update_age_s < 5

    # A released bot has no state: nobody reports it.
    await a.release("b7")
    assert await redis.exists(redis_keys.bot_state("b7")) == 0
    (b7,) = (await read_status(redis, redis_keys, ["b7"])).bots
    assert (b7.owner, b7.state) == (None, "unowned")


async def test_a_stale_holder_cannot_overwrite_its_successors_state(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    desired = bots(1)
    a_reports = {"b0": BotReport("running", 0, None)}
    a = LeaseCoordinator(
        redis, redis_keys, InstanceConfig(id="a"), TIMING, status=lambda: a_reports
    )
    await a.owned(desired)
    await a.tick()
    await redis.delete(redis_keys.lease("b0"))  # a paused past its TTL; b takes the bot
    b_reports = {"b0": BotReport("running", 1, None)}
    b = LeaseCoordinator(
        redis, redis_keys, InstanceConfig(id="b"), TIMING, status=lambda: b_reports
    )
    await b.owned(desired)
    await b.tick()

    a_reports["b0"] = BotReport("lost", 0, None)
    await a.tick()  # a learns it lost the lease; its report must not replace b's
    (bot,) = (await read_status(redis, redis_keys, ["b0"])).bots
    assert (bot.owner, bot.epoch, bot.state, bot.pending) == ("b", 2, "running", 1)


# -- on_lost subscriptions: a stopped runner must not stay reachable from its fence --------------


class Subscriber:
    """Stands in for a BotRunner: subscribes a bound method, as the runner does."""

    def __init__(self, fence: BotFence) -> None:
        self.reasons: list[str] = []
        self.unsubscribe: Callable[[], None] = fence.on_lost(self.lost)

    def lost(self, reason: str) -> None:
        self.reasons.append(reason)


async def test_an_unsubscribed_runner_is_freed_and_the_rest_are_told_once(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    a = coordinator(redis, redis_keys, "a")
    await a.owned(bots(1))
    await a.tick()
    fence = a.fence("b0")

    old = Subscriber(fence)  # a runner replaced on reload, under the same fence
    gone = weakref.ref(old)
    old.unsubscribe()
    old.unsubscribe()  # idempotent
    del old
    gc.collect()
    assert gone() is None

    current, stopped = Subscriber(fence), Subscriber(fence)
    stopped.unsubscribe()
    await a.release("b0")
    fence.lose("again")  # a fence is lost once
    assert current.reasons == ["released"]
    assert stopped.reasons == []

    late = Subscriber(fence)  # subscribing to a lost fence: told at once
    assert late.reasons == ["released"]
    late.unsubscribe()


def test_an_open_fence_keeps_no_callback() -> None:
    subscriber = Subscriber(OpenFence())
    gone = weakref.ref(subscriber)
    del subscriber
    gc.collect()
    assert gone() is None
