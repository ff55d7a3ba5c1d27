"""The composition root: builds every resource, runs the bots, reloads, drains, stops.

Resources open in an ``AsyncExitStack`` and close in reverse order after every
runner has stopped. Every task lives in one ``TaskGroup``. Signals only set
events (SIGTERM/SIGINT: stop, SIGHUP: reload); the work happens here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from fleet.config import BotConfig, FleetConfig
from fleet.config_file import ConfigError, load_config
from fleet.errors import FleetError
from fleet.leases import LeaseCoordinator
from fleet.metrics import FleetMetrics, build_metrics
from fleet.notify import SystemdNotifier
from fleet.outbox import OutboxDispatcher
from fleet.ownership import BotOwnership, BotReport, StaticOwnership
from fleet.payments.service import PaymentService
from fleet.replays import DeadLetterReplayer
from fleet.runner import BotRunner, RunnerServices, RunnerState
from fleet.services import HealthCheck, Services, build_services
from fleet.web import bound_port, build_web_app, start_web
from fleet.webhook import WebhookRoute, WebhookTarget, add_webhook_route
from handlers.payments import PaymentWebhooks, add_payment_routes
from scheduler import Jobs
from storage.redis import create_redis

log = logging.getLogger(__name__)

_SELF_STOPPED = (RunnerState.UNAUTHORIZED, RunnerState.CONFLICT, RunnerState.LOST)


class Supervisor:
    def __init__(
        self,
        config: FleetConfig,
        *,
        config_path: Path | None = None,
        ownership: BotOwnership | None = None,
        notifier: SystemdNotifier | None = None,
        tune_gc: bool = False,
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._given_ownership = ownership  # None: Redis leases, built with the other resources
        self._ownership: BotOwnership = ownership or StaticOwnership()
        self._notifier = notifier or SystemdNotifier()
        self.metrics: FleetMetrics = build_metrics()
        self.runners: dict[str, BotRunner] = {}
        self.failed: dict[str, str] = {}
        self._unauthorized: set[str] = set()  # not restarted until their config changes
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._reconciling = asyncio.Lock()
        self._owners_changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._services: RunnerServices | None = None
        self._group: asyncio.TaskGroup | None = None
        self._health_checks: list[HealthCheck] = []
        self._registry_stale = asyncio.Event()  # the bots table must follow the config
        self.web_port: int | None = None
        self.clean_exit = True
        self._tune_gc = tune_gc  # the process is ours alone (botfleet run), not a test's
        self._built: Services | None = None
        self.payments: PaymentService | None = None
        self.outbox: OutboxDispatcher | None = None
        self.jobs: Jobs | None = None

    @property
    def config_path(self) -> Path | None:
        return self._config_path

    # -- signals and control ---------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_for(self, predicate: Callable[[], object], within: float = 30.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the fleet changes."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    # -- the whole life ----------------------------------------------------------------------

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            built = await self._open(stack)
            services = self._services = built.runner
            jobs = self.jobs
            assert jobs is not None
            if self._tune_gc:
                _tune_garbage_collector()
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    background = [
                        group.create_task(self._ownership.run(self._ownership_changed)),
                        group.create_task(self._follow_ownership(), name="ownership"),
                        group.create_task(services.users.run(), name="users-batch"),
                        group.create_task(built.messages.run(), name="messages-batch"),
                        group.create_task(built.starts.run(), name="starts-batch"),
                        group.create_task(self._sync_registry(), name="registry"),
                        group.create_task(self._watch_config(), name="config-watch"),
                        group.create_task(self._loop_lag(), name="loop-lag"),
                        group.create_task(self._sweep_idle(), name="idle-dispatchers"),
                        group.create_task(
                            DeadLetterReplayer(
                                built.dead_letters,
                                lambda: self.runners,
                                self.config.instance.id,
                                self.metrics,
                                interval=self.config.runtime.replay_interval,
                            ).run(),
                            name="replays",
                        ),
                    ]
                    if self.config.runtime.watchdog:
                        background.append(group.create_task(self._notifier.watchdog()))
                    await self._ownership.settle(self.config.bots)
                    await self._reconcile(self.config)
                    jobs.start()
                    self._ready.set()
                    self._notifier.ready(self._status())
                    log.info("fleet up: %s", self._status())
                    await self._stop.wait()
                    self._notifier.stopping()
                    log.info("stopping: draining for up to %ss", self.config.runtime.shutdown_grace)
                    await self._shutdown()
                    for task in background:
                        task.cancel()
            finally:
                self._group = None
                await jobs.shutdown()
                # Cancelled from outside (or a crash): no update may outlive our resources.
                await services.sequencer.cancel()
                await services.users.close()
                await built.starts.close()
                await built.messages.close()
        self._notifier.close()
        log.info("stopped (%s)", "clean" if self.clean_exit else "deadline reached")

    async def _open(self, stack: AsyncExitStack) -> Services:
        config = self.config
        built = self._built = await build_services(config, stack, self.metrics)
        self._health_checks = built.health
        if self._given_ownership is None:
            control = create_redis(config.redis.model_copy(update={"pool_size": 2}))
            stack.push_async_callback(control.aclose)
            self._ownership = LeaseCoordinator(
                built.redis, built.keys, config.instance, config.leases,
                metrics=self.metrics, status=self._bot_status, control=control,
            )  # fmt: skip
        try:
            async with asyncio.timeout(config.database.connect_timeout):
                await built.runner.registry.sync(config.bots)
        except Exception as exc:
            log.warning("bot registry not written yet (%s); retrying in the background", exc)
            self._registry_stale.set()
        app = build_web_app(self, self.metrics)
        self.payments = built.payments
        self.outbox = built.outbox
        jobs = self.jobs = Jobs(
            built.jobs,
            config.payments.jobs_interval,
            intervals={"timers": config.runtime.timers_interval},
        )
        built.payments.on_transition = lambda: jobs.wake("outbox")
        if built.gateways:
            add_payment_routes(
                app,
                PaymentWebhooks(
                    gateways=built.gateways,
                    url_secrets=built.url_secrets,
                    writer=built.inbox_writer,
                    metrics=self.metrics,
                    max_bytes=config.payments.webhook_max_bytes,
                    on_stored=lambda: jobs.wake("payments-inbox"),
                ),
            )
        if config.telegram.mode == "webhook":
            assert config.telegram.webhook_secret is not None  # checked when loading
            secret = config.telegram.webhook_secret.get_secret_value()
            add_webhook_route(app, WebhookRoute(self, secret, self.metrics))
        web_runner = await start_web(app, config.http.host, config.http.port)
        stack.push_async_callback(web_runner.cleanup)
        self.web_port = bound_port(web_runner)
        return built

    async def _sync_registry(self) -> None:
        """Write the configured bots to the database, now or once it answers again."""
        backoff = 1.0
        while True:
            await self._registry_stale.wait()
            self._registry_stale.clear()
            assert self._services is not None
            try:
                await self._services.registry.sync(self.config.bots)
                backoff = 1.0
            except Exception as exc:
                self._registry_stale.set()
                log.warning("bot registry not written (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)  # back-off timer
                backoff = min(backoff * 2, 60.0)

    async def _sweep_idle(self) -> None:
        """Give idle bots' Dispatchers back (they are rebuilt on the next update)."""
        idle = self.config.runtime.dispatcher_idle_seconds
        while True:
            await asyncio.sleep(min(60.0, idle / 2))  # a periodic sweep
            for runner in list(self.runners.values()):
                runner.drop_idle_dispatcher(idle)

    # -- bots --------------------------------------------------------------------------------

    def _ownership_changed(self) -> None:
        self._owners_changed.set()

    async def _follow_ownership(self) -> None:
        while True:
            await self._owners_changed.wait()
            self._owners_changed.clear()
            if not self._stop.is_set():
                await self._reconcile(self.config)

    async def _reconcile(self, config: FleetConfig, changed: Sequence[str] = ()) -> None:
        """Make the running set match config and ownership; restart the bots in ``changed``."""
        async with self._reconciling:
            self._unauthorized.difference_update(changed)
            wanted = await self._ownership.owned(config.bots)
            for bot_id in list(self.runners):
                if bot_id not in wanted:
                    self._begin_stop(bot_id)
                elif bot_id in changed:
                    self._begin_stop(bot_id, release=False)  # restarted here, lease kept
            if changed:  # a changed bot restarts only after its old runner has stopped
                await asyncio.gather(*(self._stopping[b] for b in changed if b in self._stopping))
                wanted = await self._ownership.owned(config.bots)
            started = 0
            for bot in config.bots:
                if (
                    bot.id in wanted
                    and bot.id not in self.runners
                    and bot.id not in self._stopping
                    and bot.id not in self._unauthorized
                ):
                    self._start_bot(bot, config)
                    started += 1
                    if started % 50 == 0:
                        # Building a Dispatcher costs milliseconds: thousands at once would
                        # hold the loop for seconds, and lease renewals must not wait that long.
                        await asyncio.sleep(0)
            idle = self._ownership.held() - wanted - set(self.runners) - set(self._stopping)
            idle -= self._unauthorized  # keep its lease: another instance would only fail too
            for bot_id in idle:  # held, but nothing runs it: give it back
                await self._ownership.release(bot_id)
            self._publish()

    def _start_bot(self, bot: BotConfig, config: FleetConfig) -> None:
        assert self._services is not None and self._group is not None
        fence = self._ownership.fence(bot.id)
        runner = BotRunner(bot, config.funnel_for(bot), self._services, fence)
        self.runners[bot.id] = runner
        self.failed.pop(bot.id, None)
        task = self._group.create_task(self._run_bot(runner), name=f"bot:{bot.id}")
        self._tasks[bot.id] = task

    async def _run_bot(self, runner: BotRunner) -> None:
        try:
            await runner.run()
        except Exception:
            log.exception("bot %s: runner failed; the other bots go on", runner.bot_id)
            runner.reason = "runner crashed (see log)"
        if runner.stopping and runner.state not in _SELF_STOPPED:
            return  # stopped by us: _stop_bot drains and releases it
        # It stopped on its own (401, 409, lease lost, crash): drain it and let it go.
        if runner.state == RunnerState.UNAUTHORIZED:
            self._unauthorized.add(runner.bot_id)
        if runner.reason:
            self.failed[runner.bot_id] = runner.reason
        if self.runners.get(runner.bot_id) is runner:
            self._begin_stop(runner.bot_id)
        if runner.state in (RunnerState.CONFLICT, RunnerState.LOST):
            # Someone else polls, or we could not renew: re-check the lease after a pause.
            await asyncio.sleep(self.config.leases.retry_period)  # a back-off timer
            self._owners_changed.set()

    def _begin_stop(self, bot_id: str, *, release: bool = True) -> None:
        """Stop a runner in the background: drain, confirm, release. Others go on meanwhile."""
        assert self._group is not None
        runner = self.runners.pop(bot_id, None)
        if runner is None or bot_id in self._stopping:
            return
        runner.stop()
        task = self._group.create_task(
            self._stop_bot(bot_id, runner, release), name=f"stop:{bot_id}"
        )
        self._stopping[bot_id] = task

    async def _stop_bot(self, bot_id: str, runner: BotRunner, release: bool) -> None:
        try:
            run_task = self._tasks.pop(bot_id, None)
            if run_task is not None and run_task is not asyncio.current_task():
                await asyncio.gather(run_task, return_exceptions=True)
            # Its work is finished or cancelled inside drain: only then may the lease go.
            if not await runner.drain(self.config.runtime.shutdown_grace):
                log.warning("bot %s: stopped with updates left for the next owner", bot_id)
            if release and bot_id not in self._unauthorized:
                await self._ownership.release(bot_id)
                self.metrics.forget_bot(bot_id)  # its series go on with its next owner
            log.info("bot %s: stopped", bot_id)
        finally:
            self._stopping.pop(bot_id, None)
            self._publish()
            self._owners_changed.set()  # a released bot may be ours to take again

    async def _shutdown(self) -> None:
        runtime = self.config.runtime
        loop = asyncio.get_running_loop()
        deadline = loop.time() + runtime.shutdown_deadline
        await self._ownership.leave()  # peers plan without us while we hand off
        async with self._reconciling:
            for runner in self.runners.values():
                runner.stop()  # no more fetching; in-flight updates go on
            for bot_id in list(self.runners):
                self._begin_stop(bot_id)  # each drains for the grace period, then cancels
            stopping = list(self._stopping.values())
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    await asyncio.gather(*stopping, return_exceptions=True)
            except TimeoutError:
                self.clean_exit = False
                log.warning("shutdown deadline reached: cancelling what is left")
            for task in stopping:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)
            self.runners.clear()
            self._tasks.clear()

    # -- reload ---------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply the config file as a diff; a bad file is refused whole and the fleet goes on."""
        if self._config_path is None:
            return False
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            self._touch()
            log.error("config reload refused, still running the previous one: %s", exc)
            return False
        old = self.config
        changed = [
            bot.id
            for bot in new.bots
            if any(b.id == bot.id for b in old.bots)
            and (old.bot(bot.id) != bot or old.funnels.get(bot.funnel) != new.funnels[bot.funnel])
        ]
        if new == old:
            self.metrics.config_reloads.labels("unchanged").inc()
            return True
        for section in ("redis", "database", "http", "telegram", "instance"):
            if getattr(new, section) != getattr(old, section):
                log.warning("config: %s changed; it takes effect on the next restart", section)
        self.config = old.model_copy(update={"bots": new.bots, "funnels": new.funnels})
        if self._built is not None:  # timers and the outbox follow the new funnels
            self._built.runner.sender.know(self._built.funnels.update(self.config))
        self._registry_stale.set()  # written in the background: PostgreSQL may be away
        await self._reconcile(self.config, changed)
        self.metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded: %s", self._status())
        return True

    async def _watch_config(self) -> None:
        """SIGHUP, or a change of the file on disk (checked every few seconds)."""
        path = self._config_path
        stamp = _stamp(path)
        interval = self.config.runtime.config_poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._reload.wait()
            now = _stamp(path)
            if self._reload.is_set() or now != stamp:
                self._reload.clear()
                stamp = now
                await self.reload()

    # -- observation ----------------------------------------------------------------------------

    def webhook_target(self, bot_id: str) -> WebhookTarget | None:
        return self.runners.get(bot_id)

    def _bot_status(self) -> dict[str, BotReport]:
        """Per bot, for `botfleet status` (no secrets); the lease coordinator writes the diff."""
        return {
            bot_id: BotReport(runner.state.value, runner.pending, runner.last_update_at)
            for bot_id, runner in self.runners.items()
        }

    def _status(self) -> str:
        return f"{len(self.runners)} bots running, {len(self.failed)} failed"

    def _publish(self) -> None:
        states: dict[str, int] = {state.value: 0 for state in RunnerState}
        for runner in self.runners.values():
            states[runner.state.value] += 1
        states[RunnerState.UNAUTHORIZED.value] += sum(
            1 for reason in self.failed.values() if "401" in reason
        )
        for state, count in states.items():
            self.metrics.bots.labels(state).set(count)
        if self._ready.is_set():
            self._notifier.status(self._status())
        self._touch()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, bool] = {}
        for name, check in self._health_checks:
            try:
                await check()
                checks[name] = True
            except Exception:
                checks[name] = False
        bots = {
            "running": sorted(b for b, r in self.runners.items() if r.state == RunnerState.RUNNING),
            "failed": dict(sorted(self.failed.items())),
        }
        return all(checks.values()) and self._ready.is_set(), {
            **checks,
            "bots": bots,
            "ownership": self._ownership.describe(),
        }

    async def _loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + 0.5
            await asyncio.sleep(0.5)  # a timer whose lateness is the measurement
            self.metrics.loop_lag_seconds.set(max(0.0, loop.time() - expected))


def _tune_garbage_collector() -> None:
    """Collections walk only what handling allocates, and less often.

    What exists now (imported modules, aiogram's and SQLAlchemy's classes, the
    config: about 270,000 objects) lives as long as the process: frozen, no
    collection walks it again (measured: a third of the CPU per update went to
    collections walking it). Runners are made after this point and stay
    collectable. A young generation of 10,000 instead of 700 objects: most
    garbage here dies by reference count; cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def run_supervisor(config_path: Path) -> None:
    """The CLI's entry: load, install signal handlers, run until SIGTERM."""
    config = load_config(config_path)
    if config.database.url is None or config.redis.url is None:
        raise FleetError("botfleet run needs database.url and redis.url")
    supervisor = Supervisor(config, config_path=config_path, tune_gc=True)
    supervisor.install_signal_handlers()
    started = time.monotonic()
    await supervisor.run()
    log.info("ran for %.0f s", time.monotonic() - started)
    if not supervisor.clean_exit:
        raise FleetError("shutdown deadline reached with updates in flight")
