"""Bot leases in Redis: each bot polled by exactly one instance (invariant 1).

A lease is ``SET lease:{bot} {instance}:{nonce} NX PX ttl``; only its holder
renews or releases it (Lua compare-and-set). Each acquisition ``INCR``s the
bot's epoch, and the offset is written only under the current holder and
epoch, so a stale owner (paused past its TTL) cannot move it.

Every ``retry_period`` the coordinator heartbeats (a key with a TTL and a
sorted set of expiries in Redis ``TIME``), renews what it holds in one script,
hands off bots whose rendezvous (HRW) owner is another live instance, and
acquires free leases: at once if it is their HRW owner, after
``takeover_grace`` if it is not. Its own deadlines use this host's monotonic
clock only; nothing compares one host's clock with another's. A lease not
renewed within ``renew_deadline`` (< ttl) is given up locally before it can
expire, so its runner has stopped before anyone else may take it.

The heartbeat holds the instance only (a few hundred bytes, whatever the number
of bots): every instance reads every heartbeat each round. What ``botfleet
status`` shows per bot lives in one small key per bot, written by the lease
holder only when the bot's report changed (see :class:`BotStates`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fleet import __version__
from fleet.assignment import desired_owner
from fleet.config import BotConfig, InstanceConfig, LeasesConfig
from fleet.metrics import FleetMetrics
from fleet.ownership import BotReport, OnChange, StatusSource, Unsubscribe
from storage.keys import RedisKeys

log = logging.getLogger(__name__)

STATE_TTL_MS = 86_400_000  # a bot state key lives a day past its last write, then fades
STATE_REFRESH = STATE_TTL_MS / 2000  # s: an unchanged state is rewritten before it expires
STATE_COALESCE = 5.0  # s: a bot whose pending or last update moved is written at most this often
UPDATE_STEP = 1.0  # s: a smaller move of the last update is rounding, not news
STATE_BATCH = 500  # bots per write script: Redis stops briefly per batch, not once for all

# KEYS: members zset, heartbeat key. ARGV: id, ttl ms, info JSON. Returns {now ms, live ids...}.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local info = cjson.decode(ARGV[3])
info['heartbeat_ms'] = now
if not info['started_ms'] then info['started_ms'] = now end
redis.call('SET', KEYS[2], cjson.encode(info), 'PX', ARGV[2])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
table.insert(live, 1, tostring(now))
return live
"""

