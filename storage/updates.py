"""Invariant 2 in Redis: each (bot, update) handled once, admitted and finished in batches.

A claim is a field of a small hash per bot and block of 128 update ids
(``upd:{bot}:{block}``, compact in Redis): ``p{epoch}`` while an owner handles
it, ``d`` once done. One script admits a whole getUpdates batch, decided from
the raw JSON: duplicates, the user's flood limit and a repeated ``/start``
are settled there, so they never reach pydantic or aiogram. One script
finishes what completed: done marks, the idempotency keys of the sends those
updates made, then the offset, under the lease epoch.

A claim of an older epoch belongs to an owner that lost the bot: taken over.
A claim of our own epoch is ours (a retry, or this lease's previous runner).
A newer epoch means we are the stale owner: ``busy``. Below the committed
offset everything is done, so those blocks are deleted when the offset passes
them; in webhook mode (no offset) they expire after a day.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from storage.batching import CommandBatcher
from storage.keys import DEDUP_TTL_SECONDS, UPDATE_BLOCK, RedisKeys

# KEYS: offset, throttle hash, blocks (nb), debounce keys.
# ARGV: epoch, check offset (1/0), throttle limit, debounce ms, nb, block ttl, n,
#       then per update: id, block index (1-based), user id (0: none), debounce index (0: none).
# Returns one letter per update: r run, d duplicate, t throttled, b debounced, y busy.
_ADMIT = """
local epoch = tonumber(ARGV[1])
local floor = -1
if ARGV[2] == '1' then floor = tonumber(redis.call('GET', KEYS[1]) or '-1') end
local limit, window = tonumber(ARGV[3]), ARGV[4]
local nb, ttl, n = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local mine = 'p' .. ARGV[1]
local out = {}
local counted = false
for i = 0, n - 1 do
  local at = 8 + i * 4
  local id, b = ARGV[at], tonumber(ARGV[at + 1])
  local user, d = ARGV[at + 2], tonumber(ARGV[at + 3])
  local code = false
  if tonumber(id) < floor then
    code = 'd'
  else
    local block = KEYS[2 + b]
    local v = redis.call('HGET', block, id)
    local fresh = not v
    if v == 'd' then
      code = 'd'
    elseif v and v ~= mine then
      local owner = tonumber(string.sub(v, 2))
      if owner and owner > epoch then code = 'y' end
    end
    if not code then
      if fresh and user ~= '0' then
        counted = true
        if redis.call('HINCRBY', KEYS[2], user, 1) > limit then code = 't' end
      end
      if not code and d > 0 then
        local key = KEYS[2 + nb + d]
        local opener = redis.call('GET', key)
        if not opener then
          redis.call('SET', key, id, 'PX', window)
        elseif opener ~= id then
          code = 'b'
        end
      end
      if code then
        redis.call('HSET', block, id, 'd')
      else
        code = 'r'
        redis.call('HSET', block, id, mine)
      end
    end
  end
  out[i + 1] = code
end
for b = 1, nb do redis.call('EXPIRE', KEYS[2 + b], ttl) end
if counted then redis.call('EXPIRE', KEYS[2], 120) end
return table.concat(out)
"""

# KEYS: lease, epoch, offset, blocks (nb), blocks to delete (np), then the send keys of
#       each finished update, in order.
# ARGV: holder ('' = no lease to check), epoch, offset ('' = none), nb, np, key ttl, n,
#       then per update: id, block index, mode (h: handled, delete its send keys;
#       f: dead-lettered, keep them as done for a replay), number of send keys.
# Returns 1, or 0 if a newer epoch owns the bot (nothing moved but our own claims).
_FINISH = """
local valid = true
if ARGV[1] ~= '' then
  valid = redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2]
end
local mine = 'p' .. ARGV[2]
local nb, np, ttl, n = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local key_at = 3 + nb + np
for i = 0, n - 1 do
  local at = 8 + i * 4
  local id, block = ARGV[at], KEYS[3 + tonumber(ARGV[at + 1])]
  local mode, nk = ARGV[at + 2], tonumber(ARGV[at + 3])
  -- Only our own claim is settled: a newer owner's claim protects its own handling.
  if redis.call('HGET', block, id) == mine then
    redis.call('HSET', block, id, 'd')
    for k = key_at + 1, key_at + nk do
      if mode == 'h' then
        redis.call('DEL', KEYS[k])
      else
        redis.call('SET', KEYS[k], 'done', 'EX', ttl)
      end
    end
  end
  key_at = key_at + nk
end
if valid and ARGV[3] ~= '' then
  if tonumber(ARGV[3]) > tonumber(redis.call('GET', KEYS[3]) or '-1') then
    -- Telegram keeps updates a day: an offset older than that proves nothing (and ids
    -- restart at random after a week without updates).
    redis.call('SET', KEYS[3], ARGV[3], 'EX', ttl)
  end
  for k = 4 + nb, 3 + nb + np do redis.call('DEL', KEYS[k]) end
