"""Durable timers fired once each, by whichever instance claims them.

A timer (``storage.timers``) is scheduled with a unique key, so scheduling it
twice is harmless. Every instance runs :meth:`TimerDispatcher.fire_due`
(``scheduler.jobs``): due timers are leased with ``FOR UPDATE SKIP LOCKED``
and handed to the handler of their kind; the handler decides whether the timer
still matters (a downsell for a user who bought since is moot: "skipped") and
does its work through shared services (the sender is idempotent per key, so a
handler run again after its instance died sends nothing twice). A handler that
raises is tried again with back-off, then the timer is marked failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from fleet.lines import in_lines
from fleet.metrics import FleetMetrics
from storage.models import Timer, TimerState
from storage.repositories.timers import TimerOutcome
from storage.timers import Timers

log = logging.getLogger(__name__)

TimerHandler = Callable[[Timer], Awaitable[str]]  # returns the result recorded ("sent", "moot")

_LEASE = timedelta(seconds=60)
_BACKOFF_MAX = timedelta(minutes=10)


class TimerDispatcher:
    def __init__(
        self, timers: Timers, metrics: FleetMetrics, *, batch: int = 50, attempts: int = 5
    ) -> None:
        self.timers = timers
        self._metrics = metrics
        self._batch = batch
        self._attempts = attempts
        self._handlers: dict[str, TimerHandler] = {}

    def handle(self, kind: str, handler: TimerHandler) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} timers is registered already")
        self._handlers[kind] = handler

    async def fire_due(self, now: datetime) -> int:
        """One round: the due timers claimed and fired; how many were claimed."""
        claimed = await self.timers.claim(now, _LEASE, self._batch)
        outcomes: list[TimerOutcome] = []
        try:
            # One user's timers in order, different users' at once (each send waits for its
            # own chat's slot, not for the others').
            await in_lines(
                claimed,
                lambda t: (t.bot_id, t.telegram_user_id),
                lambda t: self._fire(t, now),
                outcomes,
            )
        finally:  # recorded together; a timer not reached waits for its lease
            await self.timers.finish(outcomes)
        return len(claimed)

    async def _fire(self, timer: Timer, now: datetime) -> TimerOutcome:
        handler = self._handlers.get(timer.kind)
        if handler is None:  # nobody here handles it (yet): not lost, asked again later
            return TimerOutcome(timer.id, TimerState.SCHEDULED, "no handler", now + _LEASE)
        try:
            result = await handler(timer)
        except Exception as exc:
            self._metrics.timers_fired.labels(timer.kind, "failed").inc()
            log.warning(
                "bot %s: %s timer %s failed (attempt %s): %r",
                timer.bot_id, timer.kind, timer.id, timer.attempts, exc,
            )  # fmt: skip
            if timer.attempts >= self._attempts:
                return TimerOutcome(timer.id, TimerState.FAILED, f"{type(exc).__name__}: {exc}")
            delay = min(timedelta(seconds=2**timer.attempts), _BACKOFF_MAX)
            return TimerOutcome(timer.id, TimerState.SCHEDULED, "retry", now + delay)
        self._metrics.timers_fired.labels(timer.kind, "done").inc()
        return TimerOutcome(timer.id, TimerState.DONE, result)
