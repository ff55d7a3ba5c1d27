"""Money is integer cents from the YAML on: parsed exactly, converted only at a gateway's edge."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.money import (
    PriceError,
    format_brl,
    from_decimal_units,
    parse_cents,
    to_decimal_units,
)
from storage.models import PaymentStatus, may_move


@pytest.mark.parametrize(
    ("text", "cents"),
    [("19.90", 1990), ("19,90", 1990), ("19.9", 1990), ("19.99", 1999), ("0.50", 50),
     ("20", 2000), (" 7.05 ", 705), (20, 2000), ("0", 0)],
)  # fmt: skip
def test_prices_parse_exactly(text: object, cents: int) -> None:
    assert parse_cents(text) == cents


@pytest.mark.parametrize("bad", [19.90, True, "19.999", "-1", "1.2.3", "R$ 10", "", None, -5])
def test_not_a_price_is_refused_with_a_reason(bad: object) -> None:
    with pytest.raises(PriceError):
        parse_cents(bad)


@given(st.integers(min_value=0, max_value=10**9))
def test_cents_round_trip_through_text_and_reais(cents: int) -> None:
    text = f"{cents // 100}.{cents % 100:02d}"
    assert parse_cents(text) == cents
    assert to_decimal_units(cents) == Decimal(text)
    assert from_decimal_units(to_decimal_units(cents)) == cents
    assert from_decimal_units(str(to_decimal_units(cents))) == cents


def test_the_float_trap_is_closed() -> None:
    """int(19.90 * 100) is 1989 in floating point; a gateway's 19.9 is still 1990 cents."""
    assert int(19.90 * 100) == 1989  # why floats are refused
    assert from_decimal_units(19.9) == 1990
    assert from_decimal_units(19.99) == 1999
    assert format_brl(1990) == "R$ 19,90"
    assert format_brl(123456789) == "R$ 1.234.567,89"


def test_statuses_move_forward_only() -> None:
    s = PaymentStatus
    assert may_move(s.PENDING, s.PAID)
    assert may_move(s.EXPIRED, s.PAID)  # money came in after our expiry: never lost
    assert may_move(s.PAID, s.REFUNDED) and may_move(s.PAID, s.CHARGEBACK)
    assert not may_move(s.PAID, s.PENDING)  # a late pending never undoes paid
    assert not may_move(s.PAID, s.EXPIRED)
    assert not may_move(s.REFUNDED, s.PAID)
    assert not may_move(s.EXPIRED, s.CANCELLED)
    assert not may_move(s.PAID, s.PAID)
    assert not may_move(s.PENDING, s.REFUNDED)  # a refund before any payment changes nothing
    assert not may_move(s.EXPIRED, s.CHARGEBACK)
