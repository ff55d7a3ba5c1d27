"""How much the Telegram Bot API emulator sustains on one core, and its memory per idle bot.

The emulator runs as its own process (``botfleet emulator``) pinned to core 0;
this load generator is pinned to core 1 and speaks raw aiohttp (no aiogram, so
the client costs little). Figures:

- sendMessage answered per second, and per CPU-second of the emulator;
- user messages injected through the control API per second;
- resident memory per 1,000 idle bots, each with an open long poll.

Run: ``uv run python bench/emulator.py [--seconds 5] [--bots 1000]``.
Writes ``bench/reports/emulator.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

REPORT = Path(__file__).parent / "reports" / "emulator.md"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Emulator:
    process: asyncio.subprocess.Process
    base_url: str

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self) -> float:
        pages = int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1])
        return pages * PAGE_KB / 1024


@contextlib.asynccontextmanager
async def emulator_process() -> AsyncIterator[Emulator]:
    pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) > 1 else []
    process = await asyncio.create_subprocess_exec(
        *pin, sys.executable, "-m", "fleet", "--log-level", "WARNING", "emulator",
        "--port", "0", "--no-rate-limits",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield Emulator(process, line.split()[-1])
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def control(session: aiohttp.ClientSession, base: str, action: str, **body: object) -> object:
    async with session.post(f"{base}/_emulator/{action}", data=orjson.dumps(body)) as response:
        answer = orjson.loads(await response.read())
    if not answer["ok"]:
        raise RuntimeError(answer["description"])
    return answer["result"]


async def sustained(
    seconds: float, workers: int, one: Callable[[int], Awaitable[None]]
) -> tuple[int, float]:
    """Run ``one(i)`` back to back in ``workers`` loops for ``seconds``: (done, elapsed)."""
    done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        i = index
        while loop.time() < deadline:
            await one(i)
            done += 1
            i += workers

    started = loop.time()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return done, loop.time() - started


async def bench_sends(emu: Emulator, seconds: float, workers: int) -> dict[str, float]:
    token = "9100000001:bench-send"
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:
        await control(session, emu.base_url, "add_bot", token=token)
        users = []
        for _ in range(200):
            user = await control(session, emu.base_url, "add_user", first_name="B")
            assert isinstance(user, dict)
            await control(
                session, emu.base_url, "user_sends", bot=token, user=user["id"], text="/start"
            )
            users.append(user["id"])
        url = f"{emu.base_url}/bot{token}/sendMessage"
        errors = 0

        async def send(i: int) -> None:
            nonlocal errors
            body = orjson.dumps({"chat_id": users[i % len(users)], "text": f"oferta {i}"})
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                errors += r.status != 200

        cpu_before = emu.cpu_seconds()
        done, elapsed = await sustained(seconds, workers, send)
        cpu = emu.cpu_seconds() - cpu_before
        await control(session, emu.base_url, "reset_transcripts")
    return {
        "requests": done,
        "per_second": done / elapsed,
        "per_cpu_second": done / cpu if cpu else 0.0,
        "emulator_cpu_share": cpu / elapsed,
        "errors": errors,
    }


async def bench_injection(emu: Emulator, seconds: float, workers: int) -> dict[str, float]:
    token = "9100000002:bench-inject"
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:
        await control(session, emu.base_url, "add_bot", token=token)
        users = []
        for _ in range(200):
            user = await control(session, emu.base_url, "add_user", first_name="I")
            assert isinstance(user, dict)
            users.append(user["id"])

        async def inject(i: int) -> None:
            await control(
                session,
                emu.base_url,
                "user_sends",
                bot=token,
                user=users[i % len(users)],
                text=f"oi {i}",
            )

        cpu_before = emu.cpu_seconds()
        done, elapsed = await sustained(seconds, workers, inject)
        cpu = emu.cpu_seconds() - cpu_before
        pending = await control(session, emu.base_url, "counters")
    assert isinstance(pending, dict)
    return {
        "injected": done,
        "per_second": done / elapsed,
        "per_cpu_second": done / cpu if cpu else 0.0,
        "updates_pending": pending["updates_pending"],
    }


async def bench_idle_memory(emu: Emulator, bots: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        before = emu.rss_mib()
        tokens = [f"{9_200_000_000 + i}:idle-bot-{i}" for i in range(bots)]
        for token in tokens:
            await control(session, emu.base_url, "add_bot", token=token)
        after_bots = emu.rss_mib()

        async def long_poll(token: str) -> None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
                async with session.get(f"{emu.base_url}/bot{token}/getUpdates?timeout=90") as r:
                    await r.read()

        polls = [asyncio.create_task(long_poll(token)) for token in tokens]
        deadline = time.monotonic() + 60
        while True:
            counters = await control(session, emu.base_url, "counters")
            assert isinstance(counters, dict)
            if counters["long_polls_open"] >= bots or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)  # polling a counter on the other process, with a deadline
        open_polls = counters["long_polls_open"]
        after_polls = emu.rss_mib()
        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    scale = 1000 / bots
    return {
        "bots": bots,
        "long_polls_open": open_polls,
        "rss_before_mib": before,
        "rss_after_mib": after_polls,
        "mib_per_1000_bots": (after_bots - before) * scale,
        "mib_per_1000_bots_with_polls": (after_polls - before) * scale,
    }


async def main(seconds: float, bots: int, workers: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {1})
    async with emulator_process() as emu:
        sends = await bench_sends(emu, seconds, workers)
        print(
            f"sendMessage: {sends['per_second']:.0f} req/s "
            f"({sends['per_cpu_second']:.0f} per emulator CPU-second, "
            f"emulator core busy {sends['emulator_cpu_share']:.0%}, "
            f"errors {sends['errors']:.0f})"
        )
        injection = await bench_injection(emu, seconds, workers)
        print(f"user messages injected: {injection['per_second']:.0f}/s "
              f"({injection['per_cpu_second']:.0f} per emulator CPU-second)")  # fmt: skip
        memory = await bench_idle_memory(emu, bots)
        print(f"idle bots: {memory['long_polls_open']:.0f} long polls open; "
              f"{memory['mib_per_1000_bots_with_polls']:.1f} MiB per 1,000 bots with polls "
              f"({memory['mib_per_1000_bots']:.1f} MiB for the bots alone)")  # fmt: skip
    write_report(seconds, workers, sends, injection, memory)
    print(f"report: {REPORT}")


def write_report(
    seconds: float,
    workers: int,
    sends: dict[str, float],
    injection: dict[str, float],
    memory: dict[str, float],
) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        f"""# Emulator benchmark

`uv run python bench/emulator.py --seconds {seconds:g} --bots {memory["bots"]:.0f}`
on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.
The emulator process is pinned to core 0, the load generator to core 1;
{workers} concurrent clients, flood limits off.

| figure | value |
|---|---|
| sendMessage answered | {sends["per_second"]:.0f} req/s |
| sendMessage per emulator CPU-second | {sends["per_cpu_second"]:.0f} |
| emulator core busy during sends | {sends["emulator_cpu_share"]:.0%} |
| user messages injected (control API) | {injection["per_second"]:.0f} /s |
| injected per emulator CPU-second | {injection["per_cpu_second"]:.0f} |
| idle bots with an open long poll | {memory["long_polls_open"]:.0f} |
| RSS per 1,000 idle bots, polls open | {memory["mib_per_1000_bots_with_polls"]:.1f} MiB |
| RSS per 1,000 bots, no polls | {memory["mib_per_1000_bots"]:.1f} MiB |
| emulator RSS before / after the idle bots \
| {memory["rss_before_mib"]:.0f} / {memory["rss_after_mib"]:.0f} MiB |
""",
        encoding="utf-8",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.bots, args.workers))
