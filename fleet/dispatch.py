"""Where a bot's aiogram Dispatcher is assembled: its workflow data, middlewares, router.

The one place. Everything before aiogram (admission) lives in the poll loop,
the error policy in ``fleet.pipeline``; inside the Dispatcher there are
aiogram's own error and user-context middlewares, ours that records users,
and a fresh router from ``handlers.build_router()`` (a router can be attached
to one Dispatcher only).

aiogram builds a middleware chain for every update at every observer it
passes, and copies the handler's name and docstring onto a fresh wrapper each
time (``functools.wraps``): about a sixth of its cost per update, measured.
:func:`cheaper_middleware_chains` makes the same chains without the copying,
and calls an observer's callback straight when it has no outer middleware.
Nothing in aiogram reads those copies; the chains and their order are
unchanged (``tests/unit/test_dispatch.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from aiogram import Dispatcher
from aiogram.dispatcher.event.telegram import TelegramEventObserver
from aiogram.dispatcher.middlewares.manager import MiddlewareManager

import handlers
from fleet.batcher import BatchWriter
from fleet.context import FleetData
from middlewares import UsersMiddleware
from storage.repositories.users import UserSeen


def build_dispatcher(data: FleetData, users: BatchWriter[UserSeen]) -> Dispatcher:
    cheaper_middleware_chains()
    dispatcher = Dispatcher(disable_fsm=True, name=f"bot:{data['bot_id']}", **data)
    dispatcher.update.outer_middleware(UsersMiddleware(users))
    dispatcher.include_router(handlers.build_router())
    return dispatcher


def _wrap_middlewares(middlewares: Sequence[Any], handler: Any) -> Any:
    def handler_wrapper(event: Any, kwargs: dict[str, Any]) -> Any:
        return handler(event, **kwargs)

    middleware: Any = handler_wrapper
    for outer in reversed(middlewares):
        middleware = functools.partial(outer, middleware)
    return middleware


def _wrap_outer_middleware(
    self: TelegramEventObserver, callback: Any, event: Any, data: dict[str, Any]
) -> Any:
    if not len(self.outer_middleware):
        return callback(event, **data)  # what the empty chain would call
    return _wrap_middlewares(self.outer_middleware, callback)(event, data)


def cheaper_middleware_chains() -> None:
    """Install the cheaper chains (idempotent)."""
    if TelegramEventObserver.wrap_outer_middleware is _wrap_outer_middleware:
        return
    MiddlewareManager.wrap_middlewares = staticmethod(_wrap_middlewares)  # type: ignore[method-assign]
    TelegramEventObserver.wrap_outer_middleware = _wrap_outer_middleware  # type: ignore[method-assign]
