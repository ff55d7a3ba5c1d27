"""Count every update by outcome and time its handling, per bot."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject

from fleet.metrics import OUTCOMES, FleetMetrics

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class MetricsMiddleware(BaseMiddleware):
    def __init__(self, metrics: FleetMetrics) -> None:
        self._metrics = metrics

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        bot_id: str = data["bot_id"]
        started = time.perf_counter()
        result = await handler(event, data)
        self._metrics.handle_seconds.labels(bot_id).observe(time.perf_counter() - started)
        outcome = result if isinstance(result, str) and result in OUTCOMES else "handled"
        self._metrics.updates.labels(bot_id, outcome).inc()
        return result
