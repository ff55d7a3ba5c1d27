"""A fake Mercado Pago Payments API (``POST /v1/payments``, ``GET /v1/payments/{id}``) and
signed webhook notifications, shaped like the public docs.

Deliberately hostile where it helps a test: its 4xx messages echo the token presented
(an adapter must never pass it on). ``X-Idempotency-Key`` is mandatory, as at Mercado
Pago, and the same key returns the same payment.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from fleet.payments.base import WebhookRequest
from tests.fakes import FakeGateway

_MP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
_MP_ZONE = timezone(timedelta(hours=-4))  # how Mercado Pago writes its own dates
PNG_BASE64 = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def mp_time(moment: datetime) -> str:
    local = moment.astimezone(_MP_ZONE)
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond // 1000:03d}-04:00"


def signature(secret: str, *, data_id: str | None, request_id: str | None, ts: str) -> str:
    """The ``v1`` of ``x-signature`` as Mercado Pago computes it."""
    manifest = ""
    if data_id is not None:
        manifest += f"id:{data_id.lower() if data_id.isalnum() else data_id};"
    if request_id is not None:
        manifest += f"request-id:{request_id};"
    manifest += f"ts:{ts};"
    return hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Notification:
    """A webhook as Mercado Pago would post it to ``notification_url``."""

    headers: dict[str, str]
    query: dict[str, str]
    body: bytes

    @property
    def query_string(self) -> str:
        return urlencode(self.query)

    def request(self) -> WebhookRequest:
        return WebhookRequest(
            headers={k.lower(): v for k, v in self.headers.items()},
            query=dict(self.query),
            body=self.body,
            content_type="application/json",
        )


def notification(
    payment_id: str,
    secret: str,
    *,
    ts: int | str,
    request_id: str | None = None,
    action: str = "payment.updated",
    topic: str = "payment",
    signed_id: str | None = None,
    in_query: bool = True,
) -> Notification:
    """A signed notification about ``payment_id`` (``signed_id``: sign another id)."""
    request_id = request_id or str(uuid.uuid4())
    ts = str(ts)
    v1 = signature(secret, data_id=signed_id or payment_id, request_id=request_id, ts=ts)
    body = {
        "action": action,
        "api_version": "v1",
        "data": {"id": payment_id},
        "date_created": "2026-01-10T10:20:30Z",
        "id": 117889882382,
        "live_mode": True,
        "type": topic,
        "user_id": "2079614828",
    }
    return Notification(
        headers={
            "Content-Type": "application/json",
            "x-signature": f"ts={ts},v1={v1}",
            "x-request-id": request_id,
        },
        query={"data.id": payment_id, "type": topic} if in_query else {},
        body=json.dumps(body).encode(),
    )


class FakeMercadoPago(FakeGateway):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.payments: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self._ids = itertools.count(1_325_000_001)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/payments", self._create),
            web.get("/v1/payments/{id}", self._get),
        ]

    def error_body(self, status: int, request: web.Request) -> dict[str, Any]:
        messages = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 422: "invalid"}
        presented = request.headers.get("Authorization", "")
        return {
            "message": f"request refused ({presented})",
            "error": messages.get(status, "internal_error"),
            "status": status,
            "cause": [{"code": status, "description": f"refused for {presented}"}],
        }

    # -- knobs ----------------------------------------------------------------------------

    def set_status(self, payment_id: str, status: str, detail: str | None = None) -> None:
        payment = self.payments[payment_id]
        payment["status"] = status
        payment["status_detail"] = detail or {"approved": "accredited"}.get(status, status)
        if status == "approved" and payment["date_approved"] is None:
            payment["date_approved"] = "2026-01-10T10:21:30.000-04:00"

    def update(self, payment_id: str, **fields: Any) -> None:
        self.payments[payment_id].update(fields)

    # -- API ------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.json_response(self.error_body(401, request), status=401)
        key = request.headers.get("X-Idempotency-Key")
        if not key:
            return _bad("Header X-Idempotency-Key can't be null")
        if key in self.by_key:
            return web.json_response(self.payments[self.by_key[key]], status=201)
        try:
            body = json.loads(await request.read(), parse_float=Decimal)
        except ValueError:
            return _bad("invalid json")
        amount = body.get("transaction_amount")
        if not isinstance(amount, Decimal | int) or isinstance(amount, bool) or amount <= 0:
            return _bad("transaction_amount must be a positive number")
        if body.get("payment_method_id") != "pix":
            return _bad("payment_method_id must be pix")
        if not isinstance(body.get("payer"), dict) or "@" not in str(body["payer"].get("email")):
            return _bad("payer.email is required")
        expiry = body.get("date_of_expiration")
        if expiry is not None and not _MP_TIME.match(str(expiry)):
            return _bad("invalid date_of_expiration")
        payment_id = str(next(self._ids))
        self.payments[payment_id] = {
            "id": int(payment_id),
            "status": "pending",
            "status_detail": "pending_waiting_transfer",
            "payment_method_id": "pix",
            "payment_type_id": "bank_transfer",
            "transaction_amount": float(amount),  # as MP writes it: 19.9
            "currency_id": "BRL",
            "description": body.get("description"),
            "external_reference": body.get("external_reference"),
            "notification_url": body.get("notification_url"),
            "date_created": mp_time(datetime.now(UTC)),
            "date_approved": None,
            "date_of_expiration": mp_time(datetime.fromisoformat(expiry)) if expiry else None,
            "point_of_interaction": {
                "type": "PIX",
                "transaction_data": {
                    "qr_code": f"00020126580014br.gov.bcb.pix0136{uuid.uuid4()}5802BR",
                    "qr_code_base64": PNG_BASE64,
                    "ticket_url": f"https://www.mercadopago.com.br/payments/{payment_id}/ticket",
                },
            },
        }
        self.by_key[key] = payment_id
        return web.json_response(self.payments[payment_id], status=201)

    async def _get(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.json_response(self.error_body(401, request), status=401)
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return web.json_response(
                {
                    "message": "Payment not found",
                    "error": "not_found",
                    "status": 404,
                    "cause": [{"code": 2000, "description": "Payment not found"}],
                },
                status=404,
            )
        return web.json_response(payment)


def _bad(message: str) -> web.Response:
    return web.json_response(
        {"message": message, "error": "bad_request", "status": 400, "cause": []}, status=400
    )
