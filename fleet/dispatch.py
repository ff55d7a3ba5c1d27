"""Where a bot's aiogram Dispatcher is assembled: its workflow data, middlewares, routers.

The one place. Everything before aiogram (admission) lives in the runner's
poll loop, the error policy in ``fleet.pipeline``; inside the Dispatcher there
are aiogram's own error and user-context middlewares, ours that records users,
and a fresh router tree from ``handlers.build_router()`` (a router can be
attached to one Dispatcher only).
"""

from __future__ import annotations

from aiogram import Dispatcher

import handlers
from fleet.batcher import BatchWriter
from fleet.context import FleetData
from middlewares import UsersMiddleware
from storage.repositories.users import UserSeen


def build_dispatcher(data: FleetData, users: BatchWriter[UserSeen]) -> Dispatcher:
    dispatcher = Dispatcher(disable_fsm=True, name=f"bot:{data['bot_id']}", **data)
    dispatcher.update.outer_middleware(UsersMiddleware(users))
    dispatcher.include_router(handlers.build_router())
    return dispatcher