# KEYS: lease, epoch, offset. ARGV: holder, ttl ms. Returns {epoch, offset or nil} or nil.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('INCR', KEYS[2]), redis.call('GET', KEYS[3])}
end
return false
"""

# KEYS: leases. ARGV: holder, ttl ms. Returns 1/0 per lease.
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: lease, bot state. ARGV: holder. The state goes with the lease: nobody reports it now.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: (lease, bot state) per bot. ARGV: holder, ttl ms, a value per bot ('' deletes).
# Only the holder writes, so a stale owner cannot overwrite its successor's state.
# Returns 1/0 per bot.
_PUBLISH = """
local out = {}
for i = 1, #KEYS / 2 do
  if redis.call('GET', KEYS[2 * i - 1]) == ARGV[1] then
    local value = ARGV[i + 2]
    if value == '' then
      redis.call('DEL', KEYS[2 * i])
    else
      redis.call('SET', KEYS[2 * i], value, 'PX', ARGV[2])
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: lease, epoch, offset. ARGV: holder, epoch, offset. The offset only moves forward.
_COMMIT_OFFSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
local old = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[3]) > old then redis.call('SET', KEYS[3], ARGV[3]) end
return 1
"""


class LeaseFence:
    """One held lease, as its runner sees it."""

    def __init__(
        self,
        coordinator: LeaseCoordinator,
        bot_id: str,
        epoch: int,
        start_offset: int | None,
        renewed_at: float,
    ) -> None:
        self.bot_id = bot_id
        self._coordinator = coordinator
        self._epoch = epoch
        self._start_offset = start_offset
        self.renewed_at = renewed_at
        self.lost_reason: str | None = None
        # Keyed by subscription, so that a stopped runner can take its callback back.
        self._callbacks: dict[int, Callable[[str], None]] = {}
        self._subscriptions = itertools.count()

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def start_offset(self) -> int | None:
        return self._start_offset

    def valid(self) -> bool:
        age = time.monotonic() - self.renewed_at
        return self.lost_reason is None and age < self._coordinator.timing.renew_deadline

    def on_lost(self, callback: Callable[[str], None]) -> Unsubscribe:
        if self.lost_reason is not None:
            callback(self.lost_reason)
            return _nothing
        subscription = next(self._subscriptions)
        self._callbacks[subscription] = callback

        def unsubscribe() -> None:
            # The fence outlives runners (a reload restarts a bot under the same lease):
            # a callback left here would keep a stopped runner and its Bot alive.
            self._callbacks.pop(subscription, None)

        return unsubscribe

    def lose(self, reason: str) -> None:
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        callbacks, self._callbacks = self._callbacks, {}
        for callback in callbacks.values():
            callback(reason)

    @property
    def holder(self) -> str:
        return self._coordinator.holder

    def refuse(self, reason: str) -> None:
        self._coordinator._lose(self, reason)

    async def commit_offset(self, offset: int) -> bool:
        return await self._coordinator.commit_offset(self, offset)


class LeaseCoordinator:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        instance: InstanceConfig,
        timing: LeasesConfig,
        *,
        metrics: FleetMetrics | None = None,
        status: StatusSource | None = None,
        control: Redis | None = None,
    ) -> None:
        # Heartbeats and renewals get their own connections (``control``): a burst of
        # handler traffic on the shared pool must never make a lease miss its deadline.
        self._redis = control or redis
        self._keys = keys
        self.instance_id = instance.id
        self.holder = f"{instance.id}:{secrets.token_hex(8)}"
        self._capacity = instance.capacity
        self.timing = timing
        self._metrics = metrics
        self.states = BotStates(self._redis, keys, instance.id, status or _no_reports)
        self._fences: dict[str, LeaseFence] = {}
        self._handing_off: set[str] = set()
        self._desired: list[str] = []
        self._free_since: dict[str, float] = {}
        self.live: dict[str, float] = {}
        self._left = False
        self._started_ms: int | None = None
        self._on_change: OnChange = lambda: None
        self._nudge = asyncio.Event()
        self._round = 0  # ticks started
        self._round_done = 0  # the last tick finished (successfully or not)
        self._round_finished = asyncio.Event()
        self._redis_down_since: float | None = None
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._commit = redis.register_script(_COMMIT_OFFSET)  # per poll: the shared pool

    # -- the BotOwnership protocol --------------------------------------------------------

    async def owned(self, desired: Sequence[BotConfig]) -> set[str]:
        self._desired = [bot.id for bot in desired if bot.enabled]
        return {
            bot_id
            for bot_id in self._desired
            if (fence := self._fences.get(bot_id)) is not None
            and bot_id not in self._handing_off
            and fence.valid()
        }

    def held(self) -> set[str]:
        return set(self._fences)

    def fence(self, bot_id: str) -> LeaseFence:
        return self._fences[bot_id]

    async def release(self, bot_id: str) -> None:
        fence = self._fences.pop(bot_id, None)
        self._handing_off.discard(bot_id)
        if fence is None:
            return
        fence.lose("released")
        self.states.forget(bot_id)
        keys = [self._keys.lease(bot_id), self._keys.bot_state(bot_id)]
        try:
            async with asyncio.timeout(self.timing.retry_period):
                await self._release(keys=keys, args=[self.holder])
            self._count("released")
            log.info("bot %s: lease released (epoch %s)", bot_id, fence.epoch)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("bot %s: lease not released (%s); it expires", bot_id, type(exc).__name__)

    async def run(self, on_change: OnChange) -> None:
        self._on_change = on_change
        async with asyncio.TaskGroup() as group:
            group.create_task(self._tick_loop(), name="leases-tick")
            group.create_task(self._deadline_loop(), name="leases-deadline")

    async def settle(self, desired: Sequence[BotConfig]) -> None:
        self._desired = [bot.id for bot in desired if bot.enabled]
        wanted = self._round + 1  # a round that starts after this call sees the desired bots
        self.nudge()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self.timing.retry_period):
                while self._round_done < wanted:
                    self._round_finished.clear()
                    await self._round_finished.wait()

    async def leave(self) -> None:
        """Drop out of the live set; held leases are still renewed until released."""
        self._left = True
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.timing.retry_period):
                await self._redis.zrem(self._keys.members(), self.instance_id)
                await self._redis.delete(self._keys.heartbeat(self.instance_id))
        log.info("instance %s left the fleet; handing its bots off", self.instance_id)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "leases",
            "instance": self.instance_id,
            "live_instances": sorted(self.live),
            "held": len(self._fences),
            "handing_off": sorted(self._handing_off),
            "redis": self._redis_down_since is None,
        }

    # -- offsets ------------------------------------------------------------------------------

    async def commit_offset(self, fence: LeaseFence, offset: int) -> bool:
        """Write the offset under the fence's epoch; a refusal loses the fence."""
        bot_id = fence.bot_id
        keys = [self._keys.lease(bot_id), self._keys.epoch(bot_id), self._keys.offset(bot_id)]
        try:
            async with asyncio.timeout(self.timing.retry_period):
                accepted = await self._commit(keys=keys, args=[self.holder, fence.epoch, offset])
        except (RedisError, OSError, TimeoutError):
            # Unchecked, not refused: safe while the lease cannot have expired.
            return fence.valid()
        if not accepted:
            self._lose(fence, f"offset refused: epoch {fence.epoch} is stale")
            return False
        return True

    # -- the loops ------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            self._nudge.clear()  # before the round: a nudge during it asks for another
            self._round += 1
            this_round = self._round
            try:
                # A slow round is fine; the deadline loop guards the leases meanwhile.
                async with asyncio.timeout(self.timing.renew_deadline / 2):
                    changed = await self.tick()
                if self._redis_down_since is not None:
                    log.warning("instance %s: Redis is back; leases resume", self.instance_id)
                    self._redis_down_since = None
            except (RedisError, OSError, TimeoutError) as exc:
                changed = False
                if self._redis_down_since is None:
                    self._redis_down_since = time.monotonic()
                    log.error(
                        "instance %s: leases cannot be renewed (%s); bots stop before expiry",
                        self.instance_id, type(exc).__name__,
                    )  # fmt: skip
            self._round_done = this_round
            self._round_finished.set()
            if changed:
                self._on_change()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timing.retry_period):
                    await self._nudge.wait()

    async def _deadline_loop(self) -> None:
        """Give up, locally and at once, every lease past its renew deadline."""
        period = min(0.5, self.timing.retry_period / 2)
        while True:
            for fence in list(self._fences.values()):
                if fence.lost_reason is None and not fence.valid():
                    self._lose(fence, "renew deadline passed")
            await asyncio.sleep(period)  # a timer, not a lock: deadlines are checked each period

    def _lose(self, fence: LeaseFence, reason: str) -> None:
        if fence.lost_reason is not None:
            return
        log.warning("bot %s: lease lost (%s); its runner stops", fence.bot_id, reason)
        self._count("lost")
        fence.lose(reason)
        self._on_change()

    def nudge(self) -> None:
        """Tick now (e.g. a bot was just handed off and released)."""
        self._nudge.set()

    async def tick(self) -> bool:
        """One round: heartbeat, renew, hand off, acquire, bot states. True if ownership changed."""
        changed = False
        if not self._left:
            await self._beat()
        changed |= await self._renew_held()
        if not self._left:
            changed |= await self._assign()
        await self._publish_states()
        return changed

    async def _assign(self) -> bool:
        """Hand off bots whose HRW owner is another live instance; acquire free ones."""
        changed = False
        desired = list(self._desired)
        for bot_id, fence in self._fences.items():
            if bot_id in self._handing_off or fence.lost_reason is not None:
                continue
            owner = desired_owner(bot_id, self.live)
            if owner is not None and owner != self.instance_id:
                log.info("bot %s: handing off to %s", bot_id, owner)
                self._handing_off.add(bot_id)
                self._count("handoff")
                changed = True
        changed |= await self._acquire_free([b for b in desired if b not in self._fences])
        return changed

    async def _publish_states(self) -> None:
        try:
            await self.states.publish(self._fences, self.holder)
        except (RedisError, OSError) as exc:
            # Only `botfleet status` is behind; what was not written is retried next round.
            log.warning("instance %s: bot states not written (%s)", self.instance_id, exc)

    async def _beat(self) -> None:
        # Instance info only: per-bot reports live in their own keys (BotStates).
        info: dict[str, Any] = {
            "id": self.instance_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "capacity": self._capacity,
            "version": __version__,
        }
        if self._started_ms is not None:  # the script fills it in on the first beat
            info["started_ms"] = self._started_ms
        ttl_ms = int(self.timing.ttl * 1000)
        sent_at = time.monotonic()
        answer = await self._heartbeat(
            keys=[self._keys.members(), self._keys.heartbeat(self.instance_id)],
            args=[self.instance_id, ttl_ms, orjson.dumps(info)],
        )
        now_ms, ids = int(answer[0]), [_text(item) for item in answer[1:]]
        self.states.clock(now_ms, (sent_at + time.monotonic()) / 2)
        if self._started_ms is None:
            self._started_ms = now_ms
        raw = await self._redis.mget([self._keys.heartbeat(i) for i in ids]) if ids else []
        live: dict[str, float] = {}
        for instance_id, body in zip(ids, raw, strict=True):
            if body is None:
                continue  # expired between the two calls
            try:
                live[instance_id] = float(orjson.loads(body).get("capacity", 1.0))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                live[instance_id] = 1.0
        live[self.instance_id] = self._capacity
        if set(live) != set(self.live):
            log.info("instance %s: live instances %s", self.instance_id, sorted(live))
        self.live = live

    async def _renew_held(self) -> bool:
        held = list(self._fences)
        if not held:
            return False
        sent_at = time.monotonic()
        answers = await self._renew(
            keys=[self._keys.lease(b) for b in held],
            args=[self.holder, int(self.timing.ttl * 1000)],
        )
        changed = False
        for bot_id, renewed in zip(held, answers, strict=True):
            fence = self._fences.get(bot_id)
            if fence is None or fence.lost_reason is not None:
                continue
            if int(renewed):
                fence.renewed_at = sent_at  # Redis reset the TTL after this instant
            else:
                self._lose(fence, "lease expired or taken by another instance")
                changed = True
        return changed

    async def _acquire_free(self, candidates: list[str]) -> bool:
        if not candidates:
            return False
        holders = await self._redis.mget([self._keys.lease(b) for b in candidates])
        now = time.monotonic()
        take: list[str] = []
        for bot_id, holder in zip(candidates, holders, strict=True):
            if holder is not None:
                self._free_since.pop(bot_id, None)
                continue
            free_since = self._free_since.setdefault(bot_id, now)
            mine = desired_owner(bot_id, self.live) == self.instance_id
            if mine or now - free_since >= self.timing.takeover_grace:
                take.append(bot_id)
        if not take:
            return False
        ttl_ms = int(self.timing.ttl * 1000)
        sent_at = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            for bot_id in take:
                keys = [self._keys.lease(bot_id), self._keys.epoch(bot_id)]
                await self._acquire(
                    keys=[*keys, self._keys.offset(bot_id)], args=[self.holder, ttl_ms], client=pipe
                )
            answers = await pipe.execute()
        changed = False
        for bot_id, answer in zip(take, answers, strict=True):
            if not answer:
                continue  # someone was faster
            epoch, offset = int(answer[0]), answer[1]
            start = int(offset) if offset is not None else None
            self._fences[bot_id] = LeaseFence(self, bot_id, epoch, start, sent_at)
            self._free_since.pop(bot_id, None)
            self._count("acquired")
            log.info("bot %s: lease acquired (epoch %s, offset %s)", bot_id, epoch, start)
            changed = True
        return changed

    def _count(self, event: str) -> None:
        if self._metrics is not None:
            self._metrics.lease_events.labels(event).inc()


