"""Invariant 2: each (bot, update) is handled once, across restarts and instances.

The claim is a short lease ("processing"), made permanent ("done", 24 h) only
after handling finished or the failure was stored: an instance that dies
mid-update leaves a claim that expires, and the redelivery is handled then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from fleet.errors import UpdateBusy
from storage.idempotency import UpdateDeduplicator

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class DedupMiddleware(BaseMiddleware):
    def __init__(self, dedup: UpdateDeduplicator, lease_seconds: int = 120) -> None:
        self._dedup = dedup
        self._lease = lease_seconds

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        bot_id: str = data["bot_id"]
        epoch: int = data.get("lease_epoch", 0)  # from the runner's fence
        state = await self._dedup.claim(bot_id, event.update_id, self._lease, epoch)
        if state == "done":
            return "duplicate"
        if state == "busy":
            raise UpdateBusy(f"bot {bot_id}: update {event.update_id} is being handled elsewhere")
        try:
            result = await handler(event, data)
        except BaseException:
            # Not handled (cancelled, or its failure could not be stored): let it come again.
            await asyncio.shield(self._dedup.forget(bot_id, event.update_id))
            raise
        await self._dedup.complete(bot_id, event.update_id)
        return result
