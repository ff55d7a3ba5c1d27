"""Telegram's flood control as token buckets: per bot, per private chat, per group.

This is Telegram's side, so it lives in the emulator's memory; a rejected send
takes no token, and the answer says how long until one is free.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fleet.emulator.errors import ApiError, too_many_requests
from fleet.emulator.settings import RateLimits


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class FloodControl:
    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self.rejected = 0

    def configure(self, limits: RateLimits) -> None:
        self.limits = limits
        self._buckets.clear()

    def check(self, bot_id: int, chat_id: int, is_group: bool, count: int = 1) -> None:
        """Take ``count`` tokens from the bot's and the chat's bucket, or raise 429."""
        limits = self.limits
        if not limits.enabled:
            return
        now = time.monotonic()
        if is_group:
            chat_rate, chat_burst = limits.group_per_minute / 60.0, limits.group_burst
        else:
            chat_rate, chat_burst = limits.private_chat_per_second, limits.private_chat_burst
        plan = (
            ((bot_id, 0), limits.bot_per_second, limits.bot_burst),
            ((bot_id, chat_id), chat_rate, chat_burst),
        )
        wait = 0.0
        buckets: list[_Bucket] = []
        for key, rate, burst in plan:
            bucket = self._bucket(key, burst, now, rate)
            buckets.append(bucket)
            need = min(float(count), burst)
            if bucket.tokens < need:
                wait = max(wait, (need - bucket.tokens) / rate)
        if wait > 0:
            self.rejected += 1
            raise too_many_requests(max(1, math.ceil(wait)))
        for bucket in buckets:
            bucket.tokens -= count
        if len(self._buckets) > 200_000:
            self._forget_full(now)

    def _bucket(self, key: tuple[int, int], burst: float, now: float, rate: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        return bucket

    def _forget_full(self, now: float) -> None:
        # A bucket idle for a minute is full again; keeping it changes nothing.
        stale = [key for key, bucket in self._buckets.items() if now - bucket.stamp > 60.0]
        for key in stale:
            del self._buckets[key]


def storm_error(until: float, retry_after: int | None) -> ApiError:
    remaining = until - time.monotonic()
    return too_many_requests(retry_after or max(1, math.ceil(remaining)))
