"""The funnel section of ``config.yaml``: welcome, plans, order bumps, downsells, upsells,
messages (a leaf: pydantic and :mod:`fleet.money` only).

Everything a user can be charged is written here as text ("19.90") and held as
integer cents from the moment it is read. Texts may use the placeholders of
:data:`PLACEHOLDERS` and nothing else: a typo is an error at load, not a
literal ``{nome}`` in front of a buyer.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from fleet.config_base import Loc, Section, blank_to_none
from fleet.money import parse_cents

PLACEHOLDERS = frozenset({"first_name", "plan", "amount", "pix_code", "link", "expires_at"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}

# Ids travel in callback data (64 bytes in all): short and plain.
OfferId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,24}$")]
ButtonText = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Url = Annotated[str, StringConstraints(pattern=r"^(https?|tg)://\S+$", max_length=2048)]


def placeholders_in(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def _cents(value: object) -> int:
    cents = parse_cents(value)
    if cents <= 0:
        raise ValueError("a price must be above zero")
    return cents


def _seconds(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError('a duration like "30s", "10m", "1h" or "2d"')
    return int(match.group(1)) * _UNITS[match.group(2)]


Price = Annotated[int, BeforeValidator(_cents)]  # cents
Seconds = Annotated[int, BeforeValidator(_seconds), Field(gt=0, le=90 * 86_400)]


def _known_placeholders(text: str) -> str:
    unknown = placeholders_in(text) - PLACEHOLDERS
    if unknown:
        known = ", ".join("{" + name + "}" for name in sorted(PLACEHOLDERS))
        names = ", ".join("{" + name + "}" for name in sorted(unknown))
        raise ValueError(f"unknown placeholder {names} (known: {known})")
    return text


Text = Annotated[
    str, StringConstraints(min_length=1, max_length=4096), BeforeValidator(_known_placeholders)
]


class Media(Section):
    type: Literal["photo", "video", "audio", "document"]
    url: Url | None = None
    file_id: str | None = Field(default=None, min_length=1, max_length=256)

    _blank = field_validator("url", "file_id", mode="before")(blank_to_none)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.file_id is None):
            raise ValueError("give exactly one of url and file_id")
        return self


class Audio(Section):
    url: Url | None = None
    file_id: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.file_id is None):
            raise ValueError("give exactly one of url and file_id")
        return self


class Welcome(Section):
    text: Text
    media: Media | None = None
    audio: Audio | None = None


class TextBlock(Section):
    text: Text


class Deliver(Section):
    """What a buyer gets: a link, or a one-time invite to a VIP chat for ``days``."""

    link: Url | None = None
    vip_chat_id: int | None = None
    days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.link is None) == (self.vip_chat_id is None):
            raise ValueError("give exactly one of link and vip_chat_id")
        if self.vip_chat_id is not None and self.days is None:
            raise ValueError("vip_chat_id needs days (how long the membership lasts)")
        if self.link is not None and self.days is not None:
            raise ValueError("days applies to vip_chat_id only")
        return self


class OrderBump(Section):
    id: OfferId
    text: Text
    price: Price
    accept: ButtonText = "Quero"
    decline: ButtonText = "Não, obrigado"


class Plan(Section):
    id: OfferId
    button: ButtonText
    price: Price
    description: str = Field(default="", max_length=256)
    deliver: Deliver
    order_bumps: list[OrderBump] = Field(default_factory=list, max_length=5)

    @model_validator(mode="after")
    def _unique_bumps(self) -> Self:
        seen: set[str] = set()
        for bump in self.order_bumps:
            if bump.id in seen:
                raise ValueError(f"order bump id {bump.id!r} used twice")
            seen.add(bump.id)
        return self


class UrlButton(Section):
    text: ButtonText
    url: Url


class Downsell(Section):
    id: OfferId
    after: Seconds
    text: Text
    discount_percent: int | None = Field(default=None, ge=1, le=95)
    price: Price | None = None
    button: ButtonText = "Quero com desconto"

    @model_validator(mode="after")
    def _one_price(self) -> Self:
        if (self.discount_percent is None) == (self.price is None):
            raise ValueError("give exactly one of discount_percent and price")
        return self


class Upsell(Section):
    id: OfferId
    after_plan: OfferId
    after: Seconds
    text: Text
    price: Price
    deliver: Deliver
    button: ButtonText = "Quero"


class Messages(Section):
    pix: Text = (
        "<b>{plan}</b>: {amount}\n\nCopie o código PIX abaixo e pague no app do seu"
        " banco:\n\n<code>{pix_code}</code>\n\nVálido até {expires_at}."
    )
    pending: Text = "Ainda não recebemos o seu pagamento de {amount}. Assim que cair, te aviso!"
    paid: Text = "Pagamento confirmado! ✅ Aqui está o seu acesso: {link}"
    expired: Text = "O PIX de {amount} expirou. Toque em /start para gerar outro."
    reused: Text = "Você já tem este PIX de {amount} em aberto: use o código acima."
    check_button: ButtonText = "✅ Já paguei"
    cooldown: Text = "Você acabou de gerar um PIX. Aguarde um instante antes de gerar outro."
    unavailable: Text = "Não consegui gerar o PIX agora. Tente de novo em alguns minutos."
    # A callback answer: 200 characters at most.
    stale: Annotated[str, StringConstraints(min_length=1, max_length=200)] = (
        "Esta opção não está mais disponível. Toque em /start para ver as ofertas."
    )


class FunnelConfig(Section):
    gateway: str | None = Field(default=None, description="The gateways[].id charges go through.")
    welcome: Welcome
    fallback: TextBlock
    plans: list[Plan] = Field(default_factory=list, max_length=20)
    url_buttons: list[UrlButton] = Field(default_factory=list, max_length=10)
    downsells: list[Downsell] = Field(default_factory=list, max_length=10)
    upsells: list[Upsell] = Field(default_factory=list, max_length=10)
    messages: Messages = Field(default_factory=Messages)
    owner_chat_ids: list[int] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _references(self) -> Self:
        plans = [plan.id for plan in self.plans]
        if len(set(plans)) != len(plans):
            raise ValueError("plan ids must be unique")
        for kind, offers in (("downsell", self.downsells), ("upsell", self.upsells)):
            ids = [offer.id for offer in offers]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{kind} ids must be unique")
        for upsell in self.upsells:
            if upsell.after_plan not in plans:
                known = ", ".join(plans) or "none defined"
                raise ValueError(
                    f"upsell {upsell.id!r}: unknown plan {upsell.after_plan!r} (known: {known})"
                )
        if (self.plans or self.downsells or self.upsells) and self.gateway is None:
            raise ValueError("a funnel that sells (plans, downsells, upsells) needs a gateway")
        return self

    def plan(self, plan_id: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.id == plan_id), None)

    def prices(self) -> list[tuple[Loc, int]]:
        """(path within the funnel, cents) of every fixed price, for the gateway minimum."""
        found: list[tuple[Loc, int]] = []
        for i, plan in enumerate(self.plans):
            found.append((("plans", i, "price"), plan.price))
            found += [
                (("plans", i, "order_bumps", j, "price"), bump.price)
                for j, bump in enumerate(plan.order_bumps)
            ]
        found += [
            (("downsells", i, "price"), d.price)
            for i, d in enumerate(self.downsells)
            if d.price is not None
        ]
        found += [(("upsells", i, "price"), u.price) for i, u in enumerate(self.upsells)]
        return found
