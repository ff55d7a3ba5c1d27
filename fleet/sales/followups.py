"""Downsells and upsells: offers sent later, as durable timers (``fleet.timers``).

A downsell is scheduled for each plan PIX (the user's earlier downsells of an
unpaid PIX make way: the clock starts again at the newest PIX) and fires only
if the user bought nothing from this bot since that PIX; its price is computed
here, from the configuration and the charge stored in the database. An upsell
is scheduled when a plan named by its ``after_plan`` is paid and fires unless
the user bought it already. A fired offer is recorded on its timer (``sent``),
and only an offer recorded so can be taken: a forged ``ds:``/``up:`` button
charges nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fleet.config_funnel import FunnelConfig
from fleet.funnel import steps
from fleet.funnel.offers import Offer, downsell_offer, plan_of, upsell_offer
from fleet.metrics import FleetMetrics
from fleet.sales.outbound import Outbound
from storage.funnel import FunnelStore
from storage.models import Payment, Timer
from storage.repositories.timers import NewTimer

log = logging.getLogger(__name__)

DOWNSELL = "downsell"
UPSELL = "upsell"

FunnelLookup = Callable[[str], FunnelConfig | None]


class FollowUps:
    def __init__(
        self, funnels: FunnelLookup, store: FunnelStore, outbound: Outbound, metrics: FleetMetrics
    ) -> None:
        self._funnels = funnels
        self._store = store
        self._outbound = outbound
        self._metrics = metrics

    async def after_pix(self, payment: Payment, first_name: str | None) -> None:
        """Schedule the funnel's downsells for a new plan PIX."""
        funnel = self._funnels(payment.bot_id)
        plan_id = plan_of(payment.offer_ref)
        if funnel is None or not funnel.downsells or not payment.offer_ref.startswith("plan:"):
            return
        timers = [
            NewTimer(
                bot_id=payment.bot_id,
                telegram_user_id=payment.telegram_user_id,
                kind=DOWNSELL,
                key=f"{DOWNSELL}:{payment.bot_id}:{payment.telegram_user_id}:{d.id}:{payment.id}",
                due_at=payment.created_at + timedelta(seconds=d.after),
                payload=_downsell(d.id, plan_id, payment, first_name),
            )
            for d in funnel.downsells
        ]
        await self._store.offer_later(payment.bot_id, payment.telegram_user_id, DOWNSELL, timers)

    async def after_paid(self, payment: Payment, first_name: str | None) -> None:
        """Schedule the upsells that follow the plan just paid."""
        funnel = self._funnels(payment.bot_id)
        plan_id = plan_of(payment.offer_ref)
        if funnel is None or plan_id is None:
            return
        paid_at = payment.paid_at or payment.updated_at
        timers = [
            NewTimer(
                bot_id=payment.bot_id,
                telegram_user_id=payment.telegram_user_id,
                kind=UPSELL,
                key=f"{UPSELL}:{payment.bot_id}:{payment.telegram_user_id}:{u.id}:{payment.id}",
                due_at=paid_at + timedelta(seconds=u.after),
                payload={"offer": u.id, "payment_id": payment.id, "first_name": first_name or ""},
            )
            for u in funnel.upsells
            if u.after_plan == plan_id
        ]
        await self._store.schedule(timers)

    async def fire_downsell(self, timer: Timer) -> str:
        funnel = self._funnels(timer.bot_id)
        data = timer.payload
        if funnel is None:
            return self._moot(timer, "bot not configured")
        offer = downsell_offer(
            funnel, str(data["offer"]), int(data["base_cents"]), data.get("plan")
        )
        if offer is None:
            return self._moot(timer, "offer no longer configured")
        since = datetime.fromisoformat(str(data["since"]))
        if await self._store.bought_since(timer.bot_id, timer.telegram_user_id, since):
            return self._moot(timer, "bought since")
        item = next(d for d in funnel.downsells if d.id == data["offer"])
        filled = steps.values(str(data.get("first_name") or ""), plan=offer.title)
        return await self._offer(timer, [steps.downsell(item, offer, filled)])

    async def fire_upsell(self, timer: Timer) -> str:
        funnel = self._funnels(timer.bot_id)
        data = timer.payload
        offer: Offer | None = upsell_offer(funnel, str(data["offer"])) if funnel else None
        if funnel is None or offer is None:
            return self._moot(timer, "offer no longer configured")
        if await self._store.bought(timer.bot_id, timer.telegram_user_id, offer.ref):
            return self._moot(timer, "bought already")
        item = next(u for u in funnel.upsells if u.id == data["offer"])
        filled = steps.values(str(data.get("first_name") or ""), plan=offer.title)
        return await self._offer(timer, [steps.upsell(item, filled)])

    async def _offer(self, timer: Timer, sends: list[steps.Send]) -> str:
        # At most once (invariant 4): a timer fired again after its instance died finds the
        # claim of the first attempt (an older epoch) and does not send it twice.
        outcomes = await self._outbound.send(
            timer.bot_id, timer.telegram_user_id, sends, purpose=timer.kind,
            key=(timer.id,), epoch=timer.attempts,
        )  # fmt: skip
        result = outcomes[-1].result if outcomes else "failed"
        if result == "blocked":
            return self._moot(timer, "blocked")
        self._metrics.funnel_steps.labels(timer.bot_id, f"{timer.kind}_sent").inc()
        return "sent"  # ok, or claimed before (it went, or may have): the offer stands

    def _moot(self, timer: Timer, why: str) -> str:
        self._metrics.funnel_steps.labels(timer.bot_id, f"{timer.kind}_moot").inc()
        log.info("bot %s: %s timer %s not sent: %s", timer.bot_id, timer.kind, timer.id, why)
        return f"moot: {why}"


def _downsell(
    offer_id: str, plan_id: str | None, payment: Payment, first_name: str | None
) -> dict[str, Any]:
    """What a downsell needs when it fires, decided now on the server."""
    return {
        "offer": offer_id,
        "plan": plan_id,
        "base_cents": payment.amount_cents,
        "payment_id": payment.id,
        "since": payment.created_at.isoformat(),
        "first_name": first_name or "",
    }
