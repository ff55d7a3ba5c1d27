"""botfleet against plain aiogram on the same workload: N bots x M users send /start.

The emulator runs in its own process (core 0); the fleet under test in another
(core 1), first ``botfleet run`` (dedup, ordering, Postgres logging), then the
baseline ``bench/baseline_aiogram.py`` (``start_polling(*bots)``, nothing else).
Figures: updates/s until every user has its welcome, latency p50/p95/p99 from
user message to reply (emulator clock), CPU per update, botfleet's Redis round
trips and commands per update and Redis memory per 1,000 updates (keys left
once every update is confirmed), and its RSS with 1,000 and 5,000 idle bots.

Needs PostgreSQL (``BOTFLEET_BENCH_DATABASE_URL``, an admin URL; a scratch
database is created and dropped, default the local server) and a
``redis-server`` binary: the fleet gets a Redis of its own (no persistence), so
its statistics count nothing else. ``--profile`` samples the fleet with py-spy
during the workload and writes the top of the profile next to the report.
Run: ``uv run python -m bench.throughput``. Writes ``bench/reports/throughput.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from redis.asyncio import Redis

# Run as a script from anywhere: make the repository importable for bench.emulator.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.emulator import Emulator, control, emulator_process
from tests.cluster.harness import RedisServer

REPORTS = Path(__file__).parent / "reports"
BASELINE = Path(__file__).parent / "baseline_aiogram.py"
TICKS = os.sysconf("SC_CLK_TCK")
WELCOME = "Bem-vindo! Escolha um plano abaixo."


def token(index: int) -> str:
    return f"{9_300_000_000 + index}:bench-fleet-token-{index:05d}-xxxxxxxx"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    name = f"botfleet_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def write_config(
    path: Path, db_url: str, redis_url: str, prefix: str, emulator_url: str, bots: int
) -> None:
    data: dict[str, Any] = {
        "instance": {"id": "bench"},
        "redis": {"url": redis_url, "key_prefix": prefix, "pool_size": 128},
        "database": {"url": db_url},
        "http": {"host": "127.0.0.1", "port": 0},
        "telegram": {"api_base": emulator_url, "polling_timeout": 10}
        | yaml.safe_load(os.environ.get("BENCH_TELEGRAM", "{}")),
        "runtime": {"user_messages_per_minute": 1000, "watchdog": False}
        | yaml.safe_load(os.environ.get("BENCH_RUNTIME", "{}")),
        "funnels": {"main": {"welcome": {"text": WELCOME}, "fallback": {"text": "?"}}},
        "bots": [{"id": f"b{i:05d}", "token": token(i), "funnel": "main"} for i in range(bots)],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


async def start(*argv: str, log: Path | None = None) -> asyncio.subprocess.Process:
    pin = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 else []
    with log.open("ab") if log else open(os.devnull, "wb") as sink:  # noqa: ASYNC230 - once
        return await asyncio.create_subprocess_exec(
            *pin, sys.executable, *argv, stdout=sink, stderr=sink,
        )  # fmt: skip


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


async def until(check: Any, within: float, what: str) -> Any:
    """Poll another process's counters with a deadline (it has no events to wait on)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


async def redis_figures(redis: Redis, prefix: str) -> dict[str, float]:
    """Round trips (read events), commands, and the keys under ``prefix`` with their memory."""
    stats = await redis.info("stats")
    keys = memory = lasting = lasting_memory = 0
    kinds: dict[str, float] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        size = int(await redis.memory_usage(key) or 0)
        keys += 1
        memory += size
        ttl = await redis.pttl(key)
        if ttl == -1 or ttl > 60_000:  # outlives the run by more than a minute
            lasting += 1
            lasting_memory += size
            kind = f"kind:{key.decode().split(':')[1]}"
            kinds[kind] = kinds.get(kind, 0.0) + 1
    return {
        "reads": float(stats["total_reads_processed"]),
        "commands": float(stats["total_commands_processed"]),
        "keys": float(keys),
        "key_bytes": float(memory),
        "lasting": float(lasting),
        "lasting_bytes": float(lasting_memory),
        **kinds,
    }


