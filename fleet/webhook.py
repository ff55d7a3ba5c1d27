"""Telegram webhook mode: the route Telegram posts updates to, and its per-bot secret.

Each bot's ``secret_token`` is an HMAC of its id under the instance secret, so
no per-bot secret is stored and a request for one bot can never pass as
another's. The route answers 200 only after the update was handled, skipped as
a duplicate or stored as a dead letter; anything else gets a 503 and Telegram
delivers it again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Protocol

import orjson
from aiohttp import web

from fleet.metrics import FleetMetrics

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
ROUTE = "/webhook/telegram/{bot_id}"


class WebhookTarget(Protocol):
    async def accept(self, raw: dict[str, Any]) -> bool:
        """Handle one update now; True once it is handled or stored."""
        ...


class WebhookTargets(Protocol):
    def webhook_target(self, bot_id: str) -> WebhookTarget | None:
        """The runner serving ``bot_id`` on this instance, if it takes updates now."""
        ...


class WebhookRoute:
    """What the route needs: where updates go, the instance secret, the counters."""

    def __init__(self, targets: WebhookTargets, instance_secret: str, metrics: FleetMetrics):
        self.targets = targets
        self._secret = instance_secret.encode()
        self.metrics = metrics

    def secret_for(self, bot_id: str) -> str:
        return bot_webhook_secret(self._secret, bot_id)


WEBHOOK_KEY = web.AppKey("telegram_webhook", WebhookRoute)


def bot_webhook_secret(instance_secret: bytes, bot_id: str) -> str:
    """64 hex characters: within Telegram's 1-256 ``[A-Za-z0-9_-]`` for secret_token."""
    return hmac.new(instance_secret, bot_id.encode(), hashlib.sha256).hexdigest()


def webhook_url(public_url: str, bot_id: str) -> str:
    return public_url.rstrip("/") + ROUTE.format(bot_id=bot_id)


def _answer(route: WebhookRoute, result: str, status: int, text: str) -> web.Response:
    route.metrics.webhook_requests.labels(result).inc()
    return web.json_response({"ok": status == 200, "description": text}, status=status)


async def telegram_webhook(request: web.Request) -> web.Response:
    route = request.app[WEBHOOK_KEY]
    bot_id = request.match_info["bot_id"]
    given = request.headers.get(SECRET_HEADER, "").encode()
    if not hmac.compare_digest(given, route.secret_for(bot_id).encode()):
        return _answer(route, "forbidden", 403, "Forbidden")
    target = route.targets.webhook_target(bot_id)
    if target is None:
        # Not (or no longer) served here: Telegram retries, by then at the new owner.
        return _answer(route, "unknown", 503, "bot not served by this instance")
    try:
        raw = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raw = None
    update_id = raw.get("update_id") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not isinstance(update_id, int) or isinstance(update_id, bool):
        log.warning("bot %s: webhook body is not an update; refused", bot_id)
        return _answer(route, "malformed", 400, "body is not a Telegram update")
    if await target.accept(raw):
        return _answer(route, "accepted", 200, "ok")
    return _answer(route, "retry", 503, "not handled yet; send it again")


def add_webhook_route(app: web.Application, route: WebhookRoute) -> None:
    app[WEBHOOK_KEY] = route
    app.router.add_post(ROUTE, telegram_webhook)
