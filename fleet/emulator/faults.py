"""Faults set at runtime, for every bot or one: latency, 5xx, dropped connections, 429 storms.

A revoked token is not here: it is permanent state of the bot (401 from then on).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from fleet.emulator.errors import ApiError, DropConnection
from fleet.emulator.limits import storm_error

LatencyKind = Literal["fixed", "uniform", "exponential"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What goes wrong, and how often. Rates are shares in [0, 1]."""

    latency: float = 0.0  # seconds; the mean for "exponential", the low end for "uniform"
    latency_max: float = 0.0  # high end for "uniform"
    latency_kind: LatencyKind = "fixed"
    error_rate: float = 0.0  # answered 500/502 without running the method
    drop_rate: float = 0.0  # connection closed before the method ran
    drop_after_rate: float = 0.0  # the method ran, then the connection closed: did it send?
    storm_until: float = 0.0  # monotonic time; every call is 429 until then
    storm_retry_after: int | None = None
    # None: every method; otherwise only these (lower case), e.g. {"sendmessage"}.
    methods: frozenset[str] | None = None
    # None: every call; otherwise only calls whose chat_id is one of these.
    chats: frozenset[int] | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "drop_after_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.latency < 0 or self.latency_max < 0:
            raise ValueError("latency must be >= 0")

    def applies_to(self, method: str, chat_id: object = None) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.chats is None or chat_id in self.chats

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["methods"] = sorted(self.methods) if self.methods is not None else None
        data["chats"] = sorted(self.chats) if self.chats is not None else None
        data["storm_seconds"] = max(0.0, self.storm_until - time.monotonic())
        del data["storm_until"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultPlan:
        """Build from the control API's JSON: ``storm_seconds`` instead of a clock value."""
        values = dict(data)
        storm = float(values.pop("storm_seconds", 0) or 0)
        known = {f.name for f in fields(cls)} - {"storm_until"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if values.get("methods") is not None:
            values["methods"] = frozenset(str(m).lower() for m in values["methods"])
        if values.get("chats") is not None:
            values["chats"] = frozenset(int(c) for c in values["chats"])
        plan = cls(**values)
        if storm > 0:
            plan = replace(plan, storm_until=time.monotonic() + storm)
        return plan


@dataclass(slots=True)
class FaultInjector:
    seed: int | None = None
    global_plan: FaultPlan = field(default_factory=FaultPlan)
    per_bot: dict[int, FaultPlan] = field(default_factory=dict)
    dropped: int = 0
    errors: int = 0
    storms: int = 0
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def set(self, plan: FaultPlan, bot_id: int | None = None) -> None:
        if bot_id is None:
            self.global_plan = plan
        else:
            self.per_bot[bot_id] = plan

    def clear(self, bot_id: int | None = None) -> None:
        if bot_id is None:
            self.global_plan = FaultPlan()
            self.per_bot.clear()
        else:
            self.per_bot.pop(bot_id, None)

    def _plans(self, bot_id: int | None, method: str, chat_id: object) -> list[FaultPlan]:
        plans = [self.global_plan]
        if bot_id is not None and bot_id in self.per_bot:
            plans.append(self.per_bot[bot_id])
        return [plan for plan in plans if plan.applies_to(method, chat_id)]

    async def before(self, bot_id: int | None, method: str, chat_id: object = None) -> None:
        """Delay, fail or drop a call before it runs."""
        for plan in self._plans(bot_id, method, chat_id):
            delay = self._latency(plan)
            if delay > 0:
                await asyncio.sleep(delay)  # simulated network latency, not synchronisation
            if plan.storm_until > time.monotonic():
                self.storms += 1
                raise storm_error(plan.storm_until, plan.storm_retry_after)
            if plan.drop_rate and self._random.random() < plan.drop_rate:
                self.dropped += 1
                raise DropConnection
            if plan.error_rate and self._random.random() < plan.error_rate:
                self.errors += 1
                if self._random.random() < 0.5:
                    raise ApiError(500, "Internal Server Error")
                raise ApiError(502, "Bad Gateway")

    def after(self, bot_id: int | None, method: str, chat_id: object = None) -> None:
        """Drop the connection after the method ran, so the caller never learns it did."""
        for plan in self._plans(bot_id, method, chat_id):
            if plan.drop_after_rate and self._random.random() < plan.drop_after_rate:
                self.dropped += 1
                raise DropConnection

    def _latency(self, plan: FaultPlan) -> float:
        if plan.latency_kind == "uniform":
            return self._random.uniform(plan.latency, max(plan.latency, plan.latency_max))
        if plan.latency_kind == "exponential" and plan.latency > 0:
            return self._random.expovariate(1.0 / plan.latency)
        return plan.latency
