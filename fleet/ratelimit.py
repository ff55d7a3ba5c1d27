"""Send slots shared by every instance: token buckets in Redis, waited for locally.

Telegram allows about 30 messages/s per bot, 1/s per private chat (short
bursts tolerated) and 20/min per group. The buckets live in Redis, so two
instances sending for one bot share one budget; time comes from Redis
``TIME``. One script per grant checks the bot's 429 pause, the buckets and
the send's idempotency claim (``storage.idempotency``), and takes a token from
each bucket only when it can grant: a taken or orphaned send costs no token.

Waiting happens here, not in Redis: each bot has a FIFO of waiting sends and
one asker that grants as many of them as it can in one script call. A send
waits behind earlier sends to its own chat; a chat out of tokens waits alone;
a bot out of tokens (or paused after a 429) holds its whole queue until the
time Redis named, and asks again once. No send polls Redis in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from fleet.context import ChatKind
from fleet.errors import RetryLater
from storage.batching import CommandBatcher
from storage.idempotency import CLAIM_RULE, SendLedger
from storage.keys import RedisKeys

log = logging.getLogger(__name__)

# KEYS: pause, bot bucket, then per waiter: its chat bucket, its idempotency key.
# ARGV: bot rate, bot burst, claim ttl, n, then per waiter: chat rate, chat burst, mode, epoch.
# mode: n no key, h claim already held, m/l/r see CLAIM_RULE. Per waiter: g granted,
# t taken, o orphaned, c<s> the chat waits s, b<s> the bot waits s (asked again later).
_GRANT = (
    CLAIM_RULE
    + """
local n = tonumber(ARGV[4])
local out = {}
local pause = redis.call('PTTL', KEYS[1])
if pause > 0 then
  for i = 1, n do out[i] = 'b' .. tostring(pause / 1000) end
  return out
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function refill(key, rate, burst, cache)
  local c = cache[key]
  if c then return c end
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  local have, ts = tonumber(v[1]), tonumber(v[2])
  if have == nil then have, ts = burst, now end
  c = {math.min(burst, have + math.max(0, now - ts) * rate), rate, burst}
  cache[key] = c
  return c
end
local cache = {}
local bot = refill(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), cache)
local bot_wait = nil
for i = 1, n do
  local at = 5 + (i - 1) * 4
  local mode, epoch = ARGV[at + 2], ARGV[at + 3]
  local lkey = KEYS[2 + 2 * i]
  local claim, code = nil, nil
  if mode ~= 'n' and mode ~= 'h' then claim, code = decide_claim(lkey, mode, epoch) end
  if not code then
    local chat = refill(KEYS[1 + 2 * i], tonumber(ARGV[at]), tonumber(ARGV[at + 1]), cache)
    if bot_wait then
      code = 'b' .. tostring(bot_wait)
    elseif bot[1] < 1 then
      bot_wait = (1 - bot[1]) / bot[2]
      code = 'b' .. tostring(bot_wait)
    elseif chat[1] < 1 then
      code = 'c' .. tostring((1 - chat[1]) / chat[2])
    else
      bot[1] = bot[1] - 1
      chat[1] = chat[1] - 1
      chat[4] = true
      bot[4] = true
      if claim then redis.call('SET', lkey, 'c' .. epoch, 'EX', ARGV[3]) end
      code = 'g'
    end
  end
  out[i] = code
end
for key, c in pairs(cache) do
  if c[4] then
    redis.call('HSET', key, 'tokens', tostring(c[1]), 'ts', tostring(now))
    -- A full bucket needs no key: expire once it would have refilled.
    redis.call('PEXPIRE', key, math.ceil(c[3] / c[2] * 1000) + 1000)
  end
