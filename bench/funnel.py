"""Buyers through the whole funnel on one ``botfleet run`` instance: how many per second.

The fleet runs in its own process on core 1 (N bots, the sandbox gateway, its own
Redis, a scratch PostgreSQL database); the emulator (Telegram and the sandbox's
API) and the buyers share core 0 in this process. Buyers arrive at ``--rate`` a
second, round robin over the bots; each does the next step once its message is on
screen: ``/start`` with a campaign code -> welcome (photo, caption, plan buttons)
-> a plan -> the order bump (taken by every other buyer of the plan that has one)
-> PIX (QR photo + code) -> pays in the sandbox bank app -> the access message.

Figures: buyers completed per second (first /start to last access), per step the
time from the buyer's action to the bot's answer (emulator clock, p50/p95/p99),
the same steps inside the fleet (``botfleet_funnel_step_seconds``), the fleet's
CPU per buyer and its RSS, and every chat checked for a message received twice.
Telegram's per-chat limit (1 message/s after a burst of 3) is kept by the fleet as
in production, so a buyer's own way takes seconds whatever the load; the rate is
what the fleet sustains for many buyers at once.

Needs PostgreSQL (``BOTFLEET_BENCH_DATABASE_URL``, an admin URL; a scratch
database is created and dropped) and a ``redis-server`` binary.

    uv run python -m bench.funnel [--bots 20] [--buyers 1000] [--rate 100]

Writes ``bench/reports/funnel.md`` (``--report`` another name: the committed
``funnel-paced.md`` is ``--rate 25``, below what one instance takes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.throughput import (
    _db_only,
    cpu_seconds,
    rss_mib,
    scratch_database,
    start,
    start_profiler,
    stop,
    stop_profiler,
    summarize_profile,
    until,
)
from bench.webhooks import bucket_quantile
from fleet.emulator import EmulatorServer, EmulatorSettings, TelegramEmulator, User
from fleet.emulator.pix import DEFAULT_SECRET
from fleet.emulator.world import Action, Sent
from tests.cluster.harness import RedisServer
from tests.services import free_port

REPORT = Path(__file__).parent / "reports" / "funnel.md"
STEPS = ("welcome", "plan", "bump", "access")


def token(index: int) -> str:
    return f"{9_500_000_000 + index}:bench-funnel-token-{index:05d}-xxxxxxxx"


def funnel() -> dict[str, Any]:
    return {
        "gateway": "sbx",
        "welcome": {
            "text": "Olá {first_name}! Escolha um plano:",
            "media": {"type": "photo", "url": "https://cdn.example.com/capa.jpg"},
        },
        "fallback": {"text": "Toque em /start."},
        "plans": [
            {
                "id": "mensal", "button": "Mensal", "price": "19.90",
                "deliver": {"link": "https://t.me/+mensal"},
                "order_bumps": [{"id": "ebook", "text": "E-book junto?", "price": "9.90"}],
            },
            {"id": "anual", "button": "Anual", "price": "99.90",
             "deliver": {"link": "https://t.me/+anual"}},
        ],
        "downsells": [
            {"id": "d1", "after": "1h", "text": "Só hoje!", "discount_percent": 30},
        ],
    }  # fmt: skip


def write_config(path: Path, db: str, redis: str, emulator: str, port: int, bots: int) -> None:
    data: dict[str, Any] = {
        "instance": {"id": "bench-funnel"},
        "redis": {"url": redis, "key_prefix": "bench-funnel", "pool_size": 128},
        "database": {"url": db, "pool_size": 20},
        "http": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        "telegram": {"api_base": emulator, "polling_timeout": 10},
        "runtime": {"user_messages_per_minute": 1000, "watchdog": False},
        "gateways": [
            {"id": "sbx", "kind": "sandbox", "api_base": emulator, "webhook_secret": DEFAULT_SECRET}
        ],
        "payments": {
            "url_secret": "bench-funnel-url-secret-0123456789",
            "jobs_interval": 1,
            "cooldown_seconds": 0,
        },
        "funnels": {"main": funnel()},
        "bots": [{"id": f"f{i:04d}", "token": token(i), "funnel": "main"} for i in range(bots)],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


@dataclass
class Buyer:
    index: int
    bot: int
    user: User
    plan: str
    takes_bump: bool
    step: str = "new"
    seen: int = 0
    waiting: tuple[str, float] | None = None  # (step, since): the answer we wait for
    took: dict[str, float] = field(default_factory=dict)  # step -> seconds
    payment_id: int | None = None
    done_at: float = 0.0

    @property
    def token(self) -> str:
        return token(self.bot)


def _button(sent: Sent, prefix: str) -> str | None:
    datas = (str(b.get("callback_data", "")) for b in sent.buttons())
    return next((data for data in datas if data.startswith(prefix)), None)


def _press(emulator: TelegramEmulator, buyer: Buyer, sent: Sent, data: str, step: str) -> None:
    action: Action = emulator.press_button(buyer.token, buyer.user, sent, data=data)
    buyer.waiting = (step, action.at)


def advance(emulator: TelegramEmulator, buyer: Buyer, charges: dict[str, str]) -> None:
    """One look at the buyer's chat; the next step once its message is there."""
    transcript = emulator.transcript(buyer.token, buyer.user)
    fresh, buyer.seen = transcript[buyer.seen :], len(transcript)
    for sent in fresh:
        if buyer.waiting is not None:  # the first answer to what the buyer did
            step, since = buyer.waiting
            buyer.took.setdefault(step, sent.at - since)
        if buyer.step == "start" and _button(sent, "pl:"):
            _press(emulator, buyer, sent, f"pl:{buyer.plan}", "plan")
            buyer.step = "chose"
        elif buyer.step == "chose" and (bump := _button(sent, "bu:")):
            _press(emulator, buyer, sent, bump[:-1] + ("1" if buyer.takes_bump else "0"), "bump")
        elif buyer.step == "chose" and (check := _button(sent, "ck:")):
            buyer.payment_id = int(check[3:])
            buyer.step = "paying"
            buyer.waiting = None
        elif buyer.step == "paying" and "t.me/+" in (sent.text or ""):
            buyer.step, buyer.done_at = "done", sent.at
    if buyer.step == "paying" and buyer.payment_id is not None:
        charge = charges.get(str(buyer.payment_id))
        if charge is not None:
            emulator.pix.pay(charge)  # in the bank app
            buyer.waiting = ("access", time.time())
            buyer.step = "paid"
    if buyer.step == "paid":
        for sent in fresh:
            if "t.me/+" in (sent.text or ""):
                buyer.step, buyer.done_at = "done", sent.at


