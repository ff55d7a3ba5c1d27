"""/start answers with the funnel's welcome; other text gets the fallback.

The sales-funnel work replaces these. The welcome's idempotency key carries the
update id, so a handler that runs twice for one update still sends one welcome.
A reply Telegram refuses for good raises :class:`SendFailed`: the update goes
to dead letters (a blocked user or an uncertain send is not a failure).
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import CommandStart
from aiogram.types import Message

from fleet.config_funnel import FunnelConfig
from fleet.context import SendService, UpdateScope
from fleet.errors import SendFailed


async def _answer(
    message: Message, purpose: str, text: str, bot_id: str, sender: SendService, scope: UpdateScope
) -> None:
    """One reply per (chat, update): the key makes a second run of this update a no-op."""
    outcome = await sender.send_message(
        bot_id,
        message.chat.id,
        text,
        key=sender.key(bot_id, purpose, message.chat.id, scope.update_id),
        scope=scope,
        chat_kind="private" if message.chat.type == "private" else "group",
        parse_mode="HTML",  # funnel texts are written in Telegram's HTML subset
    )
    if outcome.result == "failed":
        # Refused for good: keep the update in dead letters where an operator sees it.
        raise SendFailed(f"bot {bot_id}: {purpose} not sent: {outcome.description}")


def register(router: Router) -> None:
    """/start: the funnel's welcome."""

    @router.message(CommandStart())
    async def welcome(
        message: Message, bot_id: str, funnel: FunnelConfig, sender: SendService, scope: UpdateScope
    ) -> None:
        await _answer(message, "welcome", funnel.welcome.text, bot_id, sender, scope)


def register_fallback(router: Router) -> None:
    """Any other text: the fallback. Registered last: it takes what nothing else took."""

    @router.message(F.text)
    async def fallback(
        message: Message, bot_id: str, funnel: FunnelConfig, sender: SendService, scope: UpdateScope
    ) -> None:
        await _answer(message, "fallback", funnel.fallback.text, bot_id, sender, scope)
