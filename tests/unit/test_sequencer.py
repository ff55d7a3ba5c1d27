"""Per-chat order, cross-chat concurrency, the global cap, per-bot lanes and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fleet.sequencer import BotLane, ChatSequencer, Job, LaneClosed


async def test_one_chat_runs_in_order_while_other_chats_proceed() -> None:
    sequencer = ChatSequencer(limit=100)
    done: list[tuple[str, int]] = []
    gate = asyncio.Event()
    b_done = asyncio.Event()

    def job(chat: str, n: int, wait: asyncio.Event | None = None) -> Job:
        async def run() -> None:
            if wait is not None:
                await wait.wait()
            done.append((chat, n))
            if chat == "b":
                b_done.set()

        return run

    await sequencer.submit("a", job("a", 1, gate))  # chat a is held up...
    for n in range(2, 6):
        await sequencer.submit("a", job("a", n))
    await sequencer.submit("b", job("b", 1))  # ...chat b is not
    async with asyncio.timeout(5):
        await b_done.wait()
    assert done == [("b", 1)]
    gate.set()
    assert await sequencer.drain(grace=5)
    assert [n for chat, n in done if chat == "a"] == [1, 2, 3, 4, 5]


async def test_the_cap_applies_backpressure_to_submit() -> None:
    sequencer = ChatSequencer(limit=3)
    release = asyncio.Event()
    running = 0
    peak = 0

    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    for chat in range(3):
        await sequencer.submit(chat, slow)
    fourth = asyncio.create_task(sequencer.submit(99, slow))
    finished, _ = await asyncio.wait({fourth}, timeout=0.05)
    assert not finished and sequencer.admitted == 3  # the fetcher waits here
    release.set()
    async with asyncio.timeout(5):
        await fourth
    assert await sequencer.drain(grace=5)
    assert peak == 3 and sequencer.admitted == 0


async def test_an_escaped_error_does_not_stop_the_chat(caplog: pytest.LogCaptureFixture) -> None:
    sequencer = ChatSequencer(limit=10)
    done: list[int] = []

    async def boom() -> None:
        raise RuntimeError("handler bug")

    async def ok() -> None:
        done.append(1)

    await sequencer.submit("a", boom)
    await sequencer.submit("a", ok)
    assert await sequencer.drain(grace=5)
    assert done == [1]
    assert "escaped its own error handling" in caplog.text


async def test_drain_times_out_then_cancel_frees_every_slot() -> None:
    sequencer = ChatSequencer(limit=5)
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    for _ in range(3):
        await sequencer.submit("a", hang)
    await sequencer.submit("b", hang)
    assert not await sequencer.drain(grace=0.05)
    await sequencer.cancel()
    assert sequencer.admitted == 0
    assert await sequencer.drain(grace=1)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        ChatSequencer(limit=0)


# -- helpers for the lane tests -------------------------------------------------------------


async def eventually(condition: Callable[[], bool], within: float = 5) -> None:
    """Wait for a condition nothing signals, under a deadline."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def still_pending(task: asyncio.Task[Any], within: float = 0.05) -> bool:
    """A negative check: ``task`` has not finished within a short grace (never a sync point)."""
    done, _ = await asyncio.wait({task}, timeout=within)
    return not done


def length_is(items: list[str], length: int) -> Callable[[], bool]:
    return lambda: len(items) == length


