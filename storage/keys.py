"""Every Redis key botfleet uses, in one place.

Keys are ``{prefix}:{kind}:...``; every key about a bot carries the bot id, so
a bot's state can be found (``SCAN MATCH``) and nothing collides across bots.
The prefix (``redis.key_prefix``) lets several fleets or test runs share one
Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

# Key kinds: the second segment of every key.
DEDUP = "dedup"  # one key per handled update (invariant 2)
IDEMPOTENCY = "idem"  # one key per logical outgoing send (invariant 4)
LEASE = "lease"  # who polls a bot
EPOCH = "epoch"  # fencing counter, INCR on each lease acquisition
OFFSET = "offset"  # last confirmed getUpdates offset, fenced by epoch
HEARTBEAT = "hb"  # one key per live instance: its info, with a TTL
MEMBERS = "members"  # sorted set: instance id by heartbeat expiry (Redis TIME, ms)
RATE = "rate"  # token buckets for sends
THROTTLE = "throttle"  # per-user flood limits
DEBOUNCE = "debounce"  # repeated /start within a window

DEDUP_TTL_SECONDS = 86_400  # Telegram keeps unconfirmed updates 24 h at most


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "botfleet"

    def _key(self, kind: str, *parts: str | int) -> str:
        return ":".join((self.prefix, kind, *(str(p) for p in parts)))

    def dedup(self, bot_id: str, update_id: int) -> str:
        return self._key(DEDUP, bot_id, update_id)

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

    def rate(self, bot_id: str, scope: str, *parts: str | int) -> str:
        """Token bucket for ``scope`` ("bot", "chat", "group") of one bot."""
        return self._key(RATE, bot_id, scope, *parts)

    def send_pause(self, bot_id: str) -> str:
        """Set after a 429: every instance holds this bot's sends until it expires."""
        return self._key(RATE, bot_id, "pause")

    def throttle(self, bot_id: str, user_id: int) -> str:
        return self._key(THROTTLE, bot_id, user_id)

    def debounce(self, bot_id: str, chat_id: int, what: str) -> str:
        return self._key(DEBOUNCE, bot_id, chat_id, what)

    def pattern(self, kind: str = "*", bot_id: str = "*") -> str:
        """A ``SCAN MATCH`` pattern, e.g. every lease: ``pattern(LEASE)``."""
        return f"{self.prefix}:{kind}:{bot_id}:*" if bot_id != "*" else f"{self.prefix}:{kind}:*"

    def everything(self) -> str:
        return f"{self.prefix}:*"
