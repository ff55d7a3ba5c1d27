"""Any parameters to any method: the answer is a well-formed envelope, never a 500.

Hypothesis drives :meth:`TelegramEmulator.respond`, the code path the HTTP
handler uses, on its own event loop (one per method, reused across examples).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.emulator import EmulatorSettings, RateLimits, TelegramEmulator
from fleet.emulator.methods import METHODS
from fleet.emulator.params import Params

TOKEN = "7300000001:fuzz-token"
NAMES = (
    "chat_id", "text", "parse_mode", "reply_markup", "message_id", "caption", "photo", "video",
    "audio", "document", "media", "action", "callback_query_id", "show_alert", "url", "user_id",
    "until_date", "only_if_banned", "name", "expire_date", "member_limit", "creates_join_request",
    "offset", "limit", "timeout", "allowed_updates", "secret_token", "max_connections",
    "drop_pending_updates", "commands", "entities", "caption_entities", "inline_message_id",
    "cache_time", "revoke_messages", "scope",
)  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _encoded(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return "null"


values = (
    json_values
    | json_values.map(_encoded)  # how aiogram sends objects in a form
    | st.sampled_from(["HTML", "MarkdownV2", "Markdown", "<b>x", "*x", "https://x.example/a.jpg"])
    | st.sampled_from(["USER", "GROUP", "MSG", "PHOTO", "QUERY"])
)
junk = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=10), values, max_size=5)
_MARKUP = '{"inline_keyboard":[[{"text":"Comprar","callback_data":"buy"}]]}'
_ALBUM = '[{"type":"photo","media":"https://x.example/1.jpg"},{"type":"photo","media":"URL"}]'
# A valid call per method; examples drop some of its parameters and add or override others.
VALID: dict[str, dict[str, Any]] = {
    "sendmessage": {"chat_id": "USER", "text": "oi", "reply_markup": _MARKUP},
    "sendphoto": {"chat_id": "USER", "photo": "https://x.example/p.jpg", "caption": "c"},
    "sendvideo": {"chat_id": "GROUP", "video": "https://x.example/v.mp4"},
    "sendaudio": {"chat_id": "USER", "audio": "https://x.example/a.mp3"},
    "senddocument": {"chat_id": "USER", "document": "https://x.example/d.pdf"},
    "sendmediagroup": {"chat_id": "USER", "media": _ALBUM},
    "sendchataction": {"chat_id": "USER", "action": "typing"},
    "editmessagetext": {"chat_id": "USER", "message_id": "MSG", "text": "novo"},
    "editmessagecaption": {"chat_id": "USER", "message_id": "PHOTO", "caption": "novo"},
    "editmessagereplymarkup": {"chat_id": "USER", "message_id": "MSG", "reply_markup": _MARKUP},
    "deletemessage": {"chat_id": "USER", "message_id": "MSG"},
    "answercallbackquery": {"callback_query_id": "QUERY", "text": "ok"},
    "getchat": {"chat_id": "GROUP"},
    "getchatmember": {"chat_id": "GROUP", "user_id": "USER"},
    "banchatmember": {"chat_id": "GROUP", "user_id": "USER"},
    "unbanchatmember": {"chat_id": "GROUP", "user_id": "USER"},
    "createchatinvitelink": {"chat_id": "GROUP", "member_limit": 5},
    "getupdates": {"offset": 0, "limit": 10},
    "setwebhook": {"url": "http://127.0.0.1:9/hook", "secret_token": "s"},
    "setmycommands": {"commands": '[{"command":"start","description":"Começar"}]'},
}


def params_for(method: str) -> st.SearchStrategy[dict[str, Any]]:
    base = VALID.get(method, {})
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=len(base)) if base else st.just(set())
    return st.tuples(dropped, junk).map(
        lambda picked: {**{k: v for k, v in base.items() if k not in picked[0]}, **picked[1]}
    )


async def _world() -> tuple[TelegramEmulator, dict[str, Any]]:
    emulator = TelegramEmulator(
        EmulatorSettings(seed=3, max_long_poll=0, rate_limits=RateLimits.off())
    )
    bot = emulator.add_bot(TOKEN)
    user = emulator.add_user("Fuzz")
    emulator.user_sends(bot, user, "/start")
    group = emulator.add_group("fuzz", bots=[bot])
    group.members[user.id] = "member"
    ids: dict[str, Any] = {"USER": user.id, "GROUP": group.id, "URL": "https://x.example/2.jpg"}
    for method, raw in (
        ("sendmessage", VALID["sendmessage"]),
        ("sendphoto", VALID["sendphoto"]),
    ):
        status, body = await emulator.respond(TOKEN, method, Params(_fill(raw, ids)))
        assert status == 200, body
        ids["MSG" if method == "sendmessage" else "PHOTO"] = orjson.loads(body)["result"][
            "message_id"
        ]
    ids["QUERY"] = emulator.press_button(bot, user, ids["MSG"], data="buy").callback_query_id
    return emulator, ids


def _fill(raw: dict[str, Any], ids: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if isinstance(value, str):
            for name, real in ids.items():
                if value == name:
                    value = real
                    break
                if isinstance(real, str) and f'"{name}"' in value:
                    value = value.replace(f'"{name}"', f'"{real}"')
        out[key] = value
    return out


def check_envelope(status: int, body: bytes) -> None:
    decoded = orjson.loads(body)
    assert isinstance(decoded, dict)
    assert status != 500, decoded
    if decoded["ok"] is True:
        assert status == 200 and "result" in decoded
    else:
        assert decoded["ok"] is False
        assert decoded["error_code"] == status and status in (400, 401, 403, 404, 409, 429)
        assert isinstance(decoded["description"], str) and decoded["description"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_any_parameters_give_a_well_formed_envelope(method: str) -> None:
    with asyncio.Runner() as runner:
        emulator, ids = runner.run(_world())

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(raw=params_for(method))
        def check(raw: dict[str, Any]) -> None:
            status, body = runner.run(emulator.respond(TOKEN, method, Params(_fill(raw, ids))))
            check_envelope(status, body)

        try:
            check()
        finally:
            runner.run(emulator.close())
