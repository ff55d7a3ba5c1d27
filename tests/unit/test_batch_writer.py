"""BatchWriter: no row lost to a cancel or a failed write, a bounded backlog, a bounded close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from fleet.batcher import BatchWriter
from fleet.metrics import build_metrics

Row = tuple[str, int]  # (key, version)


class Table:
    """A write target: keeps what was written; fails, or hangs, when told to."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.calls = 0
        self.fail = False
        self.hang_on_call: int | None = None  # this call (1-based) never returns
        self.hanging = asyncio.Event()
        self.during: Callable[[], None] | None = None  # runs once, inside the next write

    async def write(self, batch: Sequence[Row]) -> None:
        self.calls += 1
        if self.during is not None:
            during, self.during = self.during, None
            during()
        if self.calls == self.hang_on_call:
            self.hanging.set()
            await asyncio.get_running_loop().create_future()  # until cancelled
        if self.fail:
            raise ConnectionError("database away")
        self.rows.extend(batch)


def rows(n: int, start: int = 0) -> list[Row]:
    return [(f"k{i}", 0) for i in range(start, start + n)]


async def test_a_write_cancelled_mid_flight_keeps_its_batch() -> None:
    """Cancelled while its second batch is being written: the next flush writes the rest.

    Before: the writer swapped its dict out before writing, so a cancel lost the batch.
    """
    table = Table()
    writer = BatchWriter[Row]("users", table.write, max_batch=4)
    for row in rows(10):
        writer.add(row)
    table.hang_on_call = 2
    flushing = asyncio.create_task(writer.flush())
    async with asyncio.timeout(5):
        await table.hanging.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert table.rows == rows(4)
    assert len(writer) == 6
    assert await writer.flush() == 6
    assert table.rows == rows(10)  # every row, each once


async def test_a_failed_write_keeps_its_rows_and_newer_sightings_win() -> None:
    """A failing write keeps its rows; a newer row of the same key wins; written once later.

    Before: a failed write dropped its batch, or put the old rows back over newer ones.
    """
    table = Table()
    writer = BatchWriter[Row]("users", table.write, key=lambda row: row[0])
    for row in (("a", 1), ("b", 1), ("c", 1)):
        writer.add(row)
    table.fail = True
    table.during = lambda: writer.add(("a", 2))  # seen again while the write is out
    assert await writer.flush() == 0
    assert writer.failures == 1
    assert len(writer) == 3
    writer.add(("b", 2))  # seen again after the failure
    table.fail = False
    assert await writer.flush() == 3
    assert sorted(table.rows) == [("a", 2), ("b", 2), ("c", 1)]
    assert await writer.flush() == 0
    assert len(table.rows) == 3


async def test_the_backlog_is_bounded_and_drops_the_oldest() -> None:
    """With the database away, past max_backlog the oldest rows go, counted; the newest stay.

    Before: the backlog grew without bound while PostgreSQL was down (memory, then OOM).
    """
    metrics = build_metrics()
    table = Table()
    writer = BatchWriter[Row]("users", table.write, max_batch=2, max_backlog=5, metrics=metrics)
    table.fail = True
    for row in rows(8):
        writer.add(row)
    assert len(writer) == 5
    assert writer.dropped == 3
    labels = {"writer": "users"}
    assert metrics.registry.get_sample_value("botfleet_batch_dropped_total", labels) == 3
    assert await writer.flush() == 0
    assert metrics.registry.get_sample_value("botfleet_batch_backlog", labels) == 5
    table.fail = False
    assert await writer.flush() == 5
    assert table.rows == rows(5, start=3)  # the newest five, in order
    assert metrics.registry.get_sample_value("botfleet_batch_backlog", labels) == 0


async def test_close_writes_what_is_left_and_stops_run() -> None:
    """close() writes the rows still held and ends run().

    Before: rows added since the last interval were lost at shutdown.
    """
    table = Table()
    writer = BatchWriter[Row]("users", table.write, interval=60)
    running = asyncio.create_task(writer.run())
    for row in rows(3):
        writer.add(row)
    await writer.close(within=5)
    assert table.rows == rows(3)
    async with asyncio.timeout(5):
        await running


async def test_close_with_a_hanging_write_returns_after_within() -> None:
    """A write that hangs at shutdown: close(within) gives up then, without raising.

    Before: a hung database write held shutdown forever.
    """
    table = Table()
    writer = BatchWriter[Row]("users", table.write)
    for row in rows(3):
        writer.add(row)
    table.hang_on_call = 1
    async with asyncio.timeout(5):  # far beyond `within`: a close that waits blows it
        await writer.close(within=0.2)
    assert table.hanging.is_set()
    assert table.rows == []
    assert len(writer) == 3  # still held, not half-lost
