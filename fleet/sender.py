"""The one way out to Telegram for bot traffic.

Every send: an idempotency key taken in Redis first (invariant 4), a slot from
the shared token buckets, one orjson POST on the shared API session, and the
result parsed minimally (no pydantic round trip). 429 pauses the whole bot on
every instance; 5xx and refused connections are retried with back-off
because Telegram surely did not act on them. A connection lost after the
request went out is *uncertain*: the claim stays, so it is never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import orjson

from fleet.batcher import BatchWriter
from fleet.metrics import FleetMetrics
from fleet.ratelimit import RateLimitTimeout, SendRateLimiter
from storage.idempotency import SendLedger
from storage.models import Direction
from storage.repositories.messages import MessageRecord

log = logging.getLogger(__name__)

Result = Literal["ok", "skipped", "orphaned", "blocked", "failed", "uncertain"]
ChatKind = Literal["private", "group"]


@dataclass(frozen=True, slots=True)
class SendOutcome:
    result: Result
    message_id: int | None = None
    description: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@dataclass(slots=True)
class _Attempt:
    request_sent: bool = False
    slot_taken: bool = False  # the first attempt's rate slot was taken before the claim


class Sender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        limiter: SendRateLimiter,
        ledger: SendLedger,
        messages: BatchWriter[MessageRecord],
        metrics: FleetMetrics,
        *,
        on_blocked: Callable[[str, int], None] | None = None,
        max_attempts: int = 6,
        max_wait: float = 120.0,
        request_timeout: float = 15.0,
    ) -> None:
        self._session = session
        self._api_base = api_base.rstrip("/")
        self._limiter = limiter
        self._ledger = ledger
        self._messages = messages
        self._metrics = metrics
        self._on_blocked = on_blocked
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._tokens: dict[str, str] = {}
        self._epochs: dict[str, int] = {}  # the lease epoch each bot runs under here

    @property
    def ledger(self) -> SendLedger:
        return self._ledger

    def register(self, bot_id: str, token: str, epoch: int = 0) -> None:
        self._tokens[bot_id] = token
        self._epochs[bot_id] = epoch

    def unregister(self, bot_id: str) -> None:
        self._tokens.pop(bot_id, None)
        self._epochs.pop(bot_id, None)

    async def send_message(
        self,
        bot_id: str,
        chat_id: int,
        text: str,
        *,
        idempotency_key: str | None,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = None,
        chat_kind: ChatKind = "private",
        update_id: int | None = None,
    ) -> SendOutcome:
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if reply_markup is not None:
            payload["reply_markup"] = reply_markup
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        outcome = await self.call(
            bot_id, "sendMessage", payload, chat_id=chat_id, chat_kind=chat_kind,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        if outcome.ok and outcome.message_id is not None:
            self._messages.add(
                MessageRecord(
                    bot_id=bot_id,
                    chat_id=chat_id,
                    message_id=outcome.message_id,
                    direction=Direction.OUT,
                    sent_at=datetime.now(UTC),
                    user_id=chat_id if chat_kind == "private" else None,
                    update_id=update_id,
                    text=text,
                )
            )
        return outcome

    async def call(
        self,
        bot_id: str,
        method: str,
        payload: dict[str, Any],
        *,
        chat_id: int,
        chat_kind: ChatKind = "private",
        idempotency_key: str | None = None,
        at_least_once: bool = False,
    ) -> SendOutcome:
        """Send once per key; retry what Telegram surely did not do."""
        token = self._tokens.get(bot_id)
        if token is None:
            return self._count(bot_id, method, SendOutcome("failed", description="unknown bot"))
        epoch = self._epochs.get(bot_id, 0)
        attempt = _Attempt()
        if idempotency_key is not None:
            # The rate slot first: a claim must not wait in a queue, where a crash
            # would leave it orphaned although nothing went out.
            try:
                await self._limiter.acquire(bot_id, chat_id, chat_kind, max_wait=self._max_wait)
            except RateLimitTimeout as exc:
                return self._count(bot_id, method, SendOutcome("failed", description=str(exc)))
            attempt.slot_taken = True
            claim = await self._ledger.claim_as(idempotency_key, epoch)
            if claim != "new":
                if claim == "orphaned":
                    log.warning(
                        "bot %s: %s claimed by a previous owner; not resent", bot_id, method
                    )
                    return self._count(bot_id, method, SendOutcome("orphaned"))
                return self._count(bot_id, method, SendOutcome("skipped"))
        try:
            outcome = await self._attempts(
                bot_id, token, method, payload, chat_id, chat_kind, attempt
            )
        except asyncio.CancelledError:
            if idempotency_key is not None and not attempt.request_sent:
                # Cancelled before anything went out: the redelivered update may send it.
                await asyncio.shield(self._ledger.release(idempotency_key, epoch))
            raise
        if idempotency_key is not None:
            if outcome.ok:
                await self._ledger.confirm(idempotency_key)
            elif at_least_once and outcome.result == "failed":
                await self._ledger.release(idempotency_key, epoch)
        if outcome.result == "blocked" and self._on_blocked is not None and chat_kind == "private":
            self._on_blocked(bot_id, chat_id)
        return self._count(bot_id, method, outcome)

    async def _attempts(
        self,
        bot_id: str,
        token: str,
        method: str,
        payload: dict[str, Any],
        chat_id: int,
        chat_kind: ChatKind,
        attempt: _Attempt,
    ) -> SendOutcome:
        url = f"{self._api_base}/bot{token}/{method}"
        body = orjson.dumps(payload)
        backoff = 0.2
        last = "no attempt"
        for _ in range(self._max_attempts):
            try:
                if not attempt.slot_taken:
                    await self._limiter.acquire(bot_id, chat_id, chat_kind, max_wait=self._max_wait)
                attempt.slot_taken = False
            except RateLimitTimeout as exc:
                return SendOutcome("failed", description=str(exc))
            attempt.request_sent = True
            try:
                async with self._session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=self._timeout,
                ) as response:
                    status, raw = response.status, await response.read()
            except aiohttp.ClientConnectorError as exc:
                last = f"connect: {type(exc).__name__}"  # never reached Telegram: retry
                attempt.request_sent = False
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The request may have been acted on; sending again could duplicate it.
                log.warning("bot %s: %s outcome unknown (%s)", bot_id, method, type(exc).__name__)
                return SendOutcome("uncertain", description=type(exc).__name__)
            else:
                outcome, retry_after = self._parse(bot_id, status, raw)
                if outcome is not None:
                    return outcome
                attempt.request_sent = False  # a 429 or 5xx: Telegram did not act on it
                if retry_after is not None:
                    self._metrics.send_retry_after.labels(bot_id).inc()
                    await self._limiter.pause(bot_id, retry_after)
                    continue  # the limiter waits out the pause before the next try
                last = f"HTTP {status}"
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)
        return SendOutcome("failed", description=f"gave up after {self._max_attempts}: {last}")

    def _parse(
        self, bot_id: str, status: int, raw: bytes
    ) -> tuple[SendOutcome | None, float | None]:
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if status == 200 and answer.get("ok"):
            result = answer.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            return SendOutcome("ok", message_id=message_id), None
        description = str(answer.get("description", f"HTTP {status}"))
        if status == 429:
            retry_after = (answer.get("parameters") or {}).get("retry_after", 1)
            return None, float(retry_after)
        if status >= 500:
            return None, None
        if status == 403:
            return SendOutcome("blocked", description=description), None
        log.warning("bot %s: send refused: %s", bot_id, description)
        return SendOutcome("failed", description=description), None

    def _count(self, bot_id: str, method: str, outcome: SendOutcome) -> SendOutcome:
        self._metrics.sends.labels(bot_id, method, outcome.result).inc()
        return outcome
