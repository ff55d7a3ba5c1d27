"""The Redis side: key schema, namespaces, and a clear error when Redis is away."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from fleet.config import RedisConfig
from fleet.errors import ServiceUnavailable
from storage import keys
from storage.keys import RedisKeys
from storage.redis import create_redis, ping_redis, redacted_redis_url


def test_every_bot_key_carries_prefix_and_bot_id() -> None:
    k = RedisKeys("fleetA")
    built = [
        k.dedup("loja-1", 5),
        k.idempotency("loja-1", "welcome", 10, 5),
        k.lease("loja-1"),
        k.epoch("loja-1"),
        k.offset("loja-1"),
        k.rate("loja-1", "chat", 10),
        k.throttle("loja-1", 10),
        k.debounce("loja-1", 10, "start"),
    ]
    assert all(key.startswith("fleetA:") and ":loja-1" in key for key in built)
    assert len(set(built)) == len(built)
    assert k.dedup("loja-1", 5) != k.dedup("loja-12", 5)
    assert k.pattern(keys.LEASE) == "fleetA:lease:*"
    assert k.pattern(keys.DEDUP, "loja-1") == "fleetA:dedup:loja-1:*"


async def test_dedup_key_is_taken_once_and_expires(redis: Redis, redis_keys: RedisKeys) -> None:
    key = redis_keys.dedup("loja-1", 42)
    assert await redis.set(key, b"1", nx=True, ex=keys.DEDUP_TTL_SECONDS)
    assert not await redis.set(key, b"1", nx=True, ex=keys.DEDUP_TTL_SECONDS)
    assert 0 < await redis.ttl(key) <= keys.DEDUP_TTL_SECONDS
    found = [k async for k in redis.scan_iter(match=redis_keys.pattern(keys.DEDUP, "loja-1"))]
    assert found == [key.encode()]


async def test_unreachable_redis_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://:pw123@127.0.0.1:{port}/0"
    client = create_redis(RedisConfig(url=SecretStr(url), connect_timeout=1))
    try:
        with pytest.raises(ServiceUnavailable, match="is unreachable") as info:
            await ping_redis(client, redacted_redis_url(url), within=2)
        assert "pw123" not in str(info.value)
    finally:
        await client.aclose()
    assert redacted_redis_url(url) == f"redis://:***@127.0.0.1:{port}/0"
