"""Sender against the emulator over real HTTP and real Redis: what went out, what may go again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from fleet.batcher import BatchWriter
from fleet.context import SendOutcome
from fleet.emulator import EmulatorServer, EmulatorSettings, FaultPlan, TelegramEmulator
from fleet.errors import RetryLater
from fleet.http import HttpPool, NotSent, Progress
from fleet.metrics import FleetMetrics, build_metrics
from fleet.ratelimit import RateLimitTimeout, SendGate, SendLimits
from fleet.sender import Sender, TelegramUnavailable
from storage.batching import CommandBatcher
from storage.idempotency import SendLedger
from storage.keys import RedisKeys
from storage.repositories.messages import MessageRecord
from tests.faultproxy import FaultProxy
from tests.services import free_port

TOKEN = "7100000001:sender-test-token-abcdefghijk"
BOT = "bot-sender"
EPOCH = 2
SLOW_SENDS = FaultPlan(latency=1.5, methods=frozenset({"sendmessage"}))


class CountingPool(HttpPool):
    """The real pool; counts the requests that surely never left (NotSent)."""

    def __init__(self, base_url: str, *, limit: int, connect_timeout: float) -> None:
        super().__init__(base_url, limit=limit, connect_timeout=connect_timeout)
        self.not_sent = 0

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        read_timeout: float,
        progress: Progress | None = None,
        content_type: str | None = None,
    ) -> tuple[int, bytes]:
        try:
            return await super().post(
                path, body, read_timeout=read_timeout, progress=progress, content_type=content_type
            )
        except NotSent:
            self.not_sent += 1
            raise


@dataclass
class Rig:
    sender: Sender
    ledger: SendLedger
    pool: CountingPool
    metrics: FleetMetrics
    emulator: TelegramEmulator

    def chat(self) -> int:
        """A new user who has started the bot (so the bot may write to them)."""
        user = self.emulator.add_user("Ana")
        self.emulator.user_sends(TOKEN, user, "/start")
        return user.id

    def key(self, name: str) -> str:
        return self.sender.key(BOT, "test", name)

    async def send(
        self, chat: int, text: str, *, key: str | None = None, at_least_once: bool = False
    ) -> SendOutcome:
        payload = {"chat_id": chat, "text": text}
        return await self.sender.call(
            BOT, "sendMessage", payload, chat_id=chat, key=key, at_least_once=at_least_once
        )

    def copies(self, chat: int, text: str) -> int:
        return sum(1 for sent in self.emulator.transcript(TOKEN, chat) if sent.text == text)

    def requests(self) -> int:
        return self.emulator.requests["sendmessage"]


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def emulator_server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(settings=EmulatorSettings(seed=11)) as server:
        server.emulator.add_bot(TOKEN)
        yield server


@pytest.fixture
async def make_rig(
    emulator_server: EmulatorServer, redis: Redis, redis_keys: RedisKeys
) -> AsyncIterator[MakeRig]:
    """``await make_rig(...)``: a real Sender (pool, gate, ledger) with BOT registered at EPOCH."""
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(
        *,
        api_base: str | None = None,
        client: Redis | None = None,
        limit: int = 10,
        connect_timeout: float = 2.0,
        max_attempts: int = 6,
        max_wait: float = 30.0,
    ) -> Rig:
        batcher = CommandBatcher(client or redis, timeout=2)
        ledger = SendLedger(batcher, redis_keys)
        gate = SendGate(batcher, redis_keys, ledger, SendLimits())
        pool = CountingPool(
            api_base or emulator_server.base_url, limit=limit, connect_timeout=connect_timeout
        )
        closers.extend((gate.aclose, pool.aclose, batcher.aclose))
        rows: list[MessageRecord] = []

        async def write(batch: Sequence[MessageRecord]) -> None:
            rows.extend(batch)

        metrics = build_metrics()
        sender = Sender(
            pool,
            gate,
            ledger,
            BatchWriter("messages", write),
            metrics,
            max_attempts=max_attempts,
            max_wait=max_wait,
        )
        sender.register(BOT, TOKEN, EPOCH)
        return Rig(sender, ledger, pool, metrics, emulator_server.emulator)

    yield make
    for close in closers:
        await close()


@pytest.fixture
async def proxied_redis(redis_proxy: FaultProxy) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_proxy.url("redis", "/0"), socket_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


async def poll(condition: Callable[[], bool], within: float = 10) -> None:
    """Wait for a condition nothing signals, with a deadline."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_send_that_found_no_free_connection_is_retried_not_uncertain(
    make_rig: MakeRig,
) -> None:
    """Waiting for a pooled connection is "not sent": the send is retried and goes out once.

    Before: the wait for a pooled connection counted inside the total timeout and the
    send was reported "uncertain", i.e. silently dropped.
    """
    rig = await make_rig(limit=1, connect_timeout=0.3, max_attempts=8)
    rig.emulator.set_faults(SLOW_SENDS, TOKEN)  # the first send holds the only connection
    chat = rig.chat()
    outcomes = await asyncio.gather(rig.send(chat, "first"), rig.send(chat, "second"))
    assert [o.result for o in outcomes] == ["ok", "ok"]
    assert rig.pool.not_sent >= 1  # the second really found no free connection in time
    assert (rig.copies(chat, "first"), rig.copies(chat, "second")) == (1, 1)
    assert rig.requests() == 2


