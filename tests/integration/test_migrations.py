"""The migrated schema is exactly what the models say, both ways."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import inspect

from fleet.config import DatabaseConfig
from migrations import runner
from storage.database import create_engine

TABLES = {
    "bots",
    "bot_users",
    "messages",
    "dead_letters",
    "payments",
    "payment_events",
    "outbox",
    "timers",
}


async def _tables(engine: object) -> set[str]:
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    return set(names) - {"alembic_version"}


async def test_upgrade_matches_models_and_downgrade_removes_everything(
    empty_database_url: str,
) -> None:
    engine = create_engine(DatabaseConfig(url=SecretStr(empty_database_url)))
    try:
        assert await runner.current(engine) == ()
        assert await _tables(engine) == set()

        await runner.upgrade(engine)
        assert await runner.current(engine) == runner.head_revisions()
        assert await _tables(engine) == TABLES
        # Autogenerate would write nothing: models and migrations agree.
        assert await runner.schema_differences(engine) == []

        await runner.downgrade(engine, "base")
        assert await runner.current(engine) == ()
        assert await _tables(engine) == set()
        # Enum types go too, so the upgrade can run again on the same database.
        await runner.upgrade(engine)
        assert await _tables(engine) == TABLES
    finally:
        await engine.dispose()


async def test_differences_are_detected(empty_database_url: str) -> None:
    """The comparison can fail: an empty database differs from the models."""
    engine = create_engine(DatabaseConfig(url=SecretStr(empty_database_url)))
    try:
        differences = await runner.schema_differences(engine)
        added = {diff[1].name for diff in differences if diff[0] == "add_table"}
        assert added == TABLES
    finally:
        await engine.dispose()
