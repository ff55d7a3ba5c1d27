"""Dead letters an operator asked to replay (``botfleet dead-letters replay``), run here.

Every few seconds each instance claims the letters marked for replay whose bots
it runs (``FOR UPDATE SKIP LOCKED``: never two instances on one letter), runs
each through its bot's pipeline again, and records the result on the letter:
resolved, or failed once more with the new error. A claim left by an instance
that died is taken again after a while (the storage decides when).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fleet.metrics import FleetMetrics
from fleet.runner import BotRunner, RunnerState
from storage.services import DeadLetters

log = logging.getLogger(__name__)


class DeadLetterReplayer:
    def __init__(
        self,
        dead_letters: DeadLetters,
        runners: Callable[[], dict[str, BotRunner]],
        owner: str,
        metrics: FleetMetrics,
        *,
        interval: float = 5.0,
    ) -> None:
        self._dead_letters = dead_letters
        self._runners = runners
        self._owner = owner
        self._metrics = metrics
        self._interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self.replay_once()
            except Exception as exc:  # the database away: the marks wait for us
                log.warning("dead-letter replays not checked (%s)", type(exc).__name__)
            await asyncio.sleep(self._interval)  # a periodic check

    async def replay_once(self) -> int:
        """Claim and replay what is marked for the bots running here; returns how many."""
        running = {
            bot_id: runner
            for bot_id, runner in self._runners().items()
            if runner.state == RunnerState.RUNNING
        }
        if not running:
            return 0
        letters = await self._dead_letters.claim_replays(running, self._owner)
        for letter in letters:
            runner = running[letter.bot_id]
            scope = await runner.replay(letter.payload)
            if scope is None:
                # The bot stopped first: the claim goes stale and is taken again later.
                log.info("bot %s: replay of update %s postponed", letter.bot_id, letter.update_id)
                continue
            ok = scope.failure is None
            error_type, error = scope.failure or (None, None)
            await self._dead_letters.replayed(letter.id, ok=ok, error_type=error_type, error=error)
            self._metrics.dead_letter_replays.labels("handled" if ok else "failed").inc()
            log.info(
                "bot %s: dead letter %s (update %s) replayed: %s",
                letter.bot_id, letter.id, letter.update_id, "handled" if ok else error_type,
            )  # fmt: skip
        return len(letters)
