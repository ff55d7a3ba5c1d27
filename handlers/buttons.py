"""Inline buttons: every callback query goes to the funnel, which reads the opaque id in
its data, answers the query first and then does the work (plans, bumps, "I paid",
downsells, upsells). Data that names nothing gets a polite answer."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery

from fleet.context import Buyer, SalesActions, UpdateScope


def register(router: Router) -> None:
    @router.callback_query()
    async def pressed(
        query: CallbackQuery, bot_id: str, sales: SalesActions, scope: UpdateScope
    ) -> None:
        user = query.from_user
        buyer = Buyer(bot_id, user.id, user.first_name, user.username)
        await sales.press(buyer, query.id, query.data, scope)
