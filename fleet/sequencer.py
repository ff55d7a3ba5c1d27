"""Per-chat ordering with one global concurrency cap and backpressure.

Updates of one chat run strictly one after another, in submission order;
different chats run concurrently. At most ``limit`` jobs are admitted (queued
or running) at once across all chats: :meth:`ChatSequencer.submit` waits for
room, so a full fleet slows its fetching instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class ChatSequencer:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._slots = asyncio.Semaphore(limit)
        self._queues: dict[Hashable, deque[Job]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._admitted = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def admitted(self) -> int:
        """Jobs queued or running."""
        return self._admitted

    async def submit(self, chat: Hashable, job: Job) -> None:
        """Admit ``job`` behind earlier jobs of ``chat``; waits while the fleet is full.

        ``job`` must handle its own errors (the runner records failures as dead
        letters); anything that escapes is logged and the chat's queue goes on.
        """
        await self._slots.acquire()
        self._admitted += 1
        self._idle.clear()
        queue = self._queues.get(chat)
        if queue is not None:
            queue.append(job)  # its worker is running and will reach it
            return
        self._queues[chat] = deque([job])
        worker = asyncio.create_task(self._drain(chat), name=f"chat-{chat}")
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _drain(self, chat: Hashable) -> None:
        queue = self._queues[chat]
        try:
            while queue:
                job = queue[0]
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("job for chat %s escaped its own error handling", chat)
                finally:
                    queue.popleft()
                    self._release()
        finally:
            # Cancelled with jobs still queued: they were admitted, give their slots back.
            while queue:
                queue.popleft()
                self._release()
            del self._queues[chat]

    def _release(self) -> None:
        self._admitted -= 1
        self._slots.release()
        if self._admitted == 0:
            self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` s for every admitted job; True if all finished."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        """Cancel whatever still runs and wait until it has stopped."""
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
