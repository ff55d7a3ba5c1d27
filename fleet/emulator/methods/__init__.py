"""Bot API methods by lower-case name; Telegram matches method names case-insensitively."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fleet.emulator.bots import EmulatedBot
from fleet.emulator.methods import chats, editing, receiving, sending
from fleet.emulator.params import Params

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator

Method = Callable[["TelegramEmulator", EmulatedBot, Params], Awaitable[Any]]

METHODS: dict[str, Method] = {
    **receiving.METHODS,
    **sending.METHODS,
    **editing.METHODS,
    **chats.METHODS,
}
# Methods that send a message: the ones flood control and the send counters look at.
SENDING = frozenset(sending.METHODS) - {"sendchataction"}

__all__ = ["METHODS", "SENDING", "Method"]
