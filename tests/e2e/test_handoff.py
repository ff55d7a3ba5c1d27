"""Hand-offs between instances and reloads: what a bot leaves behind when it moves.

Two in-process Supervisors share one Redis and one database, each with its own
instance id and Redis leases. Instance ids are picked so that the rendezvous (HRW)
owner of each bot is known in advance: who owns what is deterministic. Each test
names what broke before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiogram.types import Update
from prometheus_client import Counter, generate_latest

import fleet.supervisor
from fleet.assignment import desired_owner
from fleet.config import DatabaseConfig, FleetConfig, RedisConfig
from fleet.emulator import EmulatorServer, FaultPlan, TelegramEmulator
from fleet.runner import BotRunner, RunnerState
from fleet.supervisor import Supervisor
from tests.e2e.conftest import (
    FleetHandle,
    StartFleet,
    fleet_dict,
    metric,
    token_for,
    welcomes,
    write_config,
)

A, B = token_for(0), token_for(1)
# A short drain, so that a slow send outlasts it and is cancelled.
QUICK_STOP: dict[str, Any] = {"shutdown_grace": 2, "shutdown_deadline": 6}

Launch = Callable[..., Awaitable[FleetHandle]]


async def until(predicate: Callable[[], object], within: float, every: float = 0.05) -> None:
    """Poll ``predicate`` until it holds (for state that signals no change: metrics)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - metrics and counters signal nothing
            await asyncio.sleep(every)  # polling interval of a deadline-bounded condition wait


def instance_ids(owners: dict[str, int]) -> tuple[str, str]:
    """Two instance ids such that, both live, bot ``b`` goes to instance ``owners[b]``."""
    for i in itertools.count():
        ids = (f"x{i}", f"y{i}")
        live = dict.fromkeys(ids, 1.0)
        if all(desired_owner(bot, live) == ids[k] for bot, k in owners.items()):
            return ids
    raise AssertionError("unreachable")


def running(supervisor: Supervisor, bot_id: str) -> bool:
    runner = supervisor.runners.get(bot_id)
    return runner is not None and runner.state == RunnerState.RUNNING


def pending(emulator: TelegramEmulator) -> int:
    return int(emulator.counters()["updates_pending"])


def requests(emulator: TelegramEmulator, method: str) -> int:
    return int(emulator.counters()["requests"].get(method, 0))


def series(supervisor: Supervisor, bot_id: str) -> list[str]:
    """Names of the samples labelled with ``bot_id`` in the instance's /metrics."""
    families = supervisor.metrics.registry.collect()
    return [s.name for f in families for s in f.samples if s.labels.get("bot") == bot_id]


def counted(counter: Counter) -> float:
    """A bound series' value, read from the child itself (it outlives its removal)."""
    return sum(s.value for f in counter.collect() for s in f.samples if s.name.endswith("_total"))


@pytest.fixture
async def launch(
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    tmp_path: Path,
) -> AsyncIterator[Launch]:
    """``await launch(instance_id, bots)``: a ready Supervisor with its own id and config file."""
    handles: list[FleetHandle] = []

    async def start(instance_id: str, bots: int) -> FleetHandle:
        base = emulator_server.base_url
        data = fleet_dict(base, db_config, redis_config, bots, **QUICK_STOP)
        data["instance"]["id"] = instance_id
        for bot in data["bots"]:
            emulator_server.emulator.add_bot(bot["token"])
        path = write_config(tmp_path / f"{instance_id}.yaml", data)
        supervisor = Supervisor(FleetConfig.model_validate(data), config_path=path)
        handle = FleetHandle(supervisor, asyncio.create_task(supervisor.run()))
        handles.append(handle)
        ready = asyncio.create_task(supervisor.wait_ready())
        done, _ = await asyncio.wait(
            {handle.task, ready}, timeout=60, return_when="FIRST_COMPLETED"
        )
        if ready not in done:
            ready.cancel()
            if handle.task.done():
                handle.task.result()  # raise the start-up error
            raise TimeoutError(f"instance {instance_id} did not become ready")
        return handle

    yield start
    for handle in handles:
        handle.supervisor.request_stop()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(30):
            await asyncio.gather(*(h.task for h in handles), return_exceptions=True)


# -- 3. work stops before the lease goes ----------------------------------------------------


