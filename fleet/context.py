"""What flows through one bot's pipeline, typed: workflow data, the update's scope, outcomes.

A leaf: handlers and middlewares read :class:`UpdateData` (aiogram hands them a
plain dict; ``cast`` it once), and the runtime fills it. The sender is seen
through :class:`SendService`, so this module depends on nothing of ours but
other leaves.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from aiogram.types import Chat, TelegramObject, Update, User

from fleet.config import BotConfig
from fleet.config_funnel import FunnelConfig
from fleet.metrics import FleetMetrics

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
"""An aiogram middleware's ``handler`` argument: the rest of the chain."""

ChatKind = Literal["private", "group", "service"]
"""Which per-chat bucket a call takes: a private chat's, a group's, or (not a message in any
chat: answerCallbackQuery, createChatInviteLink) only the bot's own."""


class Outcome(enum.StrEnum):
    """What became of one update (the ``outcome`` label of ``botfleet_updates_total``)."""

    HANDLED = "handled"  # the pipeline ran to the end (a handler matched or none did)
    DUPLICATE = "duplicate"  # done before: a redelivery, skipped
    THROTTLED = "throttled"  # over the user's flood limit: dropped
    DEBOUNCED = "debounced"  # a repeated /start within the window: dropped
    FAILED = "failed"  # failed for good or too often: stored in dead letters
    MALFORMED = "malformed"  # not an update aiogram can read: stored in dead letters


SendResult = Literal["ok", "skipped", "orphaned", "blocked", "failed", "uncertain"]


@dataclass(frozen=True, slots=True)
class SendOutcome:
    result: SendResult
    message_id: int | None = None
    description: str | None = None
    answer: Any = None  # Telegram's result (e.g. the invite link createChatInviteLink made)

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@dataclass(slots=True)
class UpdateScope:
    """One update while the runtime handles it; lives across its retries.

    Sends made for the update name it, so that the update's completion also
    settles their idempotency keys (one Redis round trip for all of them) and
    a retry of the same update may take back a claim whose release failed.
    """

    bot_id: str
    update_id: int
    epoch: int  # the lease epoch the update was claimed under
    attempt: int = 1
    acknowledged: list[str] = field(default_factory=list)  # keys Telegram acknowledged
    unsent: set[str] = field(default_factory=set)  # claimed, surely not sent, not released
    failure: tuple[str, str] | None = None  # (type, text) of the last error, if it failed


class SendService(Protocol):
    """What handlers may ask of the sender (``fleet.sender.Sender`` implements it)."""

    def key(self, bot_id: str, purpose: str, *parts: str | int) -> str:
        """The idempotency key of one logical send."""
        ...

    async def send_message(
        self,
        bot_id: str,
        chat_id: int,
        text: str,
        *,
        key: str | None,
        scope: UpdateScope | None = None,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = None,
        chat_kind: ChatKind = "private",
    ) -> SendOutcome: ...


@dataclass(frozen=True, slots=True)
class Buyer:
    """The user an update comes from, as the funnel sees them."""

    bot_id: str
    user_id: int  # also the id of their private chat with the bot
    first_name: str | None = None
    username: str | None = None


class SalesActions(Protocol):
    """What handlers ask of the funnel (``fleet.sales.flow.SalesFlow`` implements it)."""

    async def start(self, buyer: Buyer, text: str | None, scope: UpdateScope) -> None: ...

    async def press(
        self, buyer: Buyer, query_id: str, data: str | None, scope: UpdateScope
    ) -> None: ...

    async def stats(self, bot_id: str, chat_id: int, scope: UpdateScope) -> bool: ...


class FleetData(TypedDict):
    """A bot's Dispatcher workflow data: set once, when its Dispatcher is built."""

    bot_id: str
    bot_config: BotConfig
    funnel: FunnelConfig
    sender: SendService
    sales: SalesActions
    metrics: FleetMetrics


class UpdateData(FleetData):
    """What a middleware or handler sees for one update (aiogram adds the ``event_*`` keys)."""

    scope: UpdateScope
    event_update: NotRequired[Update]
    event_from_user: NotRequired[User | None]
    event_chat: NotRequired[Chat | None]
