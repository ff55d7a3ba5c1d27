"""Money is integer cents, from the YAML on: ``"19.90"`` is 1990, exactly, never via a float.

A leaf: the config parses prices with it.

A price is written as text (``"19.90"``, ``"19,90"``, ``"20"``) or an integer number of
reais; a float in the YAML is refused (``19.90`` would already be 19.899999...). Only a
gateway converts, at its own edge (:func:`to_decimal_units`).
"""

from __future__ import annotations

import re
from decimal import Decimal

_PRICE = re.compile(r"^\s*(?P<units>\d{1,9})(?:[.,](?P<cents>\d{1,2}))?\s*$")


class PriceError(ValueError):
    """Not a price: says what is expected (the config error names the path)."""


def parse_cents(value: object) -> int:
    """``"19.90"`` -> 1990; ``"19,9"`` -> 1990; ``20`` -> 2000. Refuses floats and negatives."""
    if isinstance(value, bool | float):
        raise PriceError('write prices as text, e.g. "19.90" (a float loses cents)')
    if isinstance(value, int):
        if value < 0:
            raise PriceError("a price cannot be negative")
        return value * 100
    if not isinstance(value, str):
        raise PriceError('expected a price such as "19.90"')
    match = _PRICE.match(value)
    if match is None:
        raise PriceError(f'{value!r} is not a price such as "19.90"')
    cents = (match["cents"] or "0").ljust(2, "0")
    return int(match["units"]) * 100 + int(cents)


def format_brl(cents: int) -> str:
    """1990 -> ``"R$ 19,90"`` (for messages)."""
    units, rest = divmod(abs(cents), 100)
    grouped = f"{units:,}".replace(",", ".")
    return f"{'-' if cents < 0 else ''}R$ {grouped},{rest:02d}"


def to_decimal_units(cents: int) -> Decimal:
    """1990 -> Decimal("19.90"): for gateways that want reais (Mercado Pago)."""
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def from_decimal_units(value: object) -> int:
    """A gateway's amount in reais (19.9, "19.90", Decimal) -> 1990, rounded half up."""
    if isinstance(value, bool):
        raise PriceError("not an amount")
    try:
        amount = Decimal(str(value))
    except Exception as exc:  # decimal.InvalidOperation and friends
        raise PriceError(f"not an amount: {value!r}") from exc
    return int((amount * 100).quantize(Decimal("1"), rounding="ROUND_HALF_UP"))