async def test_a_bots_work_is_cancelled_before_its_lease_is_released(
    emulator: TelegramEmulator, launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the old owner released the lease while its handler kept running, so the new
    owner handled the same update too.

    X owns A (its HRW owner) while Y waits. A's send is slower (6 s) than X's drain (2 s).
    When Y builds A's runner, X's runner must be stopped with nothing left in its lane;
    Y must not send the welcome again (X's uncertain send keeps its claim: at most once).
    """
    x_id, y_id = instance_ids({"bot-000": 0})
    x = await launch(x_id, 1)
    await x.supervisor.wait_for(lambda: running(x.supervisor, "bot-000"))
    y = await launch(y_id, 1)
    assert "bot-000" not in y.supervisor.runners  # X holds it and stays its HRW owner

    emulator.set_faults(FaultPlan(latency=6.0, methods=frozenset({"sendmessage"})), A)
    user = emulator.add_user("Dora")
    emulator.user_sends(A, user, "/start")
    await until(lambda: requests(emulator, "sendmessage") == 1, 15)  # in flight at X
    old = x.supervisor.runners["bot-000"]
    at_takeover: list[tuple[str, RunnerState, int]] = []

    class Watched(BotRunner):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            at_takeover.append((self.bot_id, old.state, old.lane.admitted))

    monkeypatch.setattr(fleet.supervisor, "BotRunner", Watched)
    x.supervisor.request_stop()
    await y.supervisor.wait_for(lambda: running(y.supervisor, "bot-000"), 20)
    [(bot_id, state, admitted)] = at_takeover
    assert bot_id == "bot-000"
    assert state in (RunnerState.STOPPED, RunnerState.LOST)
    assert admitted == 0  # X's handler was gone before Y could start

    await emulator.wait_for(lambda: pending(emulator) == 0, 20)
    async with asyncio.timeout(10):
        await x.task
    handled_x = counted(old.counters.outcomes["handled"])
    handled_y = metric(y.supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled")
    assert handled_x + handled_y == 1
    assert requests(emulator, "sendmessage") == 1  # Y did not send it again
    orphaned = metric(
        y.supervisor, "botfleet_sends_total", bot="bot-000", method="sendMessage", result="orphaned"
    )
    assert orphaned == 1
    # At most once: X's cut request never ran (the emulator drops a call whose client left),
    # and its claim keeps Y from trying again.
    assert welcomes(emulator, A, user) <= 1


# -- 4. the old owner forgets the bot's metrics ---------------------------------------------


async def test_the_old_owner_drops_a_handed_off_bots_metric_series(
    emulator: TelegramEmulator, launch: Launch
) -> None:
    """Before: an instance went on exporting the series of bots it had handed off (frozen
    counters under two owners: sums over the fleet counted them twice).

    A's HRW owner is Y, B's is X: Y joining moves A, and only A, from X to Y.
    """
    x_id, y_id = instance_ids({"bot-000": 1, "bot-001": 0})
    x = await launch(x_id, 2)
    await x.supervisor.wait_for(
        lambda: all(running(x.supervisor, b) for b in ("bot-000", "bot-001"))
    )
    first = emulator.add_user("Eva")
    for token in (A, B):
        emulator.user_sends(token, first, "/start")
    await emulator.wait_for(lambda: pending(emulator) == 0 and emulator.counters()["sent"] == 2, 30)
    assert series(x.supervisor, "bot-000")

    y = await launch(y_id, 2)
    await y.supervisor.wait_for(lambda: running(y.supervisor, "bot-000"), 20)
    # Counted right after the release returns, with no await before the series go.
    released = "botfleet_lease_events_total"
    await until(lambda: metric(x.supervisor, released, event="released") == 1, 10)
    second = emulator.add_user("Gil")
    for token in (A, B):
        emulator.user_sends(token, second, "/start")
    await emulator.wait_for(lambda: pending(emulator) == 0 and emulator.counters()["sent"] == 4, 30)

    assert series(x.supervisor, "bot-000") == []
    exposition = generate_latest(x.supervisor.metrics.registry).decode()
    assert 'bot="bot-000"' not in exposition and 'bot="bot-001"' in exposition
    assert metric(x.supervisor, "botfleet_updates_total", bot="bot-001", outcome="handled") == 2
    assert metric(y.supervisor, "botfleet_updates_total", bot="bot-000", outcome="handled") == 1
    assert series(y.supervisor, "bot-001") == []
    assert [welcomes(emulator, t, u) for t in (A, B) for u in (first, second)] == [1] * 4


# -- 5. a reload frees the old runner ---------------------------------------------------------


def weak_parts(runner: BotRunner) -> list[weakref.ref[Any]]:
    """Weak references to a runner, its Dispatcher and its Bot (no strong one stays here)."""
    return [weakref.ref(runner), weakref.ref(runner.dispatcher), weakref.ref(runner.bot)]


def forget_aiogram_updates() -> None:
    """aiogram caches ``Update.event_type`` with ``lru_cache(128)``: the last 128 Updates of
    the process, and through them their Bot, stay alive whoever ran them. Bounded, not ours."""
    cast(Any, Update.event_type).fget.cache_clear()


def replaced(supervisor: Supervisor, old: weakref.ref[Any]) -> bool:
    runner = supervisor.runners.get("bot-000")
    return runner is not None and runner is not old() and runner.state == RunnerState.RUNNING


async def welcomed(emulator: TelegramEmulator, name: str, text: str) -> None:
    user = emulator.add_user(name)
    emulator.user_sends(A, user, "/start")
    await emulator.wait_for(lambda: welcomes(emulator, A, user, text) == 1, 30)


async def test_a_reload_leaves_no_old_runner_alive(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
) -> None:
    """Before: every reload leaked the old runner, its Dispatcher and its Bot: the lease
    fence (which outlives runners) kept each one's on_lost callback."""
    emulator = emulator_server.emulator
    data = fleet_dict(emulator_server.base_url, db_config, redis_config, 2)
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    path = supervisor.config_path
    assert path is not None
    welcome = data["funnels"]["main"]["welcome"]
    await welcomed(emulator, "r0", welcome["text"])  # the runner has its Dispatcher now
    for reload in (1, 2):
        old = weak_parts(supervisor.runners["bot-000"])
        welcome["text"] = f"Bem-vindo, versão {reload}"
        write_config(path, data)
        supervisor.request_reload()
        await supervisor.wait_for(functools.partial(replaced, supervisor, old[0]), 30)
        forget_aiogram_updates()
        gc.collect()
        assert [part() for part in old] == [None, None, None], f"reload {reload}"
        await welcomed(emulator, f"r{reload}", welcome["text"])  # the new runner answers
