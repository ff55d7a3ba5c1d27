"""Telegram's checks and error texts, seen on the wire (raw HTTP, JSON, form and multipart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from fleet.emulator import EmulatedBot, EmulatorServer, RateLimits, TelegramEmulator, User

TOKEN = "7200000001:validation-token"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def world(emulator: TelegramEmulator) -> tuple[EmulatedBot, User]:
    emulator.set_rate_limits(RateLimits.off())
    bot = emulator.add_bot(TOKEN)
    user = emulator.add_user("Caio")
    emulator.user_sends(bot, user, "/start")
    return bot, user


async def call(
    http: aiohttp.ClientSession,
    server: EmulatorServer,
    method: str,
    token: str = TOKEN,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{server.base_url}/bot{token}/{method}", **kwargs) as response:
        body = orjson.loads(await response.read())
        assert response.content_type == "application/json"
        if not body["ok"]:
            assert body["error_code"] == response.status
        return response.status, body


async def test_unknown_token_and_unknown_method(
    http: aiohttp.ClientSession, emulator_server: EmulatorServer, world: object
) -> None:
    status, body = await call(http, emulator_server, "getMe", token="1:nope")
    assert (status, body["description"]) == (401, "Unauthorized")
    status, body = await call(http, emulator_server, "sendTelepathy")
    assert (status, body["description"]) == (404, "Not Found")
    async with http.get(f"{emulator_server.base_url}/favicon.ico") as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"chat_id": 42, "text": "oi"}, "Bad Request: chat not found"),
        ({"text": "oi"}, "Bad Request: chat_id is empty"),
        ({"chat_id": "USER", "text": ""}, "Bad Request: message text is empty"),
        ({"chat_id": "USER", "text": "x" * 4097}, "Bad Request: message is too long"),
        ({"chat_id": "USER", "text": {"a": 1}}, 'Bad Request: parameter "text" must be a string'),
        (
            {"chat_id": "USER", "text": "<b>oi", "parse_mode": "HTML"},
            "Bad Request: can't parse entities: "
            'Can\'t find end tag corresponding to start tag "b"',
        ),
        (
            {
                "chat_id": "USER",
                "text": "oi",
                "reply_markup": {"inline_keyboard": [[{"text": "x", "callback_data": "d" * 65}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
    ],
)
async def test_send_message_errors(
    http: aiohttp.ClientSession,
    emulator_server: EmulatorServer,
    world: tuple[EmulatedBot, User],
    params: dict[str, Any],
    description: str,
) -> None:
    _, user = world
    if params.get("chat_id") == "USER":
        params = {**params, "chat_id": user.id}
    status, body = await call(http, emulator_server, "sendMessage", json=params)
    assert (status, body["description"]) == (400, description)


async def test_caption_limit_and_form_encoded_markup(
    http: aiohttp.ClientSession, emulator_server: EmulatorServer, world: tuple[EmulatedBot, User]
) -> None:
    _, user = world
    status, body = await call(
        http,
        emulator_server,
        "sendPhoto",
        data={"chat_id": str(user.id), "photo": "https://x.example/p.jpg", "caption": "c" * 1025},
    )
    assert (status, body["description"]) == (400, "Bad Request: message caption is too long")
    markup = orjson.dumps({"inline_keyboard": [[{"text": "Pagar", "callback_data": "pay"}]]})
    status, body = await call(
        http,
        emulator_server,
        "sendMessage",
        data={"chat_id": str(user.id), "text": "oi", "reply_markup": markup.decode()},
    )
    assert status == 200
    assert body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "pay"


async def test_blocked_user_gives_403_and_the_bot_hears_about_it(
    http: aiohttp.ClientSession,
    emulator_server: EmulatorServer,
    emulator: TelegramEmulator,
    world: tuple[EmulatedBot, User],
) -> None:
    bot, user = world
    emulator.block(bot, user)
    status, body = await call(
        http, emulator_server, "sendMessage", json={"chat_id": user.id, "text": "oi"}
    )
    assert (status, body["description"]) == (403, "Forbidden: bot was blocked by the user")
    status, body = await call(http, emulator_server, "getUpdates")
    kinds = [next(k for k in update if k != "update_id") for update in body["result"]]
    assert kinds == ["message", "my_chat_member"]
    assert body["result"][1]["my_chat_member"]["new_chat_member"]["status"] == "kicked"
    emulator.user_sends(bot, user, "/start")  # "Restart" unblocks
    status, _ = await call(
        http, emulator_server, "sendMessage", json={"chat_id": user.id, "text": "oi"}
    )
    assert status == 200


async def test_edit_and_delete_errors(
    http: aiohttp.ClientSession, emulator_server: EmulatorServer, world: tuple[EmulatedBot, User]
) -> None:
    _, user = world
    _, sent = await call(
        http, emulator_server, "sendMessage", json={"chat_id": user.id, "text": "a"}
    )
    mid = sent["result"]["message_id"]
    edit = {"chat_id": user.id, "message_id": mid, "text": "b"}
    status, body = await call(http, emulator_server, "editMessageText", json=edit)
    assert status == 200 and body["result"]["text"] == "b" and "edit_date" in body["result"]
    status, body = await call(http, emulator_server, "editMessageText", json=edit)
    assert status == 400 and body["description"].startswith("Bad Request: message is not modified")
    status, _ = await call(
        http, emulator_server, "deleteMessage", json={"chat_id": user.id, "message_id": mid}
    )
    assert status == 200
    status, body = await call(http, emulator_server, "editMessageText", json=edit)
    assert (status, body["description"]) == (400, "Bad Request: message to edit not found")
    status, body = await call(
        http, emulator_server, "deleteMessage", json={"chat_id": user.id, "message_id": mid}
    )
    assert (status, body["description"]) == (400, "Bad Request: message to delete not found")


@pytest.mark.parametrize(
    ("headers", "payload"),
    [
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": "application/json"}, b"[1, 2]"),
        ({"Content-Type": "multipart/form-data; boundary=zz"}, b"--zz\r\ngarbage"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"chat_id=%ZZ&text=%"),
    ],
)
async def test_malformed_bodies_are_400_not_500(
    http: aiohttp.ClientSession,
    emulator_server: EmulatorServer,
    world: object,
    headers: dict[str, str],
    payload: bytes,
) -> None:
    status, body = await call(http, emulator_server, "sendMessage", data=payload, headers=headers)
    assert status == 400
    assert body["description"].startswith("Bad Request: ")


async def test_group_invite_link_join_ban_and_member_status(
    http: aiohttp.ClientSession,
    emulator_server: EmulatorServer,
    emulator: TelegramEmulator,
    world: tuple[EmulatedBot, User],
) -> None:
    bot, user = world
    group = emulator.add_group("VIP", bots=[bot])
    await call(
        http, emulator_server, "getUpdates", json={"allowed_updates": ["message", "chat_member"]}
    )
    status, body = await call(
        http, emulator_server, "createChatInviteLink", json={"chat_id": group.id, "member_limit": 1}
    )
    assert status == 200 and body["result"]["member_limit"] == 1
    link = body["result"]["invite_link"]
    emulator.join_via_invite(user, link)
    other = emulator.add_user("Duda")
    with pytest.raises(Exception, match="member limit"):
        emulator.join_via_invite(other, link)
    _, body = await call(http, emulator_server, "getUpdates", json={"offset": -1})
    joined = body["result"][0]["chat_member"]
    assert joined["new_chat_member"]["status"] == "member"
    assert joined["invite_link"]["invite_link"] == link
    member = {"chat_id": group.id, "user_id": user.id}
    assert (await call(http, emulator_server, "banChatMember", json=member))[0] == 200
    _, body = await call(http, emulator_server, "getChatMember", json=member)
    assert body["result"]["status"] == "kicked"
    await call(http, emulator_server, "unbanChatMember", json=member)
    _, body = await call(http, emulator_server, "getChatMember", json=member)
    assert body["result"]["status"] == "left"
