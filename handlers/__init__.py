"""aiogram routers (Telegram side). ``build_router()`` returns a fresh tree per Dispatcher."""

from __future__ import annotations

from aiogram import Router

from handlers.start import build_start_router


def build_router() -> Router:
    """A new router tree: an aiogram Router can be attached to one Dispatcher only."""
    root = Router(name="root")
    root.include_router(build_start_router())
    return root


__all__ = ["build_router"]
