"""OffsetTracker: which fetched updates are new, and how far the offset may move."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.offsets import OffsetTracker


def test_a_fresh_tracker_confirms_nothing() -> None:
    tracker = OffsetTracker()
    assert tracker.offset == 0
    assert tracker.pending == 0
    assert tracker.known == 0


def test_out_of_order_finishing_moves_only_past_a_contiguous_run() -> None:
    tracker = OffsetTracker()
    assert tracker.take([10, 11, 12, 13, 14]) == [10, 11, 12, 13, 14]
    assert tracker.offset == 10

    tracker.finish([12, 14])  # later ones first: the oldest is still running
    assert tracker.offset == 10
    assert tracker.pending == 3

    tracker.finish([10])
    assert tracker.offset == 11  # 11 still runs: 12 is finished but not confirmable yet

    tracker.finish([11])
    assert tracker.offset == 13  # past the run 11, 12

    tracker.finish([13])
    assert tracker.offset == 15  # everything seen is finished: one past the newest
    assert tracker.pending == 0
    assert tracker.known == 0


def test_take_returns_only_new_ids_in_batch_order() -> None:
    tracker = OffsetTracker()
    assert tracker.take([7, 5, 6]) == [7, 5, 6]
    tracker.finish([7])  # finished, still above the offset (5 and 6 run)
    # A refetch (Telegram redelivers everything at or above the offset): nothing new,
    # neither the pending 5, 6 nor the finished 7; 8 is.
    assert tracker.take([5, 6, 7, 8]) == [8]
    assert tracker.pending == 3  # 5, 6, 8
    assert tracker.known == 4  # and the finished 7


def test_ids_below_the_offset_are_not_new() -> None:
    tracker = OffsetTracker()
    tracker.take([1, 2, 3])
    tracker.finish([1, 2, 3])
    assert tracker.offset == 4
    assert tracker.take([1, 2, 3]) == []
    assert tracker.take([0, 3, 4]) == [4]
    assert not tracker.is_known(5)
    assert tracker.is_known(2)
    assert tracker.is_known(4)


def test_finishing_an_id_never_taken_or_already_finished_changes_nothing() -> None:
    tracker = OffsetTracker()
    tracker.take([3, 4])
    tracker.finish([4, 99])  # 99 was never fetched: it must not count as finished
    assert tracker.offset == 3
    assert tracker.known == 2
    assert not tracker.is_known(99)
    tracker.finish([4])  # twice: nothing more
    assert tracker.pending == 1 and tracker.known == 2
    tracker.finish([3])
    assert tracker.offset == 5  # 99 was never seen, so it does not push the offset


def test_known_counts_pending_and_finished_above_the_offset() -> None:
    tracker = OffsetTracker()
    tracker.take([20, 21, 22, 23])
    assert tracker.known == 4
    tracker.finish([21, 23])
    assert tracker.pending == 2
    assert tracker.known == 4  # a refetch returns all four again
    tracker.finish([20])
    assert tracker.offset == 22
    assert tracker.known == 2  # 22 (pending) and 23 (finished, above the offset)
    tracker.finish([22])
    assert tracker.offset == 24
    assert tracker.known == 0


def test_offset_after_is_what_finish_makes_the_offset() -> None:
    tracker = OffsetTracker()
    tracker.take([30, 31, 32, 33])
    assert tracker.offset_after([31]) == 30
    assert tracker.offset_after([30, 32]) == 31
    assert tracker.offset_after([30, 31]) == 32
    assert tracker.offset_after([30, 31, 32, 33]) == 34
    assert tracker.offset == 30  # nothing was finished by asking
    assert tracker.pending == 4

    expected = tracker.offset_after([30, 31])
    tracker.finish([30, 31])
    assert tracker.offset == expected == 32
    assert tracker.offset_after([]) == 32


def test_a_start_offset_is_the_floor() -> None:
    tracker = OffsetTracker(start=500)
    assert tracker.offset == 500
    assert tracker.known == 0
    assert tracker.take([498, 499, 500, 501]) == [500, 501]  # below the start: confirmed
    assert tracker.offset == 500
    tracker.finish([501])
    assert tracker.offset == 500
    tracker.finish([500])
    assert tracker.offset == 502


def test_a_negative_start_is_treated_as_zero() -> None:
    tracker = OffsetTracker(start=-5)
    assert tracker.offset == 0
    assert tracker.take([0, 1]) == [0, 1]


def test_duplicate_ids_within_one_batch_count_once() -> None:
    tracker = OffsetTracker()
    assert tracker.take([40, 41, 40, 41, 42, 40]) == [40, 41, 42]
    assert tracker.pending == 3
    tracker.finish([40, 40, 41])
    assert tracker.offset == 42
    assert tracker.pending == 1
    tracker.finish([42])
    assert tracker.offset == 43


# -- property: any interleaving of take and finish --------------------------------------------

_ids = st.integers(min_value=0, max_value=60)
_steps = st.lists(
    st.tuples(st.sampled_from(["take", "finish"]), st.lists(_ids, max_size=8)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(min_value=0, max_value=20), steps=_steps)
def test_the_offset_never_passes_an_unfinished_update(
    start: int, steps: list[tuple[str, list[int]]]
) -> None:
    tracker = OffsetTracker(start)
    unfinished: set[int] = set()  # returned by take, not finished yet
    finished: set[int] = set()
    max_seen = start - 1
    floor = start  # below it nothing is new (moves with each finish)
    for action, ids in steps:
        if action == "take":
            expected_new: list[int] = []
            for update_id in ids:
                seen = update_id in unfinished or update_id in finished
                if not seen and update_id >= floor and update_id not in expected_new:
                    expected_new.append(update_id)
            assert tracker.take(ids) == expected_new
            unfinished.update(expected_new)
            max_seen = max([max_seen, *expected_new])
        else:
            promised = tracker.offset_after(ids)
            tracker.finish(ids)
            assert tracker.offset == promised
            done = unfinished.intersection(ids)
            unfinished -= done
            finished |= done
            floor = max(floor, tracker.offset)

        offset = tracker.offset
        assert all(offset <= update_id for update_id in unfinished)
        assert offset == (min(unfinished) if unfinished else max_seen + 1)
        assert tracker.pending == len(unfinished)
        assert tracker.known == len(unfinished) + len({f for f in finished if f >= offset})


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=20),
    batches=st.lists(
        st.tuples(
            st.lists(st.integers(min_value=0, max_value=12), max_size=6),
            st.lists(st.integers(min_value=0, max_value=10), max_size=6),
        ),
        max_size=25,
    ),
)
def test_as_telegram_polls_the_offset_only_moves_forward(
    start: int, batches: list[tuple[list[int], list[int]]]
) -> None:
    """Telegram returns ids at or above the offset it was given, ascending; the offset
    the poller sends never goes back."""
    tracker = OffsetTracker(start)
    last = tracker.offset
    for fetched, picks in batches:
        base = tracker.offset
        batch = sorted({base + step for step in fetched})
        tracker.take(batch)
        assert tracker.offset >= last
        pending = sorted(u for u in batch if tracker.is_known(u))
        tracker.finish([pending[i % len(pending)] for i in picks] if pending else [])
        assert tracker.offset >= last
        last = tracker.offset
