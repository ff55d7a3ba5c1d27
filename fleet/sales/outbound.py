"""A step's sends, in order, each with its own idempotency key.

Media Telegram refuses (a dead URL, a stale file id) is counted and replaced by
its fallback, so a welcome is never missing; a blocked user ends the step
quietly; any other refusal raises :class:`SendFailed` (the update goes to dead
letters, where an operator sees it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fleet.context import SendOutcome, UpdateScope
from fleet.errors import SendFailed
from fleet.funnel.steps import Send
from fleet.metrics import FleetMetrics
from fleet.sender import Sender

log = logging.getLogger(__name__)


class Outbound:
    def __init__(self, sender: Sender, metrics: FleetMetrics) -> None:
        self.sender = sender
        self._metrics = metrics

    def key(
        self, bot_id: str, chat_id: int, purpose: str, key: Sequence[str | int], part: str
    ) -> str:
        """The idempotency key of one part of a step: (purpose, chat, *key, part)."""
        return self.sender.key(bot_id, purpose, chat_id, *key, part)

    async def send(
        self,
        bot_id: str,
        chat_id: int,
        steps: Sequence[Send],
        *,
        purpose: str,
        key: Sequence[str | int],
        scope: UpdateScope | None = None,
        epoch: int | None = None,
        at_least_once: bool = False,
    ) -> list[SendOutcome]:
        """Send ``steps`` to ``chat_id``; the key of each is (purpose, chat, *key, part)."""
        outcomes: list[SendOutcome] = []
        for step in steps:
            outcome = await self._one(
                bot_id, chat_id, step, purpose, key, scope, epoch, at_least_once
            )
            if outcome.result == "failed" and step.part == "media":
                # Refused media: the text goes on its own (the fallback, or the next step).
                self._metrics.funnel_media_fallbacks.labels(bot_id).inc()
                log.warning("bot %s: welcome media refused (%s)", bot_id, outcome.description)
                if step.fallback is not None:
                    outcome = await self._one(
                        bot_id, chat_id, step.fallback, purpose, key, scope, epoch, at_least_once
                    )
                else:
                    continue
            outcomes.append(outcome)
            if outcome.result == "blocked":
                break  # the user blocked the bot: the rest cannot arrive either
            if outcome.result == "failed":
                raise SendFailed(
                    f"bot {bot_id}: {purpose} {step.part} not sent: {outcome.description}"
                )
        return outcomes

    async def _one(
        self,
        bot_id: str,
        chat_id: int,
        step: Send,
        purpose: str,
        key: Sequence[str | int],
        scope: UpdateScope | None,
        epoch: int | None,
        at_least_once: bool,
    ) -> SendOutcome:
        return await self.sender.send(
            bot_id, chat_id, step.method, step.payload,
            key=self.key(bot_id, chat_id, purpose, key, step.part),
            scope=scope, files=step.files or None, epoch=epoch, at_least_once=at_least_once,
        )  # fmt: skip