async def workload(
    http: aiohttp.ClientSession,
    emu: Emulator,
    pid: int,
    bots: int,
    users: int,
    *,
    redis: tuple[Redis, str] | None = None,
    redis_pid: int | None = None,
    profile: Path | None = None,
    rounds_wanted: int = 1,
) -> dict[str, float]:
    """Wait for every bot's long poll, inject bots x users /start, time the welcomes."""

    async def polls_open() -> bool:
        counters = await control(http, emu.base_url, "counters")
        assert isinstance(counters, dict)
        return bool(counters["long_polls_open"] >= bots)

    await until(polls_open, 300, "bots did not start polling")
    # Warm-up, the same for both fleets: one /start per bot builds what is built on
    # first use (botfleet's lazy Dispatchers and pydantic validators, aiogram's models).
    warm = await control(http, emu.base_url, "add_user", first_name="Warm")
    assert isinstance(warm, dict)
    warmed = await control(http, emu.base_url, "counters")
    assert isinstance(warmed, dict)
    for bot in range(bots):
        await control(
            http, emu.base_url, "user_sends", bot=token(bot), user=warm["id"], text="/start"
        )

    async def warm_sent() -> bool:
        counters = await control(http, emu.base_url, "counters")
        assert isinstance(counters, dict)
        return bool(counters["sent"] >= warmed["sent"] + bots)

    try:
        await until(warm_sent, 120, "warm-up welcomes did not arrive")
    except TimeoutError:
        print("counters at the timeout:", await control(http, emu.base_url, "counters"))
        raise
    redis_before = await redis_figures(*redis) if redis else None
    spy = await start_profiler(pid, profile) if profile else None
    rounds = []
    for index in range(max(1, rounds_wanted)):
        if index:
            # botfleet keeps Telegram's 30 messages/s per bot (the baseline does not): let
            # the buckets refill, so that every round starts as the first one does.
            await asyncio.sleep(1.5)
        rounds.append(await _round(http, emu, pid, bots, users, redis_pid))
    if spy is not None:
        await stop_profiler(spy)
    updates = bots * users * len(rounds)
    elapsed = sum(r["elapsed"] for r in rounds)
    ms = sorted(x for r in rounds for x in r["latencies_ms"])
    q = statistics.quantiles(ms, n=100)
    figures = {
        "updates": updates,
        "rounds": len(rounds),
        # The median round: one round lasts about a second, and a second here is noisy.
        "per_second": statistics.median(bots * users / r["elapsed"] for r in rounds),
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "cpu_ms_per_update": 1000 * sum(r["cpu"] for r in rounds) / updates,
        "fleet_core_busy": sum(r["cpu"] for r in rounds) / elapsed,  # of its core
        "emulator_core_busy": sum(r["core0"] for r in rounds) / elapsed,  # + load generator
        "redis_core_busy": sum(r["redis_cpu"] for r in rounds) / elapsed,  # not pinned
        "polls_per_update": sum(r["polls"] for r in rounds) / updates,
    }
    if redis_before is not None and redis is not None:

        async def all_confirmed() -> bool:
            counters = await control(http, emu.base_url, "counters")
            assert isinstance(counters, dict)
            return bool(counters["updates_pending"] == 0)

        await until(all_confirmed, 120, "updates were not confirmed")
        after = await redis_figures(*redis)
        # Less one read per second per bot-independent background loop: negligible here.
        figures["redis_round_trips"] = (after["reads"] - redis_before["reads"]) / updates
        figures["redis_commands"] = (after["commands"] - redis_before["commands"]) / updates
        per_thousand = 1000 / updates
        figures["redis_keys_per_1000"] = (after["keys"] - redis_before["keys"]) * per_thousand
        figures["redis_kib_per_1000"] = (
            (after["key_bytes"] - redis_before["key_bytes"]) * per_thousand / 1024
        )
        figures["redis_lasting_per_1000"] = (
            after["lasting"] - redis_before["lasting"]
        ) * per_thousand
        figures["redis_lasting_kib_per_1000"] = (
            (after["lasting_bytes"] - redis_before["lasting_bytes"]) * per_thousand / 1024
        )
        kinds = sorted(k for k in after if k.startswith("kind:"))
        lasting = {k[5:]: after[k] - redis_before.get(k, 0.0) for k in kinds}
        print("keys outliving a minute, by kind:", lasting)
    return figures


