"""aiogram handlers (Telegram side). ``build_router()`` returns a fresh router per Dispatcher.

Each feature module registers its handlers on that one router, in order (the
first match wins): every level of routers costs each update ~10 µs of aiogram's
propagation, so the tree is kept flat.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from aiogram import Router
from aiogram.types import ErrorEvent

from fleet.context import UpdateScope
from fleet.errors import is_transient
from fleet.metrics import FleetMetrics
from handlers import buttons, start

log = logging.getLogger(__name__)


def build_router() -> Router:
    """A new router: an aiogram Router can be attached to one Dispatcher only."""
    root = Router(name="root")
    start.register(root)
    buttons.register(root)
    start.register_fallback(root)  # last: any text no handler above took

    @root.error()
    async def on_error(
        event: ErrorEvent, bot_id: str, scope: UpdateScope, metrics: FleetMetrics
    ) -> NoReturn:
        """Log and count, then hand the error on: the pipeline decides retry or dead letter."""
        exc = event.exception
        kind = "transient" if is_transient(exc) else "permanent"
        metrics.update_errors.labels(bot_id, kind).inc()
        if kind == "transient":
            log.warning("bot %s: update %s hit %r", bot_id, scope.update_id, exc)
        else:
            log.error(
                "bot %s: update %s failed: %s: %s",
                bot_id, scope.update_id, type(exc).__name__, exc, exc_info=exc,
            )  # fmt: skip
        raise exc

    return root


__all__ = ["build_router"]
