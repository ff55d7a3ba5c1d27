"""One ``redis.asyncio`` pool per process, built from ``redis`` config."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from fleet.config import RedisConfig
from fleet.errors import FleetError, ServiceUnavailable


class RedisNotConfigured(FleetError):
    """``redis.url`` is empty where a real Redis is required."""


def redacted_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def create_redis(config: RedisConfig, *, url: str | None = None) -> Redis:
    if url is None:
        if config.url is None:
            raise RedisNotConfigured("redis.url is not set")
        url = config.url.get_secret_value()
    # A blocking pool makes a burst wait for a free connection; the default
    # pool raises MaxConnectionsError past pool_size instead.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=config.pool_size,
        timeout=config.pool_timeout,
        socket_connect_timeout=config.connect_timeout,
        # A Redis that stops answering (frozen, partitioned) fails commands instead of
        # hanging them; nothing we send blocks on the server side.
        socket_timeout=config.command_timeout,
        health_check_interval=30,
        decode_responses=False,
    )
    return Redis.from_pool(pool)  # the client owns and closes the pool


async def ping_redis(redis: Redis, where: str, within: float) -> None:
    """Raise :class:`ServiceUnavailable` unless Redis answers within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            await redis.ping()
    except TimeoutError:
        raise ServiceUnavailable(f"Redis at {where} did not answer within {within:g} s") from None
    except (OSError, RedisError) as exc:
        raise ServiceUnavailable(f"Redis at {where} is unreachable: {exc}") from None
