"""CommandBatcher on the real Redis: grouping, NOSCRIPT, per-call errors, outages, cancel, close."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import DataError, RedisError, ResponseError

from fleet.config import RedisConfig
from storage.batching import (
    BatchConnectionError,
    BatchedScript,
    BatchTimeoutError,
    CommandBatcher,
)
from storage.keys import RedisKeys
from storage.redis import create_redis
from tests import services
from tests.faultproxy import FaultProxy
from tests.services import free_port

# Each call INCRs its own key and echoes its key and argument: replies tell callers apart.
ECHO = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
MAYBE_FAIL = "if ARGV[1] == 'fail' then error('asked to fail') end return ARGV[1]"


async def eventually(condition: Callable[[], bool], within: float = 5) -> None:
    """Poll a condition nothing signals, under a deadline (never a bare sleep)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def until_all_exist(redis: Redis, keys: list[str], within: float = 5) -> None:
    """Wait for what a frozen proxy held back: the server runs it after the restore."""
    async with asyncio.timeout(within):
        while await redis.exists(*keys) < len(keys):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def flush_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "CommandBatcher._flush"
    ]


class Caller:
    """Calls a script and counts calls that reached the batcher's queue."""

    def __init__(self, script: BatchedScript, keys: RedisKeys) -> None:
        self.script = script
        self.prefix = f"{keys.prefix}:batch:{uuid.uuid4().hex[:6]}"
        self.submitted = 0

    def key(self, i: int) -> str:
        return f"{self.prefix}:{i}"

    async def __call__(self, i: int) -> Any:
        self.submitted += 1  # the call below is queued before this task next yields
        return await self.script([self.key(i)], [i])

    def expected(self, i: int, count: int = 1) -> list[Any]:
        return [self.key(i).encode(), str(i).encode(), count]


def unique(source: str) -> str:
    """A script of this test's own: no other test has it loaded, or flushed."""
    return f"-- {uuid.uuid4().hex}\n{source}"


