"""Control API under ``/_emulator/...``: the Python simulation API over HTTP, and its client.

Used when the emulator runs as its own process (``botfleet emulator``), so the
daemon under test and the emulator do not share a core.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from fleet.emulator.faults import FaultPlan
from fleet.emulator.pix import PixError, PixFaults
from fleet.emulator.settings import RateLimits
from fleet.emulator.state import EmulatorError

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator

Body = dict[str, Any]
Action = Callable[["TelegramEmulator", Body], Awaitable[Any]]


def _chat(emu: TelegramEmulator, body: Body) -> Any:
    chat_id = body.get("chat")
    if chat_id is None:
        return None
    if chat_id not in emu.chats:
        raise EmulatorError(f"no chat {chat_id}")
    return emu.chats[chat_id]


async def _add_bot(emu: TelegramEmulator, b: Body) -> Any:
    bot = emu.add_bot(b["token"], username=b.get("username"), first_name=b.get("first_name"))
    return bot.get_me()


async def _add_user(emu: TelegramEmulator, b: Body) -> Any:
    keys = ("username", "language_code", "user_id")
    return emu.add_user(b.get("first_name", "Ana"), **{k: b[k] for k in keys if k in b}).to_api()


async def _add_group(emu: TelegramEmulator, b: Body) -> Any:
    return emu.add_group(b["title"], bots=list(b.get("bots", []))).to_api()


async def _user_sends(emu: TelegramEmulator, b: Body) -> Any:
    return emu.user_sends(b["bot"], b["user"], b["text"], chat=_chat(emu, b)).to_json()


async def _user_sends_many(emu: TelegramEmulator, b: Body) -> Any:
    """Many user messages in one request (load generators): ``sends`` is a list of
    {bot, user, text}; returns how many were queued."""
    sends = b.get("sends")
    if not isinstance(sends, list):
        raise EmulatorError("sends must be a list of {bot, user, text}")
    for item in sends:
        emu.user_sends(item["bot"], item["user"], item["text"])
    return len(sends)


async def _press_button(emu: TelegramEmulator, b: Body) -> Any:
    action = emu.press_button(
        b["bot"],
        b["user"],
        int(b["message_id"]),
        data=b.get("data"),
        text=b.get("text"),
        chat=_chat(emu, b),
        forged=b.get("forged"),
    )
    return action.to_json()


async def _transcript(emu: TelegramEmulator, b: Body) -> Any:
    count = int(b.get("count", 0))
    if count:
        sent = await emu.wait_for_transcript(
            b["bot"], count, b.get("chat"), float(b.get("within", 10))
        )
    else:
        sent = emu.transcript(b["bot"], b.get("chat"))
    return [entry.to_json() for entry in sent]


async def _replies_to(emu: TelegramEmulator, b: Body) -> Any:
    action = emu.actions.get(int(b["action_id"]))
    if action is None:
        raise EmulatorError("no such action (forgotten or never made)")
    count = int(b.get("count", 0))
    if count:
        replies = await emu.wait_for_replies(action, count, float(b.get("within", 10)))
    else:
        replies = emu.replies_to(action)
    return [entry.to_json() for entry in replies]


async def _action(emu: TelegramEmulator, b: Body) -> Any:
    action = emu.actions.get(int(b["action_id"]))
    if action is None:
        raise EmulatorError("no such action (forgotten or never made)")
    return action.to_json()


async def _set_faults(emu: TelegramEmulator, b: Body) -> Any:
    bot = b.pop("bot", None)
    emu.set_faults(FaultPlan.from_json(b), bot)
    return True


async def _reset_transcripts(emu: TelegramEmulator, b: Body) -> Any:
    emu.reset_transcripts(b.get("bot"))
    return True


async def _clear_faults(emu: TelegramEmulator, b: Body) -> Any:
    emu.clear_faults(b.get("bot"))
    return True


async def _set_rate_limits(emu: TelegramEmulator, b: Body) -> Any:
    emu.set_rate_limits(RateLimits(**b))
    return True


async def _revoke_token(emu: TelegramEmulator, b: Body) -> Any:
    emu.revoke_token(b["bot"])
    return True


async def _block(emu: TelegramEmulator, b: Body) -> Any:
    return emu.block(b["bot"], b["user"]).to_json()


async def _unblock(emu: TelegramEmulator, b: Body) -> Any:
    return emu.unblock(b["bot"], b["user"]).to_json()


async def _join_via_invite(emu: TelegramEmulator, b: Body) -> Any:
    return [a.to_json() for a in emu.join_via_invite(b["user"], b["invite_link"])]


async def _counters(emu: TelegramEmulator, b: Body) -> Any:
    return emu.counters()


async def _reply_latencies(emu: TelegramEmulator, b: Body) -> Any:
    return emu.reply_latencies()


# -- the sandbox PIX gateway (``emulator.pix``); a refused transition answers 409, unknown 404


def _id(b: Body, name: str = "id") -> str:
    value = b[name]
    if not isinstance(value, str):
        raise EmulatorError(f"{name} must be a string")
    return value


async def _pix_pay(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.pay(_id(b))


async def _pix_refund(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.refund(_id(b))


async def _pix_expire(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.expire(_id(b))


async def _pix_cancel(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.cancel(_id(b))


async def _pix_get(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.charge(_id(b))


async def _pix_charges(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.list_charges()


async def _pix_webhooks(emu: TelegramEmulator, b: Body) -> Any:
    """The deliveries log (every attempt), optionally of one event or one charge."""
    found = emu.pix.webhooks(b.get("event_id"), b.get("charge_id"))
    return [delivery.to_json() for delivery in found]


async def _pix_events(emu: TelegramEmulator, b: Body) -> Any:
    charge_id = b.get("charge_id")
    events = emu.pix.events.values()
    return [e.to_json() for e in events if charge_id is None or e.charge_id == charge_id]


async def _pix_faults(emu: TelegramEmulator, b: Body) -> Any:
    """Replace the PIX fault plan with these fields (``{}`` clears it); returns it."""
    emu.pix.set_faults(PixFaults.from_json(b))
    return emu.pix.faults_json()


async def _pix_redeliver(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.redeliver(_id(b, "event_id"))


async def _pix_release(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.release()


async def _pix_emit(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.emit(_id(b), _id(b, "type"), b.get("charge"))


async def _pix_configure(emu: TelegramEmulator, b: Body) -> Any:
    return emu.pix.configure(**b)


async def _pix_counters(emu: TelegramEmulator, b: Body) -> Any:
    return {**emu.pix.counters.to_json(), "held": emu.pix.held, "busy": emu.pix.busy}


_ACTIONS: dict[str, Action] = {
    "add_bot": _add_bot,
    "add_user": _add_user,
    "add_group": _add_group,
    "user_sends": _user_sends,
    "user_sends_many": _user_sends_many,
    "press_button": _press_button,
    "transcript": _transcript,
    "replies_to": _replies_to,
    "action": _action,
    "set_faults": _set_faults,
    "block": _block,
    "unblock": _unblock,
    "join_via_invite": _join_via_invite,
    "reset_transcripts": _reset_transcripts,
    "clear_faults": _clear_faults,
    "set_rate_limits": _set_rate_limits,
    "revoke_token": _revoke_token,
    "counters": _counters,
    "reply_latencies": _reply_latencies,
    "pix_pay": _pix_pay,
    "pix_refund": _pix_refund,
    "pix_expire": _pix_expire,
    "pix_cancel": _pix_cancel,
    "pix_get": _pix_get,
    "pix_charges": _pix_charges,
    "pix_webhooks": _pix_webhooks,
    "pix_events": _pix_events,
    "pix_faults": _pix_faults,
    "pix_redeliver": _pix_redeliver,
    "pix_release": _pix_release,
    "pix_emit": _pix_emit,
    "pix_configure": _pix_configure,
    "pix_counters": _pix_counters,
}


def add_control_routes(app: web.Application, emulator: TelegramEmulator) -> None:
    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["action"]
        try:
            raw = await request.read()
            body = orjson.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise EmulatorError("the body must be a JSON object")
            if name in _ACTIONS:
                result = await _ACTIONS[name](emulator, body)
            else:
                return _answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        except TimeoutError:
            return _answer(408, {"ok": False, "error_code": 408, "description": "timed out"})
        except PixError as exc:
            description = str(exc)
            return _answer(
                exc.status, {"ok": False, "error_code": exc.status, "description": description}
            )
        except (EmulatorError, KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            return _answer(400, {"ok": False, "error_code": 400, "description": detail})
        return _answer(200, {"ok": True, "result": result})

    app.router.add_post("/_emulator/{action}", handle)


def _answer(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class EmulatorControlError(Exception):
    status: int = 0  # the control API's HTTP status (400, 404, 408, 409)


class EmulatorClient:
    """The control API from another process: ``await client.user_sends(bot, user, "/start")``."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def request(self, action: str, **body: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(
            f"{self.base_url}/_emulator/{action}",
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        ) as response:
            answer = orjson.loads(await response.read())
        if not answer.get("ok"):
            error = EmulatorControlError(answer.get("description", "control call failed"))
            error.status = response.status
            raise error
        return answer["result"]

    def __getattr__(self, action: str) -> Callable[..., Awaitable[Any]]:
        if action.startswith("_") or action not in _ACTIONS:
            raise AttributeError(action)

        async def call(**body: Any) -> Any:
            return await self.request(action, **body)

        return call

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
