"""One bot's pending updates with getUpdates semantics.

Updates stay until confirmed (an offset above their id, or a 2xx webhook
answer) or until they are older than the retention. One long poll at a time:
a new getUpdates ends the waiting one with 409, as Telegram does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from fleet.emulator.errors import POLL_CONFLICT, ApiError

# Telegram leaves these out unless allowed_updates names them.
NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)


@dataclass(slots=True)
class PendingUpdate:
    update_id: int
    kind: str
    chat_id: int
    created: float  # monotonic
    encoded: bytes  # the Update object as JSON, encoded once


class UpdateQueue:
    def __init__(self, first_update_id: int, retention: float) -> None:
        self._next_id = first_update_id
        self._retention = retention
        self._entries: dict[int, PendingUpdate] = {}
        self._allowed: frozenset[str] = UPDATE_TYPES - NOT_BY_DEFAULT
        self._poll: asyncio.Future[None] | None = None
        self._listeners: list[Callable[[PendingUpdate], None]] = []
        self.created = 0
        self.confirmed = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, update_id: object) -> bool:
        return update_id in self._entries

    @property
    def allowed(self) -> frozenset[str]:
        return self._allowed

    def set_allowed(self, names: Iterable[str]) -> None:
        """Remember allowed_updates; an empty list means the default set."""
        chosen = frozenset(names) & UPDATE_TYPES
        self._allowed = chosen or (UPDATE_TYPES - NOT_BY_DEFAULT)

    def add_listener(self, listener: Callable[[PendingUpdate], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[PendingUpdate], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def push(self, kind: str, chat_id: int, body: dict[str, Any]) -> int | None:
        """Queue an update of this kind; None when allowed_updates filters it out."""
        if kind not in self._allowed:
            return None
        update_id = self._next_id
        self._next_id += 1
        encoded = orjson.dumps({"update_id": update_id, kind: body})
        entry = PendingUpdate(update_id, kind, chat_id, time.monotonic(), encoded)
        self._entries[update_id] = entry
        self.created += 1
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(None)
        for listener in self._listeners:
            listener(entry)
        return update_id

    def confirm(self, offset: int) -> None:
        """Forget updates below ``offset``; a negative offset keeps only the last -offset."""
        if offset < 0:
            keep = -offset
            while len(self._entries) > keep:
                self._drop_first()
            return
        while self._entries:
            first = next(iter(self._entries))
            if first >= offset:
                break
            self._drop_first()

    def _drop_first(self) -> None:
        del self._entries[next(iter(self._entries))]
        self.confirmed += 1

    def remove(self, update_id: int) -> None:
        if self._entries.pop(update_id, None) is not None:
            self.confirmed += 1

    def clear(self) -> None:
        self._entries.clear()

    def expire(self) -> None:
        horizon = time.monotonic() - self._retention
        while self._entries:
            first = next(iter(self._entries.values()))
            if first.created > horizon:
                break
            del self._entries[first.update_id]
            self.expired += 1

    def peek(self, limit: int) -> list[PendingUpdate]:
        self.expire()
        return list(islice(self._entries.values(), limit))

    def pending(self) -> list[PendingUpdate]:
        self.expire()
        return list(self._entries.values())

    # -- long polling -------------------------------------------------------------

    def begin_poll(self) -> asyncio.Future[None]:
        """Start a poll; the one still waiting (if any) ends with 409 Conflict."""
        if self._poll is not None and not self._poll.done():
            self._poll.set_exception(ApiError(409, POLL_CONFLICT))
        self._poll = asyncio.get_running_loop().create_future()
        return self._poll

    def end_poll(self, poll: asyncio.Future[None]) -> None:
        if self._poll is poll:
            self._poll = None
        if not poll.done():
            poll.cancel()
        elif not poll.cancelled():
            poll.exception()  # mark retrieved: nobody else will

    def interrupt(self, error: ApiError) -> None:
        """End the waiting poll with ``error`` (token revoked, webhook set)."""
        if self._poll is not None and not self._poll.done():
            self._poll.set_exception(error)

    @property
    def polling(self) -> bool:
        return self._poll is not None and not self._poll.done()
