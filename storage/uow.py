"""Unit of work: one session, one transaction, the repositories over it.

Services open one, do their work through the repositories and call
:meth:`UnitOfWork.commit`; leaving the block without a commit rolls back.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.repositories import (
    BotRepository,
    BotUserRepository,
    DeadLetterRepository,
    FunnelRepository,
    MessageRepository,
    OutboxRepository,
    PaymentEventRepository,
    PaymentRepository,
    TimerRepository,
)


class UnitOfWork:
    session: AsyncSession
    bots: BotRepository
    users: BotUserRepository
    messages: MessageRepository
    dead_letters: DeadLetterRepository
    payments: PaymentRepository
    payment_events: PaymentEventRepository
    outbox: OutboxRepository
    timers: TimerRepository
    funnel: FunnelRepository

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory

    async def __aenter__(self) -> Self:
        self.session = self._session_factory()
        self.bots = BotRepository(self.session)
        self.users = BotUserRepository(self.session)
        self.messages = MessageRepository(self.session)
        self.dead_letters = DeadLetterRepository(self.session)
        self.payments = PaymentRepository(self.session)
        self.payment_events = PaymentEventRepository(self.session)
        self.outbox = OutboxRepository(self.session)
        self.timers = TimerRepository(self.session)
        self.funnel = FunnelRepository(self.session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() discards an uncommitted transaction (a rollback) without
        # expiring what was loaded, so services may return rows they read.
        await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()
