"""Every handler and filter of the router tree is a coroutine: aiogram runs a plain callable
(a magic ``F`` filter included) in a worker thread, once per update it looks at."""

from __future__ import annotations

from handlers import build_router


def test_no_handler_or_filter_runs_in_a_thread() -> None:
    router = build_router()
    threaded = [
        f"{name}: {getattr(callable_.callback, '__qualname__', callable_.callback)!r}"
        for name, observer in router.observers.items()
        for handler in observer.handlers
        for callable_ in (handler, *(handler.filters or ()))
        if not callable_.awaitable
    ]
    assert threaded == []
