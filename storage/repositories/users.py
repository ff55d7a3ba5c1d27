"""Bot users: one row per (bot, Telegram user). Repositories never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import BotUser


@dataclass(frozen=True, slots=True)
class UserSeen:
    """One sighting of a user, as the users middleware batches them."""

    bot_id: str
    telegram_user_id: int
    seen_at: datetime
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language_code: str | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    tracking_token: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    fbclid: str | None = None
    fbp: str | None = None
    fbc: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None


def merge_sightings(seen: Sequence[UserSeen]) -> list[UserSeen]:
    """One row per user (an upsert may not touch a row twice), latest wins, lock order."""
    latest: dict[tuple[str, int], UserSeen] = {}
    earliest: dict[tuple[str, int], datetime] = {}
    for s in seen:
        key = (s.bot_id, s.telegram_user_id)
        earliest[key] = min(earliest.get(key, s.seen_at), s.seen_at)
        if key not in latest or s.seen_at >= latest[key].seen_at:
            latest[key] = s
    return [latest[k] for k in sorted(latest)]


class BotUserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def touch(self, seen: Sequence[UserSeen]) -> None:
        """Upsert users and move ``last_interaction_at`` forward, one statement per batch."""
        rows = merge_sightings(seen)
        if not rows:
            return
        params = [
            {
                "bot_id": s.bot_id,
                "telegram_user_id": s.telegram_user_id,
                "username": s.username,
                "first_name": s.first_name,
                "last_name": s.last_name,
                "language_code": s.language_code,
                "first_interaction_at": s.seen_at,
                "last_interaction_at": s.seen_at,
            }
            for s in rows
        ]
        # Core executemany on one cached statement (see MessageRepository.add_many).
        table = BotUser.__table__
        stmt = insert(table)  # type: ignore[arg-type]
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.bot_id, table.c.telegram_user_id],
            set_={
                "username": func.coalesce(ex.username, table.c.username),
                "first_name": func.coalesce(ex.first_name, table.c.first_name),
                "last_name": func.coalesce(ex.last_name, table.c.last_name),
                "language_code": func.coalesce(ex.language_code, table.c.language_code),
                "first_interaction_at": func.least(
                    table.c.first_interaction_at, ex.first_interaction_at
                ),
                "last_interaction_at": func.greatest(
                    table.c.last_interaction_at, ex.last_interaction_at
                ),
            },
        )
        await self._session.execute(stmt, params)

    async def get(self, bot_id: str, telegram_user_id: int) -> BotUser | None:
        return await self._session.scalar(
            select(BotUser).where(
                BotUser.bot_id == bot_id, BotUser.telegram_user_id == telegram_user_id
            )
        )

    async def set_blocked(
        self, bot_id: str, telegram_user_id: int, blocked: bool, at: datetime
    ) -> bool:
        result = await self._session.execute(
            update(BotUser)
            .where(BotUser.bot_id == bot_id, BotUser.telegram_user_id == telegram_user_id)
            .values(blocked=blocked, blocked_at=at if blocked else None)
            .returning(BotUser.id)
        )
        return result.first() is not None

    async def attribute(
        self, bot_id: str, telegram_user_id: int, attribution: Attribution, at: datetime
    ) -> bool:
        """Store where a user came from; the first attribution is kept (first touch)."""
        result = await self._session.execute(
            update(BotUser)
            .where(
                BotUser.bot_id == bot_id,
                BotUser.telegram_user_id == telegram_user_id,
                BotUser.attributed_at.is_(None),
            )
            .values(attributed_at=at, **_columns(attribution))
            .returning(BotUser.id)
        )
        return result.first() is not None


def _columns(attribution: Attribution) -> dict[str, str | None]:
    return {field: getattr(attribution, field) for field in Attribution.__dataclass_fields__}
