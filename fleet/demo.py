"""``botfleet demo``: the fleet's foundation on whatever this machine has.

Today it validates the configuration, starts embedded PostgreSQL and Redis
when no URL is configured, migrates the database to head, registers the
configured bots and prints what it found. The runtime work turns this into the
whole fleet against the Telegram emulator.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from fleet.config_file import load_config
from fleet.embedded import start_embedded
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
