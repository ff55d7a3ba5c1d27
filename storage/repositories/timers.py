"""Durable timers: scheduled once per key, leased when due, finished with a result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Timer, TimerState
from storage.repositories.queue import lease_due


@dataclass(frozen=True, slots=True)
class NewTimer:
    bot_id: str
    telegram_user_id: int
    kind: str  # "downsell", "upsell"...: picks its handler
    key: str  # scheduling the same key again is a no-op
    due_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimerOutcome:
    id: int
    state: TimerState  # DONE, FAILED or SCHEDULED again (then ``retry_at``)
    result: str
    retry_at: datetime | None = None


class TimerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_many(self, timers: Sequence[NewTimer]) -> int:
        """Schedule each timer whose key is new; how many were."""
        if not timers:
            return 0
        table = Timer.__table__
        stmt = (
            insert(table)  # type: ignore[arg-type]
            .on_conflict_do_nothing(index_elements=[table.c.key])
            .returning(table.c.id)
        )
        rows = [
            {
                "bot_id": t.bot_id, "telegram_user_id": t.telegram_user_id, "kind": t.kind,
                "key": t.key[:256], "due_at": t.due_at, "payload": t.payload,
            }
            for t in timers
        ]  # fmt: skip
        return len((await self._session.execute(stmt, rows)).all())

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> Sequence[Timer]:
        rows = await lease_due(
            self._session, Timer, Timer.state == TimerState.SCHEDULED, Timer.due_at,
            (Timer.due_at, Timer.id), now, lease, limit,
        )  # fmt: skip
        return sorted(rows, key=lambda row: (row.due_at, row.id))

    async def finish(self, outcomes: Sequence[TimerOutcome]) -> None:
        for outcome in outcomes:
            values: dict[str, Any] = {
                "state": outcome.state, "result": outcome.result[:256], "locked_until": None
            }  # fmt: skip
            if outcome.retry_at is not None:
                values["due_at"] = outcome.retry_at
            else:
                values["fired_at"] = func.now()
            await self._session.execute(
                update(Timer)
                .where(Timer.id == outcome.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    async def cancel(
        self, bot_id: str, user_id: int, kinds: Sequence[str], keep: Sequence[str] = ()
    ) -> int:
        """Cancel a user's scheduled timers of these kinds but those keyed ``keep``; how many."""
        result = await self._session.execute(
            update(Timer)
            .where(
                Timer.bot_id == bot_id,
                Timer.telegram_user_id == user_id,
                Timer.kind.in_(list(kinds)),
                Timer.state == TimerState.SCHEDULED,
                Timer.key.not_in([key[:256] for key in keep]),
            )
            .values(state=TimerState.CANCELLED, result="cancelled", locked_until=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def due_count(self, now: datetime) -> int:
        stmt = select(func.count()).where(Timer.state == TimerState.SCHEDULED, Timer.due_at <= now)
        return int(await self._session.scalar(stmt) or 0)
