"""The update pipeline's middlewares: batch admission (dedup, flood, debounce) before
aiogram, and aiogram middlewares after it (users)."""

from __future__ import annotations

from middlewares.admission import BatchAdmission, chat_of
from middlewares.users import UsersMiddleware

__all__ = ["BatchAdmission", "UsersMiddleware", "chat_of"]
