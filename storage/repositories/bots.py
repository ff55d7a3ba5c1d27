"""Bots as the fleet knows them. Repositories never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Bot, BotState


@dataclass(frozen=True, slots=True)
class BotRecord:
    id: str
    telegram_id: int
    enabled: bool


class BotRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def upsert(self, bots: Sequence[BotRecord]) -> None:
        """Insert new bots, refresh known ones; a disabled bot is marked so."""
        if not bots:
            return
        rows = [
            {
                "id": b.id,
                "telegram_id": b.telegram_id,
                "state": BotState.UNKNOWN if b.enabled else BotState.DISABLED,
            }
            for b in sorted(bots, key=lambda b: b.id)  # stable lock order
        ]
        stmt = insert(Bot).values(rows)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[Bot.id],
            set_={
                "telegram_id": excluded.telegram_id,
                "updated_at": func.now(),
                # Disabling wins; re-enabling leaves "disabled"; other states belong to runners.
                "state": case(
                    (excluded.state == BotState.DISABLED, BotState.DISABLED),
                    (Bot.state == BotState.DISABLED, BotState.UNKNOWN),
                    else_=Bot.state,
                ),
            },
        )
        await self._session.execute(stmt)

    async def get(self, bot_id: str) -> Bot | None:
        return await self._session.get(Bot, bot_id)

    async def list(self) -> Sequence[Bot]:
        return (await self._session.scalars(select(Bot).order_by(Bot.id))).all()

    async def set_state(
        self, bot_id: str, state: BotState, reason: str | None = None, username: str | None = None
    ) -> bool:
        values: dict[str, object] = {
            "state": state,
            "state_reason": reason,
            "state_changed_at": func.now(),
            "updated_at": func.now(),
        }
        if username is not None:
            values["username"] = username
        result = await self._session.execute(
            update(Bot).where(Bot.id == bot_id).values(**values).returning(Bot.id)
        )
        return result.first() is not None
