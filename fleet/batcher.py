"""Write rows in batches: one database round trip per interval, not one per update.

Items with the same key coalesce (the latest wins), so a user who writes ten
times in a second is one upsert. A write that fails, or is cancelled midway,
keeps its items for the next try. While the database is away the backlog is
bounded (``max_backlog``): past it the oldest rows are dropped and counted,
never the process's memory. :meth:`BatchWriter.close` flushes what is left.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from fleet.metrics import FleetMetrics

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
        max_backlog: int = 50_000,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self._name = name
        self._write = write
        self._key = key
        self._interval = interval
        self._max_batch = max_batch
        self._max_backlog = max(max_backlog, max_batch)
        self._items: dict[Hashable, T] = {}
        self._serial = 0
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._writing = asyncio.Lock()
        self._dropped = metrics.batch_dropped.labels(name) if metrics else None
        self._backlog = metrics.batch_backlog.labels(name) if metrics else None
        self.written = 0
        self.failures = 0
        self.dropped = 0

    def add(self, item: T) -> None:
        if self._key is not None:
            self._items[self._key(item)] = item
        else:
            self._serial += 1
            self._items[self._serial] = item
        if len(self._items) > self._max_backlog:
            del self._items[next(iter(self._items))]  # the oldest goes first
            self.dropped += 1
            if self._dropped is not None:
                self._dropped.inc()
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
        """Write what is held now; returns the rows written (0 if the write failed)."""
        async with self._writing:
            written = 0
            while self._items:
                taken = list(itertools.islice(self._items.items(), self._max_batch))
                for key, _item in taken:
                    del self._items[key]
                try:
                    await self._write([item for _key, item in taken])
                except BaseException as exc:
                    # Back in front; rows added meanwhile (newer sightings) win.
                    self._items = {**dict(taken), **self._items}
                    if not isinstance(exc, Exception):
                        raise  # cancelled: nothing lost, the caller goes
                    self.failures += 1
                    log.warning(
                        "%s: writing %s rows failed (%s); %s kept for the next flush",
                        self._name, len(taken), type(exc).__name__, len(self._items),
                    )  # fmt: skip
                    break
                written += len(taken)
                self.written += len(taken)
            if self._backlog is not None:
                self._backlog.set(len(self._items))
            return written

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    async def close(self, within: float = 5.0) -> None:
        """Stop and write what is left, for at most ``within`` seconds."""
        self.stop()
        try:
            async with asyncio.timeout(within):
                await self.flush()
        except TimeoutError:
            log.warning("%s: %s rows not written at shutdown", self._name, len(self._items))
