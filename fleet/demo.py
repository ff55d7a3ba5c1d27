"""``botfleet demo``: the whole fleet on whatever this machine has.

It validates the configuration, starts embedded PostgreSQL and Redis when no
URL is configured, migrates the database to head and registers the bots.
Then it runs the real supervisor against the built-in Telegram emulator:
simulated users send /start and a message to every enabled bot, and the
demo prints what the bots answered and how fast.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import AsyncExitStack
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from fleet.config import BotConfig, FleetConfig
from fleet.config_file import load_config
from fleet.demo_funnel import DOWNSELL_AFTER, demo_funnel, demo_timings
from fleet.demo_payments import demo_sale, point_sandbox_webhooks, print_sale
from fleet.embedded import start_embedded
from fleet.emulator import EmulatorServer, EmulatorSettings, TelegramEmulator, User
from fleet.supervisor import Supervisor
from migrations import runner
from storage.database import (
    create_engine,
    create_session_factory,
    database_url,
    ping_database,
    redacted,
)
from storage.redis import create_redis, ping_redis, redacted_redis_url
from storage.services import BotRegistry

log = logging.getLogger(__name__)


async def run_demo(config_path: Path, data_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    config = load_config(config_path)
    console.print(f"[bold]{config_path}[/]: valid, {len(config.bots)} bots")

    async with AsyncExitStack() as stack:
        want_pg, want_redis = config.database.url is None, config.redis.url is None
        db_url = config.database.url.get_secret_value() if config.database.url else None
        redis_url = config.redis.url.get_secret_value() if config.redis.url else None
        if want_pg or want_redis:
            console.print(f"starting embedded servers in {data_dir} ...")
            embedded = start_embedded(data_dir, postgres=want_pg, redis=want_redis)
            stack.callback(embedded.close)
            db_url = db_url or embedded.database_url
            redis_url = redis_url or embedded.redis_url
        assert db_url is not None and redis_url is not None

        db_config = config.database.model_copy(update={"url": SecretStr(db_url)})
        engine = create_engine(db_config, url=database_url(db_config))
        stack.push_async_callback(engine.dispose)
        await ping_database(engine, config.database.connect_timeout)
        await runner.upgrade(engine)
        revision = ", ".join(await runner.current(engine))

        redis = create_redis(config.redis, url=redis_url)
        stack.push_async_callback(redis.aclose)
        await ping_redis(redis, redacted_redis_url(redis_url), config.redis.connect_timeout)

        registry = BotRegistry(create_session_factory(engine))
        await registry.sync(config.bots)
        stored = {bot.id: bot for bot in await registry.all()}

        # A key space of its own each run: the embedded Redis outlives a demo, and the
        # emulator's update ids start afresh (claims and offsets of the last run are moot).
        prefix = f"{config.redis.key_prefix}-demo-{secrets.token_hex(3)}"
        redis_config = config.redis.model_copy(
            update={"url": SecretStr(redis_url), "key_prefix": prefix}
        )
        fleet_config = config.model_copy(update={"database": db_config, "redis": redis_config})
        conversations, funnel, sale = await _run_fleet(fleet_config, console)

    services = Table(title="services", show_header=False)
    services.add_row("PostgreSQL", redacted(engine.url), f"schema {revision}")
    services.add_row("Redis", redacted_redis_url(redis_url), "PONG")
    console.print(services)

    bots = Table(title="bots")
    for column in ("id", "telegram id", "funnel", "enabled", "state"):
        bots.add_column(column)
    for bot in config.bots:
        row = stored.get(bot.id)
        bots.add_row(
            bot.id,
            str(bot.telegram_id),
            bot.funnel,
            "yes" if bot.enabled else "no",
            row.state.value if row else "-",
        )
    console.print(bots)

    talk = Table(title="conversations (Telegram played by the built-in emulator)")
    for column in ("bot", "user", "user sent", "bot answered", "ms"):
        talk.add_column(column)
    for line in conversations:
        talk.add_row(*line)
    console.print(talk)
    if funnel is not None:
        console.print(funnel)
        console.print(
            f"(downsells were due after {DOWNSELL_AFTER} s instead of their configured delay)"
        )
    print_sale(console, sale)


async def _double_taps(emulator: TelegramEmulator, users: list[tuple[BotConfig, User]]) -> int:
    """Each user taps /start three more times at once; returns the welcomes that caused.

    The first /start opened a debounce window in Redis (``runtime.start_debounce_seconds``):
    repeats within it get no second welcome, however many instances run the bot.
    """
    before = {
        (b.id, u.id): len(emulator.transcript(b.token.get_secret_value(), u)) for b, u in users
    }
    for bot, user in users:
        for _ in range(3):
            emulator.user_sends(bot.token.get_secret_value(), user, "/start")
    await emulator.wait_for(lambda: emulator.counters()["updates_pending"] == 0, 30)
    return sum(
        len(emulator.transcript(b.token.get_secret_value(), u)) - before[(b.id, u.id)]
        for b, u in users
    )


def _print_runtime(console: Console, supervisor: Supervisor, repeats: int) -> None:
    """What the guarantees did, from the fleet's own metrics (as /metrics shows them)."""
    registry = supervisor.metrics.registry
    totals: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "botfleet_updates_total":
                key = f"updates {sample.labels['outcome']}"
            elif sample.name == "botfleet_sends_total":
                key = f"sends {sample.labels['result']}"
            elif sample.name in ("botfleet_redis_pipelines_total", "botfleet_update_retries_total"):
                key = sample.name.removeprefix("botfleet_").removesuffix("_total")
            else:
                continue
            totals[key] = totals.get(key, 0.0) + sample.value
    table = Table(title="runtime, from /metrics")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in sorted(totals):
        table.add_row(key.replace("_", " "), f"{totals[key]:.0f}")
    table.add_row("welcomes for repeated /start taps (debounced)", str(repeats))
    console.print(table)