async def test_connection_refused_raises_retry_later_and_releases_the_claim(
    make_rig: MakeRig,
) -> None:
    """Telegram unreachable: every try "not sent", then TelegramUnavailable; the key is free.

    Before: a refused connection counted as an uncertain send whose claim stayed, so the
    update's retry skipped the message for good.
    """
    rig = await make_rig(api_base=f"http://127.0.0.1:{free_port()}", max_attempts=3)
    key = rig.key("refused")
    with pytest.raises(TelegramUnavailable) as raised:
        await rig.send(rig.chat(), "hello", key=key)
    assert isinstance(raised.value, RetryLater)
    assert rig.pool.not_sent == 3
    assert await rig.ledger.claim(key, EPOCH) == "new"


async def test_at_least_once_takes_over_a_claim_of_an_older_epoch(
    make_rig: MakeRig, redis: Redis
) -> None:
    """A claim left by epoch 1 is resent at epoch 2 at least once; at most once it is not.

    Before: every orphaned claim was skipped, so a deliverable whose owner died mid-send
    was lost.
    """
    rig = await make_rig()
    chat = rig.chat()
    deliverable, reply = rig.key("deliverable"), rig.key("reply")
    assert await rig.ledger.claim(deliverable, 1) == "new"
    assert await rig.ledger.claim(reply, 1) == "new"

    outcome = await rig.send(chat, "deliverable", key=deliverable, at_least_once=True)
    assert outcome.result == "ok"
    assert rig.copies(chat, "deliverable") == 1
    assert await SendLedger.is_done(redis, deliverable)

    outcome = await rig.send(chat, "reply", key=reply)
    assert outcome.result == "orphaned"
    assert rig.copies(chat, "reply") == 0
    assert rig.requests() == 1


async def test_uncertain_sends_at_most_once_are_kept_at_least_once_are_repeated(
    make_rig: MakeRig, redis: Redis
) -> None:
    """The method ran and the connection dropped: at most once stops, at least once repeats.

    Before: an uncertain send was either repeated (a duplicate reply) or given up (a lost
    deliverable), whatever the send asked for.
    """
    rig = await make_rig()
    dropped = FaultPlan(drop_after_rate=1.0, methods=frozenset({"sendmessage"}))
    rig.emulator.set_faults(dropped, TOKEN)

    chat, key = rig.chat(), rig.key("reply")
    outcome = await rig.send(chat, "reply", key=key)
    assert outcome.result == "uncertain"
    assert rig.copies(chat, "reply") == 1  # it did go out; the sender cannot know
    assert rig.requests() == 1  # and it was not repeated
    assert await rig.ledger.claim(key, EPOCH) == "taken"  # nor will a retry repeat it

    chat, key = rig.chat(), rig.key("deliverable")
    sending = asyncio.create_task(rig.send(chat, "deliverable", key=key, at_least_once=True))
    await rig.emulator.wait_for(lambda: rig.copies(chat, "deliverable") >= 1, 10)
    rig.emulator.clear_faults(TOKEN)  # the dropped copy is in; the next try is answered
    async with asyncio.timeout(20):
        outcome = await sending
    assert outcome.result == "ok"
    assert rig.copies(chat, "deliverable") >= 2  # repeated until acknowledged
    assert await SendLedger.is_done(redis, key)


