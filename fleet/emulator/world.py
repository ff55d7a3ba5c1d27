"""Users, chats, invite links and what happened in them, as Bot API objects.

Everything here is plain state with ``to_api()`` builders; the rules (who may
send what) live in the method modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

ChatType = Literal["private", "group", "supergroup", "channel"]
MemberStatus = Literal["creator", "administrator", "member", "restricted", "left", "kicked"]


@dataclass(slots=True)
class User:
    id: int
    first_name: str
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    # Bots (by Telegram id) this user has blocked.
    blocked: set[int] = field(default_factory=set)

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        return data


@dataclass(slots=True)
class Chat:
    id: int
    type: ChatType
    title: str | None = None
    # For a private chat, the user on the other side.
    user: User | None = None
    # Group members by user id (bots included), with their status.
    members: dict[int, MemberStatus] = field(default_factory=dict)
    until: dict[int, int] = field(default_factory=dict)  # ban end (0 = forever)

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private" and self.user is not None:
            data["first_name"] = self.user.first_name
            if self.user.username:
                data["username"] = self.user.username
        else:
            data["title"] = self.title or ""
        return data

    def to_full_info(self) -> dict[str, Any]:
        gifts = dict.fromkeys(
            (
                "unlimited_gifts",
                "limited_gifts",
                "unique_gifts",
                "premium_subscription",
                "gifts_from_channels",
            ),
            False,
        )
        return {
            **self.to_api(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": gifts,
        }

    def status_of(self, user_id: int) -> MemberStatus:
        if self.type == "private":
            return "member"
        return self.members.get(user_id, "left")


def member_to_api(user: User, status: MemberStatus, until_date: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = {"status": status, "user": user.to_api()}
    if status == "kicked":
        data["until_date"] = until_date
    elif status == "creator":
        data["is_anonymous"] = False
    elif status == "administrator":
        data.update(
            dict.fromkeys(
                (
                    "can_be_edited",
                    "is_anonymous",
                    "can_manage_video_chats",
                    "can_promote_members",
                    "can_change_info",
                    "can_post_stories",
                    "can_edit_stories",
                    "can_delete_stories",
                    "can_send_welcome_messages",
                ),
                False,
            )
        )
        data.update(
            dict.fromkeys(
                (
                    "can_manage_chat",
                    "can_delete_messages",
                    "can_restrict_members",
                    "can_invite_users",
                ),
                True,
            )
        )
    return data


@dataclass(slots=True)
class InviteLink:
    url: str
    chat_id: int
    creator: User
    name: str | None = None
    expire_date: int | None = None
    member_limit: int | None = None
    creates_join_request: bool = False
    is_revoked: bool = False
    joined: int = 0

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "invite_link": self.url,
            "creator": self.creator.to_api(),
            "creates_join_request": self.creates_join_request,
            "is_primary": False,
            "is_revoked": self.is_revoked,
        }
        for key in ("name", "expire_date", "member_limit"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    def usable(self, now: float) -> str | None:
        """Why a user cannot join through this link now, or None."""
        if self.is_revoked:
            return "the invite link was revoked"
        if self.expire_date is not None and now >= self.expire_date:
            return "the invite link has expired"
        if self.member_limit is not None and self.joined >= self.member_limit:
            return "the invite link reached its member limit"
        return None


@dataclass(slots=True)
class StoredMessage:
    """A message the emulator keeps so it can be edited, deleted or pressed."""

    data: dict[str, Any]
    from_bot: bool

    @property
    def chat_id(self) -> int:
        return int(self.data["chat"]["id"])

    @property
    def message_id(self) -> int:
        return int(self.data["message_id"])


@dataclass(slots=True)
class CallbackAnswer:
    text: str | None
    show_alert: bool
    url: str | None
    at: float = field(default_factory=time.time)


ActionKind = Literal["message", "callback", "block", "unblock", "join", "join_request"]


@dataclass(slots=True)
class Action:
    """One thing a simulated user did; bot messages that followed link back to it."""

    id: int
    kind: ActionKind
    bot_id: int
    chat_id: int
    user_id: int
    update_id: int | None
    at: float
    text: str | None = None
    data: str | None = None
    message_id: int | None = None
    callback_query_id: str | None = None
    answer: CallbackAnswer | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__ if k != "answer"}
        out["answer"] = None
        if self.answer is not None:
            out["answer"] = {
                "text": self.answer.text,
                "show_alert": self.answer.show_alert,
                "url": self.answer.url,
                "at": self.answer.at,
            }
        return out


@dataclass(slots=True)
class Sent:
    """One entry of a bot's transcript: a message it sent, edited or deleted."""

    at: float
    bot_id: int
    chat_id: int
    message_id: int
    method: str
    text: str | None = None
    reply_markup: dict[str, Any] | None = None
    media: str | None = None  # photo, video, audio, document
    action_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def buttons(self) -> list[dict[str, Any]]:
        """Inline buttons of this message, row by row flattened."""
        if not self.reply_markup:
            return []
        rows = self.reply_markup.get("inline_keyboard") or []
        return [button for row in rows for button in row]
