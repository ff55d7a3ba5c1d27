"""The ``botfleet`` command line. Logging is configured here, once.

Heavy imports (SQLAlchemy, alembic, aiogram) happen inside the commands that
need them, so ``check-config`` answers quickly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from fleet.config import DatabaseConfig
from fleet.config_file import ConfigError, load_config, load_section
from fleet.errors import FleetError
from fleet.logs import LogFormat, configure_logging

log = logging.getLogger(__name__)

T = TypeVar("T")

EXIT_BAD_INPUT = 2  # bad configuration or arguments, as click uses for usage errors
EXIT_UNAVAILABLE = 1  # a service did not answer, or the command failed

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("BOTFLEET_CONFIG", "config.yaml"),
    show_default="$BOTFLEET_CONFIG or config.yaml",
    help="Configuration file.",
)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available; our errors become one clean line."""
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            return asyncio.run(factory())
        return uvloop.run(factory())
    except ConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except FleetError as exc:
        _fail(f"error: {exc}", EXIT_UNAVAILABLE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default=lambda: os.environ.get("BOTFLEET_LOG_LEVEL", "INFO"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default=lambda: os.environ.get("BOTFLEET_LOG_FORMAT", "text"),
    type=click.Choice(["text", "json"]),
    help="json: one object per line (for journald and log shippers).",
)
@click.version_option(package_name="botfleet")
def cli(log_level: str, log_format: LogFormat) -> None:
    """botfleet: host a fleet of Telegram sales bots."""
    configure_logging(log_level, log_format)


@cli.command("check-config")
@_config_option
def check_config(config_path: Path) -> None:
    """Validate a configuration file; exit 2 with one line per problem."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    enabled = len(config.enabled_bots())
    click.echo(
        f"{config_path}: OK - {len(config.bots)} bots ({enabled} enabled), "
        f"{len(config.funnels)} funnels, telegram mode {config.telegram.mode}"
    )


@cli.group("config")
def config_group() -> None:
    """Configuration helpers."""


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of config.yaml (for editors)."""
    from fleet.config import FleetConfig

    click.echo(json.dumps(FleetConfig.model_json_schema(), indent=2, ensure_ascii=False))


@cli.group("db")
def db_group() -> None:
    """Database schema migrations (reads only the database section)."""


def _database_config(config_path: Path) -> DatabaseConfig:
    try:
        config = load_section(config_path, "database", DatabaseConfig)
    except ConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if config.url is None:
        _fail(
            f"database.url: not set; set it (or BOTFLEET_DATABASE_URL) in {config_path}",
            EXIT_BAD_INPUT,
        )
    return config


def _with_engine(config: DatabaseConfig, work: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        from storage.database import create_engine, ping_database

        engine = create_engine(config)
        try:
            await ping_database(engine, config.connect_timeout)
            return await work(engine)
        finally:
            await engine.dispose()

    return _run_async(main)


@db_group.command("upgrade")
@click.argument("revision", default="head")
@_config_option
def db_upgrade(revision: str, config_path: Path) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    from migrations import runner

    config = _database_config(config_path)
    heads = _with_engine(config, lambda e: _then_current(runner.upgrade(e, revision), e))
    click.echo(f"database at {', '.join(heads) or 'base'}")


@db_group.command("downgrade")
@click.argument("revision")
@_config_option
def db_downgrade(revision: str, config_path: Path) -> None:
    """Downgrade the schema to REVISION ('base' removes every table)."""
    from migrations import runner

    config = _database_config(config_path)
    heads = _with_engine(config, lambda e: _then_current(runner.downgrade(e, revision), e))
    click.echo(f"database at {', '.join(heads) or 'base'}")


@db_group.command("current")
@_config_option
def db_current(config_path: Path) -> None:
    """Show the schema revision of the database and of the code."""
    from migrations import runner

    config = _database_config(config_path)
    heads = _with_engine(config, runner.current)
    code = ", ".join(runner.head_revisions())
    state = "up to date" if set(heads) == set(runner.head_revisions()) else "needs upgrade"
    click.echo(f"database at {', '.join(heads) or 'base'}; code head {code} ({state})")


@db_group.command("revision")
@click.option("-m", "--message", required=True)
@_config_option
def db_revision(message: str, config_path: Path) -> None:
    """(Developers) write a new revision from the models' difference to the database."""
    from migrations import runner

    config = _database_config(config_path)
    _with_engine(config, lambda e: runner.revision(e, message))


async def _then_current(step: Awaitable[None], engine: Any) -> tuple[str, ...]:
    from migrations import runner

    await step
    return await runner.current(engine)


@cli.command("demo")
@_config_option
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".botfleet"),
    show_default=True,
    help="Where embedded PostgreSQL and Redis keep their data.",
)
def demo(config_path: Path, data_dir: Path) -> None:
    """Check the config and bring the database up to date, on embedded servers if needed."""
    from fleet.demo import run_demo

    _run_async(lambda: run_demo(config_path, data_dir))


