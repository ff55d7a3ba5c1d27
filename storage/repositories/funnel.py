"""The funnel's rows: a /start with its touch, what a user bought, what was offered, the
delivery state of a payment, the owners' figures. Repositories never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import BotUser, Payment, Timer, TimerState


@dataclass(frozen=True, slots=True)
class Start:
    bot_id: str
    telegram_user_id: int
    at: datetime
    first_name: str | None = None
    username: str | None = None
    tracking_token: str | None = None
    campaign_code: str | None = None


@dataclass(frozen=True, slots=True)
class Figures:
    users: int
    starts: int
    charges: int
    sales: int
    revenue_cents: int


class DeliveryState:
    NONE = "none"
    SENDING = "sending"  # at least once: until Telegram acknowledged the access
    DELIVERED = "delivered"
    BLOCKED = "blocked"  # the buyer blocked the bot: Telegram refuses for good
    UNDELIVERABLE = "undeliverable"  # nothing configured to give (an operator must act)


_OPEN = (DeliveryState.NONE, DeliveryState.SENDING)


class FunnelRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record_starts(self, starts: Sequence[Start]) -> None:
        """Each user exists and counts their /starts; the first touch is kept, the last one
        follows every /start that carries one; downsells scheduled before a /start are
        cancelled (the funnel begins again). One statement each, for the whole batch."""
        rows = merge_starts(starts)
        if not rows:
            return
        table = BotUser.__table__
        stmt = insert(table)  # type: ignore[arg-type]
        ex = stmt.excluded
        first_touch = table.c.attributed_at.is_(None)
        touched = ex.last_touched_at.is_not(None)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.bot_id, table.c.telegram_user_id],
            set_={
                "starts": table.c.starts + ex.starts,
                "last_start_at": func.greatest(table.c.last_start_at, ex.last_start_at),
                "first_name": func.coalesce(ex.first_name, table.c.first_name),
                "username": func.coalesce(ex.username, table.c.username),
                "last_interaction_at": func.greatest(
                    table.c.last_interaction_at, ex.last_interaction_at
                ),
                "tracking_token": case(
                    (first_touch, ex.tracking_token), else_=table.c.tracking_token
                ),
                "campaign_code": case((first_touch, ex.campaign_code), else_=table.c.campaign_code),
                "attributed_at": func.coalesce(table.c.attributed_at, ex.attributed_at),
                "last_tracking_token": case(
                    (touched, ex.last_tracking_token), else_=table.c.last_tracking_token
                ),
                "last_campaign_code": case(
                    (touched, ex.last_campaign_code), else_=table.c.last_campaign_code
                ),
                "last_touched_at": func.coalesce(ex.last_touched_at, table.c.last_touched_at),
            },
        )
        await self._session.execute(stmt, rows)
        # One statement for the batch: (bot, user, /start time) arrays unnested and joined.
        await self._session.execute(
            text(
                "UPDATE timers SET state = 'cancelled', result = 'cancelled: /start again',"
                " locked_until = NULL"
                " FROM unnest(CAST(:bots AS text[]), CAST(:users AS bigint[]),"
                " CAST(:ats AS timestamptz[])) AS s(bot_id, user_id, at)"
                " WHERE timers.bot_id = s.bot_id AND timers.telegram_user_id = s.user_id"
                " AND timers.kind = 'downsell' AND timers.state = 'scheduled'"
                " AND timers.created_at < s.at"
            ),
            {
                "bots": [r["bot_id"] for r in rows],
                "users": [r["telegram_user_id"] for r in rows],
                "ats": [r["last_start_at"] for r in rows],
            },
        )

    async def bought_since(self, bot_id: str, user_id: int, since: datetime) -> bool:
        """Paid anything in this bot since ``since`` (kept if refunded later: they bought)."""
        found = await self._session.scalar(
            select(Payment.id)
            .where(
                Payment.bot_id == bot_id,
                Payment.telegram_user_id == user_id,
                Payment.paid_at.is_not(None),
                or_(Payment.paid_at >= since, Payment.created_at >= since),
            )
            .limit(1)
        )
        return found is not None

    async def bought(self, bot_id: str, user_id: int, offer_ref_prefix: str) -> bool:
        found = await self._session.scalar(
            select(Payment.id)
            .where(
                Payment.bot_id == bot_id,
                Payment.telegram_user_id == user_id,
                Payment.paid_at.is_not(None),
                Payment.offer_ref.startswith(offer_ref_prefix, autoescape=True),
            )
            .limit(1)
        )
        return found is not None

    async def offered(
        self, bot_id: str, user_id: int, kind: str, offer_id: str, now: datetime
    ) -> Timer | None:
        """The latest timer of ``kind`` that showed ``offer_id`` to this user: fired and sent,
        or due and firing right now (its result is recorded after its batch)."""
        shown = (Timer.state == TimerState.DONE) & (Timer.result == "sent")
        firing = (Timer.state == TimerState.SCHEDULED) & (Timer.due_at <= now)
        return await self._session.scalar(
            select(Timer)
            .where(
                Timer.bot_id == bot_id,
                Timer.telegram_user_id == user_id,
                Timer.kind == kind,
                Timer.payload["offer"].astext == offer_id,
                shown | firing,
            )
            .order_by(Timer.due_at.desc(), Timer.id.desc())
            .limit(1)
        )

    async def begin_delivery(self, payment_id: int) -> Payment | None:
        """The paid payment, locked and marked as being delivered; None when it was delivered
        already (or is not paid)."""
        payment = await self._session.scalar(
            select(Payment).where(Payment.id == payment_id).with_for_update()
        )
        if payment is None or payment.delivery_state not in _OPEN:
            return None
        if payment.paid_at is None:
            return None
        payment.delivery_state = DeliveryState.SENDING
        return payment

    async def keep_access_link(self, payment_id: int, link: str) -> str:
        """Store the invite made for a payment; a link stored before wins (one per payment)."""
        stored = await self._session.scalar(
            update(Payment)
            .where(Payment.id == payment_id, Payment.access_link.is_(None))
            .values(access_link=link)
            .returning(Payment.access_link)
        )
        if stored is not None:
            return str(stored)
        kept = await self._session.scalar(
            select(Payment.access_link).where(Payment.id == payment_id)
        )
        return str(kept)

    async def delivered(self, payment_id: int, at: datetime, state: str) -> None:
        await self._session.execute(
            update(Payment)
            .where(Payment.id == payment_id)
            .values(delivery_state=state, delivered_at=at)
        )

    async def figures(self, bot_id: str, since: datetime | None) -> Figures:
        users = select(func.count(), func.coalesce(func.sum(BotUser.starts), 0)).where(
            BotUser.bot_id == bot_id
        )
        charges = select(func.count()).where(Payment.bot_id == bot_id)
        sales = select(func.count(), func.coalesce(func.sum(Payment.amount_cents), 0)).where(
            Payment.bot_id == bot_id, Payment.paid_at.is_not(None)
        )
        if since is not None:
            users = users.where(BotUser.last_start_at >= since)
            charges = charges.where(Payment.created_at >= since)
            sales = sales.where(Payment.paid_at >= since)
        user_count, starts = (await self._session.execute(users)).one()
        sale_count, revenue = (await self._session.execute(sales)).one()
        return Figures(
            users=int(user_count),
            starts=int(starts),
            charges=int(await self._session.scalar(charges) or 0),
            sales=int(sale_count),
            revenue_cents=int(revenue),
        )


def merge_starts(starts: Sequence[Start]) -> list[dict[str, Any]]:
    """One row per user (an upsert may not touch a row twice), in lock order: the count of
    their /starts, the first touch of the batch and its last."""
    by_user: dict[tuple[str, int], list[Start]] = {}
    for start in sorted(starts, key=lambda s: s.at):
        by_user.setdefault((start.bot_id, start.telegram_user_id), []).append(start)
    rows = []
    for (bot_id, user_id), seen in sorted(by_user.items()):
        touches = [s for s in seen if s.tracking_token or s.campaign_code]
        first, last = (touches[0], touches[-1]) if touches else (None, None)
        latest = seen[-1]
        rows.append(
            {
                "bot_id": bot_id,
                "telegram_user_id": user_id,
                "first_name": next((s.first_name for s in reversed(seen) if s.first_name), None),
                "username": next((s.username for s in reversed(seen) if s.username), None),
                "first_interaction_at": seen[0].at,
                "last_interaction_at": latest.at,
                "starts": len(seen),
                "last_start_at": latest.at,
                "tracking_token": first.tracking_token if first else None,
                "campaign_code": first.campaign_code if first else None,
                "attributed_at": first.at if first else None,
                "last_tracking_token": last.tracking_token if last else None,
                "last_campaign_code": last.campaign_code if last else None,
                "last_touched_at": last.at if last else None,
            }
        )
    return rows
