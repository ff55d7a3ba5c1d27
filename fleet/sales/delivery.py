"""Access for a paid payment (the ``payment.paid`` outbox subscribers).

- :meth:`Delivery.deliver`: the plan's link, or a one-time invite to its VIP
  chat (``createChatInviteLink``, ``member_limit`` 1, an expiry, named after
  the payment, made once and kept on the payment), inside the ``paid`` message.
  At least once until Telegram acknowledges it, never twice: the payment's
  ``delivery_state`` is the record (a delivered payment is never sent again,
  whatever Redis holds), the send key only covers the moment between
  Telegram's answer and that record.
- :meth:`Delivery.notify_owners`: a sale notice to each owner, once.
- :meth:`Delivery.schedule_upsells`: the upsells of the plan paid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.errors import FleetError, SendFailed
from fleet.funnel import steps
from fleet.funnel.offers import deliverable
from fleet.metrics import FleetMetrics
from fleet.money import format_brl
from fleet.sales.followups import FollowUps, FunnelLookup
from fleet.sales.outbound import Outbound
from storage.funnel import FunnelStore
from storage.models import Payment
from storage.repositories.funnel import DeliveryState

log = logging.getLogger(__name__)

INVITE_TTL = timedelta(days=2)  # an unused invite stops working after this


class DeliveryPending(FleetError):
    """Not delivered yet (Telegram away, unsure, or the bot cannot invite): tried again."""


class Delivery:
    def __init__(
        self,
        funnels: FunnelLookup,
        store: FunnelStore,
        outbound: Outbound,
        followups: FollowUps,
        metrics: FleetMetrics,
        *,
        is_done: Callable[[str], Any],
    ) -> None:
        self._funnels = funnels
        self._store = store
        self._outbound = outbound
        self._followups = followups
        self._metrics = metrics
        self._is_done = is_done  # async (key) -> bool: Telegram acknowledged that send

    async def deliver(self, topic: str, event: dict[str, Any]) -> None:
        payment_id = int(event["payment_id"])
        payment = await self._store.begin_delivery(payment_id)
        if payment is None:
            return  # delivered before (or not paid): never twice
        funnel = self._funnels(payment.bot_id)
        target = deliverable(funnel, payment.offer_ref) if funnel is not None else None
        if funnel is None or target is None:
            self._metrics.deliveries.labels("none", "undeliverable").inc()
            log.error(
                "bot %s: payment %s (%s) paid but nothing configured to deliver",
                payment.bot_id, payment.id, payment.offer_ref,
            )  # fmt: skip
            await self._store.delivered(payment.id, datetime.now(UTC), DeliveryState.UNDELIVERABLE)
            return
        kind = "link" if target.link is not None else "invite"
        link = target.link or await self._invite(payment, int(target.vip_chat_id or 0))
        first_name = await self._store.first_name(payment.bot_id, payment.telegram_user_id)
        filled = steps.values(
            first_name, plan=payment.description, amount=format_brl(payment.amount_cents), link=link
        )
        send = steps.notice(funnel.messages.paid, filled, "access")
        purpose = "deliver"
        outcomes = await self._outbound.send(
            payment.bot_id, payment.telegram_user_id, [send], purpose=purpose,
            key=(payment.id,), at_least_once=True, epoch=time.time_ns() // 1_000_000,
        )  # fmt: skip
        result = outcomes[0].result if outcomes else "failed"
        key = self._outbound.key(
            payment.bot_id, payment.telegram_user_id, purpose, (payment.id,), send.part
        )
        if result == "skipped" and await self._is_done(key):
            result = "ok"  # acknowledged by an attempt that died before recording it
        if result in ("ok", "blocked"):
            state = DeliveryState.DELIVERED if result == "ok" else DeliveryState.BLOCKED
            await self._store.delivered(payment.id, datetime.now(UTC), state)
            self._metrics.deliveries.labels(
                kind, "delivered" if result == "ok" else "blocked"
            ).inc()
            self._metrics.funnel_steps.labels(payment.bot_id, "delivered").inc()
            log.info("bot %s: payment %s delivered (%s)", payment.bot_id, payment.id, result)
            return
        self._metrics.deliveries.labels(kind, "retry").inc()
        raise DeliveryPending(f"payment {payment.id}: access not acknowledged ({result})")

    async def _invite(self, payment: Payment, chat_id: int) -> str:
        """The payment's one-time invite: made once, kept on the payment."""
        if payment.access_link is not None:
            return payment.access_link
        expires = int((datetime.now(UTC) + INVITE_TTL).timestamp())
        request = {
            "chat_id": chat_id, "name": f"pay_{payment.id}", "member_limit": 1,
            "expire_date": expires,
        }  # fmt: skip
        outcome = await self._outbound.sender.call(
            payment.bot_id, "createChatInviteLink", request, chat_id=chat_id, chat_kind="service"
        )
        answer = outcome.answer if isinstance(outcome.answer, dict) else {}
        link = answer.get("invite_link")
        if not outcome.ok or not isinstance(link, str):
            self._metrics.deliveries.labels("invite", "retry").inc()
            raise DeliveryPending(
                f"bot {payment.bot_id}: no invite for payment {payment.id}: {outcome.description}"
            )
        return await self._store.keep_access_link(payment.id, link)

    async def notify_owners(self, topic: str, event: dict[str, Any]) -> None:
        funnel = self._funnels(str(event["bot_id"]))
        if funnel is None or not funnel.owner_chat_ids:
            return
        bot_id, payment_id = str(event["bot_id"]), int(event["payment_id"])
        buyer = await self._store.first_name(bot_id, int(event["telegram_user_id"])) or "?"
        send = steps.sale(
            bot_id, str(event["offer_ref"]), int(event["amount_cents"]), buyer, payment_id
        )
        for owner in funnel.owner_chat_ids:
            try:
                await self._outbound.send(bot_id, owner, [send], purpose="sale", key=(payment_id,))
            except SendFailed as exc:  # e.g. the owner never opened the bot: not retried
                log.warning("bot %s: sale notice to an owner not sent: %s", bot_id, exc)

    async def schedule_upsells(self, topic: str, event: dict[str, Any]) -> None:
        payment = await self._store.payment(int(event["payment_id"]))
        if payment is not None:
            first_name = await self._store.first_name(payment.bot_id, payment.telegram_user_id)
            await self._followups.after_paid(payment, first_name)
