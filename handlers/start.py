"""/start answers with the funnel's welcome; other text gets the fallback.

The sales-funnel work replaces these. The welcome's idempotency key carries the
update id, so a handler that runs twice for one update still sends one welcome.
A reply Telegram refuses for good raises :class:`SendFailed`: the update goes
to dead letters (a blocked user or an uncertain send is not a failure).
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import CommandStart
from aiogram.types import ErrorEvent, Message

from fleet.config import FunnelConfig
from fleet.errors import SendFailed, UpdateBusy, UpdateNotStored
from fleet.metrics import FleetMetrics
from fleet.sender import Sender

log = logging.getLogger(__name__)


async def _answer(
    message: Message, purpose: str, text: str, bot_id: str, sender: Sender, update_id: int
) -> None:
    """One reply per (chat, update): the key makes a second run of this update a no-op."""
    key = sender.ledger.key(bot_id, purpose, message.chat.id, update_id)
    outcome = await sender.send_message(
        bot_id,
        message.chat.id,
        text,
        idempotency_key=key,
        chat_kind="private" if message.chat.type == "private" else "group",
        update_id=update_id,
        parse_mode="HTML",  # funnel texts are written in Telegram's HTML subset
    )
    if outcome.result == "failed":
        # Refused or given up: keep the update in dead letters where an operator sees it.
        raise SendFailed(f"bot {bot_id}: {purpose} not sent: {outcome.description}")


def build_start_router() -> Router:
    router = Router(name="start")

    @router.message(CommandStart())
    async def welcome(
        message: Message, bot_id: str, funnel: FunnelConfig, sender: Sender, event_update_id: int
    ) -> None:
        await _answer(message, "welcome", funnel.welcome.text, bot_id, sender, event_update_id)

    @router.message(F.text)
    async def fallback(
        message: Message, bot_id: str, funnel: FunnelConfig, sender: Sender, event_update_id: int
    ) -> None:
        await _answer(message, "fallback", funnel.fallback.text, bot_id, sender, event_update_id)

    # Control-flow errors (update busy elsewhere, dead letter not stored) must reach the runner.
    @router.error(lambda event: not isinstance(event.exception, UpdateBusy | UpdateNotStored))
    async def on_error(event: ErrorEvent, bot_id: str, metrics: FleetMetrics) -> None:
        # The errors middleware catches handler failures first; this sees the rest.
        # Outside the errors middleware (Redis or the database failed before or after the
        # handler): the update must stay unconfirmed, so the runner has to see the error.
        log.error("bot %s: update failed outside its handler: %r", bot_id, event.exception)
        metrics.updates.labels(bot_id, "failed").inc()
        raise event.exception

    return router