def via(url: str, redis_proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{redis_proxy.host}:{redis_proxy.port}"))


@pytest.fixture
async def proxied(
    redis_proxy: FaultProxy,
    test_services: services.TestServices,
    redis_keys: RedisKeys,
    redis: Redis,
) -> AsyncIterator[Redis]:
    """A client of Redis through the proxy: cut it or freeze it (``redis`` cleans up the keys)."""
    url = SecretStr(via(test_services.redis_url, redis_proxy))
    client = create_redis(RedisConfig(url=url, key_prefix=redis_keys.prefix, connect_timeout=1))
    try:
        yield client
    finally:
        await client.aclose()


async def test_200_concurrent_calls_share_one_or_two_round_trips(
    batcher: CommandBatcher, redis_keys: RedisKeys
) -> None:
    call = Caller(batcher.script(unique(ECHO)), redis_keys)
    replies = await asyncio.gather(*(call(i) for i in range(200)))
    assert replies == [call.expected(i) for i in range(200)]
    assert batcher.round_trips <= 2  # the batch, plus one SCRIPT LOAD and re-send


async def test_max_batch_splits_a_burst(redis: Redis, redis_keys: RedisKeys) -> None:
    source = unique(ECHO)
    await redis.script_load(source)
    batcher = CommandBatcher(redis, max_batch=50)
    try:
        call = Caller(batcher.script(source), redis_keys)
        replies = await asyncio.gather(*(call(i) for i in range(200)))
        assert replies == [call.expected(i) for i in range(200)]
        assert 4 <= batcher.round_trips <= 8
    finally:
        await batcher.aclose()


async def test_calls_made_while_a_pipeline_is_in_flight_go_together_next(
    proxied: Redis, redis_proxy: FaultProxy, redis_keys: RedisKeys
) -> None:
    batcher = CommandBatcher(proxied, max_inflight=1)
    try:
        call = Caller(batcher.script(unique(ECHO)), redis_keys)
        assert await call(0) == call.expected(0)  # connected, script loaded
        sent = batcher.round_trips
        redis_proxy.freeze()
        first = asyncio.create_task(call(1))
        await eventually(lambda: batcher.round_trips == sent + 1)
        rest = [asyncio.create_task(call(i)) for i in range(2, 52)]
        await eventually(lambda: call.submitted == 52)
        assert batcher.round_trips == sent + 1  # all 50 wait for the one in flight
        assert len(flush_tasks()) == 1
        redis_proxy.restore()
        replies = await asyncio.gather(first, *rest)
        assert replies == [call.expected(i) for i in range(1, 52)]
        assert batcher.round_trips == sent + 2
    finally:
        await batcher.aclose()


async def test_noscript_after_script_flush_is_recovered_transparently(
    batcher: CommandBatcher, redis: Redis, redis_keys: RedisKeys
) -> None:
    call = Caller(batcher.script(unique(ECHO)), redis_keys)
    assert await call(0) == call.expected(0)
    await redis.script_flush()
    before = batcher.round_trips
    replies = await asyncio.gather(*(call(i) for i in range(1, 30)))
    assert replies == [call.expected(i) for i in range(1, 30)]
    assert batcher.round_trips == before + 2  # NOSCRIPT, then SCRIPT LOAD + re-send together
    assert await call(0) == call.expected(0, count=2)
    assert batcher.round_trips == before + 3


async def test_a_failing_command_fails_only_its_caller(
    batcher: CommandBatcher, redis_keys: RedisKeys
) -> None:
    maybe_fail = batcher.script(unique(MAYBE_FAIL))
    broken = batcher.script(unique("return +"))  # does not compile
    key = f"{redis_keys.prefix}:batch:k"
    args = ["fail" if i % 7 == 3 else str(i) for i in range(40)]
    outcomes = await asyncio.gather(
        *(maybe_fail([key], [arg]) for arg in args),
        broken([key], []),
        batcher.execute("SET", key, cast(Any, None)),  # refused before it is queued
        batcher.execute("INCR", key, "no such argument"),
        return_exceptions=True,
    )
    for arg, outcome in zip(args, outcomes, strict=False):
        if arg == "fail":
            assert isinstance(outcome, ResponseError)
            assert "asked to fail" in str(outcome)
        else:
            assert outcome == arg.encode()
    compile_error, bad_argument, wrong_arity = outcomes[len(args) :]
    assert isinstance(compile_error, ResponseError)
    assert "NOSCRIPT" not in str(compile_error)
    assert isinstance(bad_argument, DataError)
    assert isinstance(wrong_arity, ResponseError)
    assert batcher.round_trips <= 2


async def test_execute_returns_what_redis_py_returns(
    batcher: CommandBatcher, redis_keys: RedisKeys
) -> None:
    key = f"{redis_keys.prefix}:batch:plain"
    assert await batcher.execute("SET", key, b"v", "EX", 10) is True
    replies = await asyncio.gather(
        batcher.execute("GET", key), batcher.execute("TTL", key), batcher.execute("EXISTS", key)
    )
    assert replies[0] == b"v"
    assert 0 < replies[1] <= 10
    assert replies[2] == 1


async def test_unreachable_redis_fails_every_caller_promptly_every_time() -> None:
    url = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
    client = create_redis(RedisConfig(url=url, connect_timeout=1))
    batcher = CommandBatcher(client, timeout=2)
    script = batcher.script(ECHO)
    try:
        for _ in range(3):  # a failed flush must not wedge the queue
            started = time.monotonic()
            async with asyncio.timeout(4):
                outcomes = await asyncio.gather(
                    *(script([f"k{i}"], [i]) for i in range(20)),
                    batcher.execute("PING"),
                    return_exceptions=True,
                )
            assert time.monotonic() - started < 2.5
            assert all(isinstance(o, BatchConnectionError | BatchTimeoutError) for o in outcomes), (
                outcomes
            )
            assert "127.0.0.1" in str(outcomes[0])
        assert flush_tasks() == []
    finally:
        await batcher.aclose()
        await client.aclose()


async def test_the_same_batcher_recovers_after_a_cut_and_a_freeze(
    proxied: Redis, redis_proxy: FaultProxy, redis: Redis, redis_keys: RedisKeys
) -> None:
    batcher = CommandBatcher(proxied, timeout=0.5)
    try:
        call = Caller(batcher.script(unique(ECHO)), redis_keys)
        assert await call(0) == call.expected(0)

        redis_proxy.cut()
        async with asyncio.timeout(2):
            outcomes = await asyncio.gather(
                *(call(i) for i in range(1, 11)), return_exceptions=True
            )
        assert all(isinstance(o, BatchConnectionError) for o in outcomes), outcomes
        redis_proxy.restore()
        replies = await asyncio.gather(*(call(i) for i in range(11, 21)))
        assert replies == [call.expected(i) for i in range(11, 21)]

        redis_proxy.freeze()
        started = time.monotonic()
        outcomes = await asyncio.gather(*(call(i) for i in range(21, 31)), return_exceptions=True)
        assert all(isinstance(o, BatchTimeoutError) for o in outcomes), outcomes
        assert time.monotonic() - started < 2
        redis_proxy.restore()
        replies = await asyncio.gather(*(call(i) for i in range(31, 41)))
        assert replies == [call.expected(i) for i in range(31, 41)]
        assert flush_tasks() == []
        # The calls that timed out ran after all: "may or may not have run".
        await until_all_exist(redis, [call.key(i) for i in range(21, 31)])
    finally:
        await batcher.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others(
    proxied: Redis, redis_proxy: FaultProxy, redis: Redis, redis_keys: RedisKeys
) -> None:
    batcher = CommandBatcher(proxied, max_inflight=1)
    try:
        call = Caller(batcher.script(unique(ECHO)), redis_keys)
        assert await call(0) == call.expected(0)
        sent = batcher.round_trips
        redis_proxy.freeze()
        on_the_wire = [asyncio.create_task(call(i)) for i in range(1, 11)]
        await eventually(lambda: batcher.round_trips == sent + 1)
        queued = [asyncio.create_task(call(i)) for i in range(11, 21)]
        await eventually(lambda: call.submitted == 21)
        on_the_wire[2].cancel()  # call 3: already sent
        queued[2].cancel()  # call 13: not sent yet
        redis_proxy.restore()
        outcomes = await asyncio.gather(*on_the_wire, *queued, return_exceptions=True)
        for i, outcome in enumerate(outcomes, start=1):
            if i in (3, 13):
                assert isinstance(outcome, asyncio.CancelledError)
            else:
                assert outcome == call.expected(i)
        assert await redis.get(call.key(3)) == b"1"  # it ran: cancelling only stopped the wait
        assert await redis.get(call.key(13)) is None  # dropped before it was sent
        # The connection is still in step: the next replies are the right ones.
        replies = await asyncio.gather(*(call(i) for i in range(21, 41)))
        assert replies == [call.expected(i) for i in range(21, 41)]
    finally:
        await batcher.aclose()


async def test_aclose_sends_what_is_queued_then_refuses_new_calls(
    redis: Redis, redis_keys: RedisKeys
) -> None:
    batcher = CommandBatcher(redis)
    call = Caller(batcher.script(unique(ECHO)), redis_keys)
    tasks = [asyncio.create_task(call(i)) for i in range(50)]
    await eventually(lambda: call.submitted == 50)
    await batcher.aclose()
    assert all(task.done() for task in tasks)
    assert [task.result() for task in tasks] == [call.expected(i) for i in range(50)]
    assert flush_tasks() == []
    with pytest.raises(RuntimeError, match="closed"):
        await call(50)
    await batcher.aclose()  # idempotent


async def test_aclose_gives_up_on_a_hung_server_within_its_timeout(
    proxied: Redis, redis_proxy: FaultProxy, redis: Redis, redis_keys: RedisKeys
) -> None:
    batcher = CommandBatcher(proxied, max_inflight=1, timeout=0.5)
    call = Caller(batcher.script(unique(ECHO)), redis_keys)
    assert await call(0) == call.expected(0)
    redis_proxy.freeze()
    tasks = [asyncio.create_task(call(i)) for i in range(1, 21)]
    await eventually(lambda: call.submitted == 21)
    started = time.monotonic()
    await batcher.aclose()
    assert time.monotonic() - started < 2
    assert flush_tasks() == []
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, RedisError | RuntimeError) for o in outcomes), outcomes
    redis_proxy.restore()
    await until_all_exist(redis, [call.key(i) for i in range(1, 21)])  # before the clean-up


async def test_limits_must_be_positive(redis: Redis) -> None:
    with pytest.raises(ValueError, match="positive"):
        CommandBatcher(redis, max_batch=0)
    with pytest.raises(ValueError, match="positive"):
        CommandBatcher(redis, timeout=0)
