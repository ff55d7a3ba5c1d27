"""Record who wrote to the bot, batched: no database round trip per update."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject

from fleet.batcher import BatchWriter
from fleet.context import Handler, UpdateData
from storage.repositories.users import UserSeen


class UsersMiddleware(BaseMiddleware):
    def __init__(self, seen: BatchWriter[UserSeen]) -> None:
        self._seen = seen

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        context = cast(UpdateData, data)
        user = context.get("event_from_user")
        if user is not None and not user.is_bot:
            self._seen.add(
                UserSeen(
                    bot_id=context["bot_id"],
                    telegram_user_id=user.id,
                    seen_at=datetime.now(UTC),
                    username=user.username,
                    first_name=user.first_name,
                    last_name=user.last_name,
                    language_code=user.language_code,
                )
            )
        return await handler(event, data)
