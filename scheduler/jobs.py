"""The periodic jobs: each safe to run on every instance at once (leases and SKIP LOCKED).

- ``payments-inbox``: stored webhooks applied; a gateway that failed leaves the
  row for a retry with back-off.
- ``payments-reconcile``: pending charges asked about (a lost webhook never
  loses a sale), and expired at their real expiry.
- ``outbox``: domain events to their subscribers, at least once.
- ``timers``: durable timers due (downsells, upsells), each fired once.
- ``backlogs``: the inbox, outbox and timer backlogs, for /metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleet.metrics import FleetMetrics
from fleet.outbox import OutboxDispatcher
from fleet.payments.service import PaymentService
from fleet.timers import TimerDispatcher
from storage.payments import PaymentInbox
from storage.repositories.payment_events import InboxOutcome

log = logging.getLogger(__name__)

_LEASE = timedelta(seconds=60)
_RETRY_MAX = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class JobContext:
    payments: PaymentService
    inbox: PaymentInbox
    outbox: OutboxDispatcher
    metrics: FleetMetrics
    timers: TimerDispatcher
    retry_base: timedelta = timedelta(seconds=5)  # payments.retry_base_seconds


async def process_inbox(ctx: JobContext, *, batch: int = 50, rounds: int = 80) -> int:
    """Apply due inbox rows, a batch at a time, until none is left (bounded)."""
    total = 0
    for _ in range(rounds):
        now = datetime.now(UTC)
        rows = await ctx.inbox.claim(now, _LEASE, batch)
        outcomes: list[InboxOutcome] = []
        for row, result in zip(rows, await ctx.payments.process_many(rows, now), strict=True):
            retry_at = None
            if result.startswith("retry"):
                delay = ctx.retry_base * 2 ** min(max(row.attempts - 1, 0), 8)
                retry_at = now + min(delay, _RETRY_MAX)
            outcomes.append(InboxOutcome(row.id, result, retry_at))
        await ctx.inbox.finish(outcomes)  # one transaction; a crash before: the lease runs out
        total += len(rows)
        if len(rows) < batch:
            break
    return total


async def measure_backlogs(ctx: JobContext) -> int:
    """The inbox and outbox backlogs for /metrics (every interval, not on every wake)."""
    inbox = await ctx.inbox.backlog()
    ctx.metrics.inbox_backlog.set(inbox)
    now = datetime.now(UTC)
    outbox = await ctx.outbox.backlog(now)
    ctx.metrics.outbox_backlog.set(outbox)
    timers = await ctx.timers.timers.due(now)
    ctx.metrics.timers_due.set(timers)
    return inbox + outbox + timers


async def reconcile_payments(ctx: JobContext) -> int:
    return await ctx.payments.reconcile(datetime.now(UTC))


async def deliver_outbox(ctx: JobContext, *, rounds: int = 20) -> int:
    total = 0
    for _ in range(rounds):
        delivered = await ctx.outbox.deliver_due(datetime.now(UTC))
        total += delivered
        if not delivered:
            break
    return total


async def fire_timers(ctx: JobContext, *, rounds: int = 20) -> int:
    """Due durable timers fired (downsells, upsells...), a batch at a time (bounded)."""
    total = 0
    for _ in range(rounds):
        claimed = await ctx.timers.fire_due(datetime.now(UTC))
        total += claimed
        if not claimed:
            break
    return total
