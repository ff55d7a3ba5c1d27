"""The one way out to Telegram for bot traffic.

Every send: a slot from the shared token buckets and, with an idempotency key,
the claim of that key, both granted by one Redis script (``fleet.ratelimit``);
one orjson POST through the wire (``fleet.telegram``); the answer read without
a pydantic round trip. 429 pauses the bot on every instance; 5xx and requests
that surely never left are tried again with back-off.

A request that may have left without an answer is *uncertain*. An at-most-once
send (every reply) keeps its claim and is not repeated: never twice. An
at-least-once send (a deliverable) is repeated until Telegram acknowledges it,
and a claim an older epoch left behind (``orphaned``) is sent again: never
lost, possibly twice. A send made for an update (``scope``) leaves its key to
that update's completion: one round trip settles the keys of the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter

from fleet import telegram
from fleet.batcher import BatchWriter
from fleet.context import ChatKind, SendOutcome, UpdateScope
from fleet.errors import RetryLater
from fleet.http import HttpPool, Progress
from fleet.metrics import FleetMetrics
from fleet.ratelimit import ClaimMode, SendGate
from storage.idempotency import SendLedger
from storage.models import Direction
from storage.repositories.messages import MessageRecord

log = logging.getLogger(__name__)


class TelegramUnavailable(RetryLater):
    """Every try of a send failed without reaching Telegram, or got a 5xx."""


@dataclass(slots=True)
class _Bot:
    path: str  # /bot{token}/ : never logged
    epoch: int
    counters: dict[tuple[str, str], Counter]


class Sender:
    def __init__(
        self,
        http: HttpPool,
        gate: SendGate,
        ledger: SendLedger,
        messages: BatchWriter[MessageRecord],
        metrics: FleetMetrics,
        *,
        on_blocked: Callable[[str, int], None] | None = None,
        max_attempts: int = 6,
        max_wait: float = 120.0,
        request_timeout: float = 15.0,
    ) -> None:
        self._http = http
        self._gate = gate
        self._ledger = ledger
        self._messages = messages
        self._metrics = metrics
        self._on_blocked = on_blocked
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._timeout = request_timeout
        self._bots: dict[str, _Bot] = {}  # running here, under their lease epoch
        self._known: dict[str, _Bot] = {}  # every configured bot: timers and the outbox send too

    @property
    def ledger(self) -> SendLedger:
        return self._ledger

    def key(self, bot_id: str, purpose: str, *parts: str | int) -> str:
        return self._ledger.key(bot_id, purpose, *parts)

    def register(self, bot_id: str, token: str, epoch: int = 0) -> None:
        self._bots[bot_id] = _Bot(telegram.method_path(token, ""), epoch, {})

    def unregister(self, bot_id: str) -> None:
        self._bots.pop(bot_id, None)
        known = self._known.get(bot_id)
        if known is not None:  # its metric series go with it (forget_bot): bind anew
            known.counters.clear()

    def know(self, tokens: dict[str, str]) -> None:
        """The configured bots (id -> token): a timer or an outbox event may send for a bot
        that runs on another instance (the rate limits and keys are shared in Redis)."""
        self._known = {
            bot_id: self._known.get(bot_id) or _Bot(telegram.method_path(token, ""), 0, {})
            for bot_id, token in tokens.items()
        }

    async def send(
        self,
        bot_id: str,
        chat_id: int,
        method: str,
        payload: dict[str, Any],
        *,
        key: str | None,
        scope: UpdateScope | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        at_least_once: bool = False,
        epoch: int | None = None,
    ) -> SendOutcome:
        """Any sending method (sendPhoto, sendVideo...) to a private chat, recorded like
        :meth:`send_message`."""
        outcome = await self.call(
            bot_id, method, {"chat_id": chat_id, **payload}, chat_id=chat_id, key=key,
            scope=scope, files=files, at_least_once=at_least_once, epoch=epoch,
        )  # fmt: skip
        self._record(bot_id, chat_id, outcome, scope, payload.get("text") or payload.get("caption"))
        return outcome

    async def send_message(
        self,
        bot_id: str,
        chat_id: int,
        text: str,
        *,
        key: str | None,
        scope: UpdateScope | None = None,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = None,
        chat_kind: ChatKind = "private",
    ) -> SendOutcome:
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if reply_markup is not None:
            payload["reply_markup"] = reply_markup
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        outcome = await self.call(
            bot_id, "sendMessage", payload, chat_id=chat_id, chat_kind=chat_kind, key=key,
            scope=scope,
        )  # fmt: skip
        self._record(bot_id, chat_id, outcome, scope, text, private=chat_kind == "private")
        return outcome

    def _record(
        self,
        bot_id: str,
        chat_id: int,
        outcome: SendOutcome,
        scope: UpdateScope | None,
        text: str | None,
        *,
        private: bool = True,
    ) -> None:
        """A message Telegram accepted, into the message log (batched)."""
        if outcome.ok and outcome.message_id is not None:
            self._messages.add(
                MessageRecord(
                    bot_id=bot_id,
                    chat_id=chat_id,
                    message_id=outcome.message_id,
                    direction=Direction.OUT,
                    sent_at=datetime.now(UTC),
                    user_id=chat_id if private else None,
                    update_id=scope.update_id if scope is not None else None,
                    text=text,
                )
            )

    async def call(
        self,
        bot_id: str,
        method: str,
        payload: dict[str, Any],
        *,
        chat_id: int,
        chat_kind: ChatKind = "private",
        key: str | None = None,
        scope: UpdateScope | None = None,
        at_least_once: bool = False,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        epoch: int | None = None,
    ) -> SendOutcome:
        """Send once per key (at least once if asked); retry what Telegram surely did not do.

        Raises :class:`fleet.errors.RetryLater` when surely nothing went out but may later
        (no send slot within ``max_wait``, Telegram unreachable or failing every try), or
        the Redis error that stopped the grant: the update is retried with back-off. Every
        other ending is a :class:`SendOutcome`. ``epoch``: the claimant's, for a send made
        outside any update (a later attempt of an at-least-once send takes over an older one).
        """
        bot = self._bots.get(bot_id) or self._known.get(bot_id)
        if bot is None:
            return SendOutcome("failed", description="bot not configured")
        if epoch is None:
            epoch = scope.epoch if scope is not None else bot.epoch
        mode: ClaimMode = "n"
        if key is not None:
            mode = "l" if at_least_once else "m"
            if scope is not None and key in scope.unsent:
                mode = "r"  # our own claim from an earlier attempt that surely did not go out
        grant = await self._gate.acquire(
            bot_id, chat_id, chat_kind, key=key, mode=mode, epoch=epoch, max_wait=self._max_wait
        )
        if grant != "granted":
            if grant == "orphaned":
                log.warning("bot %s: %s claimed by a previous owner; not resent", bot_id, method)
            return self._count(
                bot, bot_id, method, SendOutcome(grant if grant == "orphaned" else "skipped")
            )
        progress = Progress()  # whether a request left, even if we are cancelled midway
        try:
            outcome = await self._attempts(
                bot, bot_id, method, payload, chat_id, chat_kind, at_least_once, progress, files
            )
        except BaseException:
            if key is not None and (not progress.sent or at_least_once):
                # Nothing went out (or it may be repeated): let a retry claim it.
                await self._let_go(key, epoch, scope)
            raise
        if key is not None:
            await self._settle(key, epoch, scope, outcome, at_least_once)
        if outcome.result == "blocked" and self._on_blocked is not None and chat_kind == "private":
            self._on_blocked(bot_id, chat_id)
        return self._count(bot, bot_id, method, outcome)

    async def _attempts(
        self,
        bot: _Bot,
        bot_id: str,
        method: str,
        payload: dict[str, Any],
        chat_id: int,
        chat_kind: ChatKind,
        at_least_once: bool,
        progress: Progress,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> SendOutcome:
        path = bot.path + method
        content_type = None
        if files:
            body, content_type = telegram.multipart(payload, files)
        else:
            body = orjson.dumps(payload)
        backoff = 0.2
        last = "no attempt"
        maybe_sent = False  # an earlier try left and got no answer (at least once goes on)
        for attempt in range(self._max_attempts):
            if attempt:  # the first slot came with the claim
                await self._gate.acquire(bot_id, chat_id, chat_kind, max_wait=self._max_wait)
            try:
                result = await telegram.call(
                    self._http, path, method, body, self._timeout, progress, content_type
                )
            except telegram.RetryAfter as exc:
                progress.sent = maybe_sent  # answered: Telegram did not act on this one
                self._metrics.send_retry_after.labels(bot_id).inc()
                await self._gate.pause(bot_id, exc.retry_after)
                continue  # the gate waits the pause out before the next try
            except telegram.NetworkError as exc:
                if exc.sent and not at_least_once:
                    log.warning("bot %s: %s outcome unknown (%s)", bot_id, method, exc.description)
                    return SendOutcome("uncertain", description=exc.description)
                maybe_sent |= exc.sent
                last = exc.description  # nothing reached Telegram, or it may be repeated
            except telegram.ServerError as exc:
                progress.sent = maybe_sent  # answered: Telegram did not act on it
                last = exc.description
            except telegram.Blocked as exc:
                return SendOutcome("blocked", description=exc.description)
            except telegram.TelegramError as exc:
                log.warning("bot %s: %s refused: %s", bot_id, method, exc.description)
                progress.sent = maybe_sent  # refused: it did not go out
                return SendOutcome("failed", description=exc.description)
            else:
                message_id = result.get("message_id") if isinstance(result, dict) else None
                return SendOutcome("ok", message_id=message_id, answer=result)
            await asyncio.sleep(backoff * (0.5 + random.random()))  # back-off timer
            backoff = min(backoff * 2, 5.0)
        description = f"gave up after {self._max_attempts} attempts: {last}"
        if not maybe_sent:
            # Telegram away or failing: nothing went out, so a later try may send it.
            raise TelegramUnavailable(f"bot {bot_id}: {method} {description}")
        return SendOutcome("uncertain", description=description)

    async def _settle(
        self,
        key: str,
        epoch: int,
        scope: UpdateScope | None,
        outcome: SendOutcome,
        at_least_once: bool,
    ) -> None:
        if outcome.result in ("ok", "blocked"):  # final: never sent again
            if scope is not None and not at_least_once:
                scope.acknowledged.append(key)  # settled with the update, in its batch
                scope.unsent.discard(key)
            else:
                await self._ledger.confirm(key)
        elif outcome.result == "failed" or at_least_once:
            # Refused, or given up without it leaving (or at least once): a retry may send.
            await self._let_go(key, epoch, scope)
        # An uncertain at-most-once send keeps its claim: never twice.

    async def _let_go(self, key: str, epoch: int, scope: UpdateScope | None) -> None:
        try:
            await asyncio.shield(self._ledger.release(key, epoch))
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis failed too: the update's next attempt may take this claim back.
            if scope is not None:
                scope.unsent.add(key)
            log.warning("send claim not released (Redis); a retry of its update takes it back")
        else:
            if scope is not None:
                scope.unsent.discard(key)

    def _count(self, bot: _Bot, bot_id: str, method: str, outcome: SendOutcome) -> SendOutcome:
        counter = bot.counters.get((method, outcome.result))
        if counter is None:
            counter = bot.counters[(method, outcome.result)] = self._metrics.sends.labels(
                bot_id, method, outcome.result
            )
        counter.inc()
        return outcome
