"""Which fetched updates are finished, and the getUpdates offset that may be confirmed.

Pure bookkeeping (no I/O), so it is tested on its own. Updates finish out of
order; the offset moves only past a contiguous run of finished ones, so
Telegram keeps (and redelivers) everything from the oldest unfinished update
on (invariant 3). Updates at or above the offset that come back in a later
batch are recognised and not handled again in this run.
"""

from __future__ import annotations

from collections.abc import Iterable


class OffsetTracker:
    def __init__(self, start: int = 0) -> None:
        self._floor = max(start, 0)  # everything below is confirmable
        self._pending: set[int] = set()  # fetched, not finished
        self._finished: set[int] = set()  # finished, still at or above the offset
        self._max_seen = self._floor - 1
        self._min_pending: int | None = None  # cached min(self._pending)

    @property
    def offset(self) -> int:
        """The offset to confirm: the oldest unfinished update, or one past the newest seen."""
        if self._pending:
            if self._min_pending is None:
                self._min_pending = min(self._pending)
            return self._min_pending
        return self._max_seen + 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def known(self) -> int:
        """Updates at or above the offset that a getUpdates would return again."""
        return len(self._pending) + len(self._finished)

    def is_known(self, update_id: int) -> bool:
        """Seen in this run (in flight or finished), or below the offset: not new."""
        return update_id < self._floor or update_id in self._pending or update_id in self._finished

    def offset_after(self, update_ids: Iterable[int]) -> int:
        """The offset once these pending updates are finished (they are not, yet)."""
        rest = self._pending.difference(update_ids)
        return min(rest) if rest else self._max_seen + 1

    def take(self, update_ids: Iterable[int]) -> list[int]:
        """Register a fetched batch; returns the ids new to this run, in batch order."""
        fresh: list[int] = []
        for update_id in update_ids:
            if self.is_known(update_id):
                continue
            self._pending.add(update_id)
            if self._min_pending is not None and update_id < self._min_pending:
                self._min_pending = update_id
            if update_id > self._max_seen:
                self._max_seen = update_id
            fresh.append(update_id)
        return fresh

    def finish(self, update_ids: Iterable[int]) -> None:
        """These are done for good (handled, skipped or stored): the offset may pass them."""
        for update_id in update_ids:
            if update_id not in self._pending:
                continue
            self._pending.discard(update_id)
            self._finished.add(update_id)
            if update_id == self._min_pending:
                self._min_pending = None
        self._settle()

    def _settle(self) -> None:
        offset = self.offset
        if offset > self._floor:
            self._floor = offset
            self._finished = {u for u in self._finished if u >= offset}
