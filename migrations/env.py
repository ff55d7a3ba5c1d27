"""Alembic environment: async, and reads only the ``database`` section.

Run through :mod:`migrations.runner` (``botfleet db ...``), which hands over
an open connection; run by the plain ``alembic`` command, it reads the
``database`` section of ``$BOTFLEET_CONFIG`` (default ``config.yaml``).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from fleet.config import DatabaseConfig
from fleet.config_file import load_section
from storage.database import create_engine
from storage.models import Base

target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    config = load_section(
        os.environ.get("BOTFLEET_CONFIG", "config.yaml"), "database", DatabaseConfig
    )
    engine = create_engine(config)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_configure)
            await conn.commit()
    finally:
        await engine.dispose()


def run() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        asyncio.run(_run_with_own_engine())


run()
