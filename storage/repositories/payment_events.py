"""The payment webhook inbox and the outbox of domain events. Repositories never commit.

Both queues are worked the same way by any number of instances: claim due rows
with ``FOR UPDATE SKIP LOCKED`` and a lease (``locked_until``) in one short
transaction, work on them outside it, then record the result; a lease that
runs out (its instance died) makes the row due again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OutboxEvent, PaymentEvent
from storage.repositories.queue import lease_due


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    gateway_id: str
    event_id: str
    transaction_id: str
    headers: dict[str, str]
    body: str
    verification: str
    claimed_status: str | None
    trusted: bool
    claimed_amount_cents: int | None
    claimed_currency: str | None
    claimed_paid_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    """What processing a stored webhook came to; ``retry_at`` None: done."""

    id: int
    result: str
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxOutcome:
    """Who an event reached; delivered once every subscriber did."""

    id: int
    done: tuple[str, ...]
    delivered: bool
    retry_at: datetime | None = None
    error: str | None = None


class PaymentEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_many(self, webhooks: Sequence[ReceivedWebhook]) -> set[tuple[str, str]]:
        """Store each (gateway, event) once; returns the keys that were new."""
        if not webhooks:
            return set()
        table = PaymentEvent.__table__
        stmt = (
            insert(table)  # type: ignore[arg-type]
            .on_conflict_do_nothing(index_elements=[table.c.gateway_id, table.c.event_id])
            .returning(table.c.gateway_id, table.c.event_id)
        )
        # Parameters apart from the statement: compiled once and cached ("insertmanyvalues"
        # still sends one INSERT), where .values([...]) compiles anew for every batch size.
        result = await self._session.execute(stmt, [_row(w) for w in webhooks])
        return {(g, e) for g, e in result.all()}

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> Sequence[PaymentEvent]:
        """Due rows, leased to the caller: one statement (no row-by-row flush)."""
        rows = await lease_due(
            self._session, PaymentEvent, PaymentEvent.processed_at.is_(None),
            PaymentEvent.next_attempt_at, (PaymentEvent.next_attempt_at, PaymentEvent.id),
            now, lease, limit,
        )  # fmt: skip
        return sorted(rows, key=lambda row: (row.next_attempt_at, row.id))

    async def finish(self, outcomes: Sequence[InboxOutcome]) -> None:
        """Record a batch's results: one UPDATE per distinct (result, retry time)."""
        groups: dict[tuple[str, datetime | None], list[int]] = {}
        for outcome in outcomes:
            groups.setdefault((outcome.result[:256], outcome.retry_at), []).append(outcome.id)
        for (result, retry_at), ids in groups.items():
            values: dict[str, Any] = {"result": result, "locked_until": None}
            if retry_at is None:
                values["processed_at"] = func.now()
            else:
                values["next_attempt_at"] = retry_at
            await self._session.execute(
                update(PaymentEvent)
                .where(PaymentEvent.id.in_(ids))
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    async def backlog(self) -> int:
        stmt = select(func.count()).where(PaymentEvent.processed_at.is_(None))
        return int(await self._session.scalar(stmt) or 0)

    async def for_transaction(self, gateway_id: str, transaction_id: str) -> Sequence[PaymentEvent]:
        stmt = (
            select(PaymentEvent)
            .where(
                PaymentEvent.gateway_id == gateway_id,
                PaymentEvent.transaction_id == transaction_id,
            )
            .order_by(PaymentEvent.received_at, PaymentEvent.id)
        )
        return (await self._session.scalars(stmt)).all()


def _row(webhook: ReceivedWebhook) -> dict[str, Any]:
    return {
        "gateway_id": webhook.gateway_id,
        "event_id": webhook.event_id[:256],
        "transaction_id": webhook.transaction_id[:128],
        "headers": webhook.headers,
        "body": webhook.body,
        "verification": webhook.verification,
        "claimed_status": webhook.claimed_status,
        "trusted": webhook.trusted,
        "claimed_amount_cents": webhook.claimed_amount_cents,
        "claimed_currency": webhook.claimed_currency,
        "claimed_paid_at": webhook.claimed_paid_at,
    }


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, topic: str, key: str, payload: dict[str, Any]) -> bool:
        """Record a domain event once per ``key``; False if it exists already."""
        stmt = (
            insert(OutboxEvent)
            .values(topic=topic, key=key, payload=payload)
            .on_conflict_do_nothing(index_elements=[OutboxEvent.key])
            .returning(OutboxEvent.id)
        )
        return (await self._session.execute(stmt)).first() is not None

    async def add_many(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Record (topic, key, payload) events, each once per key."""
        if not events:
            return
        table = OutboxEvent.__table__
        stmt = insert(table).on_conflict_do_nothing(index_elements=[table.c.key])  # type: ignore[arg-type]
        await self._session.execute(
            stmt, [{"topic": t, "key": k, "payload": p} for t, k, p in events]
        )

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> Sequence[OutboxEvent]:
        """Due events, leased to the caller: one statement (no row-by-row flush)."""
        rows = await lease_due(
            self._session, OutboxEvent, OutboxEvent.delivered_at.is_(None),
            OutboxEvent.next_attempt_at, (OutboxEvent.id,), now, lease, limit,
        )  # fmt: skip
        return sorted(rows, key=lambda row: row.id)

    async def progress(self, outcomes: Sequence[OutboxOutcome]) -> None:
        """Record who each event reached: one UPDATE per distinct outcome (usually one)."""
        groups: dict[tuple[tuple[str, ...], bool, datetime | None, str | None], list[int]] = {}
        for o in outcomes:
            error = o.error[:2000] if o.error else None
            groups.setdefault((o.done, o.delivered, o.retry_at, error), []).append(o.id)
        for (done, delivered, retry_at, error), ids in groups.items():
            values: dict[str, Any] = {
                "done_subscribers": list(done), "locked_until": None, "last_error": error
            }  # fmt: skip
            if delivered:
                values["delivered_at"] = func.now()
            if retry_at is not None:
                values["next_attempt_at"] = retry_at
            await self._session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids))
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    async def backlog(self, now: datetime) -> int:
        stmt = select(func.count()).where(
            and_(OutboxEvent.delivered_at.is_(None), OutboxEvent.created_at <= now)
        )
        return int(await self._session.scalar(stmt) or 0)

    async def for_payment(self, payment_id: int) -> Sequence[OutboxEvent]:
        stmt = (
            select(OutboxEvent)
            .where(OutboxEvent.key.like(f"payment.%:{payment_id}"))
            .order_by(OutboxEvent.id)
        )
        return (await self._session.scalars(stmt)).all()
