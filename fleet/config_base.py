"""What every configuration section shares (a leaf: pydantic only)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from fleet.errors import FleetError

Loc = tuple[str | int, ...]


class ConfigConsistencyError(FleetError):
    """Cross-field problems (duplicates, dangling references) with their paths.

    Raised from a model validator: pydantic lets non-ValueError exceptions
    through, so each problem keeps its own path instead of collapsing to the root.
    """

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in self.problems))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def blank_to_none(value: object) -> object:
    # "${DATABASE_URL:-}" yields "": treat an empty URL as "not configured".
    if isinstance(value, str) and not value.strip():
        return None
    return value
