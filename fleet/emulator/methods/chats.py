"""getChat, getChatMember, banChatMember, unbanChatMember and createChatInviteLink."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from fleet.emulator.bots import EmulatedBot
from fleet.emulator.errors import bad_request
from fleet.emulator.params import Params
from fleet.emulator.world import Chat, InviteLink, MemberStatus, User, member_to_api

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator


def _member(emu: TelegramEmulator, p: Params) -> User:
    user_id = p.need_integer("user_id", empty="user_id is empty")
    user = emu.users.get(user_id)
    if user is None:
        raise bad_request("user not found")
    return user


def _announce(
    emu: TelegramEmulator, chat: Chat, actor: User, user: User, old: MemberStatus, new: MemberStatus
) -> None:
    """A chat_member update to every admin bot of the chat (those who asked for them)."""
    for admin in emu.admin_bots(chat):
        admin.queue.push("chat_member", chat.id, emu.member_update(chat, actor, user, old, new))
    emu.changed()


async def get_chat(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    return emu.known_chat(bot, p.chat_id()).to_full_info()


async def get_chat_member(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.known_chat(bot, p.chat_id())
    user = _member(emu, p)
    return member_to_api(user, chat.status_of(user.id), chat.until.get(user.id, 0))


async def ban_chat_member(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.admin_chat(bot, p.chat_id())
    user = _member(emu, p)
    until = p.integer("until_date", lo=0) or 0
    p.boolean("revoke_messages")
    if user.id == bot.id:
        raise bad_request("can't remove chat owner")
    old = chat.status_of(user.id)
    if chat.members.get(user.id) in ("creator", "administrator") and user.id in emu.bots_by_id:
        raise bad_request("user is an administrator of the chat")
    chat.members[user.id] = "kicked"
    # Telegram treats bans shorter than 30 s or longer than 366 days as forever.
    now = int(time.time())
    chat.until[user.id] = until if 30 <= until - now <= 366 * 86400 else 0
    if old != "kicked":
        _announce(emu, chat, bot.user, user, old, "kicked")
    return True


async def unban_chat_member(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.admin_chat(bot, p.chat_id())
    user = _member(emu, p)
    only_if_banned = p.boolean("only_if_banned")
    old = chat.status_of(user.id)
    if old == "kicked" or (not only_if_banned and old in ("member", "restricted")):
        # Without only_if_banned the user is also removed, so they can join again.
        chat.members.pop(user.id, None)
        chat.until.pop(user.id, None)
        _announce(emu, chat, bot.user, user, old, "left")
    return True


async def create_chat_invite_link(emu: TelegramEmulator, bot: EmulatedBot, p: Params) -> Any:
    chat = emu.admin_chat(bot, p.chat_id())
    name = p.string("name")
    if name is not None and len(name) > 32:
        raise bad_request("invite link name is too long")
    expire_date = p.integer("expire_date", lo=0)
    member_limit = p.integer("member_limit")
    joins_by_request = p.boolean("creates_join_request")
    if member_limit is not None and not 1 <= member_limit <= 99_999:
        raise bad_request("member limit must be between 1 and 99999")
    if joins_by_request and member_limit is not None:
        raise bad_request(
            "member limit can't be specified for links requiring administrator approval"
        )
    if expire_date is not None and expire_date and expire_date <= int(time.time()):
        raise bad_request("expire date is in the past")
    link = InviteLink(
        url=f"https://t.me/+{secrets.token_urlsafe(12)}",
        chat_id=chat.id,
        creator=bot.user,
        name=name,
        expire_date=expire_date or None,
        member_limit=member_limit,
        creates_join_request=joins_by_request,
    )
    emu.invite_links[link.url] = link
    return link.to_api()


METHODS = {
    "getchat": get_chat,
    "getchatmember": get_chat_member,
    "banchatmember": ban_chat_member,
    "unbanchatmember": unban_chat_member,
    "createchatinvitelink": create_chat_invite_link,
}
