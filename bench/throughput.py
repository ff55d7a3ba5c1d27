"""botfleet against plain aiogram on the same workload: N bots x M users send /start.

The emulator runs in its own process (core 0); the fleet under test in another
(core 1), first ``botfleet run`` (dedup, ordering, Postgres logging), then the
baseline ``bench/baseline_aiogram.py`` (``start_polling(*bots)``, nothing else).
Figures: updates/s until every user has its welcome, latency p50/p95/p99 from
user message to reply (emulator clock), CPU per update, and botfleet's RSS with
1,000 and 5,000 idle bots.

Needs PostgreSQL and Redis: ``BOTFLEET_BENCH_DATABASE_URL`` (an admin URL; a
scratch database is created and dropped) and ``BOTFLEET_BENCH_REDIS_URL``,
default the local servers. Run: ``uv run python bench/throughput.py``.
Writes ``bench/reports/throughput.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
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

# Run as a script from anywhere: make the repository importable for bench.emulator.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.emulator import Emulator, control, emulator_process

REPORT = Path(__file__).parent / "reports" / "throughput.md"
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


def write_config(path: Path, db_url: str, redis_url: str, emulator_url: str, bots: int) -> None:
    data: dict[str, Any] = {
        "instance": {"id": "bench"},
        "redis": {"url": redis_url, "key_prefix": f"bench{secrets.token_hex(3)}", "pool_size": 128},
        "database": {"url": db_url},
        "http": {"host": "127.0.0.1", "port": 0},
        "telegram": {"api_base": emulator_url, "polling_timeout": 10},
        "runtime": {"user_messages_per_minute": 1000, "watchdog": False},
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


async def workload(
    http: aiohttp.ClientSession, emu: Emulator, pid: int, bots: int, users: int
) -> dict[str, float]:
    """Wait for every bot's long poll, inject bots x users /start, time the welcomes."""

    async def polls_open() -> bool:
        counters = await control(http, emu.base_url, "counters")
        assert isinstance(counters, dict)
        return bool(counters["long_polls_open"] >= bots)

    await until(polls_open, 300, "bots did not start polling")
    await control(http, emu.base_url, "reset_transcripts")
    before = await control(http, emu.base_url, "counters")
    assert isinstance(before, dict)
    people = []
    for _ in range(users):
        user = await control(http, emu.base_url, "add_user", first_name="Bench")
        assert isinstance(user, dict)
        people.append(user["id"])
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    sem = asyncio.Semaphore(64)

    async def inject(bot: int, user: int) -> None:
        async with sem:
            await control(
                http, emu.base_url, "user_sends", bot=token(bot), user=user, text="/start"
            )

    await asyncio.gather(*(inject(b, u) for u in people for b in range(bots)))
    expected = before["sent"] + bots * users

    async def all_sent() -> bool:
        counters = await control(http, emu.base_url, "counters")
        assert isinstance(counters, dict)
        return bool(counters["sent"] >= expected)

    await until(all_sent, 600, "not every welcome arrived")
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    latencies = await control(http, emu.base_url, "reply_latencies")
    assert isinstance(latencies, list)
    ms = sorted(1000 * x for x in latencies)
    q = statistics.quantiles(ms, n=100)
    updates = bots * users
    return {
        "updates": updates,
        "per_second": updates / elapsed,
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "cpu_ms_per_update": 1000 * cpu / updates,
    }


async def run_fleet(
    http: aiohttp.ClientSession, emu: Emulator, work: Path, db: str, redis: str, bots: int
) -> asyncio.subprocess.Process:
    config = work / f"fleet-{bots}.yaml"
    write_config(config, db, redis, emu.base_url, bots)
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
    redis = os.environ.get("BOTFLEET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    work = Path(tempfile.mkdtemp(prefix="botfleet-bench-"))
    results: dict[str, Any] = {}
    async with scratch_database(admin) as db, aiohttp.ClientSession() as http:
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--log-level", "WARNING", "db", "upgrade",
            "-c", str(_db_only(work, db)),
        )  # fmt: skip
        assert await migrate.wait() == 0
        async with emulator_process() as emu:
            fleet = await run_fleet(http, emu, work, db, redis, args.bots)
            try:
                results["botfleet"] = await workload(http, emu, fleet.pid, args.bots, args.users)
            finally:
                await stop(fleet)
            print("botfleet:", _line(results["botfleet"]))
            tokens = work / "tokens.txt"
            tokens.write_text("\n".join(token(i) for i in range(args.bots)))
            baseline = await start(str(BASELINE), emu.base_url, str(tokens))
            try:
                results["baseline"] = await workload(http, emu, baseline.pid, args.bots, args.users)
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
    ratio = results["botfleet"]["per_second"] / results["baseline"]["per_second"]
    print(f"throughput ratio botfleet / baseline: {ratio:.2f}")
    write_report(args, results, ratio)
    print(f"report: {REPORT}")


def _db_only(work: Path, db: str) -> Path:
    path = work / "db.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": db}}), encoding="utf-8")
    return path


def _line(r: dict[str, float]) -> str:
    return (
        f"{r['per_second']:.0f} updates/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
        f"p99 {r['p99_ms']:.0f} ms, {r['cpu_ms_per_update']:.2f} ms CPU per update"
    )


def write_report(args: argparse.Namespace, results: dict[str, Any], ratio: float) -> None:
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
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        f"""# Throughput: botfleet against plain aiogram

`uv run python bench/throughput.py --bots {args.bots} --users {args.users}` on
{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.
Emulator (limits off) pinned to core 0, the fleet under test to core 1.
Each of {args.bots} bots x {args.users} users sends /start once; one welcome each.

| fleet | updates/s | p50 ms | p95 ms | p99 ms | CPU ms/update |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Ratio botfleet / baseline (updates/s): **{ratio:.2f}**. botfleet does more per
update: Redis dedup claim and completion, per-chat ordering, debounce and
throttle in Redis, the send ledger and token buckets in Redis, user and
message rows batched to PostgreSQL.

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
    asyncio.run(main(parser.parse_args()))
