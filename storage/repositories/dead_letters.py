"""Updates whose handling failed. Repositories never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import DeadLetter

_MAX_ERROR_CHARS = 4_000


@dataclass(frozen=True, slots=True)
class FailedUpdate:
    bot_id: str
    update_id: int
    payload: dict[str, Any]
    error_type: str
    error: str


class DeadLetterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(self, failed: FailedUpdate) -> int:
        """Store a failure; the same update failing again bumps ``attempts``.

        Returns the attempt count now recorded.
        """
        stmt = insert(DeadLetter).values(
            bot_id=failed.bot_id,
            update_id=failed.update_id,
            payload=failed.payload,
            error_type=failed.error_type[:256],
            error=failed.error[:_MAX_ERROR_CHARS],
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[DeadLetter.bot_id, DeadLetter.update_id],
            set_={
                "attempts": DeadLetter.attempts + 1,
                "error_type": stmt.excluded.error_type,
                "error": stmt.excluded.error,
                "payload": stmt.excluded.payload,
                "last_failed_at": func.now(),
                "resolved_at": None,
            },
        ).returning(DeadLetter.attempts)
        return int((await self._session.execute(upsert)).scalar_one())

    async def unresolved(self, bot_id: str, limit: int = 100) -> Sequence[DeadLetter]:
        stmt = (
            select(DeadLetter)
            .where(DeadLetter.bot_id == bot_id, DeadLetter.resolved_at.is_(None))
            .order_by(DeadLetter.last_failed_at, DeadLetter.id)
            .limit(limit)
        )
        return (await self._session.scalars(stmt)).all()

    async def resolve(self, bot_id: str, update_id: int) -> bool:
        result = await self._session.execute(
            update(DeadLetter)
            .where(
                DeadLetter.bot_id == bot_id,
                DeadLetter.update_id == update_id,
                DeadLetter.resolved_at.is_(None),
            )
            .values(resolved_at=func.now())
            .returning(DeadLetter.id)
        )
        return result.first() is not None