class Jobs:
    """Jobs that record when they start, hang until released, and record how they end."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}

    def job(self, name: str) -> Job:
        gate = self._gates.setdefault(name, asyncio.Event())

        async def run() -> None:
            self.started.append(name)
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(name)
                raise
            self.finished.append(name)

        return run

    def release(self, name: str) -> None:
        self._gates[name].set()


def test_per_bot_is_clamped_to_the_limit() -> None:
    assert ChatSequencer(limit=3, per_bot=10).per_bot == 3
    assert ChatSequencer(limit=3).per_bot == 3
    assert ChatSequencer(limit=3, per_bot=0).per_bot == 3
    assert ChatSequencer(limit=8, per_bot=2).per_bot == 2


async def test_lane_and_sequencer_submit_reach_the_same_lane() -> None:
    sequencer = ChatSequencer(limit=10, per_bot=5)
    jobs = Jobs()
    lane = sequencer.lane("bot")
    assert sequencer.lane("bot") is lane
    await sequencer.submit("chat", jobs.job("x"), "bot")
    assert lane.admitted == 1 and sequencer.admitted == 1
    jobs.release("x")
    assert await sequencer.drain(grace=5)
    assert lane.admitted == 0 and jobs.finished == ["x"]


async def test_a_bots_share_bounds_it_while_other_bots_still_admit() -> None:
    sequencer = ChatSequencer(limit=10, per_bot=2)
    jobs = Jobs()
    a, b = sequencer.lane("a"), sequencer.lane("b")
    await a.submit(1, jobs.job("a1"))
    await a.submit(2, jobs.job("a2"))
    assert a.admitted == 2 and a.free == 0
    third = asyncio.create_task(a.submit(3, jobs.job("a3")))
    # Bot a is at its share; bot b is not held up by it.
    await b.submit(1, jobs.job("b1"))
    await b.submit(2, jobs.job("b2"))
    await eventually(lambda: sorted(jobs.started) == ["a1", "a2", "b1", "b2"])
    assert await still_pending(third)
    assert a.admitted == 2 and b.admitted == 2 and sequencer.admitted == 4

    jobs.release("a1")
    async with asyncio.timeout(5):
        await third
    await eventually(lambda: "a3" in jobs.started)
    assert a.admitted == 2 and sequencer.admitted == 4
    await sequencer.cancel()
    assert sequencer.admitted == 0


async def test_the_cap_holds_but_an_empty_lane_may_always_admit_one() -> None:
    sequencer = ChatSequencer(limit=2, per_bot=2)
    jobs = Jobs()
    a, b = sequencer.lane("a"), sequencer.lane("b")
    await a.submit(1, jobs.job("a1"))
    await a.submit(2, jobs.job("a2"))  # bot a's stuck jobs fill the global cap
    assert sequencer.admitted == 2

    # The floor: bot b has nothing admitted, so one of its jobs gets in and runs.
    async with asyncio.timeout(5):
        await b.submit(1, jobs.job("b1"))
    await eventually(lambda: "b1" in jobs.started)
    assert sequencer.admitted == 3 and b.admitted == 1

    # Only one: the cap holds for a lane that has a job admitted.
    second = asyncio.create_task(b.submit(2, jobs.job("b2")))
    assert await still_pending(second)
    jobs.release("a1")  # 2 admitted (a2, b1): still at the cap
    await eventually(lambda: a.admitted == 1)
    assert await still_pending(second)
    assert sequencer.admitted == 2
    jobs.release("a2")  # room below the cap: b's waiting job gets it
    async with asyncio.timeout(5):
        await second
    await eventually(lambda: "b2" in jobs.started)
    assert sequencer.admitted == 2 and b.admitted == 2
    await sequencer.cancel()


async def test_waiting_lanes_take_turns() -> None:
    """Each bot submits one job at a time (as its poll loop does): slots freed one by one
    go to the waiting bots in turn, none gets two before the others had one."""
    fillers = 6
    sequencer = ChatSequencer(limit=fillers + 3, per_bot=fillers + 3)
    jobs = Jobs()
    filler = sequencer.lane("filler")
    for n in range(fillers):
        await filler.submit(n, jobs.job(f"f{n}"))
    for name in "abc":
        await sequencer.lane(name).submit("first", jobs.job(f"{name}-first"))  # the floor
    assert sequencer.admitted == sequencer.limit

    order: list[str] = []

    async def poller(name: str) -> None:
        lane = sequencer.lane(name)
        for n in range(2):
            await lane.submit(n, jobs.job(f"{name}{n}"))
            order.append(name)

    tasks = [asyncio.create_task(poller(name)) for name in "abc"]
    for task in tasks:
        assert await still_pending(task, within=0.01)
    for n in range(fillers):
        jobs.release(f"f{n}")  # one slot at a time
        await eventually(length_is(order, n + 1))
    first_round, second_round = order[:3], order[3:]
    assert sorted(first_round) == ["a", "b", "c"]
    assert second_round == first_round
    await asyncio.gather(*tasks)
    await sequencer.cancel()


async def test_turns_are_per_lane_not_per_waiting_submit() -> None:
    sequencer = ChatSequencer(limit=4, per_bot=4)
    jobs = Jobs()
    filler = sequencer.lane("filler")
    await filler.submit(0, jobs.job("f0"))
    await filler.submit(1, jobs.job("f1"))
    a, b = sequencer.lane("a"), sequencer.lane("b")
    await a.submit("first", jobs.job("a-first"))
    await b.submit("first", jobs.job("b-first"))
    assert sequencer.admitted == 4

    order: list[str] = []

    async def submit(lane: BotLane, name: str) -> None:
        await lane.submit(name, jobs.job(name))
        order.append(lane.bot_id)

    waiting = []
    for lane, name in ((a, "a1"), (a, "a2"), (b, "b1")):  # a waits first, twice
        waiting.append(asyncio.create_task(submit(lane, name)))
        assert await still_pending(waiting[-1], within=0.01)

    jobs.release("f0")
    await eventually(lambda: len(order) == 1)
    jobs.release("f1")
    await eventually(lambda: len(order) == 2)
    try:
        assert order == ["a", "b"]  # a had its turn; b waited longer than a's second request
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await sequencer.cancel()


async def test_cancelling_a_waiting_submit_takes_and_frees_nothing() -> None:
    sequencer = ChatSequencer(limit=4, per_bot=1)
    jobs = Jobs()
    a = sequencer.lane("a")
    await a.submit(1, jobs.job("a1"))
    first = asyncio.create_task(a.submit(2, jobs.job("a2")))
    second = asyncio.create_task(a.submit(3, jobs.job("a3")))
    assert await still_pending(first) and not second.done()

    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert a.admitted == 1 and sequencer.admitted == 1  # took nothing, gave nothing back

    # The room a1 frees goes to the other waiter: the cancelled one lost it no wake-up.
    jobs.release("a1")
    async with asyncio.timeout(5):
        await second
    await eventually(lambda: jobs.started == ["a1", "a3"])
    assert a.admitted == 1 and sequencer.admitted == 1
    jobs.release("a3")
    assert await sequencer.drain(grace=5)
    assert "a2" not in jobs.started and sequencer.admitted == 0


async def test_a_cancelled_waiter_does_not_cost_another_bot_its_turn() -> None:
    sequencer = ChatSequencer(limit=3, per_bot=3)
    jobs = Jobs()
    x, a, b = sequencer.lane("x"), sequencer.lane("a"), sequencer.lane("b")
    await x.submit(0, jobs.job("x0"))
    await a.submit(0, jobs.job("a0"))
    await b.submit(0, jobs.job("b0"))
    waiting_a = asyncio.create_task(a.submit(1, jobs.job("a1")))  # waits longest
    assert await still_pending(waiting_a, within=0.01)
    waiting_b = asyncio.create_task(b.submit(1, jobs.job("b1")))
    assert await still_pending(waiting_b, within=0.01)

    waiting_a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting_a
    jobs.release("x0")  # one slot below the cap: a's turn is gone, b gets it
    async with asyncio.timeout(5):
        await waiting_b
    assert sequencer.admitted == 3 and a.admitted == 1
    await sequencer.cancel()


async def test_a_submit_cancelled_just_after_its_wake_up_passes_the_turn_on() -> None:
    sequencer = ChatSequencer(limit=4, per_bot=4)
    jobs = Jobs()
    x, a, b = sequencer.lane("x"), sequencer.lane("a"), sequencer.lane("b")
    waiting: dict[str, asyncio.Task[None]] = {}

    async def cancel_a_then_hang() -> None:
        # Runs in the same step as x0's release, i.e. after a's waiter was woken and
        # before it could run: a's submit is cancelled holding a wake-up.
        waiting["a"].cancel()
        await asyncio.Event().wait()

    await x.submit("x", jobs.job("x0"))
    await x.submit("x", cancel_a_then_hang)  # the same chat: starts right after x0
    await a.submit(0, jobs.job("a0"))
    await b.submit(0, jobs.job("b0"))
    assert sequencer.admitted == 4
    waiting["a"] = asyncio.create_task(a.submit(1, jobs.job("a1")))  # woken first
    assert await still_pending(waiting["a"], within=0.01)
    waiting["b"] = asyncio.create_task(b.submit(1, jobs.job("b1")))
    assert await still_pending(waiting["b"], within=0.01)

    jobs.release("x0")  # 3 admitted: room for one
    try:
        with pytest.raises(asyncio.CancelledError):
            await waiting["a"]
        assert a.admitted == 1  # the cancelled submit took nothing
        async with asyncio.timeout(1):
            await waiting["b"]  # there is room: b must get it
        assert sequencer.admitted == 4 and b.admitted == 2
    finally:
        waiting["b"].cancel()
        await asyncio.gather(waiting["b"], return_exceptions=True)
        await sequencer.cancel()


async def test_lane_cancel_stops_only_its_bot_and_returns_its_slots() -> None:
    sequencer = ChatSequencer(limit=10, per_bot=3)
    jobs = Jobs()
    a, b = sequencer.lane("a"), sequencer.lane("b")
    await a.submit(1, jobs.job("a1"))
    await a.submit(1, jobs.job("a1-next"))  # queued behind a1 in its chat
    await a.submit(2, jobs.job("a2"))
    await b.submit(1, jobs.job("b1"))
    await b.submit(2, jobs.job("b2"))
    waiting = asyncio.create_task(a.submit(3, jobs.job("a3")))  # a is at its share
    await eventually(lambda: len(jobs.started) == 4)
    assert await still_pending(waiting, within=0.01)
    assert sequencer.admitted == 5

    await a.cancel()
    assert a.closed and a.admitted == 0
    assert sequencer.admitted == 2  # a's running and queued jobs gave their slots back
    assert sorted(jobs.cancelled) == ["a1", "a2"]
    assert "a1-next" not in jobs.started and "a3" not in jobs.started
    with pytest.raises(LaneClosed):
        await waiting  # a waiting submit learns the lane is closed
    with pytest.raises(LaneClosed):
        await a.submit(4, jobs.job("a4"))

    # Bot b goes on untouched.
    assert sorted(n for n in jobs.started if n.startswith("b")) == ["b1", "b2"]
    assert not [n for n in jobs.cancelled if n.startswith("b")]
    jobs.release("b1")
    await eventually(lambda: "b1" in jobs.finished)

    fresh = sequencer.lane("a")  # the bot comes back: a new, open lane
    assert fresh is not a and not fresh.closed and fresh.admitted == 0
    await fresh.submit(1, jobs.job("a5"))
    await eventually(lambda: "a5" in jobs.started)
    assert sequencer.admitted == 2
    jobs.release("b2")
    jobs.release("a5")
    assert await sequencer.drain(grace=5)


async def test_lane_cancel_right_after_submit_returns_the_slots() -> None:
    sequencer = ChatSequencer(limit=10, per_bot=5)
    jobs = Jobs()
    a = sequencer.lane("a")
    await a.submit(1, jobs.job("a1"))  # no yield in between: the workers have not run yet
    await a.submit(2, jobs.job("a2"))
    await a.cancel()
    assert a.admitted == 0
    assert sequencer.admitted == 0
    assert await sequencer.drain(grace=0.5)


async def test_lane_drain_waits_for_its_own_jobs_only() -> None:
    sequencer = ChatSequencer(limit=10, per_bot=5)
    jobs = Jobs()
    a, b = sequencer.lane("a"), sequencer.lane("b")
    assert await a.drain(grace=0)  # nothing admitted
    await a.submit(1, jobs.job("a1"))
    await b.submit(1, jobs.job("b1"))  # b's stuck job does not concern a's drain
    assert not await a.drain(grace=0)
    assert not await a.drain(grace=0.05)
    assert a.admitted == 1  # a drain that timed out cancels nothing
    jobs.release("a1")
    assert await a.drain(grace=5)
    assert a.admitted == 0 and jobs.finished == ["a1"]
    assert await a.drain(grace=0)
    assert not await sequencer.drain(grace=0.01)  # b still runs
    await sequencer.cancel()


async def test_wait_room_returns_when_room_frees_and_when_the_lane_closes() -> None:
    sequencer = ChatSequencer(limit=10, per_bot=1)
    jobs = Jobs()
    a = sequencer.lane("a")
    async with asyncio.timeout(5):
        await a.wait_room()  # room now: returns at once
    await a.submit(1, jobs.job("a1"))
    room = asyncio.create_task(a.wait_room())
    assert await still_pending(room)
    jobs.release("a1")
    async with asyncio.timeout(5):
        await room
    assert a.admitted == 0  # waiting for room takes none

    await a.submit(2, jobs.job("a2"))
    room = asyncio.create_task(a.wait_room())
    assert await still_pending(room)
    await a.cancel()
    async with asyncio.timeout(5):
        await room  # returns (no error): the caller sees the lane closed
    assert a.closed
    assert sequencer.admitted == 0
