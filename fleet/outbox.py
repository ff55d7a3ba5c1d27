"""Domain events to their subscribers, at least once each, from any instance.

A transition writes its event to the ``outbox`` table in its own transaction
(``storage.payments``); :class:`OutboxDispatcher` claims due events
(``FOR UPDATE SKIP LOCKED`` with a lease, so every instance may run it at
once), calls each subscriber of the topic that has not succeeded yet, and
records who did: a subscriber that fails is called again later (back-off),
the others are not. A subscriber must therefore be idempotent: it is called at
least once per event, rarely twice (an instance that dies after the call and
before the record).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fleet.lines import in_lines
from fleet.metrics import FleetMetrics
from storage.models import OutboxEvent
from storage.payments import Outbox
from storage.repositories.payment_events import OutboxOutcome

log = logging.getLogger(__name__)

Subscriber = Callable[[str, dict[str, Any]], Awaitable[None]]

_LEASE = timedelta(seconds=60)
_BACKOFF_MAX = timedelta(minutes=10)


class OutboxDispatcher:
    def __init__(self, outbox: Outbox, metrics: FleetMetrics, *, batch: int = 50) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._batch = batch
        self._subscribers: list[tuple[str, str, Subscriber]] = []  # (topic prefix, name, fn)

    def subscribe(self, topic: str, name: str, subscriber: Subscriber) -> None:
        """``topic``: ``payment.paid``, or a prefix ending in a dot (``payment.``)."""
        if any(existing == name for _, existing, _ in self._subscribers):
            raise ValueError(f"subscriber {name!r} already registered")
        self._subscribers.append((topic, name, subscriber))

    def _for(self, topic: str) -> list[tuple[str, Subscriber]]:
        return [
            (name, fn)
            for prefix, name, fn in self._subscribers
            if topic == prefix or (prefix.endswith(".") and topic.startswith(prefix))
        ]

    async def backlog(self, now: datetime) -> int:
        """Events not yet delivered to every subscriber."""
        return await self._outbox.backlog(now)

    async def deliver_due(self, now: datetime) -> int:
        """One round: the due events, each to the subscribers it still owes; returns how many
        events were claimed."""
        events = await self._outbox.claim(now, _LEASE, self._batch)
        outcomes: list[OutboxOutcome] = []
        try:
            # Events of one payment in order, different payments at once: a delivery waiting
            # for its chat's send slot does not hold up the others.
            await in_lines(
                events,
                lambda e: e.payload.get("payment_id", ("event", e.id)),
                lambda e: self._deliver(e, now),
                outcomes,
            )
        finally:  # recorded together (one transaction); the rest waits for its lease
            await self._outbox.progress(outcomes)
        return len(events)

    async def _deliver(self, event: OutboxEvent, now: datetime) -> OutboxOutcome:
        done = list(event.done_subscribers)
        errors: list[str] = []
        for name, subscriber in self._for(event.topic):
            if name in done:
                continue
            try:
                await subscriber(event.topic, event.payload)
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self._metrics.outbox_deliveries.labels(name, "failed").inc()
                log.warning("outbox: %s for event %s failed (%r)", name, event.id, exc)
                continue
            done.append(name)
            self._metrics.outbox_deliveries.labels(name, "ok").inc()
        retry_at = None
        if errors:
            retry_at = now + min(timedelta(seconds=2 ** min(event.attempts, 10)), _BACKOFF_MAX)
        return OutboxOutcome(
            event.id, tuple(done), delivered=not errors, retry_at=retry_at,
            error="; ".join(errors) or None,
        )  # fmt: skip
