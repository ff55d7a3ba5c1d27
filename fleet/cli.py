"""The ``botfleet`` command line. Logging is configured here, once.

Heavy imports (SQLAlchemy, alembic, aiogram) happen inside the commands that
need them, so ``check-config`` answers quickly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from fleet.config import DatabaseConfig
from fleet.config_file import ConfigError, load_config, load_section
from fleet.errors import FleetError
from fleet.logs import LogFormat, configure_logging

if TYPE_CHECKING:
    from storage.models import DeadLetter
    from storage.services import DeadLetters

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


@cli.group("dead-letters")
def dead_letters_group() -> None:
    """Failed updates kept in the database: list them, queue them for replay.

    Reads only the database section.
    """


@dead_letters_group.command("list")
@_config_option
@click.option("--bot", "bot_id", metavar="ID", help="Only this bot's letters (default: all).")
@click.option("--all", "include_resolved", is_flag=True, help="Resolved letters too.")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="At most N letters.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, payloads included.")
def dead_letters_list(
    config_path: Path, bot_id: str | None, include_resolved: bool, limit: int, as_json: bool
) -> None:
    """List dead letters, newest failure first.

    Unresolved letters only, unless --all.

    The table never shows payloads (they hold what users wrote); --json
    prints one object per line, payload included.
    """
    config = _database_config(config_path)

    async def work(engine: Any) -> tuple[Sequence[DeadLetter], bool]:
        found = await _dead_letters(engine).list(
            bot_id, include_resolved=include_resolved, limit=limit
        )
        known = bool(found) or bot_id is None or await _bot_known(engine, bot_id)
        return found, known

    found, known = _with_engine(config, lambda e: _queried(work(e)))
    if not known:
        _fail(_unknown_bot(bot_id), EXIT_BAD_INPUT)
    if as_json:
        for letter in found:
            click.echo(_letter_json(letter))
    else:
        click.echo(_letters_table(found, datetime.now(UTC)))
    if len(found) == limit:
        click.echo(f"(the newest {limit} shown; --limit shows more)", err=True)


@dead_letters_group.command("replay")
@_config_option
@click.option("--bot", "bot_id", required=True, metavar="ID", help="The bot to replay for.")
@click.option(
    "--update",
    "update_ids",
    multiple=True,
    type=click.IntRange(min=0),
    metavar="N",
    help="Replay the letter of this update id (repeatable).",
)
@click.option("--all", "replay_all", is_flag=True, help="Every unresolved letter of the bot.")
def dead_letters_replay(
    config_path: Path, bot_id: str, update_ids: tuple[int, ...], replay_all: bool
) -> None:
    """Mark a bot's dead letters for replay by the running fleet.

    Give --update N (repeatable) or --all (every unresolved letter of the bot).

    The running fleet picks marked letters up: the instance that owns the bot
    replays them within seconds, through the bot's handlers. A letter that
    succeeds is resolved; one that fails again counts one more attempt and
    leaves the queue (mark it again to retry). Resolved letters are never marked.
    Exit 2: bad arguments or an unknown bot; exit 1: nothing to replay, or the
    database is unreachable.
    """
    if bool(update_ids) == replay_all:
        raise click.UsageError(
            "give exactly one of --update N (repeatable) or --all", click.get_current_context()
        )
    config = _database_config(config_path)
    wanted = None if replay_all else sorted(set(update_ids))

    async def work(engine: Any) -> tuple[int, bool]:
        marked = await _dead_letters(engine).request_replay(bot_id, wanted)
        return marked, bool(marked) or await _bot_known(engine, bot_id)

    marked, known = _with_engine(config, lambda e: _queried(work(e)))
    if not known:
        _fail(_unknown_bot(bot_id), EXIT_BAD_INPUT)
    if not marked:
        which = "" if wanted is None else f" for update {', '.join(map(str, wanted))}"
        _fail(f"bot {bot_id}: no unresolved dead letter{which}; nothing marked", EXIT_UNAVAILABLE)
    click.echo(
        f"{marked} dead letter{'s' if marked != 1 else ''} of bot {bot_id} marked for replay; "
        "the instance that owns the bot replays them within seconds"
    )
    if wanted is not None and marked < len(wanted):
        skipped = len(wanted) - marked
        click.echo(f"{skipped} of the {len(wanted)} update ids have no unresolved letter", err=True)


def _dead_letters(engine: Any) -> DeadLetters:
    from storage.database import create_session_factory
    from storage.services import DeadLetters

    return DeadLetters(create_session_factory(engine))


async def _bot_known(engine: Any, bot_id: str) -> bool:
    from storage.database import create_session_factory
    from storage.services import BotRegistry

    return any(bot.id == bot_id for bot in await BotRegistry(create_session_factory(engine)).all())


def _unknown_bot(bot_id: str | None) -> str:
    return f"--bot {bot_id}: no such bot in the database (bots appear once the fleet has run)"


async def _queried(work: Awaitable[T]) -> T:
    """A failed query is one line (e.g. a schema older than the code), not a traceback."""
    from sqlalchemy.exc import DBAPIError

    try:
        return await work
    except DBAPIError as exc:
        message = str(exc.orig or exc).strip()
        reason = re.sub(r"^<class '[\w.]+'>: ", "", message).split("\n", 1)[0]
        raise FleetError(
            f"database query failed: {reason} (is the schema up to date? see botfleet db current)"
        ) from None


# A bot token (id:secret) that found its way into an error text is never printed.
_TOKEN_LIKE = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}")


def _redacted(text: str) -> str:
    return _TOKEN_LIKE.sub("<token>", text)


def _first_line(text: str, width: int) -> str:
    line = _redacted(text).strip().split("\n", 1)[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def _letter_state(letter: DeadLetter) -> str:
    if letter.resolved_at is not None:
        return "resolved"
    if letter.replay_started_at is not None:
        return "replaying"
    if letter.replay_requested_at is not None:
        return "replay requested"
    return "unresolved"


def _letters_table(letters: Sequence[DeadLetter], now: datetime) -> str:
    from fleet.status import _duration, _table

    def ago(then: datetime) -> str:
        return f"{_duration((now - then).total_seconds())} ago"

    header = ["ID", "BOT", "UPDATE", "ERROR TYPE", "ERROR", "ATTEMPTS", "REPLAYS",
              "FIRST FAILED", "LAST FAILED", "STATE"]  # fmt: skip
    rows = [
        [str(d.id), d.bot_id, str(d.update_id), _first_line(d.error_type, 40),
         _first_line(d.error, 60), str(d.attempts), str(d.replays), ago(d.first_failed_at),
         ago(d.last_failed_at), _letter_state(d)]
        for d in letters
    ]  # fmt: skip
    return _table(header, rows)


def _letter_json(letter: DeadLetter) -> str:
    import orjson

    return orjson.dumps(
        {
            "id": letter.id,
            "bot_id": letter.bot_id,
            "update_id": letter.update_id,
            "state": _letter_state(letter),
            "error_type": letter.error_type,
            "error": _redacted(letter.error),
            "attempts": letter.attempts,
            "replays": letter.replays,
            "first_failed_at": letter.first_failed_at,
            "last_failed_at": letter.last_failed_at,
            "resolved_at": letter.resolved_at,
            "replay_requested_at": letter.replay_requested_at,
            "replay_started_at": letter.replay_started_at,
            "replay_owner": letter.replay_owner,
            "payload": letter.payload,
        }
    ).decode()


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


def _add_commands() -> None:
    from fleet.cli_payments import payments_group

    cli.add_command(payments_group)


_add_commands()


if __name__ == "__main__":
    main()
