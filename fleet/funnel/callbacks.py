"""Callback data: short opaque ids the server looks up, never prices or amounts.

Telegram returns ``callback_data`` as the client sent it, so anything in it may
be forged: a button names *what* (a plan id, a bump of the bump session the
server holds, a charge id) and the server decides *how much* and *whose*.
Anything that does not decode is ``None`` (stale or tampered: a polite answer,
never an error). Every encoding fits Telegram's 64 bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_BYTES = 64
_ID = r"[A-Za-z0-9_-]{1,24}"
_NONCE = r"[A-Za-z0-9]{4,12}"
_PATTERNS = {
    "pl": re.compile(rf"pl:({_ID})"),
    "bu": re.compile(rf"bu:({_NONCE}):({_ID}):([01])"),
    "ck": re.compile(r"ck:([1-9][0-9]{0,17})"),  # fits a BIGINT
    "ds": re.compile(rf"ds:({_ID})"),
    "up": re.compile(rf"up:({_ID})"),
}


@dataclass(frozen=True, slots=True)
class ChoosePlan:
    plan_id: str


@dataclass(frozen=True, slots=True)
class AnswerBump:
    session: str  # the bump session's nonce: a button of an older session is stale
    bump_id: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class CheckPayment:
    payment_id: int  # whose it is, the server checks


@dataclass(frozen=True, slots=True)
class TakeDownsell:
    downsell_id: str


@dataclass(frozen=True, slots=True)
class TakeUpsell:
    upsell_id: str


Action = ChoosePlan | AnswerBump | CheckPayment | TakeDownsell | TakeUpsell


def encode(action: Action) -> str:
    match action:
        case ChoosePlan(plan_id):
            data = f"pl:{plan_id}"
        case AnswerBump(session, bump_id, accepted):
            data = f"bu:{session}:{bump_id}:{int(accepted)}"
        case CheckPayment(payment_id):
            data = f"ck:{payment_id}"
        case TakeDownsell(downsell_id):
            data = f"ds:{downsell_id}"
        case TakeUpsell(upsell_id):
            data = f"up:{upsell_id}"
    if decode(data) != action:  # ids outside the codec's alphabet or length
        raise ValueError(f"cannot encode {action!r} as callback data")
    return data


def decode(data: str | None) -> Action | None:
    """The action a button names, or None for anything else."""
    if not data or len(data.encode()) > MAX_BYTES:
        return None
    pattern = _PATTERNS.get(data[:2])
    match = pattern.fullmatch(data) if pattern else None  # fullmatch: no trailing newline
    if match is None:
        return None
    kind, groups = data[:2], match.groups()
    if kind == "pl":
        return ChoosePlan(groups[0])
    if kind == "bu":
        return AnswerBump(groups[0], groups[1], groups[2] == "1")
    if kind == "ck":
        return CheckPayment(int(groups[0]))
    if kind == "ds":
        return TakeDownsell(groups[0])
    return TakeUpsell(groups[0])
