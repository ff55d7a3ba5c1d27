"""Payment services: each owns its transaction (the gateway calls happen outside them).

- :class:`Charges`: the rows of charges: reuse, cool-down, one charge in the
  making per user and offer, then the gateway's answer attached.
- :class:`PaymentLedger`: a gateway's word about a charge, applied under the
  row lock: amount and currency checked, status moved forward only, one domain
  event per real transition written to the outbox in the same transaction.
- :class:`PaymentInbox` and :class:`Outbox`: the two queues (see
  ``storage.repositories.payment_events``).
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import OutboxEvent, Payment, PaymentEvent, PaymentStatus, may_move
from storage.repositories.payment_events import InboxOutcome, OutboxOutcome, ReceivedWebhook
from storage.repositories.payments import NewCharge
from storage.uow import UnitOfWork

SessionFactory = async_sessionmaker[AsyncSession]


class Opened(enum.StrEnum):
    NEW = "new"  # a row to create at the gateway now
    REUSED = "reused"  # a recent pending charge for the same offer: show it again
    BUSY = "busy"  # the same charge is being made right now (a double click)
    COOLDOWN = "cooldown"  # the user asked for another charge too soon
    RESUMED = "resumed"  # one left half made (its maker died): made now, same idempotency key


@dataclass(frozen=True, slots=True)
class Opening:
    result: Opened
    payment: Payment | None = None
    retry_after: float = 0.0  # COOLDOWN: seconds


class Charges:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def open(
        self,
        charge: NewCharge,
        now: datetime,
        *,
        reuse: timedelta,
        cooldown: timedelta,
        resume_after: timedelta = timedelta(seconds=30),
    ) -> Opening:
        """``resume_after``: a charge still without its transaction this long after it was
        started lost its maker (an instance killed mid-call): whoever asks again makes it,
        with the same idempotency key, so the gateway answers with the one it may have."""
        async with UnitOfWork(self._sessions) as uow:
            found = await uow.payments.reusable(
                charge.bot_id, charge.telegram_user_id, charge.offer_ref, charge.amount_cents,
                since=now - reuse, valid_until=now + timedelta(minutes=2),
            )  # fmt: skip
            if found is not None and found.transaction_id is not None:
                return Opening(Opened.REUSED, found)
            if found is not None:  # being made (no transaction id yet): a double click, or...
                if found.idempotency_key == charge.idempotency_key:
                    return Opening(Opened.RESUMED, found)  # ...our own earlier attempt, or...
                if now - found.created_at < resume_after:
                    return Opening(Opened.BUSY, found)
                return Opening(Opened.RESUMED, found)  # ...its maker died mid-call
            last = await uow.payments.last_created_at(charge.bot_id, charge.telegram_user_id)
            if last is not None and now - last < cooldown:
                wait = (cooldown - (now - last)).total_seconds()
                return Opening(Opened.COOLDOWN, retry_after=wait)
            started = await uow.payments.start(charge)
            if started is None and await uow.payments.gave_up(charge.idempotency_key):
                # Our earlier attempt failed at the gateway: this one is a new request.
                charge = replace(charge, idempotency_key=str(uuid.uuid4()))
                started = await uow.payments.start(charge)
            if started is None:
                return Opening(Opened.BUSY)
            await uow.commit()
        return Opening(Opened.NEW, started)

    async def attach(
        self,
        payment_id: int,
        *,
        transaction_id: str,
        pix_code: str,
        qr_png_base64: str | None,
        expires_at: datetime,
    ) -> Payment:
        async with UnitOfWork(self._sessions) as uow:
            payment = await uow.payments.attach(
                payment_id,
                transaction_id=transaction_id,
                pix_code=pix_code,
                qr_png_base64=qr_png_base64,
                expires_at=expires_at,
            )
            await uow.commit()
        return payment

    async def give_up(self, payment_id: int) -> None:
        async with UnitOfWork(self._sessions) as uow:
            await uow.payments.give_up(payment_id)
            await uow.commit()

    async def get(self, payment_id: int) -> Payment | None:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.payments.get(payment_id)

    async def listing(
        self, bot_id: str | None = None, status: str | None = None, limit: int = 50
    ) -> Sequence[Payment]:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.payments.listing(bot_id, status, limit)

    async def history(
        self, payment: Payment
    ) -> tuple[Sequence[PaymentEvent], Sequence[OutboxEvent]]:
        """The webhooks stored for a charge and the domain events it produced."""
        async with UnitOfWork(self._sessions) as uow:
            webhooks: Sequence[PaymentEvent] = ()
            if payment.transaction_id is not None:
                webhooks = await uow.payment_events.for_transaction(
                    payment.gateway_id, payment.transaction_id
                )
            return webhooks, await uow.outbox.for_payment(payment.id)

    async def pending_older_than(self, before: datetime, limit: int = 100) -> Sequence[Payment]:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.payments.pending_older_than(before, limit)


class Applied(enum.StrEnum):
    MOVED = "moved"  # a real transition (and its domain event)
    NO_CHANGE = "no_change"  # already there, or not forward
    UNKNOWN = "unknown"  # no charge of ours has this transaction id
    MISMATCH = "mismatch"  # paid, but not the amount or currency we charged: not accepted


@dataclass(frozen=True, slots=True)
class Application:
    result: Applied
    payment_id: int | None = None
    before: PaymentStatus | None = None
    after: PaymentStatus | None = None
    created_at: datetime | None = None
    bot_id: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    """What a gateway says about one of its transactions."""

    gateway_id: str
    transaction_id: str
    status: PaymentStatus
    amount_cents: int | None
    currency: str | None
    paid_at: datetime | None = None


class PaymentLedger:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def apply(self, word: Word, now: datetime, *, source: str) -> Application:
        (applied,) = await self.apply_many([word], now, source=source)
        return applied

    async def apply_many(
        self, words: Sequence[Word], now: datetime, *, source: str
    ) -> list[Application]:
        """Apply words in order, in one transaction: their charges locked (id order), each
        moved forward only, amount and currency checked, one event per real transition."""
        async with UnitOfWork(self._sessions) as uow:
            locked = await uow.payments.lock_many([(w.gateway_id, w.transaction_id) for w in words])
            applied: list[Application] = []
            events: list[tuple[str, str, dict[str, Any]]] = []
            for word in words:
                payment = locked.get((word.gateway_id, word.transaction_id))
                if payment is None:
                    applied.append(Application(Applied.UNKNOWN))
                    continue
                before = PaymentStatus(payment.status)
                seen = functools.partial(
                    Application, payment_id=payment.id, before=before,
                    created_at=payment.created_at, bot_id=payment.bot_id,
                )  # fmt: skip
                if not may_move(before, word.status):
                    applied.append(seen(Applied.NO_CHANGE, after=before))
                elif word.status == PaymentStatus.PAID and (
                    word.amount_cents != payment.amount_cents or word.currency != payment.currency
                ):
                    applied.append(seen(Applied.MISMATCH, after=before))
                else:
                    uow.payments.move(payment, word.status, word.paid_at or now)
                    topic = f"payment.{word.status}"
                    events.append(
                        (topic, f"{topic}:{payment.id}", _event(payment, before, source, now))
                    )
                    applied.append(seen(Applied.MOVED, after=word.status))
            if events:
                await uow.session.flush()
                await uow.outbox.add_many(events)
                await uow.commit()
        return applied


def _event(payment: Payment, before: PaymentStatus, source: str, at: datetime) -> dict[str, Any]:
    return {
        "payment_id": payment.id,
        "bot_id": payment.bot_id,
        "telegram_user_id": payment.telegram_user_id,
        "offer_ref": payment.offer_ref,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "gateway_id": payment.gateway_id,
        "transaction_id": payment.transaction_id,
        "status": payment.status,
        "previous": str(before),
        "paid_at": payment.paid_at.isoformat() if payment.paid_at else None,
        "at": at.isoformat(),
        "source": source,  # webhook, reconcile, check, expiry
        "attribution": payment.attribution,
    }


class PaymentInbox:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def store(self, webhooks: Sequence[ReceivedWebhook]) -> set[tuple[str, str]]:
        """Commit every webhook (once per gateway event); the keys that were new."""
        async with UnitOfWork(self._sessions) as uow:
            new = await uow.payment_events.add_many(webhooks)
            await uow.commit()
        return new

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> Sequence[PaymentEvent]:
        async with UnitOfWork(self._sessions) as uow:
            rows = await uow.payment_events.claim(now, lease, limit)
            await uow.commit()
        return rows

    async def finish(self, outcomes: Sequence[InboxOutcome]) -> None:
        if not outcomes:
            return
        async with UnitOfWork(self._sessions) as uow:
            await uow.payment_events.finish(outcomes)
            await uow.commit()

    async def backlog(self) -> int:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.payment_events.backlog()


class Outbox:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> Sequence[OutboxEvent]:
        async with UnitOfWork(self._sessions) as uow:
            rows = await uow.outbox.claim(now, lease, limit)
            await uow.commit()
        return rows

    async def progress(self, outcomes: Sequence[OutboxOutcome]) -> None:
        if not outcomes:
            return
        async with UnitOfWork(self._sessions) as uow:
            await uow.outbox.progress(outcomes)
            await uow.commit()

    async def backlog(self, now: datetime) -> int:
        async with UnitOfWork(self._sessions) as uow:
            return await uow.outbox.backlog(now)
