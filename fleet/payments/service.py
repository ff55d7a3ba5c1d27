"""Charges and confirmations: where gateways, the database and the metrics meet.

- :meth:`PaymentService.charge`: one charge for a user and an offer, amount
  decided on the server, through the bot's gateway (reused, refused during a
  cool-down, never two for one double click).
- :meth:`PaymentService.process`: an inbox row (a stored webhook) applied: a
  trusted (signed) notice as it is, any other after fetching the charge from
  the gateway with our credentials; a gateway that fails leaves the row for a
  retry with back-off.
- :meth:`PaymentService.reconcile`: pending charges asked about, so a lost
  webhook never loses a sale; past their expiry (and the gateway agreeing, or
  an hour later regardless) they expire.
- :meth:`PaymentService.check`: "I paid": one charge asked about now.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleet.config import PaymentsConfig
from fleet.errors import FleetError
from fleet.metrics import FleetMetrics
from fleet.payments.base import (
    Charge,
    ChargeNotFound,
    ChargeRequest,
    Gateway,
    GatewayError,
    GatewayState,
    GatewayUnavailable,
)
from storage.models import OutboxEvent, Payment, PaymentEvent, PaymentStatus
from storage.payments import (
    Application,
    Applied,
    Charges,
    Opened,
    PaymentInbox,
    PaymentLedger,
    Word,
)
from storage.quota import UserQuota
from storage.repositories.payments import NewCharge

log = logging.getLogger(__name__)

_GIVEN_BACK = (PaymentStatus.REFUNDED, PaymentStatus.CHARGEBACK)  # trusted only once fetched
_EXPIRY_GRACE = timedelta(minutes=2)  # a payment at the last second still lands
_EXPIRE_ANYWAY = timedelta(hours=1)  # the gateway unreachable this long past expiry
_UNCONFIRMED_TRIES = 4  # a claim the gateway does not confirm: asked about this often
_CREATE_PAUSES = (0.3, 1.0)  # a charge asked for three times before the buyer hears "later"


class TooManyChecks(FleetError):
    """A buyer asked about their charge too often; ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many payment checks; again in {retry_after:.0f} s")
        self.retry_after = retry_after


