"""Which of the desired bots this instance runs, and the fence each runner works behind.

:class:`StaticOwnership` (one instance owns every enabled bot) and
:class:`fleet.leases.LeaseCoordinator` (Redis leases across instances)
implement the same :class:`BotOwnership` protocol; the supervisor only knows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from fleet.config import BotConfig

OnChange = Callable[[], None]
Unsubscribe = Callable[[], None]


class BotReport(NamedTuple):
    """One running bot, as ``botfleet status`` shows it (no secrets).

    A tuple, not a dict: the lease coordinator asks for every bot's report each
    round and compares it with what it last wrote, so it must be cheap to build.
    """

    state: str  # a RunnerState value: running, stopping, unauthorized, lost...
    pending: int  # updates fetched and not yet finished
    last_update_at: float | None  # time.monotonic() of the last update received, None: none yet


# Called by the lease coordinator once per round: every bot this process runs (or has
# just stopped); bots missing from it show as "held". Must not await or do I/O.
StatusSource = Callable[[], Mapping[str, BotReport]]


class BotFence(Protocol):
    """What a runner may do while it owns its bot (invariant 1)."""

    @property
    def epoch(self) -> int:
        """Fencing token of this ownership: raised on every acquisition."""
        ...

    @property
    def start_offset(self) -> int | None:
        """The offset the previous owner committed (None: unknown)."""
        ...

    def valid(self) -> bool:
        """Still inside the renew deadline: polling and confirming are safe."""
        ...

    def on_lost(self, callback: Callable[[str], None]) -> Unsubscribe:
        """Call ``callback(reason)`` once, at once, when the ownership is lost.

        Returns a function that drops the callback (idempotent): a runner calls it when
        it stops, or the fence, which outlives runners across reloads, keeps it alive.
        """
        ...

    @property
    def holder(self) -> str | None:
        """Who holds the lease in the store (checked with the epoch when settling
        updates and moving the offset); None: nobody else can own the bot."""
        ...

    def refuse(self, reason: str) -> None:
        """The store says a newer epoch owns the bot: fall now (callbacks run at once)."""
        ...


class BotOwnership(Protocol):
    async def owned(self, desired: Sequence[BotConfig]) -> set[str]:
        """Ids of the desired bots this instance should run now."""
        ...

    def held(self) -> set[str]:
        """Every bot this instance holds, including ones it is handing off."""
        ...

    def fence(self, bot_id: str) -> BotFence:
        """The fence of a bot this instance owns (call after :meth:`owned`)."""
        ...

    async def release(self, bot_id: str) -> None:
        """This instance stopped running the bot (drained, offset confirmed)."""
        ...

    async def run(self, on_change: OnChange) -> None:
        """Keep ownership current; call ``on_change`` when :meth:`owned` may differ."""
        ...

    async def settle(self, desired: Sequence[BotConfig]) -> None:
        """Before the first start: let one round of acquisitions happen (bounded wait)."""
        ...

    async def leave(self) -> None:
        """Planned exit: tell peers to plan without us before the bots are handed off."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary for /health."""
        ...


class OpenFence:
    """The fence of a bot nobody else can own."""

    start_offset = None
    holder = None

    def __init__(self, epoch: int = 0) -> None:
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    def valid(self) -> bool:
        return True

    def on_lost(self, callback: Callable[[str], None]) -> Unsubscribe:
        return _nothing  # never lost: the callback is not even kept

    def refuse(self, reason: str) -> None:
        return None  # nobody else can own it


def _nothing() -> None:
    return None


class StaticOwnership:
    """One instance owns every enabled bot (tests, or a fleet without peers).

    Each start is a new ownership: its epoch is the start time in milliseconds, so
    claims a previous run left behind read as an older owner's (orphaned sends are
    reported, not mistaken for ones in flight; updates are taken over at once).
    """

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._epoch = time.time_ns() // 1_000_000

    async def owned(self, desired: Sequence[BotConfig]) -> set[str]:
        self._held = {bot.id for bot in desired if bot.enabled}
        return set(self._held)

    def held(self) -> set[str]:
        return set(self._held)

    def fence(self, bot_id: str) -> BotFence:
        return OpenFence(self._epoch)

    async def release(self, bot_id: str) -> None:
        return None

    async def run(self, on_change: OnChange) -> None:
        return None

    async def settle(self, desired: Sequence[BotConfig]) -> None:
        return None

    async def leave(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"mode": "static"}
