"""Per-chat order, cross-chat concurrency, the global cap and shutdown."""

from __future__ import annotations

import asyncio

import pytest

from fleet.sequencer import ChatSequencer, Job


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
