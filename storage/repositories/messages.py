"""The message log. Repositories never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Direction, Message


@dataclass(frozen=True, slots=True)
class MessageRecord:
    bot_id: str
    chat_id: int
    message_id: int
    direction: Direction
    sent_at: datetime
    user_id: int | None = None
    update_id: int | None = None
    kind: str = "text"
    text: str | None = None


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_many(self, records: Sequence[MessageRecord]) -> int:
        """Insert a batch; a message already logged is skipped. Returns rows inserted."""
        if not records:
            return 0
        # executemany on one cached statement: a multi-VALUES statement would be
        # compiled anew for every batch size (measured: most of a flush's CPU).
        stmt = (
            insert(Message)
            .on_conflict_do_nothing(
                index_elements=[
                    Message.bot_id,
                    Message.chat_id,
                    Message.message_id,
                    Message.direction,
                ]
            )
            .returning(Message.id)
        )
        result = await self._session.execute(stmt, [asdict(r) for r in records])
        return len(result.all())

    async def for_chat(self, bot_id: str, chat_id: int, limit: int = 100) -> Sequence[Message]:
        stmt = (
            select(Message)
            .where(Message.bot_id == bot_id, Message.chat_id == chat_id)
            .order_by(Message.sent_at, Message.id)
            .limit(limit)
        )
        return (await self._session.scalars(stmt)).all()

    async def count(self, bot_id: str, direction: Direction | None = None) -> int:
        stmt = select(func.count()).select_from(Message).where(Message.bot_id == bot_id)
        if direction is not None:
            stmt = stmt.where(Message.direction == direction)
        return int(await self._session.scalar(stmt) or 0)
