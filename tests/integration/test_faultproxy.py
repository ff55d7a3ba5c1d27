"""FaultProxy against the real Redis and PostgreSQL: cut, freeze, restore, stop."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from storage.keys import RedisKeys
from tests import services
from tests.faultproxy import FaultProxy

# What a query on a connection the proxy cut may raise, depending on whether
# asyncpg saw the reset before or while sending.
PG_CONNECTION_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)


async def eventually(condition: Callable[[], bool], within: float = 5) -> None:
    """Poll a condition nothing signals, under a deadline (never a bare sleep)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def blpop(client: Redis, key: str) -> object:
    return await client.blpop([key], timeout=5)


def _target(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme.startswith("unix"):
        pytest.skip(f"the test server is not on TCP: {parts.scheme}://…")
    return parts.hostname, parts.port or default_port


def _via(url: str, proxy: FaultProxy) -> str:
    """``url`` with its host and port replaced by the proxy's (credentials kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    scheme = parts.scheme.split("+")[0]  # postgresql+asyncpg -> postgresql
    return urlunsplit(
        parts._replace(scheme=scheme, netloc=f"{userinfo}{at}{proxy.host}:{proxy.port}")
    )


@pytest.fixture
async def redis_proxy(test_services: services.TestServices) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*_target(test_services.redis_url, 6379)) as proxy:
        yield proxy


@pytest.fixture
async def pg_proxy(test_services: services.TestServices) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*_target(test_services.admin_database_url, 5432)) as proxy:
        yield proxy


@pytest.fixture
def pg_dsn(pg_proxy: FaultProxy, test_services: services.TestServices) -> str:
    return _via(test_services.admin_database_url, pg_proxy)


@pytest.fixture
def redis_url(redis_proxy: FaultProxy, test_services: services.TestServices) -> str:
    return _via(test_services.redis_url, redis_proxy)


async def test_url_names_the_proxy() -> None:
    async with FaultProxy("127.0.0.1", 6379) as proxy:
        assert proxy.port > 0
        assert proxy.url("redis", "/0") == f"redis://127.0.0.1:{proxy.port}/0"
        assert proxy.url("postgresql", "/db") == f"postgresql://127.0.0.1:{proxy.port}/db"
        assert (proxy.state, proxy.connections) == ("open", 0)


async def test_redis_fails_fast_when_cut_and_reconnects_after_restore(
    redis_proxy: FaultProxy, redis_url: str, redis_keys: RedisKeys, redis: Redis
) -> None:
    key = f"{redis_keys.prefix}:fp:value"
    client = Redis.from_url(redis_url, socket_timeout=2)
    try:
        assert await client.set(key, b"v1")
        assert await client.get(key) == b"v1"
        assert redis_proxy.connections == 1

        redis_proxy.cut()
        assert redis_proxy.state == "cut"
        async with asyncio.timeout(1):  # fails fast, not by socket_timeout
            with pytest.raises(RedisConnectionError):
                await client.get(key)
            # New connections are reset as soon as they are accepted.
            with pytest.raises(RedisConnectionError):
                await client.get(key)
        assert redis_proxy.connections == 0

        redis_proxy.restore()
        assert await client.get(key) == b"v1"
        assert redis_proxy.connections == 1
    finally:
        await client.aclose()
    await eventually(lambda: redis_proxy.connections == 0)


async def test_64_pooled_redis_connections_blocked_in_blpop_all_fail_on_cut(
    redis_proxy: FaultProxy, redis_url: str, redis_keys: RedisKeys, redis: Redis
) -> None:
    n = 64
    keys = [f"{redis_keys.prefix}:fp:list:{i}" for i in range(n)]
    client = Redis.from_url(redis_url, socket_timeout=10, max_connections=n)
    try:
        # 64 concurrent connections forward, each in order.
        waiting = [asyncio.create_task(blpop(client, k)) for k in keys]
        await eventually(lambda: redis_proxy.connections == n)
        for k in keys:
            await redis.rpush(k, b"first", b"second")
        async with asyncio.timeout(5):
            popped = await asyncio.gather(*waiting)
        assert popped == [(k.encode(), b"first") for k in keys]
        assert [await client.lpop(k) for k in keys] == [b"second"] * n

        # Cut while all 64 are blocked (or about to be): every one fails at once.
        blocked = [asyncio.create_task(blpop(client, k)) for k in keys]
        await eventually(lambda: redis_proxy.connections == n)
        redis_proxy.cut()
        async with asyncio.timeout(2):
            outcomes = await asyncio.gather(*blocked, return_exceptions=True)
        assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
        assert redis_proxy.connections == 0

        # The pool drops the dead connections and reconnects after restore.
        redis_proxy.restore()
        counter = f"{redis_keys.prefix}:fp:counter"
        await asyncio.gather(*(client.incr(counter) for _ in range(n)))
        assert await redis.get(counter) == str(n).encode()
    finally:
        await client.aclose()


async def test_redis_large_values_and_pipelines_keep_their_order(
    redis_proxy: FaultProxy, redis_url: str, redis_keys: RedisKeys, redis: Redis
) -> None:
    big = os.urandom(8 * 1024 * 1024)  # far beyond any socket or stream buffer
    key = f"{redis_keys.prefix}:fp:big"
    ordered = f"{redis_keys.prefix}:fp:ordered"
    client = Redis.from_url(redis_url, socket_timeout=10)
    try:
        assert await client.set(key, big)
        assert await client.get(key) == big
        async with client.pipeline(transaction=False) as pipe:
            for i in range(2000):
                pipe.rpush(ordered, i)
            replies = await pipe.execute()
        assert replies == list(range(1, 2001))
        assert await redis.lrange(ordered, 0, -1) == [str(i).encode() for i in range(2000)]
    finally:
        await client.aclose()


async def test_redis_freeze_times_out_and_restore_delivers_what_was_held(
    redis_proxy: FaultProxy, redis_url: str, redis_keys: RedisKeys, redis: Redis
) -> None:
    key = f"{redis_keys.prefix}:fp:frozen"
    client = Redis.from_url(redis_url, socket_timeout=0.3)
    try:
        assert await client.set(key, b"before")
        redis_proxy.freeze()
        assert redis_proxy.state == "frozen"
        with pytest.raises((TimeoutError, RedisTimeoutError)):
            await client.set(key, b"during")
        # The server never saw it (yet): a frozen proxy holds requests back.
        assert await redis.get(key) == b"before"
        # A new connection hangs too (redis-py retries nothing by default).
        with pytest.raises((TimeoutError, RedisTimeoutError)):
            await client.ping()
        assert redis_proxy.connections >= 1

        redis_proxy.restore()
        assert await client.ping()
        # The request the client gave up on is delivered after all.
        async with asyncio.timeout(5):
            while await redis.get(key) != b"during":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    await eventually(lambda: redis_proxy.connections == 0)


async def test_postgres_cut_breaks_the_connection_and_restore_admits_new_ones(
    pg_proxy: FaultProxy, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        pg_proxy.cut()
        with pytest.raises(PG_CONNECTION_ERRORS):
            await conn.fetchval("SELECT 1")
        assert conn.is_closed()
        with pytest.raises(OSError):  # ConnectionResetError: accepted, then reset
            await asyncpg.connect(pg_dsn, timeout=2)
    finally:
        conn.terminate()

    pg_proxy.restore()
    fresh = await asyncpg.connect(pg_dsn)
    try:
        assert await fresh.fetchval("SELECT 2") == 2
        assert pg_proxy.connections == 1
    finally:
        await fresh.close()
    await eventually(lambda: pg_proxy.connections == 0)


async def test_postgres_freeze_times_out_and_restore_recovers(
    pg_proxy: FaultProxy, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        pg_proxy.freeze()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 2", timeout=0.3)
        with pytest.raises(TimeoutError):
            await asyncpg.connect(pg_dsn, timeout=0.3)
        pg_proxy.restore()
        # asyncpg sent a cancel request (through the proxy) for the timed-out
        # query; the connection is usable again once that has gone through.
        assert await conn.fetchval("SELECT 3", timeout=5) == 3
    finally:
        await conn.close(timeout=5)


async def test_asyncpg_pool_fails_on_cut_and_refills_after_restore(
    pg_proxy: FaultProxy, pg_dsn: str
) -> None:
    size = 8
    async with asyncpg.create_pool(pg_dsn, min_size=size, max_size=size) as pool:
        assert await pool.fetchval("SELECT 1") == 1
        assert pg_proxy.connections == size
        pg_proxy.cut()
        with pytest.raises(PG_CONNECTION_ERRORS):
            await pool.fetchval("SELECT 1", timeout=2)
        pg_proxy.restore()
        pids = await asyncio.gather(
            *(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)") for _ in range(size))
        )
        assert len(set(pids)) == size
        assert pg_proxy.connections == size


async def test_stop_with_open_connections_leaves_nothing_running(
    test_services: services.TestServices, redis_keys: RedisKeys
) -> None:
    before = asyncio.all_tasks()
    redis_proxy = FaultProxy(*_target(test_services.redis_url, 6379))
    pg_proxy = FaultProxy(*_target(test_services.admin_database_url, 5432))
    await redis_proxy.start()
    await pg_proxy.start()
    client = Redis.from_url(_via(test_services.redis_url, redis_proxy), socket_timeout=10)
    conn = await asyncpg.connect(_via(test_services.admin_database_url, pg_proxy))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        blocked = asyncio.create_task(blpop(client, f"{redis_keys.prefix}:fp:never"))
        await eventually(lambda: redis_proxy.connections == 1)
        pg_proxy.freeze()
        held = asyncio.create_task(conn.fetchval("SELECT 2"))

        port = redis_proxy.port
        await redis_proxy.stop()
        await pg_proxy.stop()
        assert (redis_proxy.connections, pg_proxy.connections) == (0, 0)

        async with asyncio.timeout(2):
            with pytest.raises(RedisConnectionError):
                await blocked
            with pytest.raises(PG_CONNECTION_ERRORS):
                await held
        assert asyncio.all_tasks() == before
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        conn.terminate()
        await client.aclose()
    gc.collect()  # any unclosed transport would warn now, and warnings are errors
