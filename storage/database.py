"""The async engine and session factory, built from ``database`` config.

Nothing connects at import time: callers build an engine, and
:func:`ping_database` proves it answers within the configured timeout.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from fleet.config import DatabaseConfig
from fleet.errors import FleetError, ServiceUnavailable

log = logging.getLogger(__name__)

_DRIVERS = {
    "postgresql",
    "postgres",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
}


class DatabaseNotConfigured(FleetError):
    """``database.url`` is empty where a real database is required."""


def database_url(config: DatabaseConfig) -> URL:
    """The configured URL forced onto the asyncpg driver."""
    if config.url is None:
        raise DatabaseNotConfigured("database.url is not set")
    try:
        url = make_url(config.url.get_secret_value())
    except ArgumentError:
        raise FleetError("database.url is not a valid URL") from None
    if url.drivername not in _DRIVERS:
        raise FleetError(f"database.url: unsupported scheme {url.drivername!r} (use postgresql://)")
    return url.set(drivername="postgresql+asyncpg")


_SECRET_QUERY = frozenset({"password", "sslpassword", "passfile"})


def redacted(url: URL) -> str:
    """For logs and errors: never the password (nor one given as a query parameter)."""
    hidden = {k: "***" for k in url.query if k.lower() in _SECRET_QUERY}
    if hidden:
        url = url.update_query_dict(hidden)
    return url.render_as_string(hide_password=True)


def _json_dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def create_engine(config: DatabaseConfig, *, url: URL | None = None) -> AsyncEngine:
    url = url or database_url(config)
    return create_async_engine(
        url,
        pool_size=config.pool_size,
        max_overflow=config.max_overflow,
        pool_timeout=config.pool_timeout,
        pool_pre_ping=True,
        # Recycle before typical server/pgbouncer idle cut-offs.
        pool_recycle=1800,
        # JSONB columns (payloads, headers, attribution) through orjson: several times
        # cheaper than the json module on the payment and update paths.
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={
            "timeout": config.connect_timeout,
            "command_timeout": config.statement_timeout,
            "server_settings": {"application_name": "botfleet"},
        },
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: services return loaded objects after commit.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def ping_database(engine: AsyncEngine, within: float) -> None:
    """Raise :class:`ServiceUnavailable` unless the database answers within ``within`` seconds."""
    where = redacted(engine.url)
    try:
        async with asyncio.timeout(within):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        raise ServiceUnavailable(
            f"PostgreSQL at {where} did not answer within {within:g} s"
        ) from None
    except (OSError, OperationalError, DBAPIError) as exc:
        reason = _reason(exc)
        raise ServiceUnavailable(f"PostgreSQL at {where} is unreachable: {reason}") from None


def _reason(exc: BaseException) -> str:
    # The driver's own error, one line, without SQLAlchemy's boilerplate (no URL in it).
    inner = getattr(exc, "orig", None) or exc
    text_ = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return f"{type(inner).__name__}: {text_}"
