"""A cluster that sells (the sandbox gateway served by the emulator), and simulated buyers
who walk its funnel: each looks at their chat, and does the next thing once its message is
there (a real user cannot press a button they have not seen)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from fleet.emulator import TelegramEmulator, User
from fleet.emulator.world import Sent
from tests.cluster.harness import Cluster, token_for

URL_SECRET = "cluster-url-secret-0123456789"
SIGNING = "sandbox-signing-secret"  # the emulator sandbox's published test secret
ACCESS = "https://t.me/+curso-mensal"
ANNUAL = "https://t.me/+curso-anual"


def selling_funnel(downsell_after: str) -> dict[str, Any]:
    return {
        "gateway": "sbx",
        "welcome": {
            "text": "Olá {first_name}! Escolha um plano:",
            "media": {"type": "photo", "url": "https://cdn.example.com/capa.jpg"},
        },
        "fallback": {"text": "Toque em /start."},
        "plans": [
            {
                "id": "mensal", "button": "Mensal", "price": "19.90",
                "deliver": {"link": ACCESS},
                "order_bumps": [{"id": "ebook", "text": "E-book junto?", "price": "9.90"}],
            },
            {"id": "anual", "button": "Anual", "price": "99.90", "deliver": {"link": ANNUAL}},
        ],
        "downsells": [
            {"id": "d1", "after": downsell_after, "text": "Só hoje, {first_name}!",
             "discount_percent": 30},
        ],
    }  # fmt: skip


class SellingCluster(Cluster):
    downsell_after = "25s"
    public_port: int | None = None  # one public URL for all (a load balancer's, in production)

    def config(self, name: str, http_port: int) -> dict[str, Any]:
        data = super().config(name, http_port)
        self.public_port = self.public_port or http_port  # the first instance's (never killed)
        data["http"]["public_url"] = f"http://127.0.0.1:{self.public_port}"
        data["gateways"] = [
            {"id": "sbx", "kind": "sandbox", "api_base": self.base_url, "webhook_secret": SIGNING}
        ]
        data["payments"] = {
            "url_secret": URL_SECRET,
            "jobs_interval": 0.3,
            "reconcile_after_seconds": 3,
            "resume_after_seconds": 5,
            "retry_base_seconds": 0.3,
        }
        data["funnels"] = {"main": selling_funnel(self.downsell_after)}
        return data


class Step(enum.Enum):
    STARTED = 1
    CHOSE = 2
    BUMPED = 3
    CHARGED = 4  # saw the PIX
    DONE = 5  # paid (or decided not to)


@dataclass
class Buyer:
    index: int
    bot: int
    user: User
    pays: bool
    takes_bump: bool
    plan: str
    step: Step = Step.STARTED
    seen: int = 0  # transcript entries looked at
    pressed: list[str] = field(default_factory=list)
    moved_at: float = 0.0  # when their chat last showed something new
    lost: bool = False  # gave up waiting: a message in flight at the kill never came

    @property
    def token(self) -> str:
        return token_for(self.bot)


def buyers(emulator: TelegramEmulator, bots: int, count: int) -> list[Buyer]:
    made = []
    for i in range(count):
        user = emulator.add_user(f"Comprador{i}")
        made.append(
            Buyer(
                i, i % bots, user, pays=i % 3 == 0, takes_bump=i % 4 == 1,
                plan="mensal" if i % 2 else "anual",
            )
        )  # fmt: skip
    return made


def _button(sent: Sent, prefix: str) -> str | None:
    for button in sent.buttons():
        data = str(button.get("callback_data", ""))
        if data.startswith(prefix):
            return data
    return None


def advance(emulator: TelegramEmulator, buyer: Buyer, now: float) -> None:
    """One look at the buyer's chat, and the next press if its message is there."""
    transcript = emulator.transcript(buyer.token, buyer.user)
    fresh, buyer.seen = transcript[buyer.seen :], len(transcript)
    if fresh:
        buyer.moved_at = now
    for sent in fresh:
        if buyer.step == Step.STARTED and _button(sent, "pl:"):
            data = f"pl:{buyer.plan}"
            emulator.press_button(buyer.token, buyer.user, sent, data=data)
            buyer.pressed.append(data)
            buyer.step = Step.CHOSE if buyer.plan == "mensal" else Step.BUMPED
        elif buyer.step == Step.CHOSE and (bump := _button(sent, "bu:")):
            data = bump[:-1] + ("1" if buyer.takes_bump else "0")
            emulator.press_button(buyer.token, buyer.user, sent, data=data)
            buyer.pressed.append(data)
            buyer.step = Step.BUMPED
        elif buyer.step == Step.BUMPED and _button(sent, "ck:"):
            buyer.step = Step.CHARGED if buyer.pays else Step.DONE
