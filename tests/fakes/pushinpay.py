"""A fake PushinPay API (``POST /pix/cashIn``, ``GET /transactions/{id}``) and its webhook
bodies (JSON or form-encoded), shaped like the public docs.

Values are integer cents (minimum 50, else 422 with PushinPay's message); an unknown
transaction answers ``200 []`` as documented (``unknown_as_404`` for the other shape);
its 401 message echoes the token presented (an adapter must never pass it on).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from fleet.payments.base import WebhookRequest
from tests.fakes import FakeGateway
from tests.fakes.mercadopago import PNG_BASE64

DATA_URI = "data:image/png;base64,"


def webhook(
    transaction: dict[str, Any],
    *,
    form: bool = False,
    header: tuple[str, str] | None = None,
) -> WebhookRequest:
    """A webhook as PushinPay posts it: the transaction, JSON or form-encoded; ``header``:
    the custom header configured in its panel."""
    fields = {k: v for k, v in transaction.items() if v is not None and not isinstance(v, list)}
    if form:
        body = urlencode({k: str(v) for k, v in fields.items()}).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body = json.dumps(transaction).encode()
        content_type = "application/json"
    headers = {"content-type": content_type, "user-agent": "PushinPay-Webhook"}
    if header is not None:
        headers[header[0].lower()] = header[1]
    return WebhookRequest(headers=headers, query={}, body=body, content_type=content_type)


class FakePushinPay(FakeGateway):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.transactions: dict[str, dict[str, Any]] = {}
        self.unknown_as_404 = False

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/pix/cashIn", self._create),
            web.get("/transactions/{id}", self._get),
        ]

    def error_body(self, status: int, request: web.Request) -> dict[str, Any]:
        if status == 422:
            return {"message": "O campo value é inválido.", "errors": {"value": ["inválido"]}}
        return {"message": f"Erro {status} ({request.headers.get('Authorization', '')})"}

    # -- knobs ----------------------------------------------------------------------------

    def set_status(self, transaction_id: str, status: str) -> None:
        transaction = self.transactions[transaction_id]
        transaction["status"] = status
        if status == "paid":
            transaction["end_to_end_id"] = "E00000000202601101021abcdefghijk"
            transaction["payer_name"] = "PAGADOR FICTICIO"
            transaction["payer_national_registration"] = "00000000000"

    def update(self, transaction_id: str, **fields: Any) -> None:
        self.transactions[transaction_id].update(fields)

    # -- API ------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self._unauthenticated(request)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"message": "Formato JSON inválido"}, status=406)
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 50:
            message = "O campo value deve ser no mínimo 50."
            return web.json_response(
                {"message": message, "errors": {"value": [message]}}, status=422
            )
        transaction_id = str(uuid.uuid4())
        self.transactions[transaction_id] = {
            "id": transaction_id,
            "qr_code": f"00020101021226770014BR.GOV.BCB.PIX2555api.pushinpay/{transaction_id}",
            "status": "created",
            "value": value,
            "webhook_url": body.get("webhook_url"),
            "qr_code_base64": DATA_URI + PNG_BASE64,
            "webhook": None,
            "split_rules": [],
            "end_to_end_id": None,
            "payer_name": None,
            "payer_national_registration": None,
        }
        return web.json_response(self.transactions[transaction_id])

    async def _get(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self._unauthenticated(request)
        transaction = self.transactions.get(request.match_info["id"])
        if transaction is None:
            if self.unknown_as_404:
                return web.json_response({"message": "Not Found"}, status=404)
            return web.json_response([])
        return web.json_response({**transaction, "pix_details": {"emv": transaction["qr_code"]}})

    def _unauthenticated(self, request: web.Request) -> web.Response:
        presented = request.headers.get("Authorization", "")
        return web.json_response({"message": f"Unauthenticated: {presented}"}, status=401)
