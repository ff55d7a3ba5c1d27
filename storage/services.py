"""Services: the operations handlers and runners call. Each owns its transaction."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import BotConfig
from storage.models import Bot, BotState, DeadLetter
from storage.repositories import (
    Attribution,
    BotRecord,
    FailedUpdate,
    MessageRecord,
    UserSeen,
)
from storage.repositories.dead_letters import STALE_REPLAY_CLAIM
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)

SessionFactory = async_sessionmaker[AsyncSession]


class BotRegistry:
    """The ``bots`` table follows the configuration and the runners' verdicts."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._sessions = session_factory

    async def sync(self, bots: Sequence[BotConfig]) -> None:
        records = [BotRecord(b.id, b.telegram_id, b.enabled) for b in bots]
        async with UnitOfWork(self._sessions) as uow:
            await uow.bots.upsert(records)
            await uow.commit()

    async def mark(
        self, bot_id: str, state: BotState, reason: str | None = None, username: str | None = None
    ) -> None:
        async with UnitOfWork(self._sessions) as uow:
            found = await uow.bots.set_state(bot_id, state, reason, username)
            await uow.commit()
        if not found:
            log.warning("bot %s: state %s not recorded, bot is not in the database", bot_id, state)

    async def all(self) -> Sequence[Bot]:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.bots.list()


class UserActivity:
    """Who talks to which bot; written in batches, never one round trip per update."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._sessions = session_factory

    async def record_seen(self, seen: Sequence[UserSeen]) -> None:
        if not seen:
            return
        async with UnitOfWork(self._sessions) as uow:
            await uow.users.touch(seen)
            await uow.commit()

    async def set_blocked(self, bot_id: str, user_id: int, blocked: bool, at: datetime) -> None:
        async with UnitOfWork(self._sessions) as uow:
            await uow.users.set_blocked(bot_id, user_id, blocked, at)
            await uow.commit()

    async def attribute(
        self, bot_id: str, user_id: int, attribution: Attribution, at: datetime
    ) -> bool:
        async with UnitOfWork(self._sessions) as uow:
            stored = await uow.users.attribute(bot_id, user_id, attribution, at)
            await uow.commit()
        return stored


class MessageLog:
    def __init__(self, session_factory: SessionFactory) -> None:
        self._sessions = session_factory

    async def record(self, records: Sequence[MessageRecord]) -> int:
        """Log a batch (messages already logged are skipped); returns the rows sent."""
        if not records:
            return 0
        async with UnitOfWork(self._sessions) as uow:
            sent = await uow.messages.add_many(records)
            await uow.commit()
        return sent


class DeadLetters:
    """Failed updates are kept, so confirming their offset loses nothing."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._sessions = session_factory

    async def record(self, failed: FailedUpdate) -> int:
        async with UnitOfWork(self._sessions) as uow:
            attempts = await uow.dead_letters.record(failed)
            await uow.commit()
        return attempts

    async def unresolved(self, bot_id: str, limit: int = 100) -> Sequence[DeadLetter]:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.dead_letters.unresolved(bot_id, limit)

    async def resolve(self, bot_id: str, update_id: int) -> bool:
        async with UnitOfWork(self._sessions) as uow:
            done = await uow.dead_letters.resolve(bot_id, update_id)
            await uow.commit()
        return done

    async def list(
        self, bot_id: str | None, *, include_resolved: bool = False, limit: int = 100
    ) -> Sequence[DeadLetter]:
        """Newest failure first; every bot's when ``bot_id`` is None."""
        async with UnitOfWork(self._sessions) as uow:
            return await uow.dead_letters.list(
                bot_id, include_resolved=include_resolved, limit=limit
            )

    async def request_replay(self, bot_id: str, update_ids: Sequence[int] | None) -> int:
        """Queue unresolved letters for replay (None: all of the bot's); returns how many."""
        async with UnitOfWork(self._sessions) as uow:
            marked = await uow.dead_letters.request_replay(bot_id, update_ids)
            await uow.commit()
        return marked

    async def claim_replays(
        self,
        bot_ids: Collection[str],
        owner: str,
        *,
        limit: int = 50,
        stale_after: timedelta = STALE_REPLAY_CLAIM,
    ) -> Sequence[DeadLetter]:
        """Take queued letters of the bots ``owner`` runs; report each via :meth:`replayed`."""
        async with UnitOfWork(self._sessions) as uow:
            claimed = await uow.dead_letters.claim_replays(
                bot_ids, owner, limit=limit, stale_after=stale_after
            )
            await uow.commit()
        return claimed

    async def replayed(
        self,
        letter_id: int,
        *,
        ok: bool,
        error_type: str | None = None,
        error: str | None = None,
    ) -> None:
        """ok: the letter is resolved; not ok: one more failed attempt is recorded."""
        async with UnitOfWork(self._sessions) as uow:
            await uow.dead_letters.replayed(letter_id, ok=ok, error_type=error_type, error=error)
            await uow.commit()
