"""One emulated bot: its identity, pending updates, webhook, messages and transcript."""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.emulator.settings import EmulatorSettings
from fleet.emulator.updates import UpdateQueue
from fleet.emulator.world import Action, Sent, StoredMessage, User

if TYPE_CHECKING:
    from fleet.emulator.webhook import WebhookDelivery

TOKEN_RE = re.compile(r"^(\d{1,20}):[A-Za-z0-9_-]{1,200}$")


@dataclass(slots=True)
class WebhookConfig:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass(slots=True)
class EmulatedBot:
    token: str
    user: User
    queue: UpdateQueue
    settings: EmulatorSettings
    revoked: bool = False
    webhook: WebhookConfig | None = None
    delivery: WebhookDelivery | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)
    # Users who opened a private chat with the bot (the bot may write to them).
    started: set[int] = field(default_factory=set)
    messages: OrderedDict[tuple[int, int], StoredMessage] = field(default_factory=OrderedDict)
    message_ids: dict[int, int] = field(default_factory=dict)
    transcript: deque[Sent] = field(init=False)
    # Actions whose update the bot has not fetched yet, and the last one it has, per chat.
    unseen_actions: dict[int, Action] = field(default_factory=dict)
    last_action: dict[int, Action] = field(default_factory=dict)
    sent_count: int = 0

    def __post_init__(self) -> None:
        self.transcript = deque(maxlen=self.settings.transcript_limit)

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def username(self) -> str:
        return self.user.username or ""

    def get_me(self) -> dict[str, Any]:
        return {
            **self.user.to_api(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def next_message_id(self, chat_id: int) -> int:
        value = self.message_ids.get(chat_id, 0) + 1
        self.message_ids[chat_id] = value
        return value

    def store(self, message: StoredMessage) -> None:
        key = (message.chat_id, message.message_id)
        self.messages[key] = message
        self.messages.move_to_end(key)
        while len(self.messages) > self.settings.message_limit:
            self.messages.popitem(last=False)

    def find(self, chat_id: int, message_id: int) -> StoredMessage | None:
        return self.messages.get((chat_id, message_id))

    def fetched(self, update_ids: list[int], chats: list[int]) -> None:
        """The bot received these updates: later sends in their chats answer them."""
        for update_id, chat_id in zip(update_ids, chats, strict=True):
            action = self.unseen_actions.pop(update_id, None)
            if action is not None:
                self.last_action[chat_id] = action

    def record(self, entry: Sent) -> None:
        action = self.last_action.get(entry.chat_id)
        entry.action_id = action.id if action is not None else None
        self.transcript.append(entry)
        self.sent_count += 1

    def chat_transcript(self, chat_id: int | None = None) -> list[Sent]:
        if chat_id is None:
            return list(self.transcript)
        return [entry for entry in self.transcript if entry.chat_id == chat_id]
