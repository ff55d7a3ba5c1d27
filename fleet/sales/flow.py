"""A user's way through the funnel, one update at a time (what the handlers call).

- :meth:`SalesFlow.start`: attribution (first touch kept, last touch updated),
  the funnel begun again (bump session and pending downsells dropped), the
  welcome (once per update: every send has its key).
- :meth:`SalesFlow.press`: a button. The callback data names an id the server
  looks up; anything that does not decode, names what the configuration does
  not know, another session's bump, an offer never made to this user or a
  charge of someone else gets a polite answer and charges nothing. The query
  is answered before the slow work (the gateway).
- :meth:`SalesFlow.stats`: the owners' figures.

Every price comes from :mod:`fleet.funnel.offers` (configuration + database).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from datetime import UTC, datetime
from datetime import time as day_time

from fleet.batcher import BatchWriter
from fleet.config_funnel import FunnelConfig, Plan
from fleet.context import Buyer, UpdateScope
from fleet.errors import RetryLater
from fleet.funnel import callbacks as cb
from fleet.funnel import steps
from fleet.funnel.attribution import read_touch, start_payload
from fleet.funnel.offers import Offer, downsell_offer, plan_offer, upsell_offer
from fleet.metrics import FleetMetrics
from fleet.money import format_brl
from fleet.payments.base import GatewayError
from fleet.payments.service import PaymentService, TooManyChecks
from fleet.sales.followups import DOWNSELL, UPSELL, FollowUps, FunnelLookup
from fleet.sales.outbound import Outbound
from storage.bumps import BumpSessions
from storage.funnel import FunnelStore
from storage.models import PaymentStatus
from storage.payments import Opened
from storage.repositories.funnel import Start

log = logging.getLogger(__name__)


class ChargeInMaking(RetryLater):
    """The same charge is being made right now: the update is tried again shortly."""


class SalesFlow:
    def __init__(
        self,
        funnels: FunnelLookup,
        payments: PaymentService,
        store: FunnelStore,
        bumps: BumpSessions,
        outbound: Outbound,
        followups: FollowUps,
        metrics: FleetMetrics,
        starts: BatchWriter[Start],
    ) -> None:
        self._funnels = funnels
        self._starts = starts
        # Built once per funnel object (a reload makes new ones): the welcome's buttons.
        self._keyboards: dict[int, tuple[FunnelConfig, steps.Keyboard | None]] = {}
        self._payments = payments
        self._store = store
        self._bumps = bumps
        self._out = outbound
        self._followups = followups
        self._metrics = metrics

    def _keyboard(self, funnel: FunnelConfig) -> steps.Keyboard | None:
        kept = self._keyboards.get(id(funnel))
        if kept is None or kept[0] is not funnel:
            if len(self._keyboards) > 4096:  # reloads: drop funnels of the past
                self._keyboards.clear()
            kept = self._keyboards[id(funnel)] = (funnel, steps.welcome_keyboard(funnel))
        return kept[1]

    def _step(self, bot_id: str, step: str) -> None:
        self._metrics.funnel_steps.labels(bot_id, step).inc()

    # -- /start ----------------------------------------------------------------------------

    async def start(self, buyer: Buyer, text: str | None, scope: UpdateScope) -> None:
        began = time.perf_counter()
        funnel = self._funnels(buyer.bot_id)
        if funnel is None:
            return
        try:
            touch = read_touch(start_payload(text))
        except ValueError:
            touch = None
            self._metrics.funnel_rejected.labels(buyer.bot_id, "payload").inc()
        self._step(buyer.bot_id, "start")
        await self._bumps.close(buyer.bot_id, buyer.user_id)  # Redis: the sender needs it too
        filled = steps.values(buyer.first_name)
        welcome = steps.welcome(funnel, filled, self._keyboard(funnel))
        await self._out.send(
            buyer.bot_id, buyer.user_id, welcome, purpose="welcome",
            key=(scope.update_id,), scope=scope,
        )  # fmt: skip
        self._step(buyer.bot_id, "welcome")
        # Batched (one statement per batch, like user sightings): while PostgreSQL is away
        # the user is answered all the same and the row waits in the bounded batch.
        self._starts.add(
            Start(
                bot_id=buyer.bot_id,
                telegram_user_id=buyer.user_id,
                at=datetime.now(UTC),
                first_name=buyer.first_name,
                username=buyer.username,
                tracking_token=touch.tracking_token if touch else None,
                campaign_code=touch.campaign_code if touch else None,
            )
        )
        self._metrics.funnel_step_seconds.labels("start").observe(time.perf_counter() - began)

    # -- buttons ---------------------------------------------------------------------------

    async def press(
        self, buyer: Buyer, query_id: str, data: str | None, scope: UpdateScope
    ) -> None:
        began = time.perf_counter()
        funnel = self._funnels(buyer.bot_id)
        action = cb.decode(data)
        step = "stale"
        if funnel is None or action is None:
            await self._refuse(buyer, query_id, funnel, "malformed")
        else:
            match action:
                case cb.ChoosePlan(plan_id):
                    step = await self._choose(buyer, query_id, funnel, plan_id, scope)
                case cb.AnswerBump():
                    step = await self._bump(buyer, query_id, funnel, action, scope)
                case cb.CheckPayment(payment_id):
                    step = await self._check(buyer, query_id, funnel, payment_id, scope)
                case cb.TakeDownsell(offer_id) | cb.TakeUpsell(offer_id):
                    kind = DOWNSELL if isinstance(action, cb.TakeDownsell) else UPSELL
                    step = await self._take(buyer, query_id, funnel, kind, offer_id, scope)
        self._metrics.funnel_step_seconds.labels(step).observe(time.perf_counter() - began)

    async def _answer(self, buyer: Buyer, query_id: str, text: str | None = None) -> None:
        """Stop the button's spinner (first: the client waits for it). Failing is harmless:
        the query may be too old, the work goes on."""
        payload: dict[str, object] = {"callback_query_id": query_id}
        if text:
            payload["text"] = text
        await self._out.sender.call(
            buyer.bot_id, "answerCallbackQuery", payload, chat_id=buyer.user_id, chat_kind="service"
        )

    async def _refuse(
        self, buyer: Buyer, query_id: str, funnel: FunnelConfig | None, reason: str
    ) -> None:
        self._metrics.funnel_rejected.labels(buyer.bot_id, reason).inc()
        log.info("bot %s: button refused (%s)", buyer.bot_id, reason)
        stale = funnel.messages.stale if funnel is not None else None
        await self._answer(buyer, query_id, stale)

    async def _choose(
        self, buyer: Buyer, query_id: str, funnel: FunnelConfig, plan_id: str, scope: UpdateScope
    ) -> str:
        plan = funnel.plan(plan_id)
        if plan is None:
            await self._refuse(buyer, query_id, funnel, "unknown")
            return "stale"
        await self._answer(buyer, query_id)
        self._step(buyer.bot_id, "plan")
        if plan.order_bumps:
            session = await self._bumps.open(buyer.bot_id, buyer.user_id, plan.id)
            await self._show_bump(buyer, plan, session.nonce, plan.order_bumps[0].id, scope)
            return "plan"
        offer = plan_offer(funnel, plan.id)
        assert offer is not None  # the plan exists
        await self._charge(buyer, funnel, offer, scope)
        return "pix"

    async def _show_bump(
        self, buyer: Buyer, plan: Plan, nonce: str, bump_id: str, scope: UpdateScope
    ) -> None:
        bump = next(b for b in plan.order_bumps if b.id == bump_id)
        # Keyed by session and bump, not by update: a retried or doubled press shows it once.
        await self._out.send(
            buyer.bot_id, buyer.user_id, [steps.bump(bump, nonce, steps.values(buyer.first_name))],
            purpose="bump", key=(nonce,), scope=scope,
        )  # fmt: skip

    async def _bump(
        self,
        buyer: Buyer,
        query_id: str,
        funnel: FunnelConfig,
        action: cb.AnswerBump,
        scope: UpdateScope,
    ) -> str:
        session = await self._bumps.answer(
            buyer.bot_id, buyer.user_id, action.session, action.bump_id, action.accepted,
            scope.update_id,
        )  # fmt: skip
        plan = funnel.plan(session.plan_id) if session is not None else None
        if (
            session is None
            or plan is None
            or action.bump_id not in {b.id for b in plan.order_bumps}
        ):
            await self._refuse(buyer, query_id, funnel, "stale")
            return "stale"
        await self._answer(buyer, query_id)
        self._step(buyer.bot_id, "bump_accepted" if action.accepted else "bump_declined")
        following = session.next_bump([b.id for b in plan.order_bumps])
        if following is not None:
            await self._show_bump(buyer, plan, session.nonce, following, scope)
            return "bump"
        offer = plan_offer(funnel, plan.id, session.accepted())
        assert offer is not None  # accepted bumps are the plan's (checked above)
        await self._charge(buyer, funnel, offer, scope)
        return "pix"

    async def _take(
        self,
        buyer: Buyer,
        query_id: str,
        funnel: FunnelConfig,
        kind: str,
        offer_id: str,
        scope: UpdateScope,
    ) -> str:
        offered = await self._store.offered(buyer.bot_id, buyer.user_id, kind, offer_id)
        offer: Offer | None = None
        if offered is not None and kind == DOWNSELL:
            plan = offered.get("plan")
            base = int(offered["base_cents"])
            offer = downsell_offer(funnel, offer_id, base, str(plan) if plan else None)
        elif offered is not None:
            offer = upsell_offer(funnel, offer_id)
        if offer is None:
            await self._refuse(buyer, query_id, funnel, "not offered")
            return "stale"
        await self._answer(buyer, query_id)
        self._step(buyer.bot_id, f"{kind}_taken")
        await self._charge(buyer, funnel, offer, scope, follow_up=False)
        return "pix"

    # -- PIX -------------------------------------------------------------------------------

    async def _charge(
        self,
        buyer: Buyer,
        funnel: FunnelConfig,
        offer: Offer,
        scope: UpdateScope,
        *,
        follow_up: bool = True,
    ) -> None:
        bot_id, user_id = buyer.bot_id, buyer.user_id
        assert funnel.gateway is not None  # a funnel with plans names one (config check)
        filled = steps.values(
            buyer.first_name, plan=offer.title, amount=format_brl(offer.amount_cents)
        )
        try:
            made = await self._payments.charge(
                bot_id, user_id, funnel.gateway, offer_ref=offer.ref, description=offer.title,
                amount_cents=offer.amount_cents, cooldown=follow_up,
                request_key=f"{bot_id}:{user_id}:{scope.update_id}:{offer.ref}",
            )  # fmt: skip
        except GatewayError as exc:
            log.warning("bot %s: no PIX for %s: %s", bot_id, offer.ref, exc)
            await self._note(buyer, funnel.messages.unavailable, filled, "unavailable", scope)
            return
        payment = made.payment
        if made.result == Opened.BUSY:
            # Being made by another press, or by an instance that died mid-call: this update
            # waits (retried with back-off) for it, or for its turn to finish it.
            raise ChargeInMaking(f"bot {bot_id}: a charge for {offer.ref} is being made")
        if made.result == Opened.COOLDOWN or payment is None:
            self._step(bot_id, "cooldown")
            await self._note(buyer, funnel.messages.cooldown, filled, "cooldown", scope)
            return
        reused = made.result == Opened.REUSED
        self._step(bot_id, "pix_reused" if reused else "pix")
        filled |= {
            "pix_code": payment.pix_code or "",
            "expires_at": steps.when(payment.expires_at),
        }
        sends = steps.pix(
            funnel, filled, payment_id=payment.id, qr_png=_png(payment.qr_png_base64),
            notice=made.notice,
        )  # fmt: skip
        # Keyed by the payment: the PIX of one charge is shown once, whichever update asks.
        await self._out.send(bot_id, user_id, sends, purpose="pix", key=(payment.id,), scope=scope)
        if reused:
            await self._note(buyer, funnel.messages.reused, filled, "reused", scope)
        if follow_up:  # reused too: a retried update whose first run died before this point
            await self._followups.after_pix(payment, buyer.first_name)

    async def _note(
        self,
        buyer: Buyer,
        template: str,
        filled: dict[str, str],
        part: str,
        scope: UpdateScope,
        purpose: str = "pix",
    ) -> None:
        """A plain message about the charge this update is about (once per update)."""
        await self._out.send(
            buyer.bot_id, buyer.user_id, [steps.notice(template, filled, part)],
            purpose=purpose, key=(scope.update_id,), scope=scope,
        )  # fmt: skip

    async def _check(
        self, buyer: Buyer, query_id: str, funnel: FunnelConfig, payment_id: int, scope: UpdateScope
    ) -> str:
        payment = await self._payments.get(payment_id)
        if payment is None or (payment.bot_id, payment.telegram_user_id) != (
            buyer.bot_id,
            buyer.user_id,
        ):
            await self._refuse(buyer, query_id, funnel, "foreign")
            return "stale"
        await self._answer(buyer, query_id, "Verificando o seu pagamento…")
        self._step(buyer.bot_id, "check")
        try:
            checked = await self._payments.check(
                payment_id, datetime.now(UTC), buyer=(buyer.bot_id, buyer.user_id)
            )
        except TooManyChecks:
            return "check"  # asked a lot: the answer above is all they get for now
        except GatewayError as exc:
            log.warning("bot %s: payment %s not checked: %s", buyer.bot_id, payment_id, exc)
            checked = payment
        if checked is None or checked.status == PaymentStatus.PAID:
            return "check"  # paid: the delivery (outbox) sends the access
        template = (
            funnel.messages.expired
            if checked.status == PaymentStatus.EXPIRED
            else funnel.messages.pending
        )
        filled = steps.values(
            buyer.first_name, plan=checked.description, amount=format_brl(checked.amount_cents)
        )
        await self._note(buyer, template, filled, "status", scope, purpose="check")
        return "check"

    # -- owners ----------------------------------------------------------------------------

    async def stats(self, bot_id: str, chat_id: int, scope: UpdateScope) -> bool:
        """/stats for an owner (True), or nothing for anyone else (False)."""
        funnel = self._funnels(bot_id)
        if funnel is None or chat_id not in funnel.owner_chat_ids:
            return False
        midnight = datetime.combine(datetime.now(steps.BRASILIA).date(), day_time(), steps.BRASILIA)
        today = await self._store.figures(bot_id, midnight)
        total = await self._store.figures(bot_id, None)
        rows = [
            ("Usuários", today.users, total.users),
            ("/start", today.starts, total.starts),
            ("PIX gerados", today.charges, total.charges),
            ("Vendas", today.sales, total.sales),
        ]
        lines = [f"📊 <b>{bot_id}</b> (hoje / total)"]
        lines += [f"{name}: {a} / {b}" for name, a, b in rows]
        lines.append(
            f"Faturamento: {format_brl(today.revenue_cents)} / {format_brl(total.revenue_cents)}"
        )
        text = "\n".join(lines)
        self._step(bot_id, "stats")
        report = steps.Send("sendMessage", {"text": text, "parse_mode": "HTML"}, "stats")
        await self._out.send(
            bot_id, chat_id, [report], purpose="stats", key=(scope.update_id,), scope=scope
        )
        return True


def _png(encoded: str | None) -> bytes | None:
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
