"""One bot: its aiogram Bot and Dispatcher, and our own poll loop (invariants 1-3).

Not ``start_polling``: that confirms an offset before its handlers finish. Here
an offset moves only past updates that were handled, skipped as duplicates or
stored as dead letters; everything else is redelivered by Telegram. Updates go
to the shared :class:`ChatSequencer`: in order per chat, concurrent across
chats, and fetching waits when the fleet is full.

Errors: 401 stops this bot (marked in the database and the metrics), 409
stops polling at once (someone else polls), 429 waits ``retry_after``, 5xx
and network errors back off with jitter. Nothing here touches another bot.

Webhook mode: the runner sets the bot's webhook to this instance and takes
updates from the route through :meth:`BotRunner.accept` (same sequencer, same
pipeline); on stopping it drains and deletes the webhook, so whatever is left
waits at Telegram for the next owner.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.types import Update
from pydantic import ValidationError

import handlers
from fleet.batcher import BatchWriter
from fleet.config import BotConfig, FunnelConfig, RuntimeConfig, TelegramConfig
from fleet.errors import UpdateBusy, UpdateNotStored
from fleet.metrics import FleetMetrics
from fleet.ownership import BotFence, OpenFence
from fleet.sender import Sender
from fleet.sequencer import ChatSequencer
from fleet.webhook import bot_webhook_secret, webhook_url
from handlers.context import FleetData
from middlewares import (
    ContextMiddleware,
    DedupMiddleware,
    ErrorsMiddleware,
    MetricsMiddleware,
    StartDebounceMiddleware,
    ThrottleMiddleware,
    UsersMiddleware,
)
from storage.idempotency import UpdateDeduplicator
from storage.keys import RedisKeys
from storage.models import BotState
from storage.repositories.dead_letters import FailedUpdate
from storage.repositories.users import UserSeen
from storage.services import BotRegistry, DeadLetters

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


class RunnerState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    UNAUTHORIZED = "unauthorized"
    CONFLICT = "conflict"
    LOST = "lost"  # the lease went to another instance (or could not be renewed)


@dataclass(frozen=True, slots=True)
class RunnerServices:
    """What every runner shares; built once by the supervisor."""

    telegram: TelegramConfig
    runtime: RuntimeConfig
    public_url: str | None  # webhook mode: where Telegram reaches this instance
    poll_session: aiohttp.ClientSession  # long polls only: they never starve sends
    api_session: AiohttpSession  # aiogram's own calls (rare: sends go through the sender)
    sequencer: ChatSequencer
    sender: Sender
    dedup: UpdateDeduplicator
    dead_letters: DeadLetters
    registry: BotRegistry
    users: BatchWriter[UserSeen]
    redis: Any
    keys: RedisKeys
    metrics: FleetMetrics


class PollError(Exception):
    def __init__(self, kind: str, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.kind = kind
        self.retry_after = retry_after


def chat_of(raw: dict[str, Any]) -> int:
    """The chat an update belongs to, for per-chat ordering (0: not tied to a chat)."""
    for kind, body in raw.items():
        if kind == "update_id" or not isinstance(body, dict):
            continue
        chat = body.get("chat")
        if chat is None and isinstance(body.get("message"), dict):
            chat = body["message"].get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            return int(chat["id"])
        sender = body.get("from")
        if isinstance(sender, dict) and isinstance(sender.get("id"), int):
            return int(sender["id"])
    return 0


class BotRunner:
    def __init__(
        self,
        config: BotConfig,
        funnel: FunnelConfig,
        services: RunnerServices,
        fence: BotFence | None = None,
    ) -> None:
        self.config = config
        self.fence: BotFence = fence or OpenFence()
        self.bot_id = config.id
        self.funnel = funnel
        self._services = services
        self._token = config.token.get_secret_value()
        self.bot = Bot(self._token, session=services.api_session)
        self.dispatcher = self._build_dispatcher()
        self.state = RunnerState.STARTING
        self.reason: str | None = None
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._pending: set[int] = set()  # fetched, not finished: the offset stays below these
        self._scheduled: set[int] = set()  # submitted in this run: skip them when refetched
        self._max_seen = -1
        self._confirmed = 0
        self._accepting = False  # webhook mode: the webhook points here and we take updates
        self._inflight = 0  # webhook mode: accepted, not finished
        self._committed = 0  # the offset last written under our fence
        self.last_update_at: float | None = None  # monotonic, for `botfleet status`
        self.fence.on_lost(self._lost)

    def _build_dispatcher(self) -> Dispatcher:
        s = self._services
        data = FleetData(
            bot_id=self.bot_id,
            bot_config=self.config,
            funnel=self.funnel,
            sender=s.sender,
            metrics=s.metrics,
        )
        dispatcher = Dispatcher(disable_fsm=True, name=f"bot:{self.bot_id}", **data)
        dispatcher.update.outer_middleware(MetricsMiddleware(s.metrics))
        dispatcher.update.outer_middleware(ContextMiddleware())
        dispatcher.update.outer_middleware(DedupMiddleware(s.dedup))
        dispatcher.update.outer_middleware(ErrorsMiddleware(s.dead_letters))
        dispatcher.update.outer_middleware(UsersMiddleware(s.users))
        throttle = ThrottleMiddleware(s.redis, s.keys, s.runtime.user_messages_per_minute)
        debounce = StartDebounceMiddleware(s.redis, s.keys, s.runtime.start_debounce_seconds)
        dispatcher.message.outer_middleware(throttle)  # the flood guard counts every message
        dispatcher.message.outer_middleware(debounce)
        dispatcher.callback_query.outer_middleware(throttle)
        dispatcher.include_router(handlers.build_router())
        return dispatcher

    @property
    def pending(self) -> int:
        return len(self._pending) + self._inflight

    @property
    def webhook_mode(self) -> bool:
        return self._services.telegram.mode == "webhook"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._accepting = False

    def _lost(self, reason: str) -> None:
        """The fence fell: stop polling at once (before the lease can expire)."""
        if self._stop.is_set():
            return  # we were stopping anyway (hand-off, shutdown)
        self.state, self.reason = RunnerState.LOST, f"lease lost: {reason}"
        self.stop()

    # -- the poll loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Poll until stopped, unauthorized or in conflict; never raises for a bad bot."""
        s = self._services
        s.sender.register(self.bot_id, self._token, self.fence.epoch)
        if self.webhook_mode:
            await self._serve_webhook()
            return
        self.state = RunnerState.RUNNING
        log.info("bot %s: polling", self.bot_id)
        backoff = 1.0
        offset = self._committed = self.fence.start_offset or 0
        try:
            while not self._stop.is_set():
                if not await self._fenced(offset):
                    break
                try:
                    updates = await self._until_stopped(self._get_updates(offset))
                except PollError as error:
                    s.metrics.poll_errors.labels(self.bot_id, error.kind).inc()
                    if await self._give_up(error):
                        return
                    if error.kind == "retry_after" and error.retry_after:
                        await self._wait_stop(error.retry_after)
                    else:
                        log.warning("bot %s: getUpdates failed (%s)", self.bot_id, error)
                        await self._wait_stop(backoff * (0.5 + random.random()))
                        backoff = min(backoff * 2, 30.0)
                    continue
                if updates is None:
                    break  # stopped while waiting
                if not self.fence.valid():
                    break  # too late to trust this batch: the next owner fetches it again
                backoff = 1.0
                fresh = await self._schedule(updates)
                offset = self._confirmable()
                if updates and not fresh:
                    # Only updates still in flight came back. Polling again before the
                    # oldest of them is done would fetch the same batch again: wait.
                    await self._wait_offset_beyond(offset, s.telegram.polling_timeout or 1)
        finally:
            if self.state == RunnerState.RUNNING:
                self.state = RunnerState.STOPPING

    async def _fenced(self, offset: int) -> bool:
        """May this runner poll with ``offset``? Writes it under the lease epoch first."""
        if not self.fence.valid():
            self._lost("renew deadline passed")
            return False
        if offset > self._committed:
            if not await self.fence.commit_offset(offset):
                return False  # a newer epoch exists; the fence already stopped us
            self._committed = offset
        return True

    async def _schedule(self, updates: list[dict[str, Any]]) -> int:
        fresh = 0
        for raw in updates:
            update_id = raw.get("update_id")
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                continue
            self._max_seen = max(self._max_seen, update_id)
            if update_id in self._scheduled:
                continue
            self._scheduled.add(update_id)
            self._pending.add(update_id)
            fresh += 1
            self._services.metrics.updates_received.labels(self.bot_id).inc()
            self.last_update_at = time.monotonic()
            job = functools.partial(self._handle, update_id, raw)
            await self._services.sequencer.submit((self.bot_id, chat_of(raw)), job)
        return fresh

    def _confirmable(self) -> int:
        offset = min(self._pending) if self._pending else self._max_seen + 1
        self._scheduled = {uid for uid in self._scheduled if uid >= offset}
        return max(offset, 0)

    async def _give_up(self, error: PollError) -> bool:
        if error.kind == "unauthorized":
            self.state, self.reason = RunnerState.UNAUTHORIZED, "Telegram answered 401 Unauthorized"
            log.error("bot %s: token rejected (401); this bot stops, the others go on", self.bot_id)
            try:
                await self._services.registry.mark(self.bot_id, BotState.UNAUTHORIZED, self.reason)
            except Exception:
                log.exception("bot %s: could not record the unauthorized state", self.bot_id)
            return True
        if error.kind == "conflict":
            self.state, self.reason = RunnerState.CONFLICT, "another getUpdates poller (409)"
            log.error("bot %s: 409 Conflict, another poller owns it; stopping", self.bot_id)
            return True
        return False

    async def _get_updates(
        self, offset: int, poll_seconds: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        timeout = self._services.telegram.polling_timeout if poll_seconds is None else poll_seconds
        payload = {
            "offset": offset,
            "limit": limit,
            "timeout": timeout,
            "allowed_updates": ALLOWED_UPDATES,
        }
        result = await self._api("getUpdates", payload, timeout + 15)
        if not isinstance(result, list):
            raise PollError("malformed", "result is not a list")
        return [item for item in result if isinstance(item, dict)]

    async def _api(self, method: str, payload: dict[str, Any], within: float) -> Any:
        """One control call (getUpdates, setWebhook, ...) on the poll pool; raises PollError."""
        s = self._services
        url = f"{s.telegram.api_base.rstrip('/')}/bot{self._token}/{method}"
        try:
            async with s.poll_session.post(
                url,
                data=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=within),
            ) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError("network", type(exc).__name__) from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise PollError("server" if status >= 500 else "malformed", f"HTTP {status}") from None
        if status == 200 and isinstance(answer, dict) and answer.get("ok"):
            return answer.get("result")
        description = str(answer.get("description", "")) if isinstance(answer, dict) else ""
        if status == 401:
            raise PollError("unauthorized", description)
        if status == 409:
            raise PollError("conflict", description)
        if status == 429:
            params = answer.get("parameters") if isinstance(answer, dict) else None
            retry = params.get("retry_after", 1) if isinstance(params, dict) else 1
            raise PollError("retry_after", description, float(retry))
        raise PollError("server" if status >= 500 else "client", f"HTTP {status} {description}")

    # -- webhook mode -------------------------------------------------------------------

    async def _serve_webhook(self) -> None:
        """Point the bot's webhook here, then take updates from the route until stopped."""
        s = self._services
        assert s.public_url is not None and s.telegram.webhook_secret is not None
        secret = s.telegram.webhook_secret.get_secret_value().encode()
        payload = {
            "url": webhook_url(s.public_url, self.bot_id),
            "secret_token": bot_webhook_secret(secret, self.bot_id),
            "allowed_updates": ALLOWED_UPDATES,
            "max_connections": 40,
        }
        backoff = 1.0
        while not self._stop.is_set() and self.fence.valid():
            try:
                await self._api("setWebhook", payload, 15)
                break
            except PollError as error:
                s.metrics.poll_errors.labels(self.bot_id, error.kind).inc()
                if await self._give_up(error):
                    return
                log.warning("bot %s: setWebhook failed (%s); retrying", self.bot_id, error)
                await self._wait_stop(error.retry_after or backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 30.0)
        if self._stop.is_set():
            return
        self.state = RunnerState.RUNNING
        self._accepting = True
        log.info("bot %s: webhook set, taking updates", self.bot_id)
        try:
            await self._stop.wait()
        finally:
            self._accepting = False
            if self.state == RunnerState.RUNNING:
                self.state = RunnerState.STOPPING

    async def accept(self, raw: dict[str, Any]) -> bool:
        """An update from the webhook route: True once handled or stored (answer 200)."""
        if not self._accepting:
            return False
        update_id = int(raw["update_id"])
        finished = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                finished.set_result(await self._process(update_id, raw))
            finally:
                if not finished.done():
                    finished.set_result(False)
                self._inflight -= 1
                self._progress.set()

        self._inflight += 1
        self.last_update_at = time.monotonic()
        self._services.metrics.updates_received.labels(self.bot_id).inc()
        try:
            await self._services.sequencer.submit((self.bot_id, chat_of(raw)), job)
        except BaseException:
            self._inflight -= 1
            raise
        result: bool = await finished
        return result

    async def _delete_webhook(self) -> None:
        try:
            await self._api("deleteWebhook", {"drop_pending_updates": False}, 15)
            log.info("bot %s: webhook deleted", self.bot_id)
        except PollError as error:
            log.warning("bot %s: deleteWebhook failed (%s)", self.bot_id, error.kind)

    # -- handling ----------------------------------------------------------------------

    async def _handle(self, update_id: int, raw: dict[str, Any]) -> None:
        finished = False
        try:
            finished = await self._process(update_id, raw)
        finally:
            if finished:
                self._pending.discard(update_id)
            else:
                self._scheduled.discard(update_id)  # fetch it again later
            self._progress.set()

    async def _process(self, update_id: int, raw: dict[str, Any]) -> bool:
        """Run one update through the pipeline; True if handled, skipped or stored."""
        try:
            try:
                update = Update.model_validate(raw, context={"bot": self.bot})
            except ValidationError as exc:
                return await self._malformed(update_id, raw, exc)
            await self.dispatcher.feed_update(self.bot, update, lease_epoch=self.fence.epoch)
        except (UpdateBusy, UpdateNotStored) as exc:
            log.warning("bot %s: update %s left for later: %s", self.bot_id, update_id, exc)
            return False
        except Exception:
            log.exception(
                "bot %s: update %s could not be handled; left for later", self.bot_id, update_id
            )
            return False
        return True

    async def _malformed(self, update_id: int, raw: dict[str, Any], exc: ValidationError) -> bool:
        self._services.metrics.updates.labels(self.bot_id, "malformed").inc()
        log.warning(
            "bot %s: update %s has an unexpected shape (%s errors)",
            self.bot_id,
            update_id,
            exc.error_count(),
        )
        failed = FailedUpdate(self.bot_id, update_id, raw, "ValidationError", str(exc)[:2000])
        try:
            await self._services.dead_letters.record(failed)
        except Exception:
            log.exception("bot %s: could not store malformed update %s", self.bot_id, update_id)
            return False
        return True

    # -- waiting and stopping ---------------------------------------------------------------

    async def _until_stopped(self, work: Any) -> Any:
        """Run ``work`` unless stop comes first (then cancel it and return None)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return None
        return task.result()

    async def _wait_stop(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    async def _wait_offset_beyond(self, offset: int, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                while self._pending and min(self._pending) <= offset and not self._stop.is_set():
                    self._progress.clear()
                    await self._until_stopped(self._progress.wait())
        except TimeoutError:
            pass

    async def drain(self, grace: float) -> bool:
        """After :meth:`run` returned: wait for this bot's in-flight updates, confirm the offset."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.pending and loop.time() < deadline:
            self._progress.clear()
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    await self._progress.wait()
            except TimeoutError:
                break
        drained = not self.pending
        if self.webhook_mode:
            # A lost lease may already point the webhook at the next owner: leave it.
            if self.state != RunnerState.UNAUTHORIZED and self.fence.valid():
                await self._delete_webhook()
        else:
            await self.confirm_offset()
        if self.state in (RunnerState.RUNNING, RunnerState.STOPPING, RunnerState.STARTING):
            self.state = RunnerState.STOPPED
        self._services.sender.unregister(self.bot_id)
        return drained

    async def confirm_offset(self) -> None:
        """Tell Telegram what is done, so the next owner does not see it again."""
        if self.state in (RunnerState.UNAUTHORIZED, RunnerState.CONFLICT, RunnerState.LOST):
            return
        if self._max_seen < 0:
            return
        offset = self._confirmable()
        if offset <= self._confirmed:
            return
        # Under our epoch first; past the deadline someone else may poll: leave Telegram alone.
        if not await self.fence.commit_offset(offset) or not self.fence.valid():
            return
        try:
            await self._get_updates(offset, poll_seconds=0, limit=1)
            self._confirmed = offset
        except PollError as error:
            log.warning("bot %s: final offset not confirmed (%s)", self.bot_id, error.kind)
