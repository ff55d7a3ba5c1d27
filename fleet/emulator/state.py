"""The emulator's world: bots, users, chats, files, callbacks, user actions, and change waits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from fleet.emulator.bots import TOKEN_RE, EmulatedBot
from fleet.emulator.errors import BLOCKED, CANT_INITIATE, CHAT_NOT_FOUND, bad_request
from fleet.emulator.errors import forbidden as forbidden_error
from fleet.emulator.limits import FloodControl
from fleet.emulator.settings import EmulatorSettings
from fleet.emulator.updates import UpdateQueue
from fleet.emulator.world import (
    Action,
    ActionKind,
    Chat,
    InviteLink,
    MemberStatus,
    Sent,
    StoredMessage,
    User,
    member_to_api,
)

T = TypeVar("T")


class EmulatorError(Exception):
    """A simulated user tried something impossible (no such button, bot unknown, ...)."""


class EmulatorState:
    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self._random = random.Random(self.settings.seed)
        self.flood = FloodControl(self.settings.rate_limits)
        self.bots: dict[str, EmulatedBot] = {}
        self.bots_by_id: dict[int, EmulatedBot] = {}
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.invite_links: dict[str, InviteLink] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.callbacks: OrderedDict[str, tuple[int, Action, float]] = OrderedDict()
        self.actions: OrderedDict[int, Action] = OrderedDict()
        self._action_ids = itertools.count(1)
        self._user_ids = itertools.count(self._random.randint(100_000_000, 900_000_000))
        self._group_ids = itertools.count(1_000_000_001)
        self._changed: set[asyncio.Future[None]] = set()

    # -- bots -----------------------------------------------------------------

    def add_bot(
        self, token: str, *, username: str | None = None, first_name: str | None = None
    ) -> EmulatedBot:
        match = TOKEN_RE.match(token)
        if match is None:
            raise EmulatorError("a bot token looks like 123456:ABC-def_ghi")
        bot_id = int(match.group(1))
        if token in self.bots:
            return self.bots[token]
        if bot_id in self.bots_by_id:
            raise EmulatorError(f"bot {bot_id} already has another token")
        name = username or f"bot{bot_id}_bot"
        first = self.settings.first_update_id
        queue = UpdateQueue(
            first if first is not None else self._random.randint(10_000_000, 900_000_000),
            self.settings.update_retention,
        )
        user = User(bot_id, first_name or name, username=name, is_bot=True)
        bot = EmulatedBot(token=token, user=user, queue=queue, settings=self.settings)
        self.bots[token] = bot
        self.bots_by_id[bot_id] = bot
        self.users[bot_id] = user
        return bot

    def bot(self, ref: EmulatedBot | str | int) -> EmulatedBot:
        if isinstance(ref, EmulatedBot):
            return ref
        found = self.bots.get(ref) if isinstance(ref, str) else self.bots_by_id.get(ref)
        if found is None:
            raise EmulatorError("no such bot in the emulator")
        return found

    # -- users and chats ---------------------------------------------------------

    def add_user(
        self,
        first_name: str = "Ana",
        *,
        username: str | None = None,
        language_code: str | None = "pt-br",
        user_id: int | None = None,
    ) -> User:
        uid = user_id if user_id is not None else next(self._user_ids)
        if uid in self.users:
            return self.users[uid]
        user = User(uid, first_name, username=username, language_code=language_code)
        self.users[uid] = user
        self.chats[uid] = Chat(uid, "private", user=user)
        return user

    def user(self, ref: User | int) -> User:
        if isinstance(ref, User):
            return ref
        if ref not in self.users:
            raise EmulatorError(f"no user {ref} in the emulator")
        return self.users[ref]

    def add_group(
        self,
        title: str,
        *,
        bots: list[EmulatedBot | str | int] | None = None,
        chat_id: int | None = None,
    ) -> Chat:
        """A supergroup; the bots listed are administrators (so they see members join).
        ``chat_id``: a given id (e.g. the one a configuration names)."""
        if chat_id is None:
            chat_id = -(10**12) - next(self._group_ids)
        elif chat_id >= 0 or chat_id in self.chats:
            raise EmulatorError(f"chat id {chat_id} is not a free group id")
        chat = Chat(chat_id, "supergroup", title=title)
        for ref in bots or []:
            chat.members[self.bot(ref).id] = "administrator"
        self.chats[chat_id] = chat
        return chat

    def writable_chat(self, bot: EmulatedBot, chat_ref: int | str) -> Chat:
        """The chat a bot may send to, or the error Telegram gives."""
        chat = self.chats.get(chat_ref) if isinstance(chat_ref, int) else None
        if chat is None:
            raise bad_request(CHAT_NOT_FOUND)
        if chat.type == "private":
            if chat.id in self.bots_by_id:
                raise forbidden_error("bot can't send messages to bots")
            if chat.user is not None and bot.id in chat.user.blocked:
                raise forbidden_error(BLOCKED)
            if chat.id not in bot.started:
                raise forbidden_error(CANT_INITIATE)
            return chat
        status = chat.members.get(bot.id, "left")
        if status == "kicked":
            raise forbidden_error(f"bot was kicked from the {chat.type} chat")
        if status == "left":
            raise forbidden_error(f"bot is not a member of the {chat.type} chat")
        return chat

    def known_chat(self, bot: EmulatedBot, chat_ref: int | str) -> Chat:
        chat = self.chats.get(chat_ref) if isinstance(chat_ref, int) else None
        if chat is None or (chat.type == "private" and chat.id not in bot.started):
            raise bad_request(CHAT_NOT_FOUND)
        if chat.type != "private" and chat.members.get(bot.id, "left") in ("left", "kicked"):
            raise bad_request(CHAT_NOT_FOUND)
        return chat

    def admin_chat(self, bot: EmulatedBot, chat_ref: int | str) -> Chat:
        chat = self.known_chat(bot, chat_ref)
        if chat.type == "private":
            raise bad_request("method is available for supergroup and channel chats only")
        if chat.members.get(bot.id) not in ("administrator", "creator"):
            raise bad_request("not enough rights to manage chat")
        return chat

    # -- messages and files --------------------------------------------------------

    def new_message(
        self, bot: EmulatedBot, chat: Chat, sender: User, content: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "message_id": bot.next_message_id(chat.id),
            "from": sender.to_api(),
            "chat": chat.to_api(),
            "date": int(time.time()),
            **content,
        }

    def remember_file(self, kind: str, unique: str, extra: dict[str, Any]) -> dict[str, Any]:
        """A file object with a fresh file_id; the same content keeps its file_unique_id."""
        raw = bytes.fromhex(unique[:32].ljust(32, "0"))
        file_id = base64.urlsafe_b64encode(raw + secrets.token_bytes(12)).decode().rstrip("=")
        obj = {"file_id": file_id, "file_unique_id": unique[:16], **extra}
        self.files[file_id] = {"kind": kind, **obj}
        return obj

    @staticmethod
    def digest(value: str | bytes) -> str:
        data = value.encode() if isinstance(value, str) else value
        return hashlib.sha256(data).hexdigest()

    def sent(
        self,
        bot: EmulatedBot,
        message: dict[str, Any],
        method: str,
        *,
        text: str | None = None,
        media: str | None = None,
    ) -> dict[str, Any]:
        """Keep a message the bot sent (or edited) and add it to the transcript."""
        bot.store(StoredMessage(message, from_bot=True))
        markup = message.get("reply_markup")
        bot.record(
            Sent(
                at=time.time(),
                bot_id=bot.id,
                chat_id=int(message["chat"]["id"]),
                message_id=int(message["message_id"]),
                method=method,
                text=text,
                reply_markup=markup,
                media=media,
            )
        )
        self.changed()
        return message

    @staticmethod
    def member_update(
        chat: Chat,
        actor: User,
        user: User,
        old: MemberStatus,
        new: MemberStatus,
        invite: InviteLink | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "chat": chat.to_api(),
            "from": actor.to_api(),
            "date": int(time.time()),
            "old_chat_member": member_to_api(user, old),
            "new_chat_member": member_to_api(user, new),
        }
        if invite is not None:
            body["invite_link"] = invite.to_api()
        return body

    def admin_bots(self, chat: Chat) -> list[EmulatedBot]:
        return [
            self.bots_by_id[uid]
            for uid, status in chat.members.items()
            if uid in self.bots_by_id and status in ("administrator", "creator")
        ]

    # -- user actions ----------------------------------------------------------------

    def new_action(
        self, kind: ActionKind, bot: EmulatedBot, chat_id: int, user: User, **fields: Any
    ) -> Action:
        action = Action(
            id=next(self._action_ids),
            kind=kind,
            bot_id=bot.id,
            chat_id=chat_id,
            user_id=user.id,
            update_id=None,
            at=time.time(),
            **fields,
        )
        self.actions[action.id] = action
        while len(self.actions) > self.settings.action_limit:
            self.actions.popitem(last=False)
        return action

    def deliver(self, bot: EmulatedBot, action: Action, kind: str, body: dict[str, Any]) -> Action:
        action.update_id = bot.queue.push(kind, action.chat_id, body)
        if action.update_id is not None:
            bot.unseen_actions[action.update_id] = action
        self.changed()
        return action

    # -- waiting on change ---------------------------------------------------------------

    def changed(self) -> None:
        for waiter in self._changed:
            if not waiter.done():
                waiter.set_result(None)
        self._changed.clear()

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 10.0) -> T:
        """Wait until ``predicate()`` returns something truthy; TimeoutError at the deadline."""
        async with asyncio.timeout(within):
            while True:
                result = predicate()
                if result:
                    return result
                waiter = asyncio.get_running_loop().create_future()
                self._changed.add(waiter)
                try:
                    await waiter
                finally:
                    self._changed.discard(waiter)