end
if valid then return 1 end
return 0
"""


class Decision(enum.StrEnum):
    RUN = "r"  # claimed: handle it now
    DUPLICATE = "d"  # done before (or below the committed offset)
    THROTTLED = "t"  # over the user's flood limit: settled as done, dropped
    DEBOUNCED = "b"  # a repeated /start within the window: settled as done, dropped
    BUSY = "y"  # a newer owner of the bot claimed it: we are stale


@dataclass(frozen=True, slots=True)
class Candidate:
    """What admission needs of one raw update."""

    update_id: int
    user_id: int = 0  # 0: no user (not counted against a flood limit)
    chat_id: int = 0
    is_start: bool = False  # a /start command (debounced per chat)


@dataclass(frozen=True, slots=True)
class Finished:
    update_id: int
    dead_lettered: bool = False  # its failure is stored: keep its send keys for a replay
    send_keys: Sequence[str] = ()  # idempotency keys of sends Telegram acknowledged for it


@dataclass(frozen=True, slots=True)
class Fencing:
    """Whose claims these are: the lease (holder, epoch) or, without leases, the epoch only."""

    epoch: int
    holder: str | None = None


class UpdateClaims:
    def __init__(
        self,
        batcher: CommandBatcher,
        keys: RedisKeys,
        *,
        flood_limit: int,
        debounce_seconds: float,
        ttl: int = DEDUP_TTL_SECONDS,
    ) -> None:
        self._keys = keys
        self._flood_limit = flood_limit
        self._debounce_ms = int(debounce_seconds * 1000)
        self._ttl = ttl
        self._admit = batcher.script(_ADMIT)
        self._finish = batcher.script(_FINISH)

    async def admit(
        self, bot_id: str, epoch: int, batch: Sequence[Candidate], *, minute: int, by_offset: bool
    ) -> list[Decision]:
        """Claim a batch in one round trip. ``by_offset``: ids below the committed offset
        are done (polling); ``minute``: the flood-limit window (Unix time // 60)."""
        if not batch:
            return []
        blocks: dict[int, int] = {}
        starts: dict[int, int] = {}
        args: list[str | int] = []
        for item in batch:
            block = blocks.setdefault(item.update_id // UPDATE_BLOCK, len(blocks) + 1)
            start = 0
            if item.is_start and self._debounce_ms > 0:
                start = starts.setdefault(item.chat_id, len(starts) + 1)
            args += (item.update_id, block, item.user_id, start)
        keys = [
            self._keys.offset(bot_id),
            self._keys.throttle(bot_id, minute),
            *(self._keys.update_block(bot_id, b) for b in blocks),
            *(self._keys.debounce(bot_id, chat, "start") for chat in starts),
        ]
        head: list[str | int] = [
            epoch,
            int(by_offset),
            self._flood_limit,
            max(self._debounce_ms, 1),
        ]
        head += [len(blocks), self._ttl, len(batch)]
        answer = await self._admit(keys, [*head, *args])
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        return [Decision(code) for code in text]

    async def finish(
        self,
        bot_id: str,
        fencing: Fencing,
        done: Sequence[Finished],
        *,
        offset: int | None = None,
        committed: int | None = None,
    ) -> bool:
        """Settle ``done`` and move the offset to ``offset``; False if our epoch is stale.

        ``committed`` (the offset committed before) bounds which blocks the move frees.
        """
        blocks: dict[int, int] = {}
        args: list[str | int] = []
        send_keys: list[str] = []
        for item in done:
            block = blocks.setdefault(item.update_id // UPDATE_BLOCK, len(blocks) + 1)
            args += (item.update_id, block, "f" if item.dead_lettered else "h", len(item.send_keys))
            send_keys += item.send_keys
        freed: list[str] = []
        if offset is not None:
            last = offset // UPDATE_BLOCK  # blocks below this one are entirely below the offset
            first = max(last - 64, (committed or 0) // UPDATE_BLOCK)  # older ones expire alone
            freed = [self._keys.update_block(bot_id, b) for b in range(first, last)]
        keys = [
            self._keys.lease(bot_id),
            self._keys.epoch(bot_id),
            self._keys.offset(bot_id),
            *(self._keys.update_block(bot_id, b) for b in blocks),
            *freed,
            *send_keys,
        ]
        head: list[str | int] = [
            fencing.holder or "",
            fencing.epoch,
            "" if offset is None else offset,
        ]
        head += [len(blocks), len(freed), self._ttl, len(done)]
        return bool(await self._finish(keys, [*head, *args]))
