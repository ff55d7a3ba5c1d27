"""Each bot's funnel (its template with its overrides merged), for work that runs outside
a bot's Dispatcher: timers and outbox events, on any instance."""

from __future__ import annotations

from fleet.config import FleetConfig
from fleet.config_funnel import FunnelConfig


class FunnelDirectory:
    def __init__(self) -> None:
        self._funnels: dict[str, FunnelConfig] = {}

    def update(self, config: FleetConfig) -> dict[str, str]:
        """Follow a (re)loaded configuration; returns the enabled bots' tokens."""
        self._funnels = {bot.id: config.funnel_for(bot) for bot in config.enabled_bots()}
        return {bot.id: bot.token.get_secret_value() for bot in config.enabled_bots()}

    def __call__(self, bot_id: str) -> FunnelConfig | None:
        return self._funnels.get(bot_id)
