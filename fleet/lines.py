"""Work on a batch of items: those of one line (a payment, a user) in order, the lines at once.

The outbox and the timers claim a batch and record what became of each item in
one transaction after it: an item whose work waits (a send waiting for its
chat's slot) must not hold up the other lines. Results go into ``into`` as they
come, so whatever finished is recorded even when the round is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def in_lines(
    items: Iterable[T],
    line_of: Callable[[T], Hashable],
    work: Callable[[T], Awaitable[R]],
    into: list[R],
) -> None:
    lines: dict[Hashable, list[T]] = {}
    for item in items:
        lines.setdefault(line_of(item), []).append(item)

    async def run(line: list[T]) -> None:
        for item in line:
            into.append(await work(item))

    async with asyncio.TaskGroup() as group:
        for line in lines.values():
            group.create_task(run(line))
