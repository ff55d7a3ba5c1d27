"""``POST /webhook/payment/{gateway_id}/{url_secret}``: gateways tell us a charge changed.

In order, each refusal counted by reason: a configured gateway, its URL secret
(derived per gateway, compared in constant time), a body within the size
limit, a content type a gateway sends, the adapter's own authentication
(signature, header, timestamp). Then the webhook is stored in the inbox and
the answer is 2xx only once that row is committed: a gateway retries what we
could not store (503 while PostgreSQL is away; nothing is half stored). The
same event again is a duplicate, answered 200 and not stored twice.
Processing happens after the answer (``scheduler.jobs``): the body is never
trusted for a status or an amount unless the adapter proved it.

The body is kept as received except the payer's name and tax id (PushinPay
sends them once paid): we need neither, and a stored CPF is a liability.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from fleet.metrics import FleetMetrics
from fleet.payments.base import Gateway, WebhookRejected, WebhookRequest
from fleet.payments.inbox import InboxWriter
from storage.repositories.payment_events import ReceivedWebhook

log = logging.getLogger(__name__)

ROUTE = "/webhook/payment/{gateway_id}/{url_secret}"
_CONTENT_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded", "text/plain"})
# Kept with the row for an audit; never a secret (PushinPay's custom header is one: not kept).
_KEPT_HEADERS = ("content-type", "user-agent", "x-request-id", "x-signature", "x-sandbox-signature")
# The payer's personal data, masked in the stored body (JSON "key": "value" or form key=value).
_PERSONAL = "payer_name|payer_national_registration|payer_document|cpf|cnpj|document"
_PERSONAL_JSON = re.compile(rf'("(?:{_PERSONAL})"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
_PERSONAL_FORM = re.compile(rf"(?<![^&])((?:{_PERSONAL})=)[^&]*", re.IGNORECASE)
_OK = b'{"ok": true}'  # the answer to every stored webhook, encoded once
_STATUS = {"signature": 401, "header": 401, "stale": 401, "malformed": 400}


@dataclass(frozen=True, slots=True)
class PaymentWebhooks:
    gateways: Mapping[str, Gateway]
    url_secrets: Mapping[str, str]  # gateway id -> the secret its URL must carry
    writer: InboxWriter
    metrics: FleetMetrics
    max_bytes: int
    on_stored: Callable[[], None]  # wake the inbox job


PAYMENTS_KEY = web.AppKey("payment_webhooks", PaymentWebhooks)


def _refuse(hooks: PaymentWebhooks, gateway: str, reason: str, status: int) -> web.Response:
    hooks.metrics.payment_webhooks.labels(gateway, "rejected").inc()
    hooks.metrics.payment_webhook_rejections.labels(gateway, reason).inc()
    return web.json_response({"ok": False, "error": reason}, status=status)


async def payment_webhook(request: web.Request) -> web.Response:
    started = time.perf_counter()
    hooks = request.app[PAYMENTS_KEY]
    gateway_id = request.match_info["gateway_id"]
    gateway = hooks.gateways.get(gateway_id)
    if gateway is None:
        return _refuse(hooks, "unknown", "unknown_gateway", 404)  # no label from a URL
    given = request.match_info["url_secret"].encode()
    if not hmac.compare_digest(given, hooks.url_secrets[gateway_id].encode()):
        return _refuse(hooks, gateway_id, "url_secret", 403)
    if request.content_length is not None and request.content_length > hooks.max_bytes:
        return _refuse(hooks, gateway_id, "too_large", 413)
    body = await request.content.read(hooks.max_bytes + 1)
    if len(body) > hooks.max_bytes:
        return _refuse(hooks, gateway_id, "too_large", 413)
    if request.content_type not in _CONTENT_TYPES:
        return _refuse(hooks, gateway_id, "content_type", 415)
    headers = {name.lower(): value for name, value in request.headers.items()}
    webhook = WebhookRequest(headers, dict(request.query), body, request.content_type)
    try:
        notice = gateway.authenticate(webhook)
    except WebhookRejected as exc:
        if exc.reason == "unsupported":  # authentic, about something we do not sell by
            hooks.metrics.payment_webhooks.labels(gateway_id, "ignored").inc()
            return web.json_response({"ok": True, "ignored": True})
        log.warning("payment webhook for %s refused: %s", gateway_id, exc.reason)
        return _refuse(hooks, gateway_id, exc.reason, _STATUS.get(exc.reason, 400))
    received = ReceivedWebhook(
        gateway_id=gateway_id,
        event_id=notice.event_id,
        transaction_id=notice.transaction_id,
        headers={name: headers[name] for name in _KEPT_HEADERS if name in headers},
        body=redact(body.decode("utf-8", errors="replace")),
        verification="signature" if notice.trusted else "authenticated",
        claimed_status=notice.claimed_status,
        trusted=notice.trusted,
        claimed_amount_cents=notice.amount_cents,
        claimed_currency=notice.currency,
        claimed_paid_at=notice.paid_at,
    )
    try:
        new = await hooks.writer.store(received)
    except Exception as exc:
        hooks.metrics.payment_webhooks.labels(gateway_id, "unavailable").inc()
        log.warning("payment webhook for %s not stored (%s): 503", gateway_id, type(exc).__name__)
        return web.json_response({"ok": False, "error": "unavailable"}, status=503)
    hooks.metrics.payment_webhooks.labels(gateway_id, "stored" if new else "duplicate").inc()
    if new:
        hooks.on_stored()
    hooks.metrics.payment_webhook_seconds.labels(gateway_id).observe(time.perf_counter() - started)
    return web.Response(body=_OK, content_type="application/json")


def redact(body: str) -> str:
    """The body with the payer's name and tax id masked, everything else byte for byte."""
    body = _PERSONAL_JSON.sub(r'\1"***"', body)
    return _PERSONAL_FORM.sub(r"\1***", body)


def add_payment_routes(app: web.Application, hooks: PaymentWebhooks) -> None:
    app[PAYMENTS_KEY] = hooks
    app.router.add_post(ROUTE, payment_webhook)
