"""Shared fixtures: real PostgreSQL and Redis (see :mod:`tests.services`)."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from fleet.config import DatabaseConfig, RedisConfig
from migrations import runner
from storage.batching import CommandBatcher
from storage.database import create_engine, create_session_factory
from storage.keys import RedisKeys
from storage.redis import create_redis
from tests.faultproxy import FaultProxy
from tests.services import TestServices, resolve_services

_names = itertools.count()


def _database_name(kind: str) -> str:
    return f"bf_{kind}_{os.getpid()}_{next(_names)}"


def _url_for(admin_url: str, database: str) -> str:
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


async def _admin(admin_url: str, *statements: str) -> None:
    engine = create_async_engine(
        make_url(admin_url).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def test_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServices]:
    services = resolve_services(Path(tmp_path_factory.mktemp("services")))
    try:
        yield services
    finally:
        services.close()


@pytest.fixture(scope="session")
def template_database(test_services: TestServices) -> Iterator[str]:
    """A database migrated to head once; each test copies it (CREATE ... TEMPLATE)."""
    name = _database_name("tmpl")
    url = _url_for(test_services.admin_database_url, name)

    async def build() -> None:
        await _admin(test_services.admin_database_url, f'CREATE DATABASE "{name}"')
        engine = create_engine(DatabaseConfig(url=SecretStr(url)))
        try:
            await runner.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(build())
    yield name
    asyncio.run(_admin(test_services.admin_database_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _scratch_database(services: TestServices, template: str | None) -> AsyncIterator[str]:
    name = _database_name("t")
    clause = f' TEMPLATE "{template}"' if template else ""
    await _admin(services.admin_database_url, f'CREATE DATABASE "{name}"{clause}')
    try:
        yield _url_for(services.admin_database_url, name)
    finally:
        await _admin(services.admin_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(test_services: TestServices, template_database: str) -> AsyncIterator[str]:
    """A private database at schema head."""
    async for url in _scratch_database(test_services, template_database):
        yield url


@pytest.fixture
async def empty_database_url(test_services: TestServices) -> AsyncIterator[str]:
    """A private database with no tables at all."""
    async for url in _scratch_database(test_services, None):
        yield url


@pytest.fixture
def db_config(database_url: str) -> DatabaseConfig:
    return DatabaseConfig(url=SecretStr(database_url), connect_timeout=5)


@pytest.fixture
async def engine(db_config: DatabaseConfig) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_config)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
def redis_keys() -> RedisKeys:
    """A key prefix of this test's own: its namespace in the shared Redis."""
    return RedisKeys(prefix=f"bftest-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def redis_config(test_services: TestServices, redis_keys: RedisKeys) -> RedisConfig:
    return RedisConfig(url=SecretStr(test_services.redis_url), key_prefix=redis_keys.prefix)


@pytest.fixture
async def redis(redis_config: RedisConfig, redis_keys: RedisKeys) -> AsyncIterator[Redis]:
    client = create_redis(redis_config)
    try:
        yield client
    finally:
        stale = [key async for key in client.scan_iter(match=redis_keys.everything(), count=1000)]
        if stale:
            await client.unlink(*stale)
        await client.aclose()


@pytest.fixture
async def batcher(redis: Redis) -> AsyncIterator[CommandBatcher]:
    """The hot path's Redis command batcher over this test's client."""
    batcher = CommandBatcher(redis)
    try:
        yield batcher
    finally:
        await batcher.aclose()


@pytest.fixture
async def redis_proxy(test_services: TestServices) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the test Redis (cut, freeze, restore)."""
    parts = urlsplit(test_services.redis_url)
    if not parts.hostname or parts.scheme.startswith("unix"):
        pytest.skip("the test Redis is not on TCP")
    async with FaultProxy(parts.hostname, parts.port or 6379) as proxy:
        yield proxy
