"""Which of the desired bots this instance runs. Leases (next issue) implement the same protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleet.config import BotConfig


class BotOwnership(Protocol):
    async def owned(self, desired: Sequence[BotConfig]) -> set[str]:
        """Ids of the desired bots this instance should run now."""
        ...

    async def release(self, bot_id: str) -> None:
        """This instance stopped running the bot (drained, offset confirmed)."""
        ...


class StaticOwnership:
    """One instance owns every enabled bot."""

    async def owned(self, desired: Sequence[BotConfig]) -> set[str]:
        return {bot.id for bot in desired if bot.enabled}

    async def release(self, bot_id: str) -> None:
        return None
