"""Redis guards for invariants 2 and 4: each update handled once, each logical send once.

``UpdateDeduplicator`` takes ``dedup:{bot}:{update_id}`` with ``SET NX EX``:
a key per update, never a high-water mark, kept as long as Telegram may
redeliver (24 h). ``SendLedger`` takes a key per logical send *before* the
send. At-most-once sends keep it whatever happens; at-least-once sends
(deliverables) release it when the send surely failed, so a retry may claim
it again, and mark it done once Telegram acknowledged.
"""

from __future__ import annotations

from redis.asyncio import Redis

from storage.keys import DEDUP_TTL_SECONDS, RedisKeys

_CLAIMED = "claimed:"  # + the lease epoch of the claimant
_DONE = b"done"

# A send key: new -> "claimed:{epoch}". A claim left by an older epoch (its owner
# died or was fenced mid-send) is "orphaned": nobody knows whether it went out.
_CLAIM_SEND = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'EX', ARGV[3])
  return 'new'
end
if string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  local epoch = tonumber(string.sub(v, #ARGV[1] + 1))
  if epoch and epoch < tonumber(ARGV[2]) then return 'orphaned' end
end
return 'taken'
"""

# Release only a claim that is still pending: a confirmed send stays confirmed.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Claim an update: new -> "processing:{epoch}" for a short lease. A claim of an
# older epoch belongs to a fenced owner (its lease is gone): take it over.
_CLAIM_UPDATE = """
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ARGV[3]
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  local epoch = tonumber(string.sub(v, #ARGV[1] + 1))
  if epoch and epoch < tonumber(ARGV[3]) then v = false end
end
if not v then
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[2])
  return 'new'
end
if string.sub(v, 1, #ARGV[1]) == ARGV[1] then return 'busy' end
return 'done'
"""
_PROCESSING = "processing:"


class UpdateDeduplicator:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl: int = DEDUP_TTL_SECONDS) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._claim = redis.register_script(_CLAIM_UPDATE)

    async def first_time(self, bot_id: str, update_id: int) -> bool:
        """True exactly once per (bot, update) within the TTL, across every instance."""
        key = self._keys.dedup(bot_id, update_id)
        return bool(await self._redis.set(key, b"1", nx=True, ex=self._ttl))

    async def claim(self, bot_id: str, update_id: int, lease_seconds: int, epoch: int = 0) -> str:
        """``new`` (handle it now), ``busy`` (someone handles it) or ``done`` (skip it).

        A claim is a short lease, so an instance that dies mid-handling does
        not lose the update: its redelivery is claimed again once the lease
        ends, or at once by the bot's next owner (a higher lease ``epoch``).
        """
        key = self._keys.dedup(bot_id, update_id)
        answer = await self._claim(keys=[key], args=[_PROCESSING, lease_seconds, epoch])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def complete(self, bot_id: str, update_id: int) -> None:
        """Handled (or dead-lettered): skip every redelivery for the next 24 h."""
        await self._redis.set(self._keys.dedup(bot_id, update_id), b"done", ex=self._ttl)

    async def forget(self, bot_id: str, update_id: int) -> None:
        """Undo a claim whose handling did not happen (e.g. cancelled before it started)."""
        await self._redis.delete(self._keys.dedup(bot_id, update_id))


class SendLedger:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl: int = DEDUP_TTL_SECONDS) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._release = redis.register_script(_RELEASE)
        self._claim = redis.register_script(_CLAIM_SEND)

    def key(self, bot_id: str, purpose: str, *parts: str | int) -> str:
        return self._keys.idempotency(bot_id, purpose, *parts)

    async def claim(self, key: str, epoch: int = 0) -> bool:
        """True if this caller may send; False if the send was claimed or done before."""
        return await self.claim_as(key, epoch) == "new"

    async def claim_as(self, key: str, epoch: int) -> str:
        """``new`` (send it), ``taken`` (claimed or done) or ``orphaned`` (an older
        epoch claimed it and vanished: whether it went out is unknown, so at most once)."""
        answer = await self._claim(keys=[key], args=[_CLAIMED, epoch, self._ttl])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def confirm(self, key: str) -> None:
        """Telegram acknowledged the send."""
        await self._redis.set(key, _DONE, ex=self._ttl)

    async def release(self, key: str, epoch: int = 0) -> bool:
        """The send surely failed: let a retry claim it again (at-least-once sends only)."""
        return bool(await self._release(keys=[key], args=[f"{_CLAIMED}{epoch}"]))

    async def is_done(self, key: str) -> bool:
        return await self._redis.get(key) == _DONE
