"""Where a user came from, read from the ``/start`` payload.

A deep link carries at most 64 characters of ``[A-Za-z0-9_-]``. A tracking token
(32 hex digits, optionally ``__px_<pixel>``, written by the ad redirect) names a
click whose details the ad-traffic side stores; anything else of that alphabet
is a plain campaign code. Anything outside it is ignored (and counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"([0-9a-f]{32})(?:__px_[A-Za-z0-9_-]{1,24})?")


@dataclass(frozen=True, slots=True)
class Touch:
    """One arrival: exactly one of the two is set."""

    tracking_token: str | None = None
    campaign_code: str | None = None


def start_payload(text: str | None) -> str | None:
    """``/start abc`` -> ``abc``; ``/start`` -> None."""
    if not text:
        return None
    parts = text.split(maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else None


def read_touch(payload: str | None) -> Touch | None:
    """The touch a payload names; None for no payload. Raises ValueError for a payload no
    deep link can carry (a hand-typed ``/start`` with junk)."""
    if payload is None or payload == "":
        return None
    if _PAYLOAD.fullmatch(payload) is None:
        raise ValueError("not a deep-link payload (64 characters of A-Z a-z 0-9 _ -)")
    token = _TOKEN.fullmatch(payload)
    if token is not None:
        return Touch(tracking_token=token.group(1))
    return Touch(campaign_code=payload)
