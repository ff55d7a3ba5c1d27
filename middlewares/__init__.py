"""aiogram middlewares: metrics, context, dedup, errors, users, debounce, throttle."""

from __future__ import annotations

from middlewares.context import ContextMiddleware
from middlewares.debounce import StartDebounceMiddleware
from middlewares.dedup import DedupMiddleware
from middlewares.errors import ErrorsMiddleware
from middlewares.metrics import MetricsMiddleware
from middlewares.throttle import ThrottleMiddleware
from middlewares.users import UsersMiddleware

__all__ = [
    "ContextMiddleware",
    "DedupMiddleware",
    "ErrorsMiddleware",
    "MetricsMiddleware",
    "StartDebounceMiddleware",
    "ThrottleMiddleware",
    "UsersMiddleware",
]
