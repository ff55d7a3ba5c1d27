"""Durable timers as a service: each call its own transaction (repositories never commit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import Timer
from storage.repositories.timers import NewTimer, TimerOutcome
from storage.uow import UnitOfWork


class Timers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def schedule(self, timers: Sequence[NewTimer]) -> int:
        """Each timer once per key (again: nothing); how many were new."""
        async with UnitOfWork(self._sessions) as uow:
            new = await uow.timers.add_many(timers)
            await uow.commit()
        return new

    async def cancel(self, bot_id: str, user_id: int, kinds: Sequence[str]) -> int:
        async with UnitOfWork(self._sessions) as uow:
            cancelled = await uow.timers.cancel(bot_id, user_id, kinds)
            await uow.commit()
        return cancelled

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> Sequence[Timer]:
        async with UnitOfWork(self._sessions) as uow:
            rows = await uow.timers.claim(now, lease, limit)
            await uow.commit()
        return rows

    async def finish(self, outcomes: Sequence[TimerOutcome]) -> None:
        if not outcomes:
            return
        async with UnitOfWork(self._sessions) as uow:
            await uow.timers.finish(outcomes)
            await uow.commit()

    async def due(self, now: datetime) -> int:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.timers.due_count(now)
