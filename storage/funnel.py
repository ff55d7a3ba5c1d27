"""The funnel's storage as a service: each call its own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import Payment
from storage.repositories.funnel import Figures, Start
from storage.repositories.timers import NewTimer
from storage.uow import UnitOfWork


class FunnelStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record_starts(self, starts: Sequence[Start]) -> None:
        """A batch of /starts (``fleet.batcher``): users and touches recorded, the pending
        downsells of each cancelled."""
        if not starts:
            return
        async with UnitOfWork(self._sessions) as uow:
            await uow.funnel.record_starts(starts)
            await uow.commit()

    async def offer_later(
        self, bot_id: str, user_id: int, kind: str, timers: Sequence[NewTimer]
    ) -> None:
        """Replace the user's scheduled ``kind`` timers with ``timers`` (once per key)."""
        async with UnitOfWork(self._sessions) as uow:
            await uow.timers.cancel(bot_id, user_id, (kind,), keep=[t.key for t in timers])
            await uow.timers.add_many(timers)
            await uow.commit()

    async def schedule(self, timers: Sequence[NewTimer]) -> None:
        async with UnitOfWork(self._sessions) as uow:
            await uow.timers.add_many(timers)
            await uow.commit()

    async def bought_since(self, bot_id: str, user_id: int, since: datetime) -> bool:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.funnel.bought_since(bot_id, user_id, since)

    async def bought(self, bot_id: str, user_id: int, offer_ref_prefix: str) -> bool:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.funnel.bought(bot_id, user_id, offer_ref_prefix)

    async def offered(
        self, bot_id: str, user_id: int, kind: str, offer_id: str
    ) -> dict[str, Any] | None:
        """What the latest ``kind`` timer offered this user (its payload), if one did."""
        async with UnitOfWork(self._sessions) as uow:
            timer = await uow.funnel.offered(bot_id, user_id, kind, offer_id, datetime.now(UTC))
            return dict(timer.payload) if timer is not None else None

    async def first_name(self, bot_id: str, user_id: int) -> str | None:
        async with UnitOfWork(self._sessions) as uow:
            user = await uow.users.get(bot_id, user_id)
            return user.first_name if user is not None else None

    async def payment(self, payment_id: int) -> Payment | None:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.payments.get(payment_id)

    async def begin_delivery(self, payment_id: int) -> Payment | None:
        """The payment to deliver (marked ``sending``), or None: delivered already, or not
        paid."""
        async with UnitOfWork(self._sessions) as uow:
            payment = await uow.funnel.begin_delivery(payment_id)
            await uow.commit()
            return payment

    async def keep_access_link(self, payment_id: int, link: str) -> str:
        async with UnitOfWork(self._sessions) as uow:
            kept = await uow.funnel.keep_access_link(payment_id, link)
            await uow.commit()
            return kept

    async def delivered(self, payment_id: int, at: datetime, state: str) -> None:
        """The delivery ended (delivered, blocked, undeliverable): never attempted again."""
        async with UnitOfWork(self._sessions) as uow:
            await uow.funnel.delivered(payment_id, at, state)
            await uow.commit()

    async def figures(self, bot_id: str, since: datetime | None) -> Figures:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.funnel.figures(bot_id, since)
