"""PushinPay: PIX charges in cents; webhooks that are only a hint.

- Charges: ``POST /pix/cashIn`` ``{"value": cents, "webhook_url": ...}``. PushinPay has no
  idempotency key: what prevents two charges for one order is the core's own unique key
  on the payment row (one ``create_charge`` per row); a create whose answer was lost may
  leave an orphan charge there, which nobody is shown and which expires unpaid.
- Webhooks carry no signature. The URL secret was checked by the core; if
  ``webhook_secret`` is configured, the custom header set in PushinPay's panel must be
  :data:`HEADER` with that value (compared in constant time, reason ``"header"``). The
  body (JSON or form-encoded) is only read for the transaction id and a claimed status:
  the status that counts is fetched from ``GET /transactions/{id}``.
- Ids are UUIDs; they are lower-cased everywhere so a webhook in another case still
  names the same charge.
"""

from __future__ import annotations

import hmac
import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

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

HEADER = "x-pushinpay-token"  # the custom header to configure in PushinPay's panel
NOTICE = (
    "A PUSHIN PAY atua exclusivamente como processadora de pagamentos e não possui qualquer"
    " responsabilidade pela entrega, suporte, conteúdo, qualidade ou cumprimento das"
    " obrigações relacionadas aos produtos ou serviços oferecidos pelo vendedor."
)  # the wording its terms (item 4.10) require before payment
_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_STATUSES = {
    "created": PaymentStatus.PENDING,
    "paid": PaymentStatus.PAID,
    "canceled": PaymentStatus.CANCELLED,
    "cancelled": PaymentStatus.CANCELLED,
    "expired": PaymentStatus.EXPIRED,
    "refunded": PaymentStatus.REFUNDED,
}
_DATA_URI = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)


class PushinPay(ApiGateway):
    notice: str | None = NOTICE

    async def create_charge(self, request: ChargeRequest) -> Charge:
        if request.currency != "BRL":
            raise GatewayRefused(f"{self.id}: PIX charges are in BRL, not {request.currency}")
        fields: dict[str, Any] = {"value": request.amount_cents}
        if request.notification_url:
            fields["webhook_url"] = request.notification_url
        body = json.dumps(fields, separators=(",", ":")).encode()
        data = self._client.object(await self._client.call("POST", "/pix/cashIn", body))
        state = self._state(data, _normal(data.get("id")))
        if state.status != PaymentStatus.PENDING:
            raise GatewayRefused(f"{self.id}: charge created as {state.raw_status}")
        code, image = data.get("qr_code"), data.get("qr_code_base64")
        if not isinstance(code, str) or not code:
            raise GatewayUnavailable(f"{self.id}: the charge carries no PIX code")
        image = _DATA_URI.sub("", image) if isinstance(image, str) else None
        return Charge(
            transaction_id=state.transaction_id,
            status=state.status,
            amount_cents=state.amount_cents,
            currency="BRL",
            pix_code=code,
            qr_png_base64=image or None,
            expires_at=None,  # not given reliably at creation: the core applies its own
        )

    async def fetch(self, transaction_id: str) -> GatewayState:
        tid = _normal(transaction_id)
        if tid is None:
            raise ChargeNotFound(f"{self.id}: not a transaction id")
        data = self._client.json(await self._client.call("GET", f"/transactions/{tid}", found=True))
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if data == [] or data == {}:
            raise ChargeNotFound(f"{self.id}: no such charge")  # PushinPay answers []
        if not isinstance(data, dict):
            raise GatewayUnavailable(f"{self.id}: malformed answer")
        return self._state(data, tid)

    def _state(self, data: dict[str, Any], transaction_id: str | None) -> GatewayState:
        raw, cents = data.get("status"), _cents(data.get("value"))
        if transaction_id is None or not isinstance(raw, str) or cents is None:
            raise GatewayUnavailable(f"{self.id}: malformed transaction")
        status = _STATUSES.get(raw.lower(), PaymentStatus.PENDING)  # unknown: moves nothing
        return GatewayState(transaction_id, status, cents, "BRL", raw_status=raw)

    def authenticate(self, webhook: WebhookRequest) -> WebhookNotice:
        secret = self._config.webhook_secret
        if secret is not None:
            presented = {k.lower(): v for k, v in webhook.headers.items()}.get(HEADER, "")
            if not hmac.compare_digest(presented.encode(), secret.get_secret_value().encode()):
                raise WebhookRejected("header", f"{HEADER} missing or wrong")
        fields = _fields(webhook)
        tid = _normal(fields.get("id"))
        if tid is None:
            raise WebhookRejected("malformed", "no transaction id")
        raw = fields.get("status")
        status = raw.strip().lower()[:32] if isinstance(raw, str) and raw.strip() else "unknown"
        return WebhookNotice(
            event_id=f"{tid}:{status}",
            transaction_id=tid,
            claimed_status=_STATUSES.get(status),
            amount_cents=_cents(fields.get("value")),
            currency="BRL",
            details={"status": status},  # never the payer's name or CPF
        )


def _fields(webhook: WebhookRequest) -> dict[str, object]:
    """The body's top-level fields, JSON or form-encoded (the content type is undocumented:
    it is followed when it says one of the two, else the body decides)."""
    try:
        text = webhook.body.decode()
    except UnicodeDecodeError:
        raise WebhookRejected("malformed", "not UTF-8") from None
    kind = webhook.content_type.lower()
    if "json" in kind or ("form" not in kind and text.lstrip().startswith("{")):
        try:
            data = json.loads(text, parse_float=Decimal)
        except (ValueError, RecursionError):
            raise WebhookRejected("malformed", "not JSON") from None
        if not isinstance(data, dict):
            raise WebhookRejected("malformed", "not a JSON object")
        return data
    try:
        form = parse_qs(text, keep_blank_values=True, max_num_fields=100)
    except ValueError:
        raise WebhookRejected("malformed", "not a form") from None
    return {name: values[0] for name, values in form.items()}


def _normal(value: object) -> str | None:
    if not isinstance(value, str) or not _ID.match(value):
        return None
    return value.lower() if _UUID.match(value) else value


def _cents(value: object) -> int | None:
    """An amount in cents (an integer, an integral decimal or digits), else None."""
    if isinstance(value, str):
        digits = value.strip()
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 16 else None
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 15:
        value = int(value) if value == value.to_integral_value() else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15:
        return value
    return None
