"""TelegramEmulator: Bot API calls in, envelopes out; faults, webhooks and counters around them.

The HTTP server and the fuzz tests both go through :meth:`respond`, so what
the tests check is what a client on the wire gets.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import aiohttp
import orjson

from fleet.emulator.bots import EmulatedBot, WebhookConfig
from fleet.emulator.errors import WEBHOOK_CONFLICT, ApiError, not_found, unauthorized
from fleet.emulator.faults import FaultInjector, FaultPlan
from fleet.emulator.methods import METHODS, SENDING
from fleet.emulator.methods.receiving import RawJson
from fleet.emulator.params import Params
from fleet.emulator.pix import PixGateway
from fleet.emulator.settings import EmulatorSettings, RateLimits
from fleet.emulator.simulation import BotRef, UserSimulation
from fleet.emulator.webhook import WebhookDelivery

logger = logging.getLogger(__name__)


class TelegramEmulator(UserSimulation):
    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        super().__init__(settings)
        self.faults = FaultInjector(seed=self.settings.seed)
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self._session: aiohttp.ClientSession | None = None
        # The sandbox PIX gateway (``/pix/v1/...`` on the same server); its changes wake wait_for.
        self.pix = PixGateway(self.settings, on_change=self.changed)

    # -- calls ------------------------------------------------------------------------

    async def call(self, token: str, method: str, params: Params) -> Any:
        """Run one Bot API method; raises ApiError (or DropConnection) like Telegram fails."""
        name = method.lower()
        self.requests[name if name in METHODS else "(unknown)"] += 1
        bot = self.bots.get(token)
        chat_id = _chat(params)
        await self.faults.before(bot.id if bot is not None else None, name, chat_id)
        if bot is None or bot.revoked:
            raise unauthorized()
        handler = METHODS.get(name)
        if handler is None:
            raise not_found()
        result = await handler(self, bot, params)
        self.faults.after(bot.id, name, chat_id)
        return result

    async def respond(self, token: str, method: str, params: Params) -> tuple[int, bytes]:
        """HTTP status and envelope body for one call."""
        try:
            result = await self.call(token, method, params)
        except ApiError as error:
            self.statuses[error.code] += 1
            return error.code, orjson.dumps(error.envelope())
        self.statuses[200] += 1
        if isinstance(result, RawJson):
            return 200, b'{"ok":true,"result":' + result + b"}"
        return 200, orjson.dumps({"ok": True, "result": result})

    # -- webhooks -----------------------------------------------------------------------

    async def start_webhook(
        self, bot: EmulatedBot, config: WebhookConfig, *, drop_pending: bool
    ) -> None:
        await self.stop_webhook(bot, drop_pending=drop_pending)
        bot.queue.interrupt(ApiError(409, WEBHOOK_CONFLICT))
        if config.allowed_updates is not None:
            bot.queue.set_allowed(config.allowed_updates)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
            )
        bot.webhook = config
        bot.delivery = WebhookDelivery(bot, config, self._session, self._run_reply, self.changed)
        bot.delivery.start()

    async def stop_webhook(self, bot: EmulatedBot, *, drop_pending: bool = False) -> None:
        delivery, bot.delivery, bot.webhook = bot.delivery, None, None
        if delivery is not None:
            await delivery.stop()
        if drop_pending:
            bot.queue.clear()
        self.changed()

    async def _run_reply(self, bot: EmulatedBot, reply: dict[str, Any]) -> None:
        method = str(reply.pop("method"))
        try:
            await self.call(bot.token, method, Params(reply))
        except ApiError as error:
            logger.debug("webhook reply %s of bot %s failed: %s", method, bot.id, error)

    # -- faults and limits ------------------------------------------------------------------

    def set_faults(self, plan: FaultPlan, bot_ref: BotRef | None = None) -> None:
        self.faults.set(plan, None if bot_ref is None else self.bot(bot_ref).id)

    def clear_faults(self, bot_ref: BotRef | None = None) -> None:
        self.faults.clear(None if bot_ref is None else self.bot(bot_ref).id)

    def set_rate_limits(self, limits: RateLimits) -> None:
        self.flood.configure(limits)

    def revoke_token(self, bot_ref: BotRef) -> None:
        """401 from now on, also for the poll that is waiting."""
        bot = self.bot(bot_ref)
        bot.revoked = True
        bot.queue.interrupt(unauthorized())
        self.changed()

    # -- observation ----------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        bots = list(self.bots.values())
        deliveries = [bot.delivery for bot in bots if bot.delivery is not None]
        return {
            "bots": len(bots),
            "users": len(self.users) - len(bots),
            "requests": dict(self.requests),
            "statuses": {str(code): count for code, count in self.statuses.items()},
            "sent": sum(bot.sent_count for bot in bots),
            "sent_by_method": {
                name: count for name, count in self.requests.items() if name in SENDING
            },
            "updates_created": sum(bot.queue.created for bot in bots),
            "updates_confirmed": sum(bot.queue.confirmed for bot in bots),
            "updates_expired": sum(bot.queue.expired for bot in bots),
            "updates_pending": sum(len(bot.queue) for bot in bots),
            "long_polls_open": sum(1 for bot in bots if bot.queue.polling),
            "webhook_delivered": sum(d.delivered for d in deliveries),
            "webhook_failed": sum(d.failed for d in deliveries),
            "flood_rejected": self.flood.rejected,
            "faults_dropped": self.faults.dropped,
            "faults_errors": self.faults.errors,
            "faults_storms": self.faults.storms,
            "transcript_entries": sum(len(bot.transcript) for bot in bots),
        }

    async def close(self) -> None:
        await self.pix.close()
        for bot in self.bots.values():
            if bot.delivery is not None:
                await bot.delivery.stop()
                bot.delivery = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def _chat(params: Params) -> object:
    """The call's chat_id as an int when it is one (fault plans may select chats)."""
    value = params.raw("chat_id")
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value
