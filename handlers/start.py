"""/start: attribution and the funnel's welcome; other text gets the fallback.

The sends' idempotency keys carry the update id, so a handler that runs twice
for one update still sends one welcome. A reply Telegram refuses for good
raises :class:`SendFailed`: the update goes to dead letters (a blocked user or
an uncertain send is not a failure).
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from fleet.config_funnel import FunnelConfig
from fleet.context import Buyer, SalesActions, SendService, UpdateScope
from fleet.errors import SendFailed


def _buyer(message: Message, bot_id: str) -> Buyer:
    user = message.from_user
    if user is None:  # channel posts have no sender; /start comes from users
        return Buyer(bot_id, message.chat.id)
    return Buyer(bot_id, user.id, user.first_name, user.username)


async def _private(message: Message) -> bool:
    """A filter as a coroutine: aiogram runs a plain callable (a magic ``F`` filter too) in a
    worker thread per update."""
    return message.chat.type == "private"


async def _has_text(message: Message) -> bool:
    return message.text is not None


def register(router: Router) -> None:
    """/start (private chats): the funnel begins; /stats: the owners' figures."""

    @router.message(CommandStart(), _private)
    async def welcome(
        message: Message, bot_id: str, sales: SalesActions, scope: UpdateScope
    ) -> None:
        await sales.start(_buyer(message, bot_id), message.text, scope)

    @router.message(Command("stats"))
    async def stats(
        message: Message,
        bot_id: str,
        funnel: FunnelConfig,
        sales: SalesActions,
        sender: SendService,
        scope: UpdateScope,
    ) -> None:
        if not await sales.stats(bot_id, message.chat.id, scope):
            await fallback(message, bot_id, funnel, sender, scope)  # not an owner: as any text


async def fallback(
    message: Message, bot_id: str, funnel: FunnelConfig, sender: SendService, scope: UpdateScope
) -> None:
    """One reply per (chat, update): the key makes a second run of this update a no-op."""
    outcome = await sender.send_message(
        bot_id,
        message.chat.id,
        funnel.fallback.text,
        key=sender.key(bot_id, "fallback", message.chat.id, scope.update_id),
        scope=scope,
        chat_kind="private" if message.chat.type == "private" else "group",
        parse_mode="HTML",  # funnel texts are written in Telegram's HTML subset
    )
    if outcome.result == "failed":
        # Refused for good: keep the update in dead letters where an operator sees it.
        raise SendFailed(f"bot {bot_id}: fallback not sent: {outcome.description}")


def register_fallback(router: Router) -> None:
    """Any other text: the fallback. Registered last: it takes what nothing else took."""
    router.message(_has_text)(fallback)
