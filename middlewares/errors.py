"""A handler that fails is logged with its bot id, counted, and written to dead letters.

The update then counts as done (its offset may be confirmed): it is kept, not
lost. If even the dead letter cannot be written, the update stays unconfirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from fleet.errors import FleetError, UpdateNotStored
from storage.repositories.dead_letters import FailedUpdate
from storage.services import DeadLetters

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class ErrorsMiddleware(BaseMiddleware):
    def __init__(self, dead_letters: DeadLetters) -> None:
        self._dead_letters = dead_letters

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        try:
            return await handler(event, data)
        except FleetError as exc:
            if isinstance(exc, UpdateNotStored):
                raise
            error: Exception = exc
        except Exception as exc:
            error = exc
        bot_id: str = data["bot_id"]
        log.error(
            "bot %s: update %s failed: %s: %s",
            bot_id, event.update_id, type(error).__name__, error, exc_info=error,
        )  # fmt: skip
        failed = FailedUpdate(
            bot_id=bot_id,
            update_id=event.update_id,
            payload=event.model_dump(mode="json", exclude_none=True, by_alias=True),
            error_type=type(error).__name__,
            error=str(error)[:2000],
        )
        try:
            await self._dead_letters.record(failed)
        except Exception as exc:
            raise UpdateNotStored(f"bot {bot_id}: dead letter for {event.update_id}") from exc
        return "failed"
