"""What every handler may ask for: the typed ``workflow_data`` of a bot's Dispatcher."""

from __future__ import annotations

from typing import TypedDict

from fleet.config import BotConfig, FunnelConfig
from fleet.metrics import FleetMetrics
from fleet.sender import Sender


class FleetData(TypedDict):
    """Set once per Dispatcher by the runner (``Dispatcher(**data)``)."""

    bot_id: str
    bot_config: BotConfig
    funnel: FunnelConfig
    sender: Sender
    metrics: FleetMetrics