async def _round(
    http: aiohttp.ClientSession,
    emu: Emulator,
    pid: int,
    bots: int,
    users: int,
    redis_pid: int | None,
) -> dict[str, Any]:
    """New users each send /start to every bot; until every welcome arrived."""
    await control(http, emu.base_url, "reset_transcripts")
    before = await control(http, emu.base_url, "counters")
    assert isinstance(before, dict)
    people = []
    for _ in range(users):
        user = await control(http, emu.base_url, "add_user", first_name="Bench")
        assert isinstance(user, dict)
        people.append(user["id"])
    cpu_before = cpu_seconds(pid)
    core0_before = emu.cpu_seconds() + cpu_seconds(os.getpid())
    redis_cpu_before = cpu_seconds(redis_pid) if redis_pid else 0.0
    started = time.monotonic()
    # In requests of 50 (the emulator's batch action): injecting costs core 0 little, so the
    # round measures the fleet, not the load generator.
    sends = [{"bot": token(b), "user": u, "text": "/start"} for u in people for b in range(bots)]
    chunks = [sends[i : i + 50] for i in range(0, len(sends), 50)]
    sem = asyncio.Semaphore(4)

    async def inject(chunk: list[dict[str, Any]]) -> None:
        async with sem:
            await control(http, emu.base_url, "user_sends_many", sends=chunk)

    await asyncio.gather(*(inject(chunk) for chunk in chunks))
    expected = before["sent"] + bots * users

    async def all_sent() -> bool:
        counters = await control(http, emu.base_url, "counters")
        assert isinstance(counters, dict)
        return bool(counters["sent"] >= expected)

    await until(all_sent, 600, "not every welcome arrived")
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    core0 = emu.cpu_seconds() + cpu_seconds(os.getpid()) - core0_before
    redis_cpu = cpu_seconds(redis_pid) - redis_cpu_before if redis_pid else 0.0
    after = await control(http, emu.base_url, "counters")
    assert isinstance(after, dict)
    polls = after["requests"].get("getupdates", 0) - before["requests"].get("getupdates", 0)
    latencies = await control(http, emu.base_url, "reply_latencies")
    assert isinstance(latencies, list)
    return {
        "elapsed": elapsed,
        "cpu": cpu,
        "core0": core0,
        "redis_cpu": redis_cpu,
        "polls": polls,
        "latencies_ms": [1000 * x for x in latencies],
    }


async def start_profiler(pid: int, out: Path) -> asyncio.subprocess.Process:
    """py-spy samples the fleet (raw collapsed stacks), if it is installed."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
        "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def stop_profiler(spy: asyncio.subprocess.Process) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    await asyncio.wait_for(spy.wait(), 60)


def summarize_profile(raw: Path, out: Path, top: int = 40, workload: str = "throughput") -> None:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        out.write_text("no samples\n", encoding="utf-8")
        return

    def table(data: dict[str, int]) -> str:
        rows = sorted(data.items(), key=lambda item: -item[1])[:top]
        return "\n".join(f"| {100 * n / total:5.1f}% | `{name}` |" for name, n in rows)

    out.write_text(
        f"""# Profile of the fleet during the {workload} workload

py-spy, 200 samples/s, {total} samples of the fleet's main thread while it was busy
(py-spy leaves out idle samples: waiting on I/O is not in here).

## Self time (top {top})

