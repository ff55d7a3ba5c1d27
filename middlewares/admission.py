"""Admission: which updates of a getUpdates batch run at all, decided from the raw JSON.

Duplicates (redelivered updates), users over their flood limit and repeated
``/start`` within the debounce window are settled in one Redis round trip per
batch (``storage.updates``), before any pydantic model or aiogram Dispatcher
sees them. This reads only the few fields it needs and never fails on an odd
shape: whatever it cannot read is admitted and left to the pipeline, which
dead-letters what aiogram cannot parse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from storage.updates import Candidate, Decision, UpdateClaims

_START = "/start"


def chat_of(raw: dict[str, Any]) -> int:
    """The chat an update belongs to, for per-chat ordering (0: not tied to a chat)."""
    for kind, body in raw.items():
        if kind == "update_id" or not isinstance(body, dict):
            continue
        chat = body.get("chat")
        if chat is None and isinstance(body.get("message"), dict):
            chat = body["message"].get("chat")
        if isinstance(chat, dict) and _is_int(chat.get("id")):
            return int(chat["id"])
        sender = body.get("from")
        if isinstance(sender, dict) and _is_int(sender.get("id")):
            return int(sender["id"])
    return 0


def candidate(update_id: int, raw: dict[str, Any]) -> Candidate:
    """What admission needs: the user (messages and button presses count against the
    flood limit, as they did in aiogram's message and callback observers) and /start."""
    message = raw.get("message")
    if isinstance(message, dict):
        user = _user_id(message)
        text = message.get("text")
        start = isinstance(text, str) and (
            text == _START or text.startswith(("/start ", "/start@"))
        )
        chat = message.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        return Candidate(update_id, user, chat_id if isinstance(chat_id, int) else 0, start)
    query = raw.get("callback_query")
    if isinstance(query, dict):
        return Candidate(update_id, _user_id(query))
    return Candidate(update_id)


class BatchAdmission:
    def __init__(self, claims: UpdateClaims) -> None:
        self._claims = claims

    async def admit(
        self,
        bot_id: str,
        epoch: int,
        batch: Sequence[tuple[int, dict[str, Any]]],
        *,
        by_offset: bool,
    ) -> list[Decision]:
        """One decision per (update_id, raw update), in order; one Redis round trip."""
        candidates = [candidate(update_id, raw) for update_id, raw in batch]
        minute = int(time.time() // 60)  # flood window; instance clocks agree well enough
        return await self._claims.admit(
            bot_id, epoch, candidates, minute=minute, by_offset=by_offset
        )


def _user_id(body: dict[str, Any]) -> int:
    sender = body.get("from")
    if isinstance(sender, dict) and _is_int(sender.get("id")) and not sender.get("is_bot"):
        return int(sender["id"])
    return 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