async def _run_fleet(
    config: FleetConfig, console: Console
) -> tuple[list[tuple[str, ...]], Table | None, Table | None]:
    """The supervisor on the emulator: two users per enabled bot, /start and a question;
    buyers walking the funnel; then one PIX sale told step by step."""
    # Fresh ids each run: the embedded Redis keeps its dedup keys between demos.
    async with EmulatorServer(settings=EmulatorSettings()) as emulator_server:
        emulator = emulator_server.emulator
        for bot in config.enabled_bots():
            emulator.add_bot(
                bot.token.get_secret_value(), username=f"{bot.id.replace('-', '_')}_bot"
            )
        config = config.model_copy(
            update={
                "telegram": config.telegram.model_copy(
                    update={
                        "api_base": emulator_server.base_url,
                        "polling_timeout": 1,
                        "mode": "polling",
                    }
                ),
                "http": config.http.model_copy(update={"port": 0, "public_url": None}),
                "gateways": [
                    g.model_copy(update={"api_base": emulator_server.base_url})
                    if g.kind == "sandbox"
                    else g
                    for g in config.gateways
                ],
            }
        )
        for gateway in config.gateways:
            if gateway.kind == "sandbox" and gateway.webhook_secret is not None:
                emulator.pix.configure(secret=gateway.webhook_secret.get_secret_value())
        supervisor = Supervisor(demo_timings(config))
        fleet = asyncio.create_task(supervisor.run())
        try:
            await supervisor.wait_ready()
            console.print(f"fleet up: {len(supervisor.runners)} bots polling the emulator")
            users = [
                (bot, emulator.add_user(name))
                for bot in config.enabled_bots()
                for name in ("Ana", "Bruno")
            ]

            async def converse(bot: BotConfig, user: User) -> list[tuple[str, ...]]:
                token = bot.token.get_secret_value()
                lines: list[tuple[str, ...]] = []
                for text in ("/start anuncio_01", "quanto custa?"):  # one at a time, as people do
                    action = emulator.user_sends(token, user, text)
                    (reply,) = await emulator.wait_for_replies(action, 1, within=30)
                    answer = reply.text or ""
                    short = answer[:60] + ("…" if len(answer) > 60 else "")
                    ms = f"{(reply.at - action.at) * 1000:.0f}"
                    lines.append((bot.id, user.first_name, text, short, ms))
                return lines

            talks = await asyncio.gather(*(converse(bot, user) for bot, user in users))
            rows = [line for talk in talks for line in talk]
            repeats = await _double_taps(emulator, users)
            _print_runtime(console, supervisor, repeats)
            console.print("buyers walking the funnel ...")
            point_sandbox_webhooks(supervisor, emulator_server)
            funnel = await demo_funnel(supervisor, emulator)
            try:
                sale = await demo_sale(supervisor, emulator_server, emulator.add_user("Carla"))
            except TimeoutError:  # e.g. webhooks answered 503: the fleet's log says why
                sale = Table(title="a PIX sale")
                sale.add_row("[red]not confirmed within 30 s: see the log above[/]")
            return rows, funnel, sale
        finally:
            supervisor.request_stop()
            await fleet
