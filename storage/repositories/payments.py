"""Charges: creation, lookups, the locked transition. Repositories never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import BotUser, Payment, PaymentStatus

_ATTRIBUTION = (
    "tracking_token", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term",
    "fbclid", "fbp", "fbc", "client_ip", "user_agent", "campaign_code",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NewCharge:
    bot_id: str
    telegram_user_id: int
    offer_ref: str
    description: str
    amount_cents: int
    currency: str
    gateway_id: str
    idempotency_key: str
    expires_at: datetime


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def reusable(
        self, bot_id: str, user_id: int, offer_ref: str, amount_cents: int, *, since: datetime,
        valid_until: datetime,
    ) -> Payment | None:  # fmt: skip
        """A recent pending charge for the same offer and amount, still valid a while."""
        stmt = (
            select(Payment)
            .where(
                Payment.bot_id == bot_id,
                Payment.telegram_user_id == user_id,
                Payment.offer_ref == offer_ref,
                Payment.amount_cents == amount_cents,
                Payment.status == PaymentStatus.PENDING,
                Payment.created_at >= since,
                Payment.expires_at >= valid_until,
            )
            .order_by(Payment.created_at.desc())
            .limit(1)
        )
        return await self._session.scalar(stmt)

    async def last_created_at(self, bot_id: str, user_id: int) -> datetime | None:
        """The user's last charge that the gateway made (a failed attempt does not count)."""
        stmt = select(func.max(Payment.created_at)).where(
            Payment.bot_id == bot_id,
            Payment.telegram_user_id == user_id,
            Payment.status != PaymentStatus.FAILED,
        )
        return await self._session.scalar(stmt)

    async def start(self, charge: NewCharge) -> Payment | None:
        """A row for a charge in the making; None if one for this user and offer is being made
        (``ix_payments_creating``): a double click finds the first, no second charge."""
        attribution = await self._attribution(charge.bot_id, charge.telegram_user_id)
        stmt = (
            insert(Payment)
            .values(
                bot_id=charge.bot_id,
                telegram_user_id=charge.telegram_user_id,
                offer_ref=charge.offer_ref,
                description=charge.description,
                amount_cents=charge.amount_cents,
                currency=charge.currency,
                gateway_id=charge.gateway_id,
                idempotency_key=charge.idempotency_key,
                expires_at=charge.expires_at,
                attribution=attribution,
            )
            .on_conflict_do_nothing()
            .returning(Payment)
        )
        return (await self._session.scalars(stmt)).one_or_none()

    async def gave_up(self, idempotency_key: str) -> bool:
        """A charge with this key was given up (its gateway refused or was away)."""
        found = await self._session.scalar(
            select(Payment.id).where(
                Payment.idempotency_key == idempotency_key,
                Payment.status == PaymentStatus.FAILED,
            )
        )
        return found is not None

    async def _attribution(self, bot_id: str, user_id: int) -> dict[str, Any]:
        """Where the buyer came from, copied onto the charge (the user may come again later)."""
        row = (
            await self._session.execute(
                select(*(getattr(BotUser, name) for name in _ATTRIBUTION)).where(
                    BotUser.bot_id == bot_id, BotUser.telegram_user_id == user_id
                )
            )
        ).first()
        if row is None:
            return {}
        return {name: value for name, value in zip(_ATTRIBUTION, row, strict=True) if value}

    async def attach(
        self,
        payment_id: int,
        *,
        transaction_id: str,
        pix_code: str,
        qr_png_base64: str | None,
        expires_at: datetime,
    ) -> Payment:
        stmt = (
            update(Payment)
            .where(Payment.id == payment_id)
            .values(
                transaction_id=transaction_id,
                pix_code=pix_code,
                qr_png_base64=qr_png_base64,
                expires_at=expires_at,
                updated_at=func.now(),
            )
            .returning(Payment)
        )
        return (await self._session.scalars(stmt)).one()

    async def give_up(self, payment_id: int) -> None:
        """The gateway refused or never answered: the charge failed (and frees the key)."""
        await self._session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.transaction_id.is_(None))
            .values(status=PaymentStatus.FAILED, closed_at=func.now(), updated_at=func.now())
        )

    async def get(self, payment_id: int) -> Payment | None:
        return await self._session.get(Payment, payment_id)

    async def lock(self, gateway_id: str, transaction_id: str) -> Payment | None:
        """The charge, locked until the transaction ends (one transition at a time)."""
        stmt = (
            select(Payment)
            .where(Payment.gateway_id == gateway_id, Payment.transaction_id == transaction_id)
            .with_for_update()
        )
        return await self._session.scalar(stmt)

    async def lock_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Payment]:
        """The charges of these (gateway, transaction) keys, locked until the transaction
        ends, in id order (two instances locking overlapping sets cannot deadlock)."""
        if not keys:
            return {}
        stmt = (
            select(Payment)
            .where(tuple_(Payment.gateway_id, Payment.transaction_id).in_(list(set(keys))))
            .order_by(Payment.id)
            .with_for_update()
        )
        found = (await self._session.scalars(stmt)).all()
        return {(p.gateway_id, p.transaction_id or ""): p for p in found}

    def move(self, payment: Payment, status: PaymentStatus, at: datetime) -> None:
        """Change a locked charge; written at the next flush (one for a whole batch)."""
        payment.status = status
        payment.updated_at = at
        if status == PaymentStatus.PAID:
            payment.paid_at = payment.paid_at or at
        elif status != PaymentStatus.PENDING:
            payment.closed_at = at

    async def pending_older_than(self, before: datetime, limit: int) -> Sequence[Payment]:
        """Pending charges made before ``before``, oldest first (for reconciliation)."""
        stmt = (
            select(Payment)
            .where(
                Payment.status == PaymentStatus.PENDING,
                Payment.transaction_id.is_not(None),
                Payment.created_at < before,
            )
            .order_by(Payment.created_at)
            .limit(limit)
        )
        return (await self._session.scalars(stmt)).all()

    async def listing(
        self, bot_id: str | None, status: str | None, limit: int
    ) -> Sequence[Payment]:
        stmt = select(Payment).order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)
        if bot_id is not None:
            stmt = stmt.where(Payment.bot_id == bot_id)
        if status is not None:
            stmt = stmt.where(Payment.status == status)
        return (await self._session.scalars(stmt)).all()