| share | function |
|---|---|
{table(own)}

## Inclusive time (top {top})

| share | function |
|---|---|
{table(inclusive)}
""",
        encoding="utf-8",
    )


def _frame(text: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name.strip()} ({short})" if name.strip() else ""


async def run_fleet(
    http: aiohttp.ClientSession,
    emu: Emulator,
    work: Path,
    db: str,
    redis: str,
    bots: int,
    prefix: str = "bench",
) -> asyncio.subprocess.Process:
    config = work / f"fleet-{bots}.yaml"
    write_config(config, db, redis, prefix, emu.base_url, bots)
    for i in range(bots):
        await control(http, emu.base_url, "add_bot", token=token(i))
    log = work / f"fleet-{bots}.log"  # kept: why a run was slow or did not start
    return await start("-m", "fleet", "--log-level", "INFO", "run", "-c", str(config), log=log)


async def main(args: argparse.Namespace) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})
    admin = os.environ.get(
        "BOTFLEET_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    work = Path(tempfile.mkdtemp(prefix="botfleet-bench-"))
    report = Path(args.report)
    results: dict[str, Any] = {}
    server = RedisServer(work / "redis", persistent=False)
    await server.start()
    redis = server.url
    client = Redis.from_url(redis)
    try:
        async with scratch_database(admin) as db, aiohttp.ClientSession() as http:
            assert server.process is not None
            redis_pid = server.process.pid
            await measure(args, work, report, db, redis, redis_pid, client, http, results)
    finally:
        await client.aclose()
        await server.stop()
    ratio = results["botfleet"]["per_second"] / results["baseline"]["per_second"]
    cpu_ratio = results["baseline"]["cpu_ms_per_update"] / results["botfleet"]["cpu_ms_per_update"]
    print(f"ratio botfleet / baseline: {ratio:.2f}x updates/s, {cpu_ratio:.2f}x CPU per update")
    write_report(args, report, results, ratio, cpu_ratio)
    print(f"report: {report}")


async def measure(
    args: argparse.Namespace,
    work: Path,
    report: Path,
    db: str,
    redis: str,
    redis_pid: int,
    client: Redis,
    http: aiohttp.ClientSession,
    results: dict[str, Any],
) -> None:
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--log-level", "WARNING", "db", "upgrade",
        "-c", str(_db_only(work, db)),
    )  # fmt: skip
    assert await migrate.wait() == 0
    async with emulator_process() as emu:
        prefix = f"bench{secrets.token_hex(3)}"
        fleet = await run_fleet(http, emu, work, db, redis, args.bots, prefix)
        raw_profile = work / "profile.txt" if args.profile else None
        try:
            results["botfleet"] = await workload(
                http, emu, fleet.pid, args.bots, args.users,
                redis=(client, prefix), redis_pid=redis_pid, profile=raw_profile,
                rounds_wanted=args.rounds,
            )  # fmt: skip
        finally:
            await stop(fleet)
        print("botfleet:", _line(results["botfleet"]))
        if raw_profile is not None:
            top = report.with_name(report.stem + "-profile.md")
            summarize_profile(raw_profile, top)
            print(f"profile: {top}")
        tokens = work / "tokens.txt"
        tokens.write_text("\n".join(token(i) for i in range(args.bots)))
        baseline = await start(str(BASELINE), emu.base_url, str(tokens), log=work / "baseline.log")
        try:
            results["baseline"] = await workload(
                http, emu, baseline.pid, args.bots, args.users, rounds_wanted=args.rounds
            )
        finally:
            await stop(baseline)
        print("baseline:", _line(results["baseline"]))
    for count in args.memory:
        async with emulator_process() as emu:
            fleet = await run_fleet(http, emu, work, db, redis, count)
            try:

                async def polls_open(n: int = count, e: Emulator = emu) -> bool:
                    counters = await control(http, e.base_url, "counters")
                    assert isinstance(counters, dict)
                    return bool(counters["long_polls_open"] >= n)

                await until(polls_open, 600, f"{count} bots did not start")
                rss = rss_mib(fleet.pid)
            finally:
                await stop(fleet)
        results[f"rss_{count}"] = rss
        per_bot = rss * 1024 / count
        print(f"botfleet RSS with {count} idle bots: {rss:.0f} MiB ({per_bot:.0f} KiB/bot)")


def _db_only(work: Path, db: str) -> Path:
    path = work / "db.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": db}}), encoding="utf-8")
    return path


def _line(r: dict[str, float]) -> str:
    line = (
        f"{r['per_second']:.0f} updates/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
        f"p99 {r['p99_ms']:.0f} ms, {r['cpu_ms_per_update']:.2f} ms CPU per update"
        f" (core busy: fleet {r['fleet_core_busy']:.0%}, emulator {r['emulator_core_busy']:.0%},"
        f" redis {r['redis_core_busy']:.0%}), {r['polls_per_update']:.2f} getUpdates per update"
    )
    if "redis_round_trips" in r:
        line += (
            f"; Redis {r['redis_round_trips']:.2f} round trips and {r['redis_commands']:.2f}"
            f" commands per update, {r['redis_keys_per_1000']:.0f} keys and"
            f" {r['redis_kib_per_1000']:.0f} KiB per 1,000 updates, of which"
            f" {r['redis_lasting_per_1000']:.0f} keys and {r['redis_lasting_kib_per_1000']:.0f} KiB"
            " outlive a minute"
        )
    return line


# The same command on the same machine, against the runtime before issue 10 (commit ae530cd,
# with this script and its warm-up): for the before/after table.
BEFORE_COMMIT = "ae530cd"
BEFORE: dict[str, float] = {
    "per_second": 519.0,
    "baseline_per_second": 1201.0,
    "p50_ms": 1770.0,
    "p99_ms": 3639.0,
    "cpu_ms_per_update": 1.91,
    "baseline_cpu_ms_per_update": 0.79,
    "redis_round_trips": 7.22,
    "redis_commands": 23.73,
    "redis_keys_per_1000": 3129.0,
    "redis_kib_per_1000": 320.0,
    "redis_lasting_per_1000": 2000.0,
    "redis_lasting_kib_per_1000": 219.0,
    "rss_1000": 352.0,
    "rss_5000": 931.0,
}


def _before_after(results: dict[str, Any], ratio: float, cpu_ratio: float, args: Any) -> str:
    b, before = results["botfleet"], BEFORE
    rows = [
        ("updates/s, botfleet / baseline", before["per_second"] / before["baseline_per_second"],
         ratio, "{:.2f}x"),
        ("CPU per update, baseline / botfleet",
         before["baseline_cpu_ms_per_update"] / before["cpu_ms_per_update"], cpu_ratio, "{:.2f}x"),
        ("botfleet updates/s", before["per_second"], b["per_second"], "{:.0f}"),
        ("botfleet CPU ms per update", before["cpu_ms_per_update"], b["cpu_ms_per_update"],
         "{:.2f}"),
        ("botfleet p50 / p99 ms", None, None, ""),
        ("Redis round trips per update", before["redis_round_trips"], b["redis_round_trips"],
         "{:.2f}"),
        ("Redis commands per update", before["redis_commands"], b["redis_commands"], "{:.1f}"),
        ("Redis keys per 1,000 updates, right after", before["redis_keys_per_1000"],
         b["redis_keys_per_1000"], "{:.0f}"),
        ("... of which outlive a minute (24 h before)", before["redis_lasting_per_1000"],
         b["redis_lasting_per_1000"], "{:.0f}"),
        ("Redis KiB per 1,000 updates that outlive a minute",
         before["redis_lasting_kib_per_1000"], b["redis_lasting_kib_per_1000"], "{:.0f}"),
    ]  # fmt: skip
    lines = []
    for name, old, new, fmt in rows:
        if old is None:
            lines.append(
                f"| {name} | {before['p50_ms']:.0f} / {before['p99_ms']:.0f} "
                f"| {b['p50_ms']:.0f} / {b['p99_ms']:.0f} |"
            )
        else:
            lines.append(f"| {name} | {fmt.format(old)} | {fmt.format(new)} |")
    for count in args.memory:
        if f"rss_{count}" in results and f"rss_{count}" in before:
            old_kib = before[f"rss_{count}"] * 1024 / count
            new_kib = results[f"rss_{count}"] * 1024 / count
            lines.append(
                f"| RSS per idle bot at {count} bots | {old_kib:.0f} KiB | {new_kib:.0f} KiB |"
            )
    return "\n".join([f"| figure | before ({BEFORE_COMMIT}) | now |", "|---|---|---|", *lines])


def write_report(
    args: argparse.Namespace,
    report: Path,
    results: dict[str, Any],
    ratio: float,
    cpu_ratio: float,
) -> None:
    rows = []
    for name in ("botfleet", "baseline"):
        r = results[name]
        rows.append(
            f"| {name} | {r['per_second']:.0f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['p99_ms']:.0f} | {r['cpu_ms_per_update']:.2f} |"
        )
    memory = "\n".join(
        f"| {n} | {results[f'rss_{n}']:.0f} MiB | {results[f'rss_{n}'] * 1024 / n:.0f} KiB |"
        for n in args.memory
    )
    b = results["botfleet"]
    comparison = _before_after(results, ratio, cpu_ratio, args)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        f"""# Throughput: botfleet against plain aiogram

