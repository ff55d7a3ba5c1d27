"""Pure funnel logic: the callback codec cannot be made to carry a price or crash, offers are
priced from the configuration only, placeholders are escaped, captions measured as
Telegram measures them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config_file import parse_config
from fleet.funnel.callbacks import (
    MAX_BYTES,
    AnswerBump,
    CheckPayment,
    ChoosePlan,
    TakeDownsell,
    TakeUpsell,
    decode,
    encode,
)
from fleet.funnel.offers import discounted, downsell_offer, plan_offer, upsell_offer
from fleet.funnel.text import fits_caption, render, visible_length
from tests.unit.test_funnel_config import FUNNEL

IDS = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=24
)
ACTIONS = st.one_of(
    st.builds(ChoosePlan, IDS),
    st.builds(
        AnswerBump, st.text("abcdefXYZ0123456789", min_size=4, max_size=12), IDS, st.booleans()
    ),
    st.builds(CheckPayment, st.integers(1, 10**17)),
    st.builds(TakeDownsell, IDS),
    st.builds(TakeUpsell, IDS),
)


@settings(max_examples=300, derandomize=True)
@given(ACTIONS)
def test_every_action_round_trips_within_64_bytes(action: object) -> None:
    data = encode(action)  # type: ignore[arg-type]
    assert len(data.encode()) <= MAX_BYTES
    assert decode(data) == action


@settings(max_examples=500, derandomize=True)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
def test_anything_else_decodes_to_none_or_a_valid_action_never_an_error(data: str) -> None:
    action = decode(data)
    assert action is None or encode(action) == data


@pytest.mark.parametrize(
    "data",
    ["pl:mensal:1990", "pl:mensal\n", "ck:-1", "ck:0", "ck:1e3", "bu:abc:ebook:1", "pl:",
     "pl:" + "x" * 25, "price:1", "ds:d1;price=1", "up:u1 ", "", None],
)  # fmt: skip
def test_tampered_or_stale_data_is_none(data: str | None) -> None:
    assert decode(data) is None


def test_ids_outside_the_codec_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode(ChoosePlan("plano mensal"))


FUNNEL_CONFIG = parse_config(FUNNEL, "f.yaml", {}).funnels["curso"]


def test_a_plan_is_priced_with_its_accepted_bumps_only() -> None:
    assert plan_offer(FUNNEL_CONFIG, "mensal") == plan_offer(FUNNEL_CONFIG, "mensal", [])
    offer = plan_offer(FUNNEL_CONFIG, "mensal", ["ebook"])
    assert offer is not None and (offer.amount_cents, offer.ref) == (2980, "plan:mensal+ebook")
    assert plan_offer(FUNNEL_CONFIG, "mensal", ["ebook-gratis"]) is None  # not this plan's
    assert plan_offer(FUNNEL_CONFIG, "vip", ["ebook"]) is None  # another plan's bump
    assert plan_offer(FUNNEL_CONFIG, "anual") is None


def test_downsells_are_priced_on_the_server() -> None:
    percent = downsell_offer(FUNNEL_CONFIG, "d1", base_cents=1990)  # 30% off
    fixed = downsell_offer(FUNNEL_CONFIG, "d2", base_cents=1990)
    assert percent is not None and percent.amount_cents == 1393  # 13.93, half up
    assert fixed is not None and fixed.amount_cents == 990
    assert downsell_offer(FUNNEL_CONFIG, "d9", base_cents=1990) is None
    upsell = upsell_offer(FUNNEL_CONFIG, "u1")
    assert upsell is not None and upsell.amount_cents == 2990


@pytest.mark.parametrize(
    ("cents", "percent", "expected"),
    [(1990, 30, 1393), (1000, 50, 500), (1, 95, 1), (999, 33, 669)],
)
def test_discounts_round_half_up_to_the_cent(cents: int, percent: int, expected: int) -> None:
    assert discounted(cents, percent) == expected


def test_placeholders_are_filled_as_text_never_markup() -> None:
    template = "Olá <b>{first_name}</b>, pague {amount}: <code>{pix_code}</code>{link}"
    text = render(template, {"first_name": "<Ana & Bia>", "amount": "R$ 19,90", "pix_code": "0002"})
    assert text == "Olá <b>&lt;Ana &amp; Bia&gt;</b>, pague R$ 19,90: <code>0002</code>"


def test_captions_are_measured_after_entity_parsing_in_utf16() -> None:
    assert visible_length("<b>Olá</b> &amp; 👋") == len("Olá & ") + 2  # the emoji is 2 units
    assert fits_caption("<b>" + "x" * 1024 + "</b>")
    assert not fits_caption("x" * 1020 + "👋👋👋")
