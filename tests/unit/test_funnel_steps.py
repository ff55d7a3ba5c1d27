"""What each funnel step sends, and what a /start payload says, decided without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.funnel import steps
from fleet.funnel.attribution import Touch, read_touch, start_payload
from fleet.funnel.callbacks import decode
from fleet.funnel.offers import deliverable, downsell_offer, plan_of, plan_offer
from tests.unit.test_funnel_logic import FUNNEL_CONFIG


@pytest.mark.parametrize(
    ("text", "touch"),
    [
        ("/start", None),
        ("/start camp_verao-2026", Touch(campaign_code="camp_verao-2026")),
        ("/start " + "a" * 32, Touch(tracking_token="a" * 32)),
        ("/start " + "0f" * 16 + "__px_123456", Touch(tracking_token="0f" * 16)),
        ("/start " + "A" * 32, Touch(campaign_code="A" * 32)),  # not hex: a campaign code
    ],
)
def test_a_payload_names_a_tracking_token_or_a_campaign(text: str, touch: Touch | None) -> None:
    assert read_touch(start_payload(text)) == touch


@pytest.mark.parametrize("payload", ["a" * 65, "ação", "x y", "<b>", "a\nb"])
def test_a_payload_no_deep_link_carries_is_refused(payload: str) -> None:
    with pytest.raises(ValueError, match="deep-link payload"):
        read_touch(payload)


def test_a_short_welcome_is_one_captioned_media_with_the_buttons() -> None:
    (media, audio) = steps.welcome(FUNNEL_CONFIG, steps.values("Ana <3"))
    assert media.method == "sendVideo" and media.part == "media"
    assert media.payload["caption"] == "Olá Ana &lt;3!"  # a name is text, never markup
    assert media.payload["reply_markup"] == steps.welcome_keyboard(FUNNEL_CONFIG)
    assert media.fallback is not None and media.fallback.method == "sendMessage"
    assert media.fallback.payload["text"] == media.payload["caption"]
    assert audio.method == "sendAudio" and audio.payload == {"audio": "AwACAgEAAx"}


def test_a_welcome_over_a_caption_goes_as_media_then_text_with_the_buttons() -> None:
    long = FUNNEL_CONFIG.model_copy(
        update={"welcome": FUNNEL_CONFIG.welcome.model_copy(update={"text": "x" * 1025})}
    )
    media, text, _ = steps.welcome(long, steps.values("Ana"))
    assert "caption" not in media.payload and "reply_markup" not in media.payload
    assert media.fallback is None  # the text follows anyway
    assert text.payload["text"] == "x" * 1025 and "reply_markup" in text.payload


def test_plan_buttons_show_the_configured_price_and_carry_only_an_id() -> None:
    keyboard = steps.welcome_keyboard(FUNNEL_CONFIG)
    assert keyboard is not None
    rows = keyboard["inline_keyboard"]
    assert rows[0] == [{"text": "Plano Mensal - R$ 19,90", "callback_data": "pl:mensal"}]
    assert rows[1] == [{"text": "VIP - R$ 49,90", "callback_data": "pl:vip"}]
    assert rows[2] == [{"text": "Suporte", "url": "https://t.me/suporte"}]


def test_the_pix_step_is_the_qr_then_the_code_with_the_check_button() -> None:
    offer = plan_offer(FUNNEL_CONFIG, "mensal", ["ebook"])
    assert offer is not None
    filled = steps.values("Ana", amount="R$ 29,80", pix_code="000201abc")
    qr, code = steps.pix(
        FUNNEL_CONFIG, filled, payment_id=42, qr_png=b"\x89PNG", notice="Pago via X"
    )
    assert qr.method == "sendPhoto" and qr.files == {"qr": ("pix.png", b"\x89PNG", "image/png")}
    assert code.payload["text"] == "Pague R$ 29,80: <code>000201abc</code>\n\n<i>Pago via X</i>"
    (button,) = code.payload["reply_markup"]["inline_keyboard"][0]
    assert decode(button["callback_data"]) is not None and button["callback_data"] == "ck:42"
    (only,) = steps.pix(
        FUNNEL_CONFIG, filled, payment_id=42, qr_png=None, notice=None
    )  # no QR from the gateway: the code alone
    assert only.part == "pix"


def test_what_a_paid_offer_delivers_comes_from_the_configuration() -> None:
    assert plan_of("plan:mensal+ebook") == "mensal"
    assert plan_of("downsell:d1>vip") == "vip"
    assert plan_of("upsell:u1") is None
    mensal = deliverable(FUNNEL_CONFIG, "plan:mensal+ebook")
    assert mensal is not None and mensal.link == "https://t.me/+abc"
    vip = deliverable(FUNNEL_CONFIG, "downsell:d1>vip")
    assert vip is not None and (vip.vip_chat_id, vip.days) == (-100123, 30)
    up = deliverable(FUNNEL_CONFIG, "upsell:u1")
    assert up is not None and up.link == "https://t.me/+up"
    assert deliverable(FUNNEL_CONFIG, "plan:gone") is None
    assert downsell_offer(FUNNEL_CONFIG, "d1", 4990, "gone") is None  # plan removed since


def test_times_are_shown_in_brasilia() -> None:
    assert steps.when(datetime(2026, 11, 24, 15, 30, tzinfo=UTC)) == "24/11 às 12:30"