`uv run python -m bench.throughput --bots {args.bots} --users {args.users}` on
{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.
Emulator (limits off) pinned to core 0, the fleet under test to core 1.
Each of {args.bots} bots x {args.users} users sends /start once; one welcome each;
{args.rounds} rounds with new users per fleet, 1.5 s apart (botfleet keeps Telegram's
30 messages/s per bot; the pause refills its buckets): updates/s is the median
round, CPU and latencies over all rounds.

| fleet | updates/s | p50 ms | p95 ms | p99 ms | CPU ms/update |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Ratio botfleet / baseline: **{ratio:.2f}x** in updates/s, **{cpu_ratio:.2f}x** in
CPU per update (baseline CPU / botfleet CPU). botfleet does more per update:
an update claim and its completion in Redis (a batch each), per-chat ordering,
flood limit and /start debounce, the send ledger and token buckets in Redis,
user and message rows batched to PostgreSQL. Both fleets get the same warm-up
first (one /start per bot). Core busy: the fleet {b["fleet_core_busy"]:.0%}, the
emulator and this load generator {b["emulator_core_busy"]:.0%}, botfleet's Redis
{b["redis_core_busy"]:.0%}.

## Before and after issue 10

{comparison}

| botfleet and its Redis (a server of its own) | per update |
|---|---|
| round trips (read events at the server) | {b["redis_round_trips"]:.2f} |
| commands (Lua calls inside scripts included) | {b["redis_commands"]:.2f} |
| keys left once every update is confirmed, per 1,000 updates | {b["redis_keys_per_1000"]:.0f} |
| their memory (`MEMORY USAGE`), per 1,000 updates | {b["redis_kib_per_1000"]:.0f} KiB |
| of those, keys that outlive the run by a minute or more, per 1,000 updates \
| {b["redis_lasting_per_1000"]:.0f} |
| their memory, per 1,000 updates | {b["redis_lasting_kib_per_1000"]:.1f} KiB |

| idle bots (botfleet) | RSS | per bot |
|---|---|---|
{memory}
""",
        encoding="utf-8",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bots", type=int, default=50)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--memory", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=5, help="workload rounds per fleet")
    parser.add_argument("--profile", action="store_true", help="py-spy the fleet's workload")
    parser.add_argument("--report", default=str(REPORTS / "throughput.md"))
    asyncio.run(main(parser.parse_args()))
