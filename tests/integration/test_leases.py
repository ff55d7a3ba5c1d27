"""LeaseCoordinator on real Redis, in one process: fencing, deadlines, hand-off."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from fleet.assignment import desired_owner
from fleet.config import BotConfig, InstanceConfig, LeasesConfig
from fleet.leases import LeaseCoordinator
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
