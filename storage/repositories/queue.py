"""Leasing due rows of a queue table (the payment inbox, the outbox, timers).

Any number of instances work one table: due rows are leased in one statement
(``FOR UPDATE SKIP LOCKED`` in a subquery, then ``locked_until`` and
``attempts`` set), worked on outside the transaction, then their result is
recorded; a lease that runs out (its instance died) makes the row due again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql import ColumnElement

from storage.models import OutboxEvent, PaymentEvent, Timer

Queued = TypeVar("Queued", PaymentEvent, OutboxEvent, Timer)


async def lease_due(
    session: AsyncSession,
    model: type[Queued],
    pending: ColumnElement[bool],
    due: InstrumentedAttribute[datetime],
    order: Sequence[InstrumentedAttribute[Any]],
    now: datetime,
    lease: timedelta,
    limit: int,
) -> Sequence[Queued]:
    """Rows pending, due by ``now`` and not leased (or whose lease ran out), skipping rows
    another instance holds; leased for ``lease`` and their attempts counted."""
    ids = (
        select(model.id)
        .where(
            pending,
            due <= now,
            or_(model.locked_until.is_(None), model.locked_until < now),
        )
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(model)
        .where(model.id.in_(ids.scalar_subquery()))
        .values(locked_until=now + lease, attempts=model.attempts + 1)
        .returning(model)
        .execution_options(synchronize_session=False)
    )
    return (await session.scalars(stmt)).all()