@dataclass(slots=True)
class _Written:
    epoch: int
    report: BotReport
    at: float  # monotonic


class BotStates:
    """Each held bot's report in its own key, for ``botfleet status``.

    The key holds JSON ``{"instance", "epoch", "state", "pending", "last_update_ms"}``
    (the last update in Redis ``TIME`` ms, so that status never needs this host's
    clock). Each round compares every report with what was last written and writes
    only the difference, in one pipeline: a new state at once, a move of pending
    or of the last update at most every ``STATE_COALESCE`` seconds per bot.
    """

    def __init__(self, redis: Redis, keys: RedisKeys, instance_id: str, source: StatusSource):
        self._keys = keys
        self._instance_id = instance_id
        self._source = source
        self._redis = redis
        self._written: dict[str, _Written] = {}
        self._redis_ms_at_zero: float | None = None  # Redis TIME ms when monotonic() was 0
        self._publish = redis.register_script(_PUBLISH)

    def clock(self, redis_now_ms: int, monotonic_now: float) -> None:
        """Map this host's monotonic clock onto Redis TIME (from the heartbeat's answer)."""
        self._redis_ms_at_zero = redis_now_ms - monotonic_now * 1000

    def forget(self, bot_id: str) -> None:
        self._written.pop(bot_id, None)

    async def publish(self, fences: Mapping[str, LeaseFence], holder: str) -> int:
        """Write what changed for the bots in ``fences``; returns how many keys were sent."""
        now = time.monotonic()
        reports = self._source()
        due: list[tuple[str, int, BotReport | None]] = []
        for bot_id, fence in fences.items():
            report = reports.get(bot_id)
            if self._due(bot_id, fence.epoch, report, now):
                due.append((bot_id, fence.epoch, report))
        if not due:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(due), STATE_BATCH):
                batch = due[start : start + STATE_BATCH]
                keys = [k for bot_id, _, _ in batch for k in self._bot_keys(bot_id)]
                values = [self._encode(epoch, report) for _, epoch, report in batch]
                await self._publish(keys=keys, args=[holder, STATE_TTL_MS, *values], client=pipe)
            answers = await pipe.execute()
        for (bot_id, epoch, report), written in zip(due, itertools.chain(*answers), strict=True):
            if not int(written):
                continue  # the lease is not ours any more: the renewal loses the fence
            if report is None:
                self._written.pop(bot_id, None)
            else:
                self._written[bot_id] = _Written(epoch, report, now)
        return len(due)

    def _due(self, bot_id: str, epoch: int, report: BotReport | None, now: float) -> bool:
        last = self._written.get(bot_id)
        if last is None:
            return report is not None
        if report is None:
            return True  # no runner reports it any more: delete, status shows "held"
        if last.epoch != epoch or last.report.state != report.state:
            return True
        since = now - last.at
        if since >= STATE_REFRESH:
            return True
        return since >= STATE_COALESCE and _moved(last.report, report)

    def _bot_keys(self, bot_id: str) -> tuple[str, str]:
        return self._keys.lease(bot_id), self._keys.bot_state(bot_id)

    def _encode(self, epoch: int, report: BotReport | None) -> bytes:
        if report is None:
            return b""  # the script deletes the key
        at, zero = report.last_update_at, self._redis_ms_at_zero
        update_ms = None if at is None or zero is None else round(zero + at * 1000)
        return orjson.dumps(
            {
                "instance": self._instance_id,  # status ignores a state its writer no longer holds
                "epoch": epoch,
                "state": report.state,
                "pending": report.pending,
                "last_update_ms": update_ms,
            }
        )


def _moved(old: BotReport, new: BotReport) -> bool:
    """Did the fast-changing fields move enough to be worth a write?"""
    if old.pending != new.pending:
        return True
    if old.last_update_at is None or new.last_update_at is None:
        return old.last_update_at != new.last_update_at
    return abs(new.last_update_at - old.last_update_at) >= UPDATE_STEP


def _no_reports() -> Mapping[str, BotReport]:
    return {}


def _nothing() -> None:
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