@cli.command("run")
@_config_option
def run(config_path: Path) -> None:
    """Run the fleet: poll every owned bot until SIGTERM (drain) or SIGINT; SIGHUP reloads."""
    from fleet.supervisor import run_supervisor

    _run_async(lambda: run_supervisor(config_path))


@cli.command("status")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
def status(config_path: Path, as_json: bool) -> None:
    """Live instances and which one polls each bot, read from the shared Redis only."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if config.redis.url is None:
        _fail(
            f"redis.url: not set; status reads the fleet's shared Redis, set it "
            f"(or BOTFLEET_REDIS_URL) in {config_path}",
            EXIT_BAD_INPUT,
        )

    async def main() -> str:
        import orjson
        from redis.exceptions import RedisError

        from fleet.errors import ServiceUnavailable
        from fleet.status import read_status, render_table, to_json
        from storage.keys import RedisKeys
        from storage.redis import create_redis, ping_redis

        # Never the URL in messages: it may carry a password.
        redis = create_redis(config.redis)
        try:
            await ping_redis(redis, "redis.url", config.redis.connect_timeout)
            try:
                async with asyncio.timeout(max(config.redis.connect_timeout, 5.0)):
                    fleet = await read_status(
                        redis,
                        RedisKeys(config.redis.key_prefix),
                        [bot.id for bot in config.bots],
                        disabled={bot.id for bot in config.bots if not bot.enabled},
                    )
            except (RedisError, OSError, TimeoutError) as exc:
                what = type(exc).__name__
                raise ServiceUnavailable(f"Redis at redis.url failed mid-read ({what})") from None
        finally:
            await redis.aclose()
        if as_json:
            return orjson.dumps(to_json(fleet), option=orjson.OPT_INDENT_2).decode()
        return render_table(fleet)

    click.echo(_run_async(main))


@cli.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--bot",
    "tokens",
    multiple=True,
    help="Create a bot with this token at start (repeatable); more via the control API.",
)
@click.option("--no-rate-limits", is_flag=True, help="Turn Telegram's flood limits off.")
@click.option("--seed", type=int, default=None, help="Seed for ids and fault dice.")
def emulator(
    host: str, port: int, tokens: tuple[str, ...], no_rate_limits: bool, seed: int | None
) -> None:
    """Run the Telegram Bot API emulator as its own process (tests, demo, benchmarks)."""
    import signal

    from fleet.emulator import EmulatorServer, EmulatorSettings, RateLimits

    settings = EmulatorSettings(seed=seed)
    if no_rate_limits:
        settings = settings.replace(rate_limits=RateLimits.off())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with EmulatorServer(host=host, port=port, settings=settings) as server:
            for token in tokens:
                server.emulator.add_bot(token)
            # One line on stdout with the address, for whoever started us (port 0 included).
            click.echo(f"listening on {server.base_url}", nl=True)
            sys.stdout.flush()
            await stop.wait()

    _run_async(main)


def main() -> None:
    cli(prog_name="botfleet")


if __name__ == "__main__":
    main()
