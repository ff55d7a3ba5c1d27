"""A Telegram Bot API emulator over real HTTP, with simulated users, limits and faults.

It stands alone: nothing here imports the rest of botfleet, so it can run as
its own process (``botfleet emulator --port N``) next to the daemon under test.
"""

from fleet.emulator.bots import EmulatedBot
from fleet.emulator.control import EmulatorClient, EmulatorControlError
from fleet.emulator.emulator import TelegramEmulator
from fleet.emulator.errors import ApiError
from fleet.emulator.faults import FaultPlan
from fleet.emulator.pix import PixError, PixFaults, PixGateway
from fleet.emulator.server import EmulatorServer, build_app
from fleet.emulator.settings import EmulatorSettings, RateLimits
from fleet.emulator.state import EmulatorError
from fleet.emulator.world import Action, CallbackAnswer, Chat, Sent, User

__all__ = [
    "Action",
    "ApiError",
    "CallbackAnswer",
    "Chat",
    "EmulatedBot",
    "EmulatorClient",
    "EmulatorControlError",
    "EmulatorError",
    "EmulatorServer",
    "EmulatorSettings",
    "FaultPlan",
    "PixError",
    "PixFaults",
    "PixGateway",
    "RateLimits",
    "Sent",
    "TelegramEmulator",
    "User",
    "build_app",
]