async def test_a_send_cancelled_after_its_request_left_keeps_its_at_most_once_claim(
    make_rig: MakeRig,
) -> None:
    """Cancelled while Telegram runs the method: the outcome is unknown, so never twice.

    Before (and still): the claim was released as if nothing had left, and the update's
    retry (after a shutdown or a lost lease) sent the reply a second time.
    """
    rig = await make_rig()
    rig.emulator.set_faults(SLOW_SENDS, TOKEN)
    chat, key = rig.chat(), rig.key("reply")
    sending = asyncio.create_task(rig.send(chat, "reply", key=key))
    await poll(lambda: rig.requests() == 1)  # the request is at Telegram
    sending.cancel()
    await asyncio.wait([sending], timeout=10)
    assert sending.cancelled()
    assert await rig.ledger.claim(key, EPOCH) == "taken"


async def test_a_cancelled_send_keeps_its_cancellation_when_redis_is_cut(
    proxied_redis: Redis, redis_proxy: FaultProxy, make_rig: MakeRig, redis: Redis
) -> None:
    """Cancelled mid-request with Redis gone: the task ends cancelled, not with a Redis error.

    Before: the claim's release failed and its Redis error replaced the CancelledError, so
    a cancelled runner looked like a failed one (and shutdown waited on the wrong thing).
    """
    rig = await make_rig(client=proxied_redis)
    rig.emulator.set_faults(SLOW_SENDS, TOKEN)
    chat, key = rig.chat(), rig.key("deliverable")
    sending = asyncio.create_task(rig.send(chat, "deliverable", key=key, at_least_once=True))
    await poll(lambda: rig.requests() == 1)  # granted, claimed, and in its HTTP request
    redis_proxy.cut()
    sending.cancel()
    await asyncio.wait([sending], timeout=15)
    assert sending.done()
    assert sending.cancelled(), f"ended with {sending.exception()!r}"
    assert await redis.get(key) == f"c{EPOCH}".encode()  # the release really failed


async def test_a_429_storm_pauses_the_bot_and_the_send_goes_out_after_it(
    make_rig: MakeRig,
) -> None:
    """429s pause the bot and the send is tried again after the pause: it ends "ok", once.

    Before: a 429 counted as a failed try, so a storm turned replies into errors.
    """
    rig = await make_rig()
    storm = {"storm_seconds": 2, "storm_retry_after": 1, "methods": ["sendMessage"]}
    rig.emulator.set_faults(FaultPlan.from_json(storm), TOKEN)
    chat = rig.chat()
    outcome = await rig.send(chat, "after the storm", key=rig.key("storm"))
    assert outcome.result == "ok"
    assert rig.copies(chat, "after the storm") == 1
    retry_after = rig.metrics.registry.get_sample_value(
        "botfleet_send_retry_after_total", {"bot": BOT}
    )
    assert retry_after is not None and retry_after > 0


async def test_a_pause_longer_than_max_wait_raises_retry_later_and_frees_the_key(
    make_rig: MakeRig,
) -> None:
    """A 429 pause longer than the sender's max_wait: RateLimitTimeout, and the key is free.

    Before: the send sat out the whole pause (holding its update), or its claim stayed and
    the update's retry skipped the message.
    """
    rig = await make_rig(max_wait=1)
    storm = {"storm_seconds": 30, "storm_retry_after": 30, "methods": ["sendMessage"]}
    rig.emulator.set_faults(FaultPlan.from_json(storm), TOKEN)
    chat, key = rig.chat(), rig.key("long pause")
    async with asyncio.timeout(15):  # far less than the pause
        with pytest.raises(RateLimitTimeout) as raised:
            await rig.send(chat, "never now", key=key)
    assert isinstance(raised.value, RetryLater)
    assert rig.copies(chat, "never now") == 0
    assert await rig.ledger.claim(key, EPOCH) == "new"
