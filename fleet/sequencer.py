"""Per-chat ordering, a bounded share per bot, and one global cap with a floor per bot.

Updates of one chat run strictly one after another, in submission order;
different chats run concurrently. Each bot has a :class:`BotLane`: at most
``per_bot`` of its jobs are admitted (queued or running) at once, so a bot
whose handlers wait (a 429 pause, a slow chat) holds at most its share. All
lanes together admit at most ``limit`` jobs, except that a lane with nothing
admitted may always admit one: however many bots stall, every other bot keeps
moving. Waiting for room is FIFO per lane and round robin across lanes, and
cancelling the waiter (stopping the bot) ends the wait.

A lane can be cancelled on its own: a bot that loses its lease stops its work
at once, before anyone else may take the bot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class LaneClosed(Exception):
    """The lane was cancelled or closed: its bot takes no more work here."""


class ChatSequencer:
    def __init__(self, limit: int, per_bot: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.per_bot = max(1, min(per_bot or limit, limit))
        self._admitted = 0
        self._lanes: dict[str, BotLane] = {}
        self._waiting: deque[BotLane] = deque()  # lanes waiting for global room, in order
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def admitted(self) -> int:
        """Jobs queued or running, across every bot."""
        return self._admitted

    def lane(self, bot_id: str) -> BotLane:
        """The bot's lane (a new one once the previous was closed)."""
        lane = self._lanes.get(bot_id)
        if lane is None or lane.closed:
            lane = self._lanes[bot_id] = BotLane(self, bot_id)
        return lane

    async def submit(self, chat: Hashable, job: Job, bot_id: str = "") -> None:
        await self.lane(bot_id).submit(chat, job)

    def _has_room(self, lane: BotLane) -> bool:
        return lane.admitted < self.per_bot and (self._admitted < self.limit or lane.admitted == 0)

    def _admit(self) -> None:
        self._admitted += 1
        self._idle.clear()

    def _release(self) -> None:
        self._admitted -= 1
        if self._admitted == 0:
            self._idle.set()
        self._wake_next()

    def _wake_next(self) -> None:
        """Round robin: the lane that waited longest for global room looks again."""
        while self._waiting:
            lane = self._waiting.popleft()
            if lane.wake():
                if lane.waiting:
                    self._waiting.append(lane)  # its other submits wait for their own turn
                return

    def _forget(self, lane: BotLane) -> None:
        if self._lanes.get(lane.bot_id) is lane:
            del self._lanes[lane.bot_id]
        if lane in self._waiting:
            self._waiting.remove(lane)

    async def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` s for every admitted job; True if all finished."""
        return await _settled(self._idle, grace)

    async def cancel(self) -> None:
        """Cancel whatever still runs, in every lane, and wait until it has stopped."""
        await asyncio.gather(*(lane.cancel() for lane in list(self._lanes.values())))


class BotLane:
    def __init__(self, sequencer: ChatSequencer, bot_id: str) -> None:
        self._sequencer = sequencer
        self.bot_id = bot_id
        self.admitted = 0
        self.closed = False
        self._queues: dict[Hashable, deque[Job]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def free(self) -> int:
        """Jobs this lane may still admit before waiting on its own share."""
        return max(0, self._sequencer.per_bot - self.admitted)

    async def submit(self, chat: Hashable, job: Job) -> None:
        """Admit ``job`` behind earlier jobs of ``chat``; waits while there is no room.

        ``job`` must handle its own errors; anything that escapes is logged and
        the chat's queue goes on.
        """
        while True:
            if self.closed:
                raise LaneClosed(self.bot_id)
            if self._sequencer._has_room(self):
                break
            await self._wait_room()
        self.admitted += 1
        self._idle.clear()
        self._sequencer._admit()
        queue = self._queues.get(chat)
        if queue is not None:
            queue.append(job)  # its worker is running and will reach it
            return
        self._queues[chat] = deque([job])
        worker = asyncio.create_task(self._drain(chat), name=f"chat-{self.bot_id}")
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    @property
    def waiting(self) -> bool:
        return any(not waiter.done() for waiter in self._waiters)

    async def _wait_room(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        queue = self._sequencer._waiting
        if self.admitted < self._sequencer.per_bot and self not in queue:
            queue.append(self)  # blocked by the global cap: one turn per lane, not per submit
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and not self.wake():
                self._sequencer._wake_next()  # we were woken but leave: pass the turn on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def wake(self) -> bool:
        """Let the longest waiter of this lane look for room again; False if none waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    async def wait_room(self) -> None:
        """Until this lane may admit a job (the poll loop waits here before fetching)."""
        while not self.closed and not self._sequencer._has_room(self):
            await self._wait_room()

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
                    log.exception("bot %s: a job escaped its own error handling", self.bot_id)
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
        self.admitted -= 1
        if self.admitted == 0:
            self._idle.set()
        self.wake()  # room in our own share
        self._sequencer._release()

    async def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` s for this bot's admitted jobs; True if all finished."""
        return await _settled(self._idle, grace)

    async def cancel(self) -> None:
        """Take no more work, cancel this bot's jobs and wait until they have stopped."""
        self.closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # they see `closed` and raise LaneClosed
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # A worker cancelled before its first step never ran its clean-up: do it here.
        for queue in self._queues.values():
            while queue:
                queue.popleft()
                self._release()
        self._queues.clear()
        self._sequencer._forget(self)


async def _settled(idle: asyncio.Event, grace: float) -> bool:
    """Until ``idle`` is set, for at most ``grace`` s; whether it is."""
    if idle.is_set() or grace <= 0:
        return idle.is_set()
    try:
        async with asyncio.timeout(grace):
            await idle.wait()
    except TimeoutError:
        return False
    return True
