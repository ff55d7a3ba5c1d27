"""One claimed update through its bot's Dispatcher, and the error policy, in one place.

- A handler that fails for good (a bug, a reply Telegram refuses): the update
  goes to dead letters at once and counts as done.
- A passing failure (Redis, PostgreSQL or the network away, a rate-limit wait
  too long; ``fleet.errors.is_transient``): the same update is tried again
  after a back-off, in its place in its chat's queue, while the bot's other
  chats go on. After ``attempts`` tries it goes to dead letters with the
  reason, so its offset can pass.
- An update aiogram cannot read: dead letters at once (``malformed``).
- If the dead letter itself cannot be written, the update is tried again: it
  is never confirmed without being handled or stored.
- Cancelled, or the bot stops while the update waits for its next try: the
  update stays unconfirmed for the next owner (a stop never waits out a
  back-off).

The root router's error handler (``handlers``) logs and counts each failure
with its bot id; this module decides what follows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from pydantic import ValidationError

from fleet.context import Outcome, UpdateScope
from fleet.errors import is_transient
from fleet.metrics import BotCounters
from storage.repositories.dead_letters import FailedUpdate
from storage.services import DeadLetters

log = logging.getLogger(__name__)


class PipelineBot(Protocol):
    """What the pipeline needs of a bot's runner."""

    bot_id: str
    bot: Bot
    counters: BotCounters
    stop_requested: asyncio.Event

    @property
    def dispatcher(self) -> Dispatcher: ...


class UpdatePipeline:
    def __init__(
        self,
        dead_letters: DeadLetters,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self._dead_letters = dead_letters
        self._attempts = attempts
        self._backoff = backoff
        self._backoff_max = backoff_max

    async def run(
        self, bot: PipelineBot, scope: UpdateScope, raw: dict[str, Any], *, store: bool = True
    ) -> Outcome | None:
        """Until the update is handled or stored (None: left for the next owner).

        ``store`` False (a replay of a dead letter): a failure is not stored again; the
        caller records it on the letter (``scope.failure``).
        """
        while True:
            started = time.perf_counter()
            outcome: Outcome | None
            try:
                outcome = await self._once(bot, scope, raw, store)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                scope.failure = (type(exc).__name__, str(exc)[:2000])
                outcome = await self._failed(bot, scope, raw, exc, store)
            if outcome is not None:
                bot.counters.handle_seconds.observe(time.perf_counter() - started)
                bot.counters.outcomes[outcome].inc()
                return outcome
            bot.counters.retries.inc()
            delay = min(self._backoff * 2 ** (scope.attempt - 1), self._backoff_max)
            scope.attempt += 1
            try:
                async with asyncio.timeout(delay * (0.5 + random.random())):  # back-off
                    await bot.stop_requested.wait()
            except TimeoutError:
                continue
            return None  # stopping: the next owner tries it

    async def _once(
        self, bot: PipelineBot, scope: UpdateScope, raw: dict[str, Any], store: bool
    ) -> Outcome:
        try:
            update = Update.model_validate(raw, context={"bot": bot.bot})
        except ValidationError as exc:
            log.warning(
                "bot %s: update %s has an unexpected shape (%s errors)",
                bot.bot_id, scope.update_id, exc.error_count(),
            )  # fmt: skip
            scope.failure = ("ValidationError", str(exc)[:2000])
            if store:
                failed = FailedUpdate(bot.bot_id, scope.update_id, raw, *scope.failure)
                await self._dead_letters.record(failed)  # a failure here is retried
            return Outcome.MALFORMED
        await bot.dispatcher.feed_update(bot.bot, update, scope=scope)
        return Outcome.HANDLED

    async def _failed(
        self,
        bot: PipelineBot,
        scope: UpdateScope,
        raw: dict[str, Any],
        exc: Exception,
        store: bool,
    ) -> Outcome | None:
        """Dead-letter (FAILED) or retry later (None)."""
        transient = is_transient(exc)
        if transient and scope.attempt < self._attempts:
            log.warning(
                "bot %s: update %s failed (%s, attempt %s of %s); trying again later",
                bot.bot_id, scope.update_id, type(exc).__name__, scope.attempt, self._attempts,
            )  # fmt: skip
            return None
        reason = f"gave up after {scope.attempt} attempts: " if transient else ""
        if not store:
            scope.failure = (type(exc).__name__, f"{reason}{exc}"[:2000])
            return Outcome.FAILED
        failed = FailedUpdate(
            bot_id=bot.bot_id,
            update_id=scope.update_id,
            payload=raw,
            error_type=type(exc).__name__,
            error=f"{reason}{exc}"[:2000],
        )
        try:
            await self._dead_letters.record(failed)
        except Exception as store_error:
            log.error(
                "bot %s: update %s could not be stored as failed (%s); trying again later",
                bot.bot_id, scope.update_id, type(store_error).__name__,
            )  # fmt: skip
            return None
        log.error(
            "bot %s: update %s stored in dead letters: %s: %s",
            bot.bot_id, scope.update_id, type(exc).__name__, exc,
        )  # fmt: skip
        return Outcome.FAILED
