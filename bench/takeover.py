"""Takeover after kill -9, with real processes: how fast, and what it costs.

Three ``botfleet run`` instances share the bots through leases on a Redis
server of our own; the emulator plays Telegram in this process and a steady
``/start`` load runs throughout. Each round kills one instance with SIGKILL,
times until every one of its bots is leased and running on a survivor, then
starts it again and waits until the bots are back with their HRW owners.

Prints and writes ``bench/reports/takeover.md``: takeover time p50 / max,
replies lost and duplicated over the whole run (a welcome whose send was in
flight at the kill is reported as *orphaned*: at most once by design), and
Redis commands per bot per second spent on leases in a quiet period.

Needs PostgreSQL (``BOTFLEET_BENCH_DATABASE_URL``, an admin URL; a scratch
database is created and dropped) and a ``redis-server`` binary.

    uv run python -m bench.takeover --kills 20 --bots 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.throughput import _db_only, scratch_database
from fleet.emulator import EmulatorServer, EmulatorSettings
from tests.cluster.harness import LEASES, Cluster, Load, RedisServer

NAMES = ["i1", "i2", "i3"]
REPORT = Path(__file__).parent / "reports" / "takeover.md"
ORPHAN_LINE = "claimed by a previous owner; not resent"


async def lease_traffic(cluster: Cluster, seconds: float) -> tuple[float, float]:
    """(top-level, including commands run inside Lua) per bot per second, no load running."""
    redis: Redis = cluster.redis
    await redis.config_resetstat()
    await asyncio.sleep(seconds)  # the measurement window
    stats = await redis.info("commandstats")
    total = sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))
    top = sum(
        int(v["calls"])
        for k, v in stats.items()
        if k in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_mget", "cmdstat_zrem")
    )
    per = len(cluster.bot_ids) * seconds
    return top / per, total / per


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin = os.environ.get(
        "BOTFLEET_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    work = Path(tempfile.mkdtemp(prefix="botfleet-takeover-"))
    redis_server = RedisServer(work / "redis")
    await redis_server.start()
    try:
        async with (
            scratch_database(admin) as db,
            EmulatorServer(settings=EmulatorSettings(seed=3)) as emulator_server,
        ):
            migrate = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleet", "--log-level", "WARNING", "db", "upgrade",
                "-c", str(_db_only(work, db)),
            )  # fmt: skip
            assert await migrate.wait() == 0
            cluster = Cluster(
                work, emulator_server.emulator, emulator_server.base_url, db, redis_server,
                args.bots,
            )  # fmt: skip
            try:
                return await rounds(cluster, args)
            finally:
                await cluster.close()
    finally:
        await redis_server.stop()


async def rounds(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    for name in NAMES:
        await cluster.start(name)
    await cluster.wait(lambda: cluster.converged(NAMES), 120)
    top, total = await lease_traffic(cluster, args.quiet)
    conflicts_before = cluster.conflicts()
    load = Load(cluster, interval=args.interval)
    load.start()
    loop = asyncio.get_running_loop()
    takeovers: list[float] = []
    for k in range(args.kills):
        victim = NAMES[k % len(NAMES)]
        survivors = [n for n in NAMES if n != victim]
        await cluster.kill(victim)
        killed = loop.time()
        await cluster.wait(lambda s=survivors: cluster.converged(s), 60, poll=0.05)  # type: ignore[misc]
        takeovers.append(loop.time() - killed)
        print(f"kill {k + 1:2d}/{args.kills}: {victim} -> takeover {takeovers[-1]:.2f} s")
        await cluster.start(victim)
        await cluster.wait(lambda: cluster.converged(NAMES), 120)
    await load.stop()
    emulator = cluster.emulator
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 120)
    replies = load.replies()
    orphaned = sum(i.log().count(ORPHAN_LINE) for i in cluster.instances.values())
    return {
        "bots": args.bots,
        "kills": args.kills,
        "messages": len(replies),
        "lost": replies.count(0),
        "duplicated": sum(1 for r in replies if r > 1),
        "orphaned": orphaned,
        "takeover_p50": statistics.median(takeovers),
        "takeover_max": max(takeovers),
        "takeovers": takeovers,
        "conflicts_409": cluster.conflicts() - conflicts_before,
        "lease_cmds_per_bot_s": top,
        "redis_cmds_per_bot_s_incl_lua": total,
        "bound": LEASES["ttl"] + LEASES["retry_period"] + 2,
    }


def write_report(r: dict[str, Any]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    times = ", ".join(f"{t:.1f}" for t in r["takeovers"])
    REPORT.write_text(
        f"""# Takeover after kill -9 (bench/takeover.py)

3 instances, {r["bots"]} bots, a steady `/start` load from new users; {r["kills"]} rounds of
SIGKILL + restart. Leases: ttl {LEASES["ttl"]} s, renew deadline {LEASES["renew_deadline"]} s,
retry period {LEASES["retry_period"]} s, takeover grace {LEASES["takeover_grace"]} s;
getUpdates timeout 2 s.

| figure | value |
|---|---|
| takeover p50 | {r["takeover_p50"]:.2f} s |
| takeover max | {r["takeover_max"]:.2f} s |
| bound: TTL + retry period + one poll | {r["bound"]:.1f} s |
| user messages | {r["messages"]} |
| lost replies | {r["lost"]} |
| duplicated replies | {r["duplicated"]} |
| orphaned sends (in flight at a kill; not resent) | {r["orphaned"]} |
| 409 answers during the run | {r["conflicts_409"]} |
| lease commands per bot per second (EVALSHA, MGET) | {r["lease_cmds_per_bot_s"]:.3f} |
| Redis commands per bot per second, inner Lua calls included \
| {r["redis_cmds_per_bot_s_incl_lua"]:.3f} |

Takeover times (s): {times}

Takeover is measured from the SIGKILL until every bot is leased by its HRW
owner among the survivors *and* reported running there. A reply can be lost
only if its send was in flight at the kill (claimed, not yet acknowledged):
the next owner finds the claim of the dead epoch and does not resend it
(invariant 4, at most once), so `lost <= orphaned` always.
""",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--bots", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between users")
    parser.add_argument("--quiet", type=float, default=10.0, help="lease traffic window, s")
    results = asyncio.run(run(parser.parse_args()))
    for key, value in results.items():
        if key != "takeovers":
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    write_report(results)
    print(f"report: {REPORT}")


if __name__ == "__main__":
    main()
