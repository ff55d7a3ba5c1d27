"""Invariant 4: one key per logical send, taken in Redis before the send goes out.

A key is ``c{epoch}`` while the lease epoch ``epoch`` sends it and ``done``
once Telegram acknowledged it. The claim itself is made by the send grant
(``fleet.ratelimit``), in the same script as the rate slot; this module holds
the claim rule (shared with that script), and confirms and releases.

- At-most-once (every reply): a claim left by an older epoch is *orphaned*:
  its owner died or was fenced mid-send and nobody knows whether it went out,
  so it is not sent again.
- At-least-once (deliverables): an orphaned claim is taken over and sent
  again; so is a send whose outcome was uncertain. Duplicates are possible,
  silence is not.
- A send that surely did not go out releases its claim, so a retry may send.

Keys of sends made for one update are settled by that update's completion
(``storage.updates``): deleted when it was handled (it never runs again),
kept as done when it was dead-lettered (a replay must not repeat them).
"""

from __future__ import annotations

from redis.asyncio import Redis

from storage.batching import CommandBatcher
from storage.keys import DEDUP_TTL_SECONDS, RedisKeys

CLAIMED = "c"  # + the lease epoch of the claimant
DONE = b"done"

# Lua, inlined in the grant script: decides one claim. In: key, mode, epoch (string).
# mode m: at-most-once, l: at-least-once, r: at-most-once that may take back its own
# claim (it surely did not go out). Out: claim (true: write ours; false: ours already)
# or code ('t' taken, 'o' orphaned).
CLAIM_RULE = """
local function decide_claim(key, mode, epoch)
  local cur = redis.call('GET', key)
  if not cur then return true, nil end
  local mine = 'c' .. epoch
  if mode == 'r' and cur == mine then return false, nil end
  local owner = nil
  if string.sub(cur, 1, 1) == 'c' then owner = tonumber(string.sub(cur, 2)) end
  if owner and owner < tonumber(epoch) then
    if mode == 'l' then return true, nil end
    return nil, 'o'
  end
  return nil, 't'
end
"""

# Release only our own pending claim: a confirmed send stays confirmed.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_CLAIM = (
    CLAIM_RULE
    + """
local claim, code = decide_claim(KEYS[1], ARGV[1], ARGV[2])
if code then return code end
if claim then redis.call('SET', KEYS[1], 'c' .. ARGV[2], 'EX', ARGV[3]) end
return 'new'
"""
)


class SendLedger:
    def __init__(
        self, batcher: CommandBatcher, keys: RedisKeys, ttl: int = DEDUP_TTL_SECONDS
    ) -> None:
        self._batcher = batcher
        self._keys = keys
        self.ttl = ttl
        self._release = batcher.script(_RELEASE)
        self._claim = batcher.script(_CLAIM)

    def key(self, bot_id: str, purpose: str, *parts: str | int) -> str:
        """E.g. ``key(bot, "welcome", chat_id, update_id)``."""
        return self._keys.idempotency(bot_id, purpose, *parts)

    async def claim(self, key: str, epoch: int = 0, *, at_least_once: bool = False) -> str:
        """``new``, ``taken`` or ``orphaned``, without a rate slot (tests, tools)."""
        answer = await self._claim([key], ["l" if at_least_once else "m", epoch, self.ttl])
        code = answer.decode() if isinstance(answer, bytes) else str(answer)
        return {"t": "taken", "o": "orphaned"}.get(code, code)

    async def confirm(self, key: str) -> None:
        """Telegram acknowledged the send."""
        await self._batcher.execute("SET", key, DONE, "EX", self.ttl)

    async def release(self, key: str, epoch: int) -> bool:
        """The send surely did not go out (or, at least once, may be repeated): let go."""
        return bool(await self._release([key], [f"{CLAIMED}{epoch}"]))

    @staticmethod
    async def is_done(redis: Redis, key: str) -> bool:
        return await redis.get(key) == DONE