def url_secret(instance_secret: str, gateway_id: str) -> str:
    """The secret in a gateway's webhook URL: per gateway, derived, never stored."""
    digest = hmac.new(instance_secret.encode(), f"gateway:{gateway_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class ChargeResult:
    result: Opened  # new, reused, busy, cooldown
    payment: Payment | None = None
    retry_after: float = 0.0
    notice: str | None = None  # text the gateway's terms want in the PIX message


class PaymentService:
    def __init__(
        self,
        gateways: dict[str, Gateway],
        charges: Charges,
        ledger: PaymentLedger,
        inbox: PaymentInbox,
        config: PaymentsConfig,
        metrics: FleetMetrics,
        *,
        public_url: str | None,
        check_quota: UserQuota | None = None,
    ) -> None:
        self.gateways = gateways
        self._charges = charges
        self._ledger = ledger
        self._inbox = inbox
        self._config = config
        self._metrics = metrics
        self._public_url = public_url.rstrip("/") if public_url else None
        self._check_quota = check_quota
        self.on_transition: Callable[[], None] = _nothing  # e.g. wake the outbox job

    def webhook_url(self, gateway_id: str) -> str | None:
        if self._public_url is None or self._config.url_secret is None:
            return None
        secret = url_secret(self._config.url_secret.get_secret_value(), gateway_id)
        return f"{self._public_url}/webhook/payment/{gateway_id}/{secret}"

    async def get(self, payment_id: int) -> Payment | None:
        return await self._charges.get(payment_id)

    async def history(
        self, payment_id: int
    ) -> tuple[Payment, Sequence[PaymentEvent], Sequence[OutboxEvent]] | None:
        """A charge, the webhooks stored for it and the domain events it produced."""
        payment = await self._charges.get(payment_id)
        if payment is None:
            return None
        return payment, *(await self._charges.history(payment))

    # -- charges --------------------------------------------------------------------------

    async def charge(
        self,
        bot_id: str,
        user_id: int,
        gateway_id: str,
        *,
        offer_ref: str,
        description: str,
        amount_cents: int,
        cooldown: bool = True,
        request_key: str | None = None,
    ) -> ChargeResult:
        """Raises GatewayError when the gateway refused or could not be reached.

        ``cooldown`` False: an offer the server made (a downsell, an upsell) is taken: the
        user's cool-down does not apply (a repeat still finds the same pending charge).
        ``request_key``: names the request (e.g. the update asking): a retry of it resumes
        its own charge at once, with the same idempotency key at the gateway."""
        gateway = self.gateways[gateway_id]
        now = datetime.now(UTC)
        config = self._config
        opening = await self._charges.open(
            NewCharge(
                bot_id=bot_id,
                telegram_user_id=user_id,
                offer_ref=offer_ref,
                description=description,
                amount_cents=amount_cents,
                currency=config.currency,
                gateway_id=gateway_id,
                idempotency_key=_key(request_key) if request_key else str(uuid.uuid4()),
                expires_at=now + timedelta(minutes=config.pix_expiry_minutes),
            ),
            now,
            reuse=timedelta(seconds=config.reuse_seconds),
            cooldown=timedelta(seconds=config.cooldown_seconds if cooldown else 0),
            resume_after=timedelta(seconds=config.resume_after_seconds),
        )
        counter = self._metrics.charges
        if opening.result not in (Opened.NEW, Opened.RESUMED) or opening.payment is None:
            counter.labels(gateway_id, opening.result).inc()
            return ChargeResult(
                opening.result, opening.payment, opening.retry_after, gateway.notice
            )
        payment = opening.payment
        request = ChargeRequest(
            idempotency_key=payment.idempotency_key,
            reference=str(payment.id),
            amount_cents=payment.amount_cents,
            currency=payment.currency,
            description=payment.description,
            expires_at=payment.expires_at,
            notification_url=self.webhook_url(gateway_id),
            payer_ref=_payer_ref(bot_id, user_id),
        )
        try:
            made = await _create(gateway, request)
        except GatewayError:
            counter.labels(gateway_id, "failed").inc()
            await self._charges.give_up(payment.id)
            raise
        # Cancelled, or the database failed from here on: the row stays "being made"; the
        # same request again (or anyone after resume_after) finishes it with the same key.
        expires = made.expires_at or payment.expires_at
        payment = await self._charges.attach(
            payment.id,
            transaction_id=made.transaction_id,
            pix_code=made.pix_code,
            qr_png_base64=made.qr_png_base64,
            expires_at=min(expires, payment.expires_at),
        )
        counter.labels(gateway_id, opening.result).inc()
        log.info("bot %s: charge %s created (%s)", bot_id, payment.id, gateway_id)
        return ChargeResult(Opened.NEW, payment, notice=gateway.notice)

    # -- confirmations --------------------------------------------------------------------

    async def process(self, row: PaymentEvent, now: datetime) -> str:
        """Apply one stored webhook; returns the result recorded on the row ("retry..." to
        try again later)."""
        (result,) = await self.process_many([row], now)
        return result

    async def process_many(self, rows: Sequence[PaymentEvent], now: datetime) -> list[str]:
        """Apply stored webhooks in order: what each says is judged first (a gateway asked
        where the body is not proof), then every word is applied in one transaction."""
        results: list[str | None] = []
        words: list[Word] = []
        for row in rows:
            judged = await self._judge(row)
            if isinstance(judged, Word):
                words.append(judged)
                results.append(None)
            else:
                results.append(judged)
        applied = iter(await self._apply_many(words, now, "webhook"))
        return [result if result is not None else next(applied).result.value for result in results]

    async def _judge(self, row: PaymentEvent) -> Word | str:
        """The word to apply for a stored webhook, or the row's final or "retry" result."""
        gateway = self.gateways.get(row.gateway_id)
        if gateway is None:
            return "gateway not configured"
        claimed = PaymentStatus(row.claimed_status) if row.claimed_status else None
        if row.trusted and claimed is not None and claimed not in _GIVEN_BACK:
            return Word(
                row.gateway_id,
                row.transaction_id,
                claimed,
                row.claimed_amount_cents,
                row.claimed_currency,
                row.claimed_paid_at,
            )
        counted = self._metrics.payment_events_processed
        try:
            word = _word(row.gateway_id, await gateway.fetch(row.transaction_id))
        except ChargeNotFound:
            counted.labels(row.gateway_id, "unknown").inc()
            return "unknown transaction at the gateway"
        except GatewayError as exc:
            counted.labels(row.gateway_id, "retry").inc()
            return f"retry: {type(exc).__name__}"
        if claimed not in (None, word.status) and word.status == PaymentStatus.PENDING:
            # The body claims more than the gateway says: forged, or the gateway's API
            # lags its webhook. Asked again a few times; never believed.
            counted.labels(row.gateway_id, "unconfirmed").inc()
            said = f"the gateway says pending, not {claimed}"
            if row.attempts < _UNCONFIRMED_TRIES:
                return f"retry: {said}"
            return f"unconfirmed: {said}"
        return word

    async def reconcile(self, now: datetime, limit: int = 100) -> int:
        """Ask the gateways about pending charges older than the configured age."""
        before = now - timedelta(seconds=self._config.reconcile_after_seconds)
        asked = 0
        for payment in await self._charges.pending_older_than(before, limit):
            gateway = self.gateways.get(payment.gateway_id)
            if gateway is None or payment.transaction_id is None:
                continue
            asked += 1
            try:
                state = await gateway.fetch(payment.transaction_id)
            except GatewayUnavailable:
                if now > payment.expires_at + _EXPIRE_ANYWAY:
                    await self._expire(payment, now)
                continue  # the gateway is away: next round
            except ChargeNotFound:
                # The gateway does not know it (a sandbox restarted, an account changed): it
                # cannot be paid there; it expires when due, quietly until then.
                if now > payment.expires_at + _EXPIRY_GRACE:
                    log.warning(
                        "bot %s: charge %s unknown at %s; expired",
                        payment.bot_id, payment.id, payment.gateway_id,
                    )  # fmt: skip
                    await self._expire(payment, now)
                continue
            except GatewayError as exc:
                log.warning(
                    "bot %s: charge %s: not reconciled (%s)", payment.bot_id, payment.id, exc
                )
                continue
            word = _word(payment.gateway_id, state)
            if word.status == PaymentStatus.PENDING and now > payment.expires_at + _EXPIRY_GRACE:
                await self._expire(payment, now)
            elif word.status != PaymentStatus.PENDING:
                await self._apply(word, now, "reconcile")
        return asked

    async def check(
        self, payment_id: int, now: datetime, *, buyer: tuple[str, int] | None = None
    ) -> Payment | None:
        """ "I paid": the charge fetched from its gateway and applied now.

        ``buyer`` (bot id, user id): a buyer asking, who sees only their own charges
        (another's is None) and at most ``payments.checks_per_minute`` times a minute
        (:class:`TooManyChecks`). Without it: an operator. Raises GatewayError.
        """
        payment = await self._charges.get(payment_id)
        if payment is not None and buyer is not None:
            if (payment.bot_id, payment.telegram_user_id) != buyer:
                return None
            wait = await self._check_quota.take(*buyer) if self._check_quota else 0.0
            if wait:
                self._metrics.payment_checks.labels(payment.gateway_id, "limited").inc()
                raise TooManyChecks(wait)
        if payment is None or payment.transaction_id is None:
            return payment
        self._metrics.payment_checks.labels(payment.gateway_id, "asked").inc()
        gateway = self.gateways.get(payment.gateway_id)
        if gateway is not None and payment.status == PaymentStatus.PENDING:
            state = await gateway.fetch(payment.transaction_id)  # raises GatewayError
            await self._apply(_word(payment.gateway_id, state), now, "check")
        return await self._charges.get(payment_id)

    async def _expire(self, payment: Payment, now: datetime) -> None:
        assert payment.transaction_id is not None
        word = Word(payment.gateway_id, payment.transaction_id, PaymentStatus.EXPIRED, None, None)
        await self._apply(word, now, "expiry")

    async def _apply(self, word: Word, now: datetime, source: str) -> Application:
        (applied,) = await self._apply_many([word], now, source)
        return applied

    async def _apply_many(
        self, words: Sequence[Word], now: datetime, source: str
    ) -> list[Application]:
        """Each word applied (one transaction for all); one Application per word."""
        expanded: list[Word] = []
        ends: list[int] = []  # index in ``expanded`` of each word's own application
        for word in words:
            if word.status in _GIVEN_BACK and word.paid_at is not None:
                # Refunded (or charged back) after a payment we may not have seen yet, e.g.
                # the events came out of order: the payment first, then the refund, each once.
                expanded.append(
                    Word(
                        word.gateway_id, word.transaction_id, PaymentStatus.PAID,
                        word.amount_cents, word.currency, word.paid_at,
                    )
                )  # fmt: skip
            expanded.append(word)
            ends.append(len(expanded) - 1)
        if not expanded:
            return []
        applications = await self._ledger.apply_many(expanded, now, source=source)
        for word, applied in zip(expanded, applications, strict=True):
            self._count(word, applied, now, source)
        return [applications[i] for i in ends]

    def _count(self, word: Word, applied: Application, now: datetime, source: str) -> None:
        gateway = word.gateway_id
        if source == "webhook":
            self._metrics.payment_events_processed.labels(gateway, applied.result).inc()
        if applied.result == Applied.MISMATCH:
            self._metrics.payment_amount_mismatches.labels(gateway).inc()
            log.error(
                "bot %s: charge %s: the gateway reports %s %s, not what we charged; not accepted",
                applied.bot_id, applied.payment_id, word.amount_cents, word.currency,
            )  # fmt: skip
        elif applied.result == Applied.MOVED and applied.after is not None:
            self.on_transition()
            self._metrics.payment_transitions.labels(gateway, applied.after, source).inc()
            # Paid at the gateway (when it says so, else the charge's creation) -> here.
            since = word.paid_at or applied.created_at
            if applied.after == PaymentStatus.PAID and since is not None:
                seconds = max(0.0, (now - since).total_seconds())
                self._metrics.payment_confirm_seconds.labels(gateway).observe(seconds)
            log.info(
                "bot %s: charge %s: %s -> %s (%s)",
                applied.bot_id, applied.payment_id, applied.before, applied.after, source,
            )  # fmt: skip


async def _create(gateway: Gateway, request: ChargeRequest) -> Charge:
    """The charge made, asking again with the same idempotency key while the gateway is
    unreachable (an answer lost on the way back yields the charge already made)."""
    for pause in _CREATE_PAUSES:
        try:
            return await gateway.create_charge(request)
        except GatewayUnavailable:
            await asyncio.sleep(pause)  # back-off between attempts, not a lock
    return await gateway.create_charge(request)


def _nothing() -> None:
    return None


def _word(gateway_id: str, state: GatewayState) -> Word:
    return Word(
        gateway_id,
        state.transaction_id,
        state.status,
        state.amount_cents,
        state.currency,
        state.paid_at,
    )


def _key(request_key: str) -> str:
    return hashlib.sha256(f"charge:{request_key}".encode()).hexdigest()[:48]


def _payer_ref(bot_id: str, user_id: int) -> str:
    """A stable pseudonym for the buyer (gateways want a payer; we send no one's data)."""
    return hashlib.sha256(f"{bot_id}:{user_id}".encode()).hexdigest()[:24]
