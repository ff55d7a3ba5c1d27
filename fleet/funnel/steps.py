"""What each step of the funnel sends, as Bot API calls (method + payload, no chat id).

Handlers and scheduler jobs turn a :class:`Send` into one call through the
sender; ``part`` names it within its step, so each part has its own
idempotency key. Buttons carry the opaque ids of :mod:`fleet.funnel.callbacks`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fleet.config_funnel import Downsell, FunnelConfig, Media, OrderBump, Plan, Upsell
from fleet.funnel import callbacks as cb
from fleet.funnel.offers import Offer
from fleet.funnel.text import fits_caption, render
from fleet.money import format_brl

BRASILIA = timezone(timedelta(hours=-3), "BRT")  # no daylight saving since 2019
_MEDIA_METHOD = {
    "photo": "sendPhoto", "video": "sendVideo", "audio": "sendAudio", "document": "sendDocument",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Send:
    method: str
    payload: dict[str, Any]
    part: str
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)
    fallback: Send | None = None  # sent instead when Telegram refuses this one (bad media)

    @property
    def text(self) -> str | None:
        return self.payload.get("text") or self.payload.get("caption")


Keyboard = dict[str, Any]


def values(first_name: str | None, **more: str) -> dict[str, str]:
    return {"first_name": first_name or "", **more}


def when(at: datetime) -> str:
    """A time as a Brazilian buyer reads it."""
    return at.astimezone(BRASILIA).strftime("%d/%m às %H:%M")


def plan_label(plan: Plan) -> str:
    return f"{plan.button} - {format_brl(plan.price)}"


def _keyboard(rows: Sequence[Sequence[dict[str, str]]]) -> Keyboard:
    return {"inline_keyboard": [list(row) for row in rows]}


def welcome_keyboard(funnel: FunnelConfig) -> Keyboard | None:
    rows = [
        [{"text": plan_label(plan), "callback_data": cb.encode(cb.ChoosePlan(plan.id))}]
        for plan in funnel.plans
    ]
    rows += [[{"text": b.text, "url": b.url}] for b in funnel.url_buttons]
    return _keyboard(rows) if rows else None


def _message(text: str, part: str, keyboard: Keyboard | None = None) -> Send:
    payload: dict[str, Any] = {"text": text, "parse_mode": "HTML"}
    if keyboard is not None:
        payload["reply_markup"] = keyboard
    return Send("sendMessage", payload, part)


def _media(media: Media, part: str, extra: Mapping[str, Any], fallback: Send | None) -> Send:
    source = media.url if media.url is not None else media.file_id
    return Send(_MEDIA_METHOD[media.type], {media.type: source, **extra}, part, fallback=fallback)


def welcome(
    funnel: FunnelConfig, filled: Mapping[str, str], keyboard: Keyboard | None = None
) -> list[Send]:
    """Media with the text as its caption when it fits (1,024 characters after entity
    parsing), else the media and then the text; buttons on the text; the audio after.
    Media Telegram refuses falls back to the text, so a welcome is never missing."""
    text = render(funnel.welcome.text, filled)
    keyboard = keyboard or welcome_keyboard(funnel)  # the caller may keep it per funnel
    as_text = _message(text, "text", keyboard)
    media = funnel.welcome.media
    steps: list[Send]
    if media is None:
        steps = [as_text]
    elif fits_caption(text):
        extra: dict[str, Any] = {"caption": text, "parse_mode": "HTML"}
        if keyboard is not None:
            extra["reply_markup"] = keyboard
        steps = [_media(media, "media", extra, fallback=as_text)]
    else:
        steps = [_media(media, "media", {}, fallback=None), as_text]
    audio = funnel.welcome.audio
    if audio is not None:
        source = audio.url if audio.url is not None else audio.file_id
        steps.append(Send("sendAudio", {"audio": source}, "audio"))
    return steps


def bump(bump: OrderBump, session: str, filled: Mapping[str, str]) -> Send:
    text = f"{render(bump.text, filled)}\n\n<b>+ {format_brl(bump.price)}</b>"
    yes = cb.encode(cb.AnswerBump(session, bump.id, True))
    no = cb.encode(cb.AnswerBump(session, bump.id, False))
    keyboard = _keyboard(
        [
            [{"text": bump.accept, "callback_data": yes}],
            [{"text": bump.decline, "callback_data": no}],
        ]
    )
    return _message(text, f"bump-{bump.id}", keyboard)


def pix(
    funnel: FunnelConfig,
    filled: Mapping[str, str],
    *,
    payment_id: int,
    qr_png: bytes | None,
    notice: str | None,
) -> list[Send]:
    """The QR code as a photo (when the gateway gave one), then the copy-paste code with the
    real expiry, the gateway's notice and the "I paid" button."""
    steps: list[Send] = []
    if qr_png is not None:
        steps.append(
            Send(
                "sendPhoto",
                {"photo": "attach://qr"},
                "qr",
                {"qr": ("pix.png", qr_png, "image/png")},
            )
        )
    text = render(funnel.messages.pix, filled)
    if notice:  # the gateway's words: text, never markup
        text += f"\n\n<i>{html.escape(notice, quote=False)}</i>"
    button = {
        "text": funnel.messages.check_button,
        "callback_data": cb.encode(cb.CheckPayment(payment_id)),
    }
    steps.append(_message(text, "pix", _keyboard([[button]])))
    return steps


def downsell(item: Downsell, offer: Offer, filled: Mapping[str, str]) -> Send:
    label = f"{item.button} - {format_brl(offer.amount_cents)}"
    keyboard = _keyboard([[{"text": label, "callback_data": cb.encode(cb.TakeDownsell(item.id))}]])
    return _message(render(item.text, filled), f"downsell-{item.id}", keyboard)


def upsell(item: Upsell, filled: Mapping[str, str]) -> Send:
    label = f"{item.button} - {format_brl(item.price)}"
    keyboard = _keyboard([[{"text": label, "callback_data": cb.encode(cb.TakeUpsell(item.id))}]])
    return _message(render(item.text, filled), f"upsell-{item.id}", keyboard)


def notice(template: str, filled: Mapping[str, str], part: str) -> Send:
    """A plain funnel message (paid, pending, expired, cool-down)."""
    return _message(render(template, filled), part)


def sale(bot_id: str, offer_title: str, cents: int, buyer: str, payment_id: int) -> Send:
    """What the owners get when a sale is paid."""
    bot, offer, name = (html.escape(v, quote=False) for v in (bot_id, offer_title, buyer))
    text = (
        f"💰 <b>Venda confirmada</b>\nBot: {bot}\nOferta: {offer}\n"
        f"Valor: {format_brl(cents)}\nComprador: {name}\nPagamento #{payment_id}"
    )
    return _message(text, "sale")