async def walk(
    emulator: TelegramEmulator, buyers: list[Buyer], rate: float, within: float
) -> float:
    """Arrivals at ``rate``/s; every buyer driven to the end; returns the first /start time."""
    started = time.time()
    arrived = 0
    deadline = time.monotonic() + within
    while any(b.step != "done" for b in buyers):
        if time.monotonic() > deadline:
            stuck = Counter(b.step for b in buyers if b.step != "done")
            raise TimeoutError(f"buyers stuck: {dict(stuck)}")
        due = min(len(buyers), int((time.time() - started) * rate) + 1)
        for buyer in buyers[arrived:due]:
            action = emulator.user_sends(buyer.token, buyer.user, "/start anuncio_bench")
            buyer.step, buyer.waiting = "start", ("welcome", action.at)
        arrived = max(arrived, due)
        charges = {
            c.reference: c.id for c in emulator.pix.charges.values() if c.status == "pending"
        }
        for buyer in buyers[:arrived]:
            if buyer.step != "done":
                advance(emulator, buyer, charges)
        await asyncio.sleep(0.05)  # buyers look at their phones now and then
    return started


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    )
    return {"n": len(values), "p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


async def fleet_steps(port: int) -> dict[str, dict[str, float]]:
    """``botfleet_funnel_step_seconds`` by step: count and p99 from its buckets."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "botfleet_funnel_step_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                counts = buckets.setdefault(sample.labels["step"], {})
                counts[float(sample.labels["le"])] = sample.value
    out: dict[str, dict[str, float]] = {}
    for name, counts in buckets.items():
        out[name] = {
            "n": counts[float("inf")],
            "p50_le": bucket_quantile({}, counts, 0.5) / 1000,  # ms -> s
            "p99_le": bucket_quantile({}, counts, 0.99) / 1000,
        }
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})
    admin = os.environ.get(
        "BOTFLEET_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    work = Path(tempfile.mkdtemp(prefix="botfleet-bench-funnel-"))
    server = RedisServer(work / "redis", persistent=False)
    await server.start()
    try:
        async with (
            scratch_database(admin) as db,
            EmulatorServer(settings=EmulatorSettings(seed=11)) as emu,
        ):
            migrate = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleet", "--log-level", "WARNING", "db", "upgrade",
                "-c", str(_db_only(work, db)),
            )  # fmt: skip
            assert await migrate.wait() == 0
            emulator = emu.emulator
            for i in range(args.bots):
                emulator.add_bot(token(i))
            port = free_port()
            config = work / "fleet.yaml"
            write_config(config, db, server.url, emu.base_url, port, args.bots)
            fleet = await start(
                "-m", "fleet", "--log-level", "WARNING", "run", "-c", str(config),
                log=work / "fleet.log",
            )  # fmt: skip
            try:
                polling = lambda: emulator.counters()["long_polls_open"] >= args.bots  # noqa: E731
                await until(_async(polling), 60, "the fleet did not start polling")
                buyers = [
                    Buyer(
                        i, i % args.bots, emulator.add_user(f"Comprador{i}"),
                        plan="mensal" if i % 2 else "anual", takes_bump=i % 4 == 1,
                    )
                    for i in range(args.buyers)
                ]  # fmt: skip
                raw = work / "profile.txt"
                spy = await start_profiler(fleet.pid, raw) if args.profile else None
                cpu0 = cpu_seconds(fleet.pid)
                started = await walk(emulator, buyers, args.rate, args.within)
                cpu = cpu_seconds(fleet.pid) - cpu0
                if spy is not None:
                    await stop_profiler(spy)
                    summarize_profile(raw, REPORT.with_name("funnel-profile.md"), workload="funnel")
                rss = rss_mib(fleet.pid)
                inside = await fleet_steps(port)
            finally:
                await stop(fleet)
            paid = await _paid(db)
    finally:
        await server.stop()
    finished = max(b.done_at for b in buyers)
    twice = 0
    for buyer in buyers:
        texts = Counter(s.text for s in emulator.transcript(buyer.token, buyer.user) if s.text)
        twice += sum(n - 1 for n in texts.values() if n > 1)
    results = {
        "buyers": len(buyers),
        "bots": args.bots,
        "rate": args.rate,
        "seconds": finished - started,
        "per_second": len(buyers) / (finished - started),
        "cpu_ms_per_buyer": cpu / len(buyers) * 1000,
        "rss_mib": rss,
        "paid": paid,
        "twice": twice,
        "steps": {s: quantiles([b.took[s] for b in buyers if s in b.took]) for s in STEPS},
        "inside": inside,
    }
    write_report(args, results)
    return results


def _async(check: Any) -> Any:
    async def run() -> Any:
        return check()

    return run


async def _paid(db: str) -> int:
    connection = await asyncpg.connect(db)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM payments WHERE status='paid'"))
    finally:
        await connection.close()


def write_report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    lines = [
        "# Funnel: buyers through the whole funnel on one instance",
        "",
        f"`uv run python -m bench.funnel --bots {args.bots} --buyers {args.buyers}"
        f" --rate {args.rate:g}` on {platform.node()} ({os.cpu_count()} cores), fleet on core 1,"
        " emulator + buyers on core 0.",
        "",
        f"- **{r['per_second']:.1f} buyers/s** through the whole funnel ({r['buyers']} buyers over"
        f" {r['bots']} bots, arriving at {r['rate']:g}/s; {r['seconds']:.1f} s first /start to"
        " last access)",
        f"- fleet CPU {r['cpu_ms_per_buyer']:.1f} ms per buyer (7 sends, 4 updates, a charge, a"
        f" webhook, a delivery); RSS {r['rss_mib']:.0f} MiB",
        f"- paid: {r['paid']} of {r['buyers']}; messages received twice: {r['twice']}",
        "",
        "| step (buyer's action -> bot's first answer, emulator clock) | n | p50 ms | p95 ms"
        " | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "welcome": "/start -> welcome",
        "plan": "plan button -> bump question or QR",
        "bump": "bump answer -> QR",
        "access": "paid in the bank app -> access message",
    }
    for step, name in names.items():
        q = r["steps"][step]
        lines.append(
            f"| {name} | {q['n']} | {q['p50'] * 1000:.0f} | {q['p95'] * 1000:.0f}"
            f" | {q['p99'] * 1000:.0f} |"
        )
    lines += [
        "",
        "Inside the fleet (`botfleet_funnel_step_seconds`, bucket bounds):",
        "",
        "| step | n | p50 ≤ s | p99 ≤ s |",
        "|---|---:|---:|---:|",
    ]
    for step, q in sorted(r["inside"].items()):
        lines.append(f"| {step} | {q['n']:.0f} | {q['p50_le']:g} | {q['p99_le']:g} |")
    lines += [
        "",
        "Per-chat sends are paced as Telegram asks (1/s after a burst of 3): a step that",
        "sends after the previous step's messages waits for its chat's bucket, so answer",
        "times of about a second are the limit working, not the fleet being slow.",
    ]
    out = REPORT.with_name(args.report)
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--buyers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="arrivals per second")
    parser.add_argument("--within", type=float, default=300.0)
    parser.add_argument("--report", default="funnel.md", help="file name in bench/reports")
    parser.add_argument(
        "--profile", action="store_true", help="sample the fleet with py-spy (funnel-profile.md)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
