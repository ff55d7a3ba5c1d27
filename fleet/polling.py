"""One bot's poll loop: fetch, admit, hand to the sequencer; confirm only what is finished.

Not aiogram's ``start_polling``, which confirms an offset before its handlers
finish (invariant 3). Here each ``getUpdates`` carries the offset of the
oldest update not yet finished (``fleet.offsets``), so Telegram keeps
everything from there on. Each batch is admitted in one Redis round trip
(``middlewares.admission``); only updates to run reach the sequencer, which
waits when the bot's share is full, and fetching waits with it.

While updates are in flight a poll returns them again, so the loop does not
poll each time one finishes: it polls once they are all settled or only a few
are left (``REFETCH_CHEAP``), at most every ``REPOLL_MIN`` s while more are in
flight and the offset moved, and every ``REPOLL_MAX`` s to take new updates of
other chats while an old one is slow. ``limit`` is what was
already seen plus the bot's free share, so a poll never fetches more than the
bot may start.

Errors: 401 and 409 stop this bot (the runner decides), 429 waits
``retry_after``, 5xx and network errors back off with jitter. Stopping cancels
the loop at whatever it awaits; nothing it leaves half done is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from fleet.completion import Completion
from fleet.config import TelegramConfig
from fleet.context import Outcome
from fleet.metrics import BotCounters, FleetMetrics
from fleet.offsets import OffsetTracker
from fleet.ownership import BotFence
from fleet.sequencer import BotLane, Job
from fleet.telegram import Malformed, RetryAfter, TelegramError
from middlewares.admission import BatchAdmission, chat_of
from storage.updates import Decision

log = logging.getLogger(__name__)

ALLOWED_UPDATES = (
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "pre_checkout_query",
)
REPOLL_MIN = 0.05
REPOLL_MAX = 2.0
REFETCH_CHEAP = 8  # this few updates fetched again cost less than waiting REPOLL_MIN
SKIPPED = {
    Decision.DUPLICATE: Outcome.DUPLICATE,
    Decision.THROTTLED: Outcome.THROTTLED,
    Decision.DEBOUNCED: Outcome.DEBOUNCED,
}


class PolledBot(Protocol):
    """What the loop needs of its runner."""

    bot_id: str
    fence: BotFence
    lane: BotLane
    tracker: OffsetTracker
    completion: Completion
    counters: BotCounters
    last_update_at: float | None

    def start_job(self, update_id: int, raw: dict[str, Any]) -> Job: ...

    async def api(self, method: str, payload: dict[str, Any], within: float) -> Any: ...

    async def give_up(self, error: TelegramError) -> bool: ...

    def lose(self, reason: str) -> None: ...


class PollLoop:
    def __init__(
        self,
        bot: PolledBot,
        admission: BatchAdmission,
        telegram: TelegramConfig,
        metrics: FleetMetrics,
    ) -> None:
        self._bot = bot
        self._admission = admission
        self._timeout = telegram.polling_timeout
        self._metrics = metrics

    async def run(self) -> None:
        """Until cancelled, or the bot must stop (401, 409, lease lost)."""
        bot = self._bot
        loop = asyncio.get_running_loop()
        backoff = 1.0
        last_poll = float("-inf")
        while True:
            if not bot.fence.valid():
                bot.lose("renew deadline passed")
                return
            await bot.lane.wait_room()
            await self._pace(last_poll)
            known = bot.tracker.known
            payload = {
                "offset": bot.tracker.offset,
                "limit": max(1, min(100, known + bot.lane.free)),
                "timeout": self._timeout if known == 0 else 0,
                "allowed_updates": ALLOWED_UPDATES,
            }
            last_poll = loop.time()
            bot.completion.progress.clear()
            try:
                result = await bot.api("getUpdates", payload, self._timeout + 15)
                if not isinstance(result, list):
                    raise Malformed("getUpdates", "result is not a list")
                if not bot.fence.valid():
                    continue  # too late to trust this batch: the next owner fetches it again
                await self._take(result)
            except TelegramError as error:
                self._metrics.poll_errors.labels(bot.bot_id, error.kind).inc()
                if await bot.give_up(error):
                    return
                if isinstance(error, RetryAfter):
                    await asyncio.sleep(error.retry_after)  # Telegram's own pause
                    continue
                log.warning("bot %s: getUpdates failed (%s)", bot.bot_id, error)
            except Exception as exc:  # admission: Redis away; the batch comes back later
                self._metrics.poll_errors.labels(bot.bot_id, "redis").inc()
                log.warning("bot %s: batch not admitted (%s)", bot.bot_id, type(exc).__name__)
            else:
                backoff = 1.0
                continue
            await asyncio.sleep(backoff * (0.5 + random.random()))  # back-off timer
            backoff = min(backoff * 2, 30.0)

    async def _pace(self, last_poll: float) -> None:
        """While updates are in flight: poll when they are settled or as described above."""
        bot = self._bot
        loop = asyncio.get_running_loop()
        while bot.tracker.known:
            since = loop.time() - last_poll
            if since >= REPOLL_MAX and bot.lane.free:
                return
            if bot.tracker.known <= REFETCH_CHEAP and bot.lane.free and since >= REPOLL_MIN:
                return  # a few in flight: taking new ones beside them costs little
            if bot.completion.progress.is_set():
                if since < REPOLL_MIN and bot.tracker.known > REFETCH_CHEAP:
                    await asyncio.sleep(REPOLL_MIN - since)  # pacing: one poll per interval
                return
            try:
                async with asyncio.timeout(max(REPOLL_MAX - since, 0.01)):
                    await bot.completion.progress.wait()
            except TimeoutError:
                pass

    async def _take(self, result: list[Any]) -> None:
        bot = self._bot
        batch: list[tuple[int, dict[str, Any]]] = []
        for raw in result:
            update_id = raw.get("update_id") if isinstance(raw, dict) else None
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                continue
            if not bot.tracker.is_known(update_id):
                batch.append((update_id, raw))
        if not batch:
            return
        decisions = await self._admission.admit(bot.bot_id, bot.fence.epoch, batch, by_offset=True)
        bot.tracker.take(update_id for update_id, _ in batch)
        bot.counters.received.inc(len(batch))
        bot.last_update_at = time.monotonic()
        skipped: list[int] = []
        for (update_id, raw), decision in zip(batch, decisions, strict=True):
            if decision is Decision.RUN:
                await bot.lane.submit(chat_of(raw), bot.start_job(update_id, raw))
            elif decision is Decision.BUSY:
                # A newer epoch claimed it: we are the stale owner and stop soon.
                log.warning("bot %s: update %s claimed by a newer owner", bot.bot_id, update_id)
            else:
                bot.counters.outcomes[SKIPPED[decision]].inc()
                skipped.append(update_id)
        if skipped:
            bot.tracker.finish(skipped)  # settled as done by the admission script itself
