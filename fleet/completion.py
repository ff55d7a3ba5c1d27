"""Completion: finished updates settled in Redis together, one round trip per batch.

When an update is handled (or stored as failed) its claim must become *done*
before the offset passes it, so that a redelivery after a crash is skipped.
Instead of one Redis call per update, finished updates queue here and one
script settles all of them (``storage.updates``): done marks, the
idempotency keys of their sends, then the offset, under the lease epoch. A
batch whose settling fails (Redis away) is kept and tried again with back-off:
a handled update is never handled again because finishing failed; the offset
simply waits. A refusal (a newer epoch owns the bot) loses the fence.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from fleet.offsets import OffsetTracker
from storage.updates import Fencing, Finished, UpdateClaims

log = logging.getLogger(__name__)


class Completion:
    def __init__(
        self,
        bot_id: str,
        claims: UpdateClaims,
        fencing: Fencing,
        tracker: OffsetTracker | None,
        *,
        on_stale: Callable[[str], None],
        committed: int | None = None,
    ) -> None:
        self._bot_id = bot_id
        self._claims = claims
        self._fencing = fencing
        self._tracker = tracker  # None in webhook mode: no offset to move
        self._on_stale = on_stale
        self._queue: list[Finished] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.committed = committed  # the offset last committed under our epoch
        self.progress = asyncio.Event()  # set after each settled batch
        self.settled = asyncio.Event()  # set while nothing waits to be settled
        self.settled.set()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def add(self, finished: Finished) -> None:
        self._queue.append(finished)
        self.settled.clear()
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._settle(), name=f"complete-{self._bot_id}")

    async def _settle(self) -> None:
        backoff = 0.05
        try:
            while self._queue and not self._closed:
                batch, self._queue = self._queue, []
                if await self._once(batch):
                    backoff = 0.05
                    continue
                self._queue = batch + self._queue  # kept, in order
                await asyncio.sleep(backoff * (0.5 + random.random()))  # back-off timer
                backoff = min(backoff * 2, 2.0)
        finally:
            self._task = None
            if not self._queue:
                self.settled.set()

    async def _once(self, batch: list[Finished]) -> bool:
        ids = [f.update_id for f in batch]
        tracker = self._tracker
        offset = tracker.offset_after(ids) if tracker is not None else None
        if offset is not None and self.committed is not None and offset <= self.committed:
            offset = None  # nothing to move
        try:
            valid = await self._claims.finish(
                self._bot_id, self._fencing, batch, offset=offset, committed=self.committed
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "bot %s: %s finished updates not settled yet (%s); trying again",
                self._bot_id, len(batch), type(exc).__name__,
            )  # fmt: skip
            return False
        if tracker is not None:
            tracker.finish(ids)
        if not valid:
            self._on_stale("a newer lease epoch owns the bot")
            return True  # settled what was ours; the offset did not move
        if offset is not None:
            self.committed = offset
        self.progress.set()
        return True

    async def close(self, within: float) -> bool:
        """Settle what is queued, for at most ``within`` s; True if nothing is left."""
        try:
            async with asyncio.timeout(max(within, 0.0)):
                while self._queue or self._task is not None:
                    if self._task is None:
                        self._task = asyncio.create_task(self._settle())
                    await asyncio.shield(self._task)
        except TimeoutError:
            pass
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return not self._queue