end
return out
"""
)

# Keep the longer of the current and the new pause, atomically (Redis 6 has no PEXPIRE GT).
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

ClaimMode = Literal["n", "h", "m", "l", "r"]
Grant = Literal["granted", "taken", "orphaned"]
_GRANTS: dict[str, Grant] = {"g": "granted", "t": "taken", "o": "orphaned"}


@dataclass(frozen=True, slots=True)
class Bucket:
    rate: float  # tokens per second
    burst: float  # capacity


@dataclass(frozen=True, slots=True)
class SendLimits:
    bot: Bucket = Bucket(rate=30.0, burst=30.0)
    private_chat: Bucket = Bucket(rate=1.0, burst=3.0)
    group: Bucket = Bucket(rate=20 / 60, burst=20.0)
    service: Bucket = Bucket(rate=1000.0, burst=1000.0)  # not a message: the bot bucket rules


class RateLimitTimeout(RetryLater):
    """No send slot within the caller's deadline (nothing was sent)."""


@dataclass(slots=True, eq=False)
class _Waiter:
    chat: int
    bucket: str
    limits: Bucket
    key: str | None
    mode: ClaimMode
    epoch: int
    future: asyncio.Future[Grant]
    not_before: float = 0.0


@dataclass(slots=True)
class _BotQueue:
    waiters: deque[_Waiter] = field(default_factory=deque)
    blocked_until: float = 0.0
    asker: asyncio.Task[None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a new send may be grantable


class SendGate:
    def __init__(
        self,
        batcher: CommandBatcher,
        keys: RedisKeys,
        ledger: SendLedger,
        limits: SendLimits | None = None,
        *,
        max_batch: int = 64,
    ) -> None:
        self._keys = keys
        self._ledger = ledger
        self._limits = limits or SendLimits()
        self._max_batch = max_batch
        self._grant = batcher.script(_GRANT)
        self._pause = batcher.script(_PAUSE)
        self._queues: dict[str, _BotQueue] = {}
        self._askers: set[asyncio.Task[None]] = set()

    async def acquire(
        self,
        bot_id: str,
        chat_id: int,
        kind: ChatKind,
        *,
        key: str | None = None,
        mode: ClaimMode = "n",
        epoch: int = 0,
        max_wait: float = 60.0,
    ) -> Grant:
        """A send slot (and the claim of ``key``), waiting in line; raises after ``max_wait``."""
        if kind == "service":
            # Not a message: one roomy bucket per bot (the bot's own bucket rules), in a line
            # of its own beside the chat's messages.
            limits, line, bucket = self._limits.service, ~chat_id, self._keys.rate(bot_id, kind)
        else:
            limits = self._limits.private_chat if kind == "private" else self._limits.group
            line, bucket = chat_id, self._keys.rate(bot_id, kind, chat_id)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            chat=line,
            bucket=bucket,
            limits=limits,
            key=key,
            mode=mode if key is not None else "n",
            epoch=epoch,
            future=loop.create_future(),
        )
        queue = self._queues.get(bot_id)
        if queue is None:
            queue = self._queues[bot_id] = _BotQueue()
        queue.waiters.append(waiter)
        queue.arrived.set()
        if queue.asker is None:
            queue.asker = asyncio.create_task(self._ask(bot_id, queue), name=f"grant-{bot_id}")
            self._askers.add(queue.asker)
            queue.asker.add_done_callback(self._askers.discard)
        try:
            async with asyncio.timeout(max_wait):
                return await waiter.future
        except BaseException as exc:
            self._unclaim(waiter)
            if isinstance(exc, TimeoutError):
                raise RateLimitTimeout(
                    f"bot {bot_id}: no send slot within {max_wait:g} s"
                ) from None
            raise

    def _unclaim(self, waiter: _Waiter) -> None:
        """The caller left as its grant landed: that claim must not stay (nothing goes out)."""
        future = waiter.future
        granted = future.done() and not future.cancelled() and future.exception() is None
        if granted and future.result() == "granted" and waiter.key and waiter.mode != "h":
            task = asyncio.ensure_future(self._release_quietly(waiter))
            self._askers.add(task)
            task.add_done_callback(self._askers.discard)

    async def _release_quietly(self, waiter: _Waiter) -> None:
        assert waiter.key is not None
        try:
            await self._ledger.release(waiter.key, waiter.epoch)
        except Exception:
            log.warning("an unused send claim stays until it expires (Redis)")

    async def pause(self, bot_id: str, seconds: float) -> None:
        """After a 429: hold every instance's sends for this bot; never shortens a pause."""
        queue = self._queues.get(bot_id)
        if queue is not None:
            until = asyncio.get_running_loop().time() + seconds
            queue.blocked_until = max(queue.blocked_until, until)
        await self._pause([self._keys.send_pause(bot_id)], [max(1, int(seconds * 1000))])

    async def _ask(self, bot_id: str, queue: _BotQueue) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                queue.waiters = deque(w for w in queue.waiters if not w.future.done())
                if not queue.waiters:
                    return
                now = loop.time()
                if queue.blocked_until > now:
                    await asyncio.sleep(queue.blocked_until - now)  # a refill, not a lock
                    continue
                queue.arrived.clear()
                batch, earliest = self._eligible(queue, now)
                if not batch:
                    # Until a chat refills, or a send to another chat arrives.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, earliest - now)):
                            await queue.arrived.wait()
                    continue
                await self._ask_once(bot_id, queue, batch, loop)
        except Exception as exc:  # never strand a waiter: they learn what went wrong
            log.exception("bot %s: send grants failed", bot_id)
            for waiter in queue.waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            queue.waiters.clear()
        finally:
            queue.asker = None
            if not queue.waiters and self._queues.get(bot_id) is queue:
                del self._queues[bot_id]

    def _eligible(self, queue: _BotQueue, now: float) -> tuple[list[_Waiter], float]:
        """The first waiter of each chat, if its chat has refilled (FIFO per chat)."""
        batch: list[_Waiter] = []
        chats: set[int] = set()
        earliest = float("inf")
        for waiter in queue.waiters:
            if waiter.chat in chats:
                continue
            chats.add(waiter.chat)
            if waiter.not_before > now:
                earliest = min(earliest, waiter.not_before)
                continue
            batch.append(waiter)
            if len(batch) >= self._max_batch:
                break
        return batch, earliest

    async def _ask_once(
        self, bot_id: str, queue: _BotQueue, batch: list[_Waiter], loop: asyncio.AbstractEventLoop
    ) -> None:
        bot = self._limits.bot
        keys = [self._keys.send_pause(bot_id), self._keys.rate(bot_id, "bot")]
        args: list[str | int | float] = [bot.rate, bot.burst, self._ledger.ttl, len(batch)]
        for waiter in batch:
            keys += (waiter.bucket, waiter.key or waiter.bucket)
            args += (waiter.limits.rate, waiter.limits.burst, waiter.mode, waiter.epoch)
        try:
            answers = await self._grant(keys, args)
        except Exception as exc:
            # Redis failed: these sends learn it now (their update is retried later).
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            return
        now = loop.time()  # waits are counted from Redis's answer, not from the question
        for waiter, raw in zip(batch, answers, strict=True):
            answer = raw.decode() if isinstance(raw, bytes) else str(raw)
            code = answer[0]
            if code == "c":
                waiter.not_before = now + float(answer[1:])
            elif code == "b":
                queue.blocked_until = max(queue.blocked_until, now + float(answer[1:]))
            elif not waiter.future.done():
                waiter.future.set_result(_GRANTS[code])
            elif code == "g" and waiter.key is not None and waiter.mode != "h":
                await self._release_quietly(waiter)  # the sender gave up just before

    async def aclose(self) -> None:
        askers = list(self._askers)
        for task in askers:
            task.cancel()
        await asyncio.gather(*askers, return_exceptions=True)
