"""One bot on this instance: its aiogram Bot, its Dispatcher, its lane, its poll loop or webhook.

The runner owns what is per bot and nothing shared: the offset bookkeeping
(``fleet.offsets``), the completion of finished updates (``fleet.completion``),
its lane in the shared sequencer. Its Dispatcher is built on the bot's first
update and dropped after a long idle spell: an idle bot costs a few KiB, not
the ~270 KiB of a Dispatcher with its routers.

Stopping: a planned stop (hand-off, reload, shutdown) stops fetching, lets
the bot's in-flight updates finish for up to the grace period, cancels the
rest, settles what finished and confirms the offset; only then may the lease
be released. A lost lease cancels the bot's work at once: the lease stops
being renewed before it can expire, and nothing of ours may still run when
another instance takes the bot.

401 stops this bot (marked in the database and the metrics), 409 stops it at
once (someone else polls). Nothing here touches another bot.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession

from fleet import telegram
from fleet.batcher import BatchWriter
from fleet.completion import Completion
from fleet.config import BotConfig, RuntimeConfig, TelegramConfig
from fleet.config_funnel import FunnelConfig
from fleet.context import FleetData, Outcome, SalesActions, UpdateScope
from fleet.dispatch import build_dispatcher
from fleet.http import HttpPool
from fleet.metrics import FleetMetrics
from fleet.offsets import OffsetTracker
from fleet.ownership import BotFence, OpenFence
from fleet.pipeline import UpdatePipeline
from fleet.polling import PollLoop
from fleet.sender import Sender
from fleet.sequencer import ChatSequencer, Job, LaneClosed
from fleet.webhook import WebhookIntake
from middlewares.admission import BatchAdmission, chat_of
from storage.models import BotState
from storage.repositories.users import UserSeen
from storage.services import BotRegistry
from storage.updates import Fencing, Finished, UpdateClaims

log = logging.getLogger(__name__)

_STORED = (Outcome.FAILED, Outcome.MALFORMED)


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
    poll_http: HttpPool  # long polls only (unbounded): they never starve sends
    api_session: AiohttpSession  # aiogram's own calls (rare: sends go through the sender)
    sequencer: ChatSequencer
    sender: Sender
    claims: UpdateClaims
    admission: BatchAdmission
    pipeline: UpdatePipeline
    registry: BotRegistry
    users: BatchWriter[UserSeen]
    metrics: FleetMetrics
    sales: SalesActions


class BotRunner:
    def __init__(
        self,
        config: BotConfig,
        funnel: FunnelConfig,
        services: RunnerServices,
        fence: BotFence | None = None,
    ) -> None:
        self.config = config
        self.funnel = funnel
        self.bot_id = config.id
        self.fence: BotFence = fence or OpenFence()
        self._services = services
        self._token = config.token.get_secret_value()
        self.bot = Bot(self._token, session=services.api_session)
        self.counters = services.metrics.for_bot(self.bot_id)
        self.lane = services.sequencer.lane(self.bot_id)
        start = self.fence.start_offset
        self.tracker = OffsetTracker(start or 0)
        self.completion = Completion(
            self.bot_id,
            services.claims,
            Fencing(self.fence.epoch, self.fence.holder),
            None if self.webhook_mode else self.tracker,
            on_stale=self.fence.refuse,
            committed=start,
        )
        self.state = RunnerState.STARTING
        self.reason: str | None = None
        self.last_update_at: float | None = None  # monotonic, for `botfleet status`
        self._dispatcher: Dispatcher | None = None
        self._used_at = time.monotonic()
        self._stop = self.stop_requested = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._webhook: WebhookIntake | None = None
        if self.webhook_mode:
            assert services.public_url is not None and services.telegram.webhook_secret
            self._webhook = WebhookIntake(
                self,
                services.admission,
                services.metrics,
                public_url=services.public_url,
                instance_secret=services.telegram.webhook_secret.get_secret_value(),
            )
        self._confirmed = start or 0  # the offset Telegram was last told
        self._unsubscribe: Callable[[], None] = self.fence.on_lost(self.lose)

    # -- what the pipeline and the poll loop use -------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        """Built on first use (an idle bot has none)."""
        self._used_at = time.monotonic()
        dispatcher = self._dispatcher
        if dispatcher is None:
            s = self._services
            data = FleetData(
                bot_id=self.bot_id,
                bot_config=self.config,
                funnel=self.funnel,
                sender=s.sender,
                sales=s.sales,
                metrics=s.metrics,
            )
            dispatcher = self._dispatcher = build_dispatcher(data, s.users)
        return dispatcher

    def drop_idle_dispatcher(self, idle_for: float) -> bool:
        """Free the Dispatcher of a bot without updates for ``idle_for`` s."""
        if self._dispatcher is None or self.lane.admitted:
            return False
        if time.monotonic() - self._used_at < idle_for:
            return False
        self._dispatcher = None
        return True

    def start_job(self, update_id: int, raw: dict[str, Any]) -> Job:
        return self.run_update(update_id, raw, None)

    def run_update(
        self, update_id: int, raw: dict[str, Any], answer: asyncio.Future[bool] | None
    ) -> Job:
        """The job that handles one update; ``answer`` learns whether it was finished."""
        return functools.partial(self._run_update, update_id, raw, answer)

    async def _run_update(
        self, update_id: int, raw: dict[str, Any], answer: asyncio.Future[bool] | None
    ) -> None:
        """Handle one update; ``answer`` (webhook mode) learns whether it was finished."""
        scope = UpdateScope(self.bot_id, update_id, self.fence.epoch)
        outcome = None
        try:
            outcome = await self._services.pipeline.run(self, scope, raw)
            if outcome is not None:
                finished = Finished(update_id, outcome in _STORED, tuple(scope.acknowledged))
                self.completion.add(finished)
        finally:
            if answer is not None and not answer.done():
                answer.set_result(outcome is not None)

    async def replay(self, raw: dict[str, Any]) -> UpdateScope | None:
        """Run a dead letter's update again, in its chat's order; its scope tells how it went
        (``failure`` None: handled). None: the bot stopped before it ran.

        Its update id is done (admission would skip it), so it goes straight to the
        pipeline. Sends the first run made are done in the ledger: not repeated.
        """
        update_id = int(raw["update_id"])
        scope = UpdateScope(self.bot_id, update_id, self.fence.epoch)
        ran: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                outcome = await self._services.pipeline.run(self, scope, raw, store=False)
                for key in scope.acknowledged:
                    await self._services.sender.ledger.confirm(key)
                ran.set_result(outcome is not None)
            finally:
                if not ran.done():
                    ran.set_result(False)

        try:
            await self.lane.submit(chat_of(raw), job)
        except LaneClosed:
            return None
        return scope if await asyncio.shield(ran) else None

    async def api(self, method: str, payload: dict[str, Any], within: float) -> Any:
        """A control call (getUpdates, setWebhook, ...) on the poll pool."""
        path = telegram.method_path(self._token, method)
        return await telegram.call(
            self._services.poll_http, path, method, orjson.dumps(payload), within
        )

    async def give_up(self, error: telegram.TelegramError) -> bool:
        """401 and 409 stop this bot; anything else is tried again."""
        if isinstance(error, telegram.Unauthorized):
            self.state, self.reason = RunnerState.UNAUTHORIZED, "Telegram answered 401 Unauthorized"
            log.error("bot %s: token rejected (401); this bot stops, the others go on", self.bot_id)
            try:
                await self._services.registry.mark(self.bot_id, BotState.UNAUTHORIZED, self.reason)
            except Exception as exc:
                log.warning("bot %s: unauthorized state not recorded (%r)", self.bot_id, exc)
            return True
        if isinstance(error, telegram.Conflict):
            self.state, self.reason = RunnerState.CONFLICT, "another getUpdates poller (409)"
            log.error("bot %s: 409 Conflict, another poller owns it; stopping", self.bot_id)
            return True
        return False

    def lose(self, reason: str) -> None:
        """The fence fell: stop fetching and cancel this bot's work now."""
        if self.state not in (RunnerState.STOPPED, RunnerState.UNAUTHORIZED):
            if not self._stop.is_set() or self.state != RunnerState.LOST:
                log.warning("bot %s: lease lost (%s); its work stops now", self.bot_id, reason)
            self.state, self.reason = RunnerState.LOST, f"lease lost: {reason}"
        self.stop()
        if not self.lane.closed:
            self._chore(self._cancel_work())

    # -- life ---------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self.tracker.pending + (self._webhook.pending if self._webhook else 0)

    @property
    def webhook_mode(self) -> bool:
        return self._services.telegram.mode == "webhook"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._webhook is not None:
            self._webhook.accepting = False
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()

    async def run(self) -> None:
        """Poll (or take webhook updates) until stopped, unauthorized, in conflict or lost."""
        s = self._services
        s.sender.register(self.bot_id, self._token, self.fence.epoch)
        if self._stop.is_set():
            return
        if self._webhook is not None:
            await self._serve_webhook(self._webhook)
            return
        self.state = RunnerState.RUNNING
        log.info("bot %s: polling", self.bot_id)
        loop = PollLoop(self, s.admission, s.telegram, s.metrics)
        self._poller = asyncio.create_task(loop.run(), name=f"poll-{self.bot_id}")
        try:
            await self._poller
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are cancelled ourselves, not just our poll loop
        finally:
            if not self._poller.done():
                self._poller.cancel()
                await asyncio.gather(self._poller, return_exceptions=True)
            if self.state == RunnerState.RUNNING:
                self.state = RunnerState.STOPPING

    async def drain(self, grace: float) -> bool:
        """After :meth:`run` returned: finish or cancel this bot's work, settle, confirm."""
        drained = await self.lane.drain(grace)
        await self._cancel_work()  # what is left stops before the lease can be released
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        if not await self.completion.close(within=min(grace, 5.0)):
            log.warning("bot %s: finished updates not settled; they run again", self.bot_id)
        if self._webhook is not None:
            # A lost lease may already point the webhook at the next owner: leave it.
            if self.state != RunnerState.UNAUTHORIZED and self.fence.valid():
                await self._webhook.delete()
        else:
            await self.confirm_offset()
        if self.state in (RunnerState.RUNNING, RunnerState.STOPPING, RunnerState.STARTING):
            self.state = RunnerState.STOPPED
        self._services.sender.unregister(self.bot_id)
        self._unsubscribe()
        self._dispatcher = None
        return drained and self.tracker.pending == 0

    async def confirm_offset(self) -> None:
        """Tell Telegram what is done, so the next owner does not see it again."""
        if self.state in (RunnerState.UNAUTHORIZED, RunnerState.CONFLICT, RunnerState.LOST):
            return
        offset = self.tracker.offset
        if offset <= self._confirmed or not self.fence.valid():
            return
        try:
            # Under our epoch first (skipped duplicates move the offset without a flush).
            behind = self.completion.committed is None or offset > self.completion.committed
            if behind and not await self._services.claims.finish(
                self.bot_id,
                Fencing(self.fence.epoch, self.fence.holder),
                (),
                offset=offset,
                committed=self.completion.committed,
            ):
                return
            await self.api("getUpdates", {"offset": offset, "limit": 1, "timeout": 0}, 10)
            self._confirmed = offset
        except Exception as exc:
            log.warning("bot %s: final offset not confirmed (%s)", self.bot_id, type(exc).__name__)

    async def _cancel_work(self) -> None:
        await self.lane.cancel()
        if self._webhook is not None:
            self._webhook.let_go()

    def _chore(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    # -- webhook mode ---------------------------------------------------------------------------

    async def _serve_webhook(self, intake: WebhookIntake) -> None:
        """Point the bot's webhook here, then take updates from the route until stopped."""
        if not await intake.point_here():
            return
        self.state = RunnerState.RUNNING
        intake.accepting = True
        log.info("bot %s: webhook set, taking updates", self.bot_id)
        try:
            await self._stop.wait()
        finally:
            intake.accepting = False
            if self.state == RunnerState.RUNNING:
                self.state = RunnerState.STOPPING

    async def accept(self, raw: dict[str, Any]) -> bool:
        """An update from the webhook route: True once handled, skipped or stored (answer 200)."""
        return self._webhook is not None and await self._webhook.accept(raw)
