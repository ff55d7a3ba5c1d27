"""Order-bump sessions: which plan a user picked and what they answered to each bump.

One JSON value per (bot, user) in Redis with a TTL (a session left alone simply
ends), shared by every instance, so a hand-off mid-session goes on where it
was. A session has a nonce that the bump buttons carry: a button of an older
session is stale. Answers are recorded with the update that gave them, so a
retried update finds its own answer and does the same next step again (whose
sends are idempotent) instead of reading as a stale press.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from storage.batching import CommandBatcher
from storage.keys import RedisKeys

SESSION_TTL_SECONDS = 1800

# Record an answer if the nonce matches and the bump is unanswered (or answered by this
# same update); returns the session after it, or a code: 'n' no/other session, 'a' answered
# already by another update.
_ANSWER = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 'n' end
local s = cjson.decode(raw)
if s.nonce ~= ARGV[1] then return 'n' end
local by = s.by[ARGV[2]]
if by ~= nil and by ~= ARGV[4] then return 'a' end
if by == nil then
  s.answers[ARGV[2]] = (ARGV[3] == '1')
  s.by[ARGV[2]] = ARGV[4]
  raw = cjson.encode(s)
  redis.call('SET', KEYS[1], raw, 'KEEPTTL')
end
return raw
"""


@dataclass(slots=True)
class BumpSession:
    nonce: str
    plan_id: str
    answers: dict[str, bool] = field(default_factory=dict)

    def accepted(self) -> list[str]:
        return [bump for bump, yes in self.answers.items() if yes]

    def next_bump(self, order: list[str]) -> str | None:
        return next((bump for bump in order if bump not in self.answers), None)


class BumpSessions:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        batcher: CommandBatcher,
        ttl: int = SESSION_TTL_SECONDS,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._batcher = batcher  # /start's DEL shares a round trip with the rest of its batch
        self._ttl = ttl
        self._answer = redis.register_script(_ANSWER)

    async def open(self, bot_id: str, user_id: int, plan_id: str) -> BumpSession:
        """A session for ``plan_id``: the open one if it is for this plan and unanswered (a
        double press or a retried update shows the same first bump), else a new one."""
        key = self._keys.bump_session(bot_id, user_id)
        current = _load(await self._redis.get(key))
        if current is not None and current.plan_id == plan_id and not current.answers:
            return current
        session = BumpSession(secrets.token_hex(4), plan_id)
        body = {"nonce": session.nonce, "plan": plan_id, "answers": {}, "by": {}}
        # cjson turns an empty table into [] (fine: Lua indexes it all the same).
        await self._redis.set(key, orjson.dumps(body), ex=self._ttl)
        return session

    async def answer(
        self, bot_id: str, user_id: int, nonce: str, bump_id: str, accepted: bool, update_id: int
    ) -> BumpSession | None:
        """The session after this answer; None when the button is stale (another session,
        or the bump was answered by another press)."""
        raw = await self._answer(
            [self._keys.bump_session(bot_id, user_id)],
            [nonce, bump_id, "1" if accepted else "0", update_id],
        )
        if raw in (b"n", b"a", "n", "a"):
            return None
        return _load(raw)

    async def close(self, bot_id: str, user_id: int) -> None:
        await self._batcher.execute("DEL", self._keys.bump_session(bot_id, user_id))


def _load(raw: Any) -> BumpSession | None:
    if not raw:
        return None
    body = orjson.loads(raw)
    answers = body.get("answers") or {}
    if not isinstance(answers, dict):  # cjson's empty table
        answers = {}
    taken = {str(k): bool(v) for k, v in answers.items()}
    return BumpSession(str(body["nonce"]), str(body["plan"]), taken)
