"""Updates whose handling failed. Repositories never commit."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, String, any_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import DeadLetter

_MAX_ERROR_CHARS = 4_000
_MAX_ERROR_TYPE_CHARS = 256

# A replay claim older than this is presumed dead (its instance died) and taken again.
STALE_REPLAY_CLAIM = timedelta(minutes=5)


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
            error_type=failed.error_type[:_MAX_ERROR_TYPE_CHARS],
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

    async def list(
        self, bot_id: str | None, *, include_resolved: bool = False, limit: int = 100
    ) -> Sequence[DeadLetter]:
        """Newest failure first; every bot when ``bot_id`` is None."""
        stmt = (
            select(DeadLetter)
            .order_by(DeadLetter.last_failed_at.desc(), DeadLetter.id.desc())
            .limit(limit)
        )
        if bot_id is not None:
            stmt = stmt.where(DeadLetter.bot_id == bot_id)
        if not include_resolved:
            stmt = stmt.where(DeadLetter.resolved_at.is_(None))
        return (await self._session.scalars(stmt)).all()

    async def request_replay(self, bot_id: str, update_ids: Sequence[int] | None) -> int:
        """Mark unresolved letters for replay (None: all of the bot's); returns how many.

        A letter already queued keeps its place: its request time does not move.
        """
        if update_ids is not None and not update_ids:
            return 0
        stmt = (
            update(DeadLetter)
            .where(DeadLetter.bot_id == bot_id, DeadLetter.resolved_at.is_(None))
            .values(replay_requested_at=func.coalesce(DeadLetter.replay_requested_at, func.now()))
            .returning(DeadLetter.id)
        )
        if update_ids is not None:
            ids = bindparam("update_ids", list(update_ids), type_=ARRAY(BigInteger))
            stmt = stmt.where(DeadLetter.update_id == any_(ids))
        return len((await self._session.execute(stmt)).all())

    async def claim_replays(
        self,
        bot_ids: Collection[str],
        owner: str,
        *,
        limit: int = 50,
        stale_after: timedelta = STALE_REPLAY_CLAIM,
    ) -> Sequence[DeadLetter]:
        """Claim queued letters of ``bot_ids`` for ``owner``, oldest request first.

        Rows another transaction is claiming are skipped (``SKIP LOCKED``), so
        concurrent claimers get disjoint sets; the claim holds once committed.
        """
        if not bot_ids or limit <= 0:
            return []
        bots = bindparam("bot_ids", sorted(bot_ids), type_=ARRAY(String))
        picked = (
            select(DeadLetter.id)
            .where(
                DeadLetter.bot_id == any_(bots),
                DeadLetter.replay_requested_at.is_not(None),
                DeadLetter.resolved_at.is_(None),
                or_(
                    DeadLetter.replay_started_at.is_(None),
                    DeadLetter.replay_started_at < func.now() - stale_after,
                ),
            )
            .order_by(DeadLetter.replay_requested_at, DeadLetter.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")  # lock and limit once, never re-planned into the join
        )
        stmt = (
            update(DeadLetter)
            .where(DeadLetter.id == picked.c.id)
            .values(
                replay_started_at=func.now(),
                replay_owner=owner,
                replays=DeadLetter.replays + 1,
            )
            .returning(DeadLetter)
            .execution_options(synchronize_session=False)
        )
        claimed = (await self._session.scalars(stmt)).all()
        return sorted(claimed, key=lambda letter: (letter.replay_requested_at, letter.id))

    async def replayed(
        self,
        letter_id: int,
        *,
        ok: bool,
        error_type: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record a replay's outcome; either way the letter leaves the replay queue."""
        values: dict[str, Any] = {
            "replay_requested_at": None,
            "replay_started_at": None,
            "replay_owner": None,
        }
        if ok:
            values["resolved_at"] = func.coalesce(DeadLetter.resolved_at, func.now())
        else:
            values["attempts"] = DeadLetter.attempts + 1
            values["last_failed_at"] = func.now()
            if error_type is not None:
                values["error_type"] = error_type[:_MAX_ERROR_TYPE_CHARS]
            if error is not None:
                values["error"] = error[:_MAX_ERROR_CHARS]
        await self._session.execute(
            update(DeadLetter).where(DeadLetter.id == letter_id).values(**values)
        )
