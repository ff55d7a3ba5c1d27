"""Telegram webhook mode: the route Telegram posts updates to, and each bot's intake.

Each bot's ``secret_token`` is an HMAC of its id under the instance secret, so
no per-bot secret is stored and a request for one bot can never pass as
another's. The route answers 200 only after the update was handled, skipped as
a duplicate or stored as a dead letter; anything else gets a 503 and Telegram
delivers it again.

:class:`WebhookIntake` is a runner's webhook mode: it points the bot's webhook
at this instance, admits each update the route hands it (one Redis round trip,
as a poll batch is), runs it in the bot's lane and tells the route when it is
finished. A delivery of an update that is still running (Telegram timed out on
us and sent it again) waits for the first one's answer instead of running it
twice. On stopping, what did not run answers 503 and goes to the next owner.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from fleet import telegram
from fleet.metrics import BotCounters, FleetMetrics
from fleet.ownership import BotFence
from fleet.polling import ALLOWED_UPDATES, SKIPPED
from fleet.sequencer import BotLane, LaneClosed
from middlewares.admission import BatchAdmission, chat_of
from storage.updates import Decision

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


class IntakeBot(Protocol):
    """What a webhook intake needs of its runner."""

    bot_id: str
    fence: BotFence
    lane: BotLane
    counters: BotCounters
    last_update_at: float | None
    stop_requested: asyncio.Event

    async def api(self, method: str, payload: dict[str, Any], within: float) -> Any: ...

    async def give_up(self, error: telegram.TelegramError) -> bool: ...

    def run_update(
        self, update_id: int, raw: dict[str, Any], answer: asyncio.Future[bool] | None
    ) -> Callable[[], Awaitable[None]]: ...


class WebhookIntake:
    def __init__(
        self,
        bot: IntakeBot,
        admission: BatchAdmission,
        metrics: FleetMetrics,
        *,
        public_url: str,
        instance_secret: str,
    ) -> None:
        self._bot = bot
        self._admission = admission
        self._metrics = metrics
        self._url = webhook_url(public_url, bot.bot_id)
        self._secret = bot_webhook_secret(instance_secret.encode(), bot.bot_id)
        self.accepting = False
        self._running: dict[int, asyncio.Future[bool]] = {}  # accepted, not answered yet

    @property
    def pending(self) -> int:
        return len(self._running)

    async def point_here(self) -> bool:
        """setWebhook to this instance, retrying; False if the bot must stop (401) or stopped."""
        bot = self._bot
        payload = {
            "url": self._url,
            "secret_token": self._secret,
            "allowed_updates": ALLOWED_UPDATES,
            "max_connections": 40,
        }
        backoff = 1.0
        while not bot.stop_requested.is_set() and bot.fence.valid():
            try:
                await _unless(bot.stop_requested, bot.api("setWebhook", payload, 15))
                return not bot.stop_requested.is_set()
            except telegram.TelegramError as error:
                self._metrics.poll_errors.labels(bot.bot_id, error.kind).inc()
                if await bot.give_up(error):
                    return False
                log.warning("bot %s: setWebhook failed (%s); retrying", bot.bot_id, error)
                retry = error.retry_after if isinstance(error, telegram.RetryAfter) else None
                delay = retry or backoff * (0.5 + random.random())
                await _unless(bot.stop_requested, asyncio.sleep(delay))  # back-off timer
                backoff = min(backoff * 2, 30.0)
        return False

    async def accept(self, raw: dict[str, Any]) -> bool:
        """An update from the route: True once handled, skipped or stored (answer 200)."""
        if not self.accepting:
            return False
        bot = self._bot
        update_id = int(raw["update_id"])
        running = self._running.get(update_id)
        if running is not None:
            # Telegram delivered it again while the first delivery runs: our own claim
            # would let it in a second time; share the first one's answer.
            return await asyncio.shield(running)
        bot.counters.received.inc()
        bot.last_update_at = time.monotonic()
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[update_id] = answer
        try:
            await self._start(update_id, raw, answer)
            return await asyncio.shield(answer)
        finally:
            if answer.done():
                self._running.pop(update_id, None)
            else:
                answer.add_done_callback(lambda _: self._running.pop(update_id, None))

    async def _start(
        self, update_id: int, raw: dict[str, Any], answer: asyncio.Future[bool]
    ) -> None:
        bot = self._bot
        try:
            [decision] = await self._admission.admit(
                bot.bot_id, bot.fence.epoch, [(update_id, raw)], by_offset=False
            )
        except Exception as exc:
            log.warning("bot %s: update %s not admitted (%s)", bot.bot_id, update_id, exc)
            answer.set_result(False)
            return
        if decision is not Decision.RUN:
            if decision is not Decision.BUSY:
                bot.counters.outcomes[SKIPPED[decision]].inc()
            answer.set_result(decision is not Decision.BUSY)  # busy: a newer owner has it
            return
        try:
            await bot.lane.submit(chat_of(raw), bot.run_update(update_id, raw, answer))
        except LaneClosed:
            answer.set_result(False)  # stopping: Telegram delivers it to the next owner

    def let_go(self) -> None:
        """Stopping: what did not run answers 503, and Telegram delivers it again."""
        self.accepting = False
        for answer in self._running.values():
            if not answer.done():
                answer.set_result(False)

    async def delete(self) -> None:
        try:
            await self._bot.api("deleteWebhook", {"drop_pending_updates": False}, 15)
            log.info("bot %s: webhook deleted", self._bot.bot_id)
        except telegram.TelegramError as error:
            log.warning("bot %s: deleteWebhook failed (%s)", self._bot.bot_id, error.kind)


async def _unless(stop: asyncio.Event, work: Awaitable[Any]) -> None:
    """Run ``work`` unless ``stop`` comes first (then cancel it)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    if not task.cancelled():
        task.result()
