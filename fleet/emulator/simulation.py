"""Simulated users: send text and commands, press buttons, block the bot, join by invite.

Each action becomes the update Telegram would send, and an :class:`Action` that
the bot's later messages in that chat link back to.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fleet.emulator.bots import EmulatedBot
from fleet.emulator.entities import command_entities
from fleet.emulator.state import EmulatorError, EmulatorState
from fleet.emulator.world import Action, Chat, MemberStatus, Sent, StoredMessage, User

BotRef = EmulatedBot | str | int
UserRef = User | int


class UserSimulation(EmulatorState):
    def user_sends(
        self, bot_ref: BotRef, user_ref: UserRef, text: str, *, chat: Chat | None = None
    ) -> Action:
        """The user writes ``text`` (``/start payload`` is a command) to the bot."""
        bot, user = self.bot(bot_ref), self.user(user_ref)
        if not text:
            raise EmulatorError("a user cannot send an empty message")
        target = chat or self.chats[user.id]
        if target.type == "private":
            if bot.id in user.blocked:
                self.unblock(bot, user)  # pressing "Restart" unblocks the bot first
            bot.started.add(user.id)
        elif target.status_of(user.id) in ("left", "kicked"):
            raise EmulatorError(f"user {user.id} is not a member of chat {target.id}")
        body: dict[str, Any] = self.new_message(bot, target, user, {"text": text})
        entities = command_entities(text)
        if entities:
            body["entities"] = entities
        bot.store(StoredMessage(body, from_bot=False))
        action = self.new_action(
            "message", bot, target.id, user, text=text, message_id=body["message_id"]
        )
        return self.deliver(bot, action, "message", body)

    def press_button(
        self,
        bot_ref: BotRef,
        user_ref: UserRef,
        message: Sent | int,
        *,
        data: str | None = None,
        text: str | None = None,
        chat: Chat | None = None,
        forged: str | None = None,
    ) -> Action:
        """Press an inline button of a message the bot sent, by callback data or label.

        ``forged``: a modified client sends this callback data instead of the button's
        (Telegram passes it on unchecked)."""
        bot, user = self.bot(bot_ref), self.user(user_ref)
        chat_id = chat.id if chat is not None else user.id
        message_id = message.message_id if isinstance(message, Sent) else message
        if isinstance(message, Sent):
            chat_id = message.chat_id
        stored = bot.find(chat_id, message_id)
        if stored is None or not stored.from_bot:
            raise EmulatorError(f"bot {bot.id} has no message {message_id} in chat {chat_id}")
        rows = (stored.data.get("reply_markup") or {}).get("inline_keyboard") or []
        buttons = [b for row in rows for b in row if "callback_data" in b]
        chosen = [
            b
            for b in buttons
            if (data is None or b["callback_data"] == data) and (text is None or b["text"] == text)
        ]
        if not chosen:
            raise EmulatorError(f"message {message_id} has no such button (data={data!r})")
        button = dict(chosen[0])
        if forged is not None:
            button["callback_data"] = forged
        query_id = str(secrets.randbits(63))
        body = {
            "id": query_id,
            "from": user.to_api(),
            "message": stored.data,
            "chat_instance": str(abs(hash((bot.id, chat_id))) % 10**18),
            "data": button["callback_data"],
        }
        action = self.new_action(
            "callback",
            bot,
            chat_id,
            user,
            data=button["callback_data"],
            message_id=message_id,
            callback_query_id=query_id,
        )
        self.callbacks[query_id] = (bot.id, action, time.monotonic())
        while len(self.callbacks) > self.settings.action_limit:
            self.callbacks.popitem(last=False)
        return self.deliver(bot, action, "callback_query", body)

    def block(self, bot_ref: BotRef, user_ref: UserRef) -> Action:
        """The user blocks the bot: sends get 403, the bot gets ``my_chat_member``."""
        return self._set_blocked(self.bot(bot_ref), self.user(user_ref), blocked=True)

    def unblock(self, bot_ref: BotRef, user_ref: UserRef) -> Action:
        return self._set_blocked(self.bot(bot_ref), self.user(user_ref), blocked=False)

    def _set_blocked(self, bot: EmulatedBot, user: User, *, blocked: bool) -> Action:
        if blocked:
            user.blocked.add(bot.id)
        else:
            user.blocked.discard(bot.id)
        old: MemberStatus = "member" if blocked else "kicked"
        new: MemberStatus = "kicked" if blocked else "member"
        chat = self.chats[user.id]
        body = self.member_update(chat, user, bot.user, old, new)
        action = self.new_action("block" if blocked else "unblock", bot, user.id, user)
        return self.deliver(bot, action, "my_chat_member", body)

    def join_via_invite(self, user_ref: UserRef, invite_link: str) -> list[Action]:
        """The user opens an invite link: joins (``chat_member``) or asks to (join request)."""
        user = self.user(user_ref)
        link = self.invite_links.get(invite_link)
        if link is None:
            raise EmulatorError("no such invite link")
        reason = link.usable(time.time())
        if reason:
            raise EmulatorError(reason)
        chat = self.chats[link.chat_id]
        old = chat.status_of(user.id)
        if old == "kicked":
            raise EmulatorError(f"user {user.id} is banned in chat {chat.id}")
        if old in ("member", "administrator", "creator"):
            raise EmulatorError(f"user {user.id} is already a member of chat {chat.id}")
        actions = []
        if link.creates_join_request:
            for bot in self.admin_bots(chat):
                body = {
                    "chat": chat.to_api(),
                    "from": user.to_api(),
                    "user_chat_id": user.id,
                    "date": int(time.time()),
                    "invite_link": link.to_api(),
                }
                action = self.new_action("join_request", bot, chat.id, user)
                actions.append(self.deliver(bot, action, "chat_join_request", body))
            return actions
        chat.members[user.id] = "member"
        link.joined += 1
        for bot in self.admin_bots(chat):
            body = self.member_update(chat, user, user, old, "member", link)
            action = self.new_action("join", bot, chat.id, user)
            actions.append(self.deliver(bot, action, "chat_member", body))
        self.changed()
        return actions

    # -- what the bots did ------------------------------------------------------------

    def transcript(self, bot_ref: BotRef, chat: Chat | User | int | None = None) -> list[Sent]:
        chat_id = chat if isinstance(chat, int) or chat is None else chat.id
        return self.bot(bot_ref).chat_transcript(chat_id)

    def replies_to(self, action: Action) -> list[Sent]:
        bot = self.bots_by_id.get(action.bot_id)
        if bot is None:
            return []
        return [entry for entry in bot.transcript if entry.action_id == action.id]

    def reply_latencies(self) -> list[float]:
        """Seconds from each remembered user action to the first bot message answering it."""
        first: dict[int, float] = {}
        for bot in self.bots.values():
            for entry in bot.transcript:
                if entry.action_id is not None and entry.action_id not in first:
                    first[entry.action_id] = entry.at
        return [
            first[action.id] - action.at for action in self.actions.values() if action.id in first
        ]

    def reset_transcripts(self, bot_ref: BotRef | None = None) -> None:
        bots = [self.bot(bot_ref)] if bot_ref is not None else list(self.bots.values())
        for bot in bots:
            bot.transcript.clear()
        if bot_ref is None:
            self.actions.clear()

    async def wait_for_replies(
        self, action: Action, count: int = 1, within: float = 10.0
    ) -> list[Sent]:
        return await self.wait_for(
            lambda: replies if len(replies := self.replies_to(action)) >= count else None,
            within,
        )

    async def wait_for_transcript(
        self,
        bot_ref: BotRef,
        count: int,
        chat: Chat | User | int | None = None,
        within: float = 10.0,
    ) -> list[Sent]:
        return await self.wait_for(
            lambda: sent if len(sent := self.transcript(bot_ref, chat)) >= count else None,
            within,
        )
