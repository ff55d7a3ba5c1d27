"""Emulator settings: rate limits, retention, caps, webhook back-off.

Frozen, so one value can be shared by the server and the control API.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Token buckets like Telegram's: ~30/s per bot, ~1/s per private chat, 20/min per group."""

    enabled: bool = True
    bot_per_second: float = 30.0
    bot_burst: float = 30.0
    private_chat_per_second: float = 1.0
    private_chat_burst: float = 3.0
    group_per_minute: float = 20.0
    group_burst: float = 20.0

    @classmethod
    def off(cls) -> RateLimits:
        return cls(enabled=False)

    def __post_init__(self) -> None:
        for name in ("bot_per_second", "private_chat_per_second", "group_per_minute"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("bot_burst", "private_chat_burst", "group_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # Unconfirmed updates older than this are dropped, as Telegram does after 24 h.
    update_retention: float = 86_400.0
    # Per bot; None keeps everything (only for short runs).
    transcript_limit: int | None = 10_000
    # Messages per bot kept for edits, deletes, replies and button presses.
    message_limit: int = 10_000
    # User actions kept for replies_to(); the oldest are forgotten first.
    action_limit: int = 100_000
    # A callback query can be answered for this long.
    callback_query_ttl: float = 900.0
    # getUpdates timeouts above this are clamped.
    max_long_poll: float = 100.0
    webhook_timeout: float = 10.0
    webhook_backoff_initial: float = 1.0
    webhook_backoff_factor: float = 2.0
    webhook_backoff_max: float = 60.0
    max_upload_bytes: int = 50 * 1024 * 1024
    # First update_id of each bot; None picks a random large one, as Telegram does.
    first_update_id: int | None = None
    # Seed for faults and ids; None is nondeterministic.
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.update_retention <= 0:
            raise ValueError("update_retention must be > 0")
        if self.transcript_limit is not None and self.transcript_limit < 1:
            raise ValueError("transcript_limit must be >= 1 or None")
        if self.message_limit < 1 or self.action_limit < 1:
            raise ValueError("message_limit and action_limit must be >= 1")
        if self.webhook_backoff_initial <= 0 or self.webhook_backoff_factor < 1:
            raise ValueError("webhook back-off must be positive and non-decreasing")

    def replace(self, **changes: Any) -> EmulatorSettings:
        return dataclasses.replace(self, **changes)
