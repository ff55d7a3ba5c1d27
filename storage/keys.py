"""Every Redis key botfleet uses, in one place.

Keys are ``{prefix}:{kind}:...``; every key about a bot carries the bot id, so
a bot's state can be found (``SCAN MATCH``) and nothing collides across bots.
The prefix (``redis.key_prefix``) lets several fleets or test runs share one
Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

# Key kinds: the second segment of every key.
DEDUP = "dedup"  # (before issue 10) one key per handled update; now UPDATES
UPDATES = "upd"  # claims of updates, a hash per bot and block of 128 update ids (invariant 2)
IDEMPOTENCY = "idem"  # one key per logical outgoing send (invariant 4)
LEASE = "lease"  # who polls a bot
EPOCH = "epoch"  # fencing counter, INCR on each lease acquisition
OFFSET = "offset"  # last confirmed getUpdates offset, fenced by epoch
HEARTBEAT = "hb"  # one key per live instance: its info, with a TTL
MEMBERS = "members"  # sorted set: instance id by heartbeat expiry (Redis TIME, ms)
BOT_STATE = "botstate"  # one JSON per bot: what its holder reports (`botfleet status`)
RATE = "rate"  # token buckets for sends
THROTTLE = "throttle"  # per-user flood counts: a hash per bot and minute
DEBOUNCE = "debounce"  # repeated /start within a window
BUMPS = "bumps"  # a user's order-bump session (plan, answers so far), with a TTL
QUOTA = "quota"  # per-user counts of an action (e.g. "I paid" checks): a hash per bot and minute

DEDUP_TTL_SECONDS = 86_400  # Telegram keeps unconfirmed updates 24 h at most
UPDATE_BLOCK = 128  # update ids per claims hash: small enough for Redis's compact listpack


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "botfleet"

    def _key(self, kind: str, *parts: str | int) -> str:
        return ":".join((self.prefix, kind, *map(str, parts)))

    def dedup(self, bot_id: str, update_id: int) -> str:
        return self._key(DEDUP, bot_id, update_id)

    def update_block(self, bot_id: str, block: int) -> str:
        """Claims of update ids ``block * UPDATE_BLOCK`` up to the next block (field: id)."""
        return self._key(UPDATES, bot_id, block)

    def idempotency(self, bot_id: str, purpose: str, *parts: str | int) -> str:
        """E.g. ``idempotency(bot, "welcome", chat_id, update_id)``."""
        return self._key(IDEMPOTENCY, bot_id, purpose, *parts)

    def lease(self, bot_id: str) -> str:
        return self._key(LEASE, bot_id)

    def epoch(self, bot_id: str) -> str:
        return self._key(EPOCH, bot_id)

    def offset(self, bot_id: str) -> str:
        return self._key(OFFSET, bot_id)

    def heartbeat(self, instance_id: str) -> str:
        return self._key(HEARTBEAT, instance_id)

    def members(self) -> str:
        return self._key(MEMBERS)

    def bot_state(self, bot_id: str) -> str:
        """State, pending and last update of a bot, written by its lease holder."""
        return self._key(BOT_STATE, bot_id)

    def rate(self, bot_id: str, scope: str, *parts: str | int) -> str:
        """Token bucket for ``scope`` ("bot", "chat", "group") of one bot."""
        return self._key(RATE, bot_id, scope, *parts)

    def send_pause(self, bot_id: str) -> str:
        """Set after a 429: every instance holds this bot's sends until it expires."""
        return self._key(RATE, bot_id, "pause")

    def throttle(self, bot_id: str, minute: int) -> str:
        """Messages per user (field) to one bot within one minute (Unix time // 60)."""
        return self._key(THROTTLE, bot_id, minute)

    def debounce(self, bot_id: str, chat_id: int, what: str) -> str:
        return self._key(DEBOUNCE, bot_id, chat_id, what)

    def quota(self, bot_id: str, action: str, minute: int) -> str:
        """How often each user (field) did ``action`` with one bot within one minute."""
        return self._key(QUOTA, bot_id, action, minute)

    def bump_session(self, bot_id: str, user_id: int) -> str:
        return self._key(BUMPS, bot_id, user_id)

    def pattern(self, kind: str = "*", bot_id: str = "*") -> str:
        """A ``SCAN MATCH`` pattern, e.g. every lease: ``pattern(LEASE)``."""
        return f"{self.prefix}:{kind}:{bot_id}:*" if bot_id != "*" else f"{self.prefix}:{kind}:*"

    def everything(self) -> str:
        return f"{self.prefix}:*"
