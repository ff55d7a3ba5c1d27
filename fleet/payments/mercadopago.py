"""Mercado Pago (Payments API): PIX charges in reais, webhooks signed with ``x-signature``.

- Charges: ``POST /v1/payments`` with ``X-Idempotency-Key`` (our key, the same on every
  retry of one charge: Mercado Pago answers the payment it already created).
- Webhooks prove their origin only (the HMAC covers ``data.id``, ``x-request-id`` and
  ``ts``, never the body): the notice is untrusted and the payment is fetched with our
  credentials. A ``ts`` more than :data:`TOLERANCE` seconds from our clock is a replay
  (Mercado Pago documents no tolerance; ``ts`` may be in seconds or milliseconds).
- Statuses: ``in_mediation`` (a dispute on a payment) stays pending: it never undoes a
  ``paid`` and never delivers; its outcome comes as approved, refunded or charged_back.
  A ``cancelled`` whose ``status_detail`` is ``expired`` is :attr:`PaymentStatus.EXPIRED`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from fleet.config import GatewayConfig
from fleet.money import PriceError, from_decimal_units, to_decimal_units
from fleet.payments.base import (
    Charge,
    ChargeNotFound,
    ChargeRequest,
    GatewayRefused,
    GatewayState,
    GatewayUnavailable,
    PaymentStatus,
    WebhookNotice,
    WebhookRejected,
    WebhookRequest,
)
from fleet.payments.client import ApiGateway

log = logging.getLogger(__name__)

TOLERANCE = 300.0  # seconds either side of our clock for a webhook's ts
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATUSES = {
    "pending": PaymentStatus.PENDING,
    "authorized": PaymentStatus.PENDING,
    "in_process": PaymentStatus.PENDING,
    "in_mediation": PaymentStatus.PENDING,
    "approved": PaymentStatus.PAID,
    "rejected": PaymentStatus.FAILED,
    "cancelled": PaymentStatus.CANCELLED,
    "refunded": PaymentStatus.REFUNDED,
    "charged_back": PaymentStatus.CHARGEBACK,
}


class MercadoPago(ApiGateway):
    notice: str | None = None

    def __init__(
        self,
        config: GatewayConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        tolerance: float = TOLERANCE,
    ) -> None:
        if config.access_token is None or config.webhook_secret is None:
            raise ValueError(f"gateway {config.id}: access_token and webhook_secret required")
        super().__init__(config, session)
        self._clock = clock
        self._tolerance = tolerance

    async def create_charge(self, request: ChargeRequest) -> Charge:
        if request.currency != "BRL":
            raise GatewayRefused(f"{self.id}: PIX charges are in BRL, not {request.currency}")
        fields: dict[str, Any] = {
            "description": request.description,
            "payment_method_id": "pix",
            "payer": {"email": f"{request.payer_ref}@{self._config.payer_email_domain}"},
            "external_reference": request.reference,
            "date_of_expiration": mp_time(request.expires_at),
        }
        if request.notification_url:
            fields["notification_url"] = request.notification_url
        # The amount as an exact decimal number ("19.90"), never a float.
        amount = format(to_decimal_units(request.amount_cents), "f")
        rest = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        body = f'{{"transaction_amount":{amount},{rest[1:]}'.encode()
        data = self._client.object(
            await self._client.call(
                "POST", "/v1/payments", body, {"X-Idempotency-Key": request.idempotency_key}
            )
        )
        state = self._state(data, str(data.get("id", "")))
        if state.status not in (PaymentStatus.PENDING, PaymentStatus.PAID):
            raise GatewayRefused(f"{self.id}: charge created as {state.raw_status}")
        pix = (data.get("point_of_interaction") or {}).get("transaction_data") or {}
        code, image = pix.get("qr_code"), pix.get("qr_code_base64")
        if not isinstance(code, str) or not code:
            raise GatewayUnavailable(f"{self.id}: the payment carries no PIX code")
        return Charge(
            transaction_id=state.transaction_id,
            status=state.status,
            amount_cents=state.amount_cents,
            currency=state.currency,
            pix_code=code,
            qr_png_base64=image if isinstance(image, str) and image else None,
            expires_at=_parse_time(data.get("date_of_expiration")),
        )

    async def fetch(self, transaction_id: str) -> GatewayState:
        if not _ID.match(transaction_id):
            raise ChargeNotFound(f"{self.id}: not a payment id")
        answer = await self._client.call("GET", f"/v1/payments/{transaction_id}", found=True)
        return self._state(self._client.object(answer), transaction_id)

    def _state(self, data: dict[str, Any], transaction_id: str) -> GatewayState:
        raw = data.get("status")
        detail = data.get("status_detail")
        if not _ID.match(transaction_id) or not isinstance(raw, str):
            raise GatewayUnavailable(f"{self.id}: malformed payment")
        status = _STATUSES.get(raw)
        if status is None:
            log.warning("gateway %s: unknown payment status %r, read as pending", self.id, raw)
            status = PaymentStatus.PENDING
        if status == PaymentStatus.CANCELLED and detail == "expired":
            status = PaymentStatus.EXPIRED
        try:
            amount = from_decimal_units(data.get("transaction_amount"))
        except PriceError:
            raise GatewayUnavailable(f"{self.id}: malformed amount") from None
        return GatewayState(
            transaction_id=transaction_id,
            status=status,
            amount_cents=amount,
            currency=str(data.get("currency_id") or "BRL"),
            raw_status=f"{raw}/{detail}" if isinstance(detail, str) and detail else raw,
            paid_at=_parse_time(data.get("date_approved")),
        )

    def authenticate(self, webhook: WebhookRequest) -> WebhookNotice:
        headers = {k.lower(): v for k, v in webhook.headers.items()}
        header = headers.get("x-signature")
        if not header:
            raise WebhookRejected("signature", "no x-signature header")
        ts, signatures = _parse_signature(header)
        if ts is None or not (ts.isascii() and ts.isdigit() and len(ts) <= 16) or not signatures:
            raise WebhookRejected("signature", "x-signature without ts and v1")
        body = _json_or_none(webhook.body)
        data = body.get("data") if isinstance(body, dict) else None
        data_id = webhook.query.get("data.id")
        if data_id is None and isinstance(data, dict) and isinstance(data.get("id"), str | int):
            data_id = str(data["id"])
        request_id = headers.get("x-request-id")
        manifest = ""
        if data_id is not None:
            manifest += f"id:{data_id.lower() if data_id.isalnum() else data_id};"
        if request_id is not None:
            manifest += f"request-id:{request_id};"
        manifest += f"ts:{ts};"
        secret = self._config.webhook_secret
        assert secret is not None
        key = secret.get_secret_value().encode()
        expected = hmac.new(key, manifest.encode(), hashlib.sha256).hexdigest().encode()
        if not any(hmac.compare_digest(expected, v1.lower().encode()) for v1 in signatures):
            raise WebhookRejected("signature", "x-signature does not match")
        stamp = int(ts)
        seconds = stamp / 1000 if stamp >= 10**11 else float(stamp)  # ms or s
        if abs(self._clock() - seconds) > self._tolerance:
            raise WebhookRejected("stale", "ts too far from now")
        if not isinstance(body, dict) or data_id is None or not _ID.match(data_id):
            raise WebhookRejected("malformed", "no payment id or body")
        topic = body.get("type") or webhook.query.get("type") or webhook.query.get("topic")
        action = body.get("action")
        if topic != "payment" and not (
            topic is None and isinstance(action, str) and action.startswith("payment.")
        ):
            raise WebhookRejected("unsupported", f"topic {str(topic)[:40]!r}")
        # Only signed parts name the delivery: a replayed copy is the same event.
        event = f"{data_id}:{request_id}" if request_id else f"{data_id}:ts{ts}"
        details = {"request_id": request_id, "action": action, "type": topic, "ts": ts}
        return WebhookNotice(
            event_id=event[:200],
            transaction_id=data_id,
            details={k: str(v)[:64] for k, v in details.items() if v is not None},
        )


def mp_time(moment: datetime) -> str:
    """``2026-11-23T20:30:00.000+00:00``: ISO-8601 with milliseconds and an offset."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}+00:00"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None  # never guess a zone


def _parse_signature(header: str) -> tuple[str | None, list[str]]:
    ts: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if name == "ts":
            ts = value
        elif name == "v1" and value:
            signatures.append(value)
    return ts, signatures


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
