"""``botfleet status``: the lease layout in Redis, read back as tables and JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from fleet.config import RedisConfig
from fleet.status import BotStatus, FleetStatus, read_status, render_table, to_json
from storage.keys import RedisKeys
from tests.integration.test_cli import botfleet
from tests.services import free_port

TOKENS = {
    "loja": "111111:LOJAsecretLOJAsecretLOJAsecret",
    "vip": "222222:VIPsecretVIPsecretVIPsecret",
    "livre": "333333:LIVREsecretLIVREsecretLIVRE",
    "ghost": "444444:GHOSTsecretGHOSTsecretGHOST",
    "pausado": "555555:OFFsecretOFFsecretOFFsecret",
}
BOTS = list(TOKENS)
HOUR_MS = 3_600_000


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def write_layout(redis: Redis, keys: RedisKeys) -> int:
    """What two LeaseCoordinators would have written, by hand; returns Redis TIME in ms."""
    now = await redis_now_ms(redis)

    async def beat(instance_id: str, expiry: int) -> None:
        info = {
            "id": instance_id,
            "host": f"host-{instance_id[:5]}",
            "pid": 4242,
            "capacity": 1.0,
            "version": "0.test",
            "started_ms": now - HOUR_MS,
            "heartbeat_ms": now - 2_000,
        }
        await redis.zadd(keys.members(), {instance_id: expiry})
        await redis.set(keys.heartbeat(instance_id), orjson.dumps(info), px=60_000)

    await beat("web-1:blue", now + 13_000)  # ':' inside the instance id
    await beat("web-2", now + 13_000)
    await beat("gone", now - 1_000)  # expired score, key still there
    await redis.zadd(keys.members(), {"vanished": now + 13_000})  # score ok, heartbeat gone
    running = {"state": "running", "pending": 2, "last_update_ms": now - 3_500}
    await write_state(redis, keys, "loja", "web-1:blue", 7, running)
    await write_state(redis, keys, "vip", "web-1:blue", 2, running)  # not the holder
    await write_state(redis, keys, "livre", "web-2", 3, {"state": "running", "pending": 0})
    await write_state(redis, keys, "ghost", "gone", 1, running)  # the holder is not live
    await redis.set(keys.lease("loja"), "web-1:blue:0123456789abcdef", px=15_000)
    await redis.set(keys.lease("vip"), "web-2:fedcba9876543210", px=15_000)
    await redis.set(keys.lease("ghost"), "gone:00aa00aa00aa00aa", px=15_000)
    await redis.mset(
        {keys.epoch(b): e for b, e in [("loja", 7), ("vip", 2), ("livre", 3), ("ghost", 1)]}
    )
    await redis.mset({keys.offset("loja"): 1001, keys.offset("livre"): 55})
    return now


async def write_state(
    redis: Redis,
    keys: RedisKeys,
    bot_id: str,
    instance_id: str,
    epoch: int,
    report: dict[str, object],
) -> None:
    """A bot state key as the coordinator of ``instance_id`` writes it."""
    value = {"instance": instance_id, "epoch": epoch, "last_update_ms": None, **report}
    await redis.set(keys.bot_state(bot_id), orjson.dumps(value), px=86_400_000)


def by_id(status: FleetStatus) -> dict[str, BotStatus]:
    return {bot.id: bot for bot in status.bots}


async def test_read_status_reports_live_instances_and_owners(
    redis: Redis, redis_keys: RedisKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = await write_layout(redis, redis_keys)
    # Ages come from Redis TIME: a local clock at the epoch must change nothing.
    monkeypatch.setattr(time, "time", lambda: 0.0)
    status = await read_status(redis, redis_keys, BOTS, disabled={"pausado"})
    monkeypatch.undo()

    assert now <= status.now_ms < now + 5_000
    assert [i.id for i in status.instances] == ["web-1:blue", "web-2"]
    web1, web2 = status.instances
    assert (web1.host, web1.pid, web1.version, web1.capacity) == ("host-web-1", 4242, "0.test", 1.0)
    assert web1.bots == ["loja"]
    assert web2.bots == ["vip"]
    assert web1.uptime_s is not None and 3600 <= web1.uptime_s < 3605
    assert web1.heartbeat_age_s is not None and 2.0 <= web1.heartbeat_age_s < 7
    assert 8 < web1.expires_in_s <= 13

    bots = by_id(status)
    assert list(bots) == BOTS  # config order
    loja = bots["loja"]
    assert (loja.owner, loja.owner_live, loja.epoch, loja.offset) == ("web-1:blue", True, 7, 1001)
    assert (loja.state, loja.pending) == ("running", 2)
    # 3.5 s before the snapshot, in Redis TIME (the local clock says 1970).
    assert loja.last_update_age_s is not None and 3.5 <= loja.last_update_age_s < 8.5

    vip = bots["vip"]  # leased by web-2, which has not reported it (web-1's report is stale)
    assert (vip.owner, vip.state, vip.pending) == ("web-2", "held", None)
    assert vip.last_update_age_s is None

    livre = bots["livre"]  # free; web-2 still reports it (handed off), which does not matter
    assert (livre.owner, livre.state, livre.epoch, livre.offset) == (None, "unowned", 3, 55)

    ghost = bots["ghost"]  # lease of an instance that is no longer live: its report is stale
    assert (ghost.owner, ghost.owner_live, ghost.state) == ("gone", False, "held")
    assert (ghost.pending, ghost.last_update_age_s) == (None, None)

    off = bots["pausado"]
    assert (off.owner, off.epoch, off.offset, off.state) == (None, None, None, "disabled")


async def test_a_state_is_shown_only_under_the_lease_it_was_written_in(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    now = await write_layout(redis, redis_keys)
    # loja's lease changed hands within web-1:blue (a restart, epoch 8): the report of
    # epoch 7 is from the runner before.
    await redis.incr(redis_keys.epoch("loja"))
    await write_state(redis, redis_keys, "vip", "web-2", 2, {"state": "stopping", "pending": 1})
    status = by_id(await read_status(redis, redis_keys, BOTS))
    assert (status["loja"].epoch, status["loja"].state, status["loja"].pending) == (8, "held", None)
    assert (status["vip"].state, status["vip"].pending) == ("stopping", 1)
    assert status["vip"].last_update_age_s is None

    await redis.set(redis_keys.bot_state("vip"), b"not json")
    assert by_id(await read_status(redis, redis_keys, BOTS))["vip"].state == "held"

    await write_state(
        redis, redis_keys, "loja", "web-1:blue", 8, {"state": "running", "last_update_ms": now}
    )
    loja = by_id(await read_status(redis, redis_keys, BOTS))["loja"]
    assert (loja.state, loja.pending) == ("running", None)
    assert loja.last_update_age_s is not None and 0 <= loja.last_update_age_s < 5


async def test_empty_redis_and_no_bots(redis: Redis, redis_keys: RedisKeys) -> None:
    status = await read_status(redis, redis_keys, [])
    assert (status.instances, status.bots) == ([], [])
    assert "(none)" in render_table(status)
    assert to_json(status)["bots"] == []


async def test_render_table_has_one_row_per_instance_and_bot(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    await write_layout(redis, redis_keys)
    table = render_table(await read_status(redis, redis_keys, BOTS, disabled={"pausado"}))
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["web-1:blue"][:5] == ["web-1:blue", "host-web-1", "4242", "1h00m", "1"]
    assert rows["web-2"][4] == "1"
    assert rows["loja"][:4] == ["loja", "web-1:blue", "7", "running"]
    assert rows["loja"][5] == "2"
    assert rows["vip"][:4] == ["vip", "web-2", "2", "held"]
    assert rows["livre"] == ["livre", "-", "3", "unowned", "-", "-"]
    assert rows["pausado"] == ["pausado", "-", "-", "disabled", "-", "-"]
    assert "gone" not in rows and "vanished" not in table
    assert "2 live instances" in table
    assert "3 of 5 bots leased" in table


# -- the command, as operators run it -------------------------------------------------------------


def config_text(redis_url: str, prefix: str, database_port: int) -> str:
    bots = "".join(
        f'  - {{id: {bot}, token: "{token}", funnel: main'
        + (", enabled: false" if bot == "pausado" else "")
        + "}\n"
        for bot, token in TOKENS.items()
    )
    return (
        f"redis: {{url: '{redis_url}', key_prefix: {prefix}, connect_timeout: 2}}\n"
        # Nothing listens here: status must never try the database.
        f"database: {{url: 'postgresql://bf:pgpass@127.0.0.1:{database_port}/x'}}\n"
        "funnels:\n  main:\n    welcome: {text: Olá}\n    fallback: {text: Use /start}\n"
        f"bots:\n{bots}"
    )


def assert_no_secrets(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    output = result.stdout + result.stderr
    for secret in [*TOKENS.values(), *(t.split(":")[1] for t in TOKENS.values()), *secrets]:
        assert secret not in output


async def test_cli_status_json_and_table(
    tmp_path: Path, redis: Redis, redis_keys: RedisKeys, redis_config: RedisConfig
) -> None:
    assert redis_config.url is not None
    url = redis_config.url.get_secret_value()
    await write_layout(redis, redis_keys)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(url, redis_keys.prefix, free_port()))

    result = await asyncio.to_thread(botfleet, "status", "-c", str(cfg), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"now_ms", "instances", "bots"}
    assert [i["id"] for i in document["instances"]] == ["web-1:blue", "web-2"]
    assert set(document["instances"][0]) == {
        "id", "host", "pid", "capacity", "version", "uptime_s", "heartbeat_age_s",
        "expires_in_s", "bots",
    }  # fmt: skip
    states = {b["id"]: (b["owner"], b["state"], b["epoch"]) for b in document["bots"]}
    assert states == {
        "loja": ("web-1:blue", "running", 7),
        "vip": ("web-2", "held", 2),
        "livre": (None, "unowned", 3),
        "ghost": ("gone", "held", 1),
        "pausado": (None, "disabled", None),
    }
    assert_no_secrets(result, url, "pgpass")

    table = await asyncio.to_thread(botfleet, "status", "-c", str(cfg))
    assert table.returncode == 0, table.stderr
    assert "web-1:blue" in table.stdout and "unowned" in table.stdout
    assert_no_secrets(table, url, "pgpass")


async def test_cli_status_redis_not_answering_exits_1(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(f"redis://:hunter2@127.0.0.1:{port}/0", "bf", free_port()))
    result = await asyncio.to_thread(botfleet, "status", "-c", str(cfg))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: Redis at redis.url is unreachable")
    assert "Traceback" not in result.stderr
    assert_no_secrets(result, "hunter2")


def test_cli_status_needs_a_redis_url(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text("", "bf", free_port()).replace("url: '',", ""))
    result = botfleet("status", "-c", str(cfg))
    assert result.returncode == 2
    assert result.stderr.startswith("redis.url: not set; status reads the fleet's shared Redis")
    assert_no_secrets(result)


def test_cli_status_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("bots: [\n")
    result = botfleet("status", "-c", str(cfg))
    assert result.returncode == 2
    assert "YAML syntax error" in result.stderr
    assert "Traceback" not in result.stderr
