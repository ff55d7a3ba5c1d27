"""The periodic jobs: each safe to run on every instance at once (leases and SKIP LOCKED).

- ``payments-inbox``: stored webhooks applied; a gateway that failed leaves the
  row for a retry with back-off.
- ``payments-reconcile``: pending charges asked about (a lost webhook never
  loses a sale), and expired at their real expiry.
- ``outbox``: domain events to their subscribers, at least once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleet.metrics import FleetMetrics
from fleet.outbox import OutboxDispatcher
from fleet.payments.service import PaymentService
from storage.payments import PaymentInbox

log = logging.getLogger(__name__)

_LEASE = timedelta(seconds=60)
_RETRY_MAX = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class JobContext:
    payments: PaymentService
    inbox: PaymentInbox
    outbox: OutboxDispatcher
    metrics: FleetMetrics
    retry_base: timedelta = timedelta(seconds=5)  # payments.retry_base_seconds


async def process_inbox(ctx: JobContext, *, batch: int = 200, rounds: int = 20) -> int:
    """Apply due inbox rows, a batch at a time, until none is left (bounded)."""
    total = 0
    for _ in range(rounds):
        now = datetime.now(UTC)
        rows = await ctx.inbox.claim(now, _LEASE, batch)
        for row in rows:
            result = await ctx.payments.process(row, now)
            if result.startswith("retry"):
                delay = min(ctx.retry_base * 2 ** min(max(row.attempts - 1, 0), 8), _RETRY_MAX)
                await ctx.inbox.later(row.id, now + delay, result)
            else:
                await ctx.inbox.done(row.id, result)
        total += len(rows)
        if len(rows) < batch:
            break
    ctx.metrics.inbox_backlog.set(await ctx.inbox.backlog())
    return total


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
