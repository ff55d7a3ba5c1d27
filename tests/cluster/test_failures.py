"""Redis goes away; an owner freezes past its TTL. Nothing crashes, nothing is handled twice."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from tests.cluster.conftest import MakeCluster
from tests.cluster.harness import Cluster, RedisServer, token_for, users, welcomes

NAMES = ["i1", "i2", "i3"]


async def _health_statuses(cluster: Cluster) -> list[int]:
    statuses = []
    async with aiohttp.ClientSession() as http:
        for instance in cluster.instances.values():
            async with http.get(f"http://127.0.0.1:{instance.http_port}/health") as response:
                statuses.append(response.status)
    return statuses


async def test_redis_outage_stops_polling_safely_and_service_resumes(
    make_cluster: MakeCluster, redis_server: RedisServer
) -> None:
    cluster = make_cluster(12)
    await cluster.start_all(NAMES)
    emulator = cluster.emulator
    conflicts = cluster.conflicts()
    loop = asyncio.get_running_loop()

    await redis_server.stop()
    stopped_at = loop.time()

    # Nobody can renew: every instance stops polling before the TTL, and says why.
    async def nobody_polls() -> bool:  # a poll that ends by disconnect fires no event
        return int(emulator.counters()["long_polls_open"]) == 0

    await cluster.wait(nobody_polls, 15)
    assert set(await _health_statuses(cluster)) == {503}  # routes answer, and fail clearly
    people = users(emulator, 2, "outage")
    pairs = [(bot, user) for bot in range(12) for user in people]
    for bot, user in pairs:
        emulator.user_sends(token_for(bot), user, "/start")  # they wait at Telegram
    await asyncio.sleep(max(0.0, 20 - (loop.time() - stopped_at)))  # the outage lasts 20 s
    assert all(i.process and i.process.returncode is None for i in cluster.instances.values())
    assert emulator.counters()["long_polls_open"] == 0

    await redis_server.start()
    await cluster.wait(lambda: cluster.converged(NAMES), 60)
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 60)
    assert welcomes(cluster.emulator, pairs) == [1] * len(pairs)
    assert cluster.conflicts() == conflicts  # never two pollers of one bot
    assert set(await _health_statuses(cluster)) == {200}
    for instance in cluster.instances.values():
        assert "leases cannot be renewed" in instance.log()


async def test_a_frozen_owner_is_fenced_and_stops_polling_on_its_own(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(12)
    await cluster.start_all(NAMES)
    emulator = cluster.emulator
    theirs = [b for b, owner in (await cluster.owners()).items() if owner == "i2"]
    assert theirs
    epochs = {b: int(await cluster.redis.get(cluster.keys.epoch(b)) or 0) for b in theirs}

    cluster.signal("i2", signal.SIGSTOP)  # past its TTL: the others take its bots
    await cluster.wait(lambda: cluster.converged(["i1", "i3"]), 30)
    for bot in theirs:
        assert int(await cluster.redis.get(cluster.keys.epoch(bot)) or 0) > epochs[bot]
    people = users(emulator, 2, "stale")
    pairs = [(int(bot.split("-")[1]), user) for bot in theirs for user in people]
    for bot_index, user in pairs:
        emulator.user_sends(token_for(bot_index), user, "/start")
    await emulator.wait_for(lambda: welcomes(cluster.emulator, pairs) == [1] * len(pairs), 30)

    cluster.signal("i2", signal.SIGCONT)
    # It wakes with old epochs: it must notice by itself and stop, then rejoin cleanly.
    await cluster.wait(lambda: cluster.converged(NAMES), 60)
    log = cluster.instances["i2"].log()
    assert "lease lost" in log
    later = [(int(bot.split("-")[1]), emulator.add_user(f"after-{bot}")) for bot in theirs]
    for bot_index, user in later:
        emulator.user_sends(token_for(bot_index), user, "/start")
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 30)
    assert welcomes(emulator, pairs + later) == [1] * (len(pairs) + len(later))
