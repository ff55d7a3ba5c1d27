"""Write rows in batches: one database round trip per interval, not one per update.

Items with the same key coalesce (the latest wins), so a user who writes ten
times in a second is one upsert. A failed write keeps its items for the next
try; :meth:`BatchWriter.close` flushes what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchWriter(Generic[T]):
    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[T]], Awaitable[object]],
        *,
        key: Callable[[T], Hashable] | None = None,
        interval: float = 0.5,
        max_batch: int = 500,
    ) -> None:
        self._name = name
        self._write = write
        self._key = key
        self._interval = interval
        self._max_batch = max_batch
        self._items: dict[Hashable, T] = {}
        self._serial = 0
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self.written = 0
        self.failures = 0

    def add(self, item: T) -> None:
        if self._key is not None:
            self._items[self._key(item)] = item
        else:
            self._serial += 1
            self._items[self._serial] = item
        if len(self._items) >= self._max_batch:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._items)

    async def run(self) -> None:
        """Flush every ``interval`` (sooner when a batch fills) until :meth:`stop`."""
        while not self._stopped.is_set():
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        if not self._items:
            return 0
        batch, self._items = self._items, {}
        items = list(batch.values())
        try:
            for start in range(0, len(items), self._max_batch):
                await self._write(items[start : start + self._max_batch])
        except Exception:
            self.failures += 1
            log.exception(
                "%s: writing %s rows failed; kept for the next flush", self._name, len(items)
            )
            # Newer sightings (added meanwhile) win over the ones we failed to write.
            self._items = {**batch, **self._items}
            return 0
        self.written += len(items)
        return len(items)

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    async def close(self) -> None:
        self.stop()
        await self.flush()
