"""A fleet that sells: the funnel of the acceptance criteria on the sandbox gateway, and a
simulated buyer who walks it through the emulator (shared by the funnel tests and the demo's
tests)."""

from __future__ import annotations

from typing import Any

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import TelegramEmulator, User
from fleet.emulator.world import Sent
from tests.e2e.payments_rig import payment_fleet

LONG_WELCOME = "Olá {first_name}! " + "Conteúdo do curso, aula por aula. " * 40  # > 1,024
VIDEO = "https://cdn.example.com/welcome.mp4"
AUDIO = "https://cdn.example.com/hello.mp3"
VIP_LINK = "https://t.me/+anual-access"


def funnel(vip_chat_id: int, owner_id: int, *, downsell_after: str = "2s") -> dict[str, Any]:
    return {
        "gateway": "sbx",
        "welcome": {
            "text": LONG_WELCOME,
            "media": {"type": "video", "url": VIDEO},
            "audio": {"url": AUDIO},
        },
        "fallback": {"text": "Toque em /start."},
        "plans": [
            {
                "id": "mensal",
                "button": "Plano Mensal",
                "price": "19.90",
                "description": "Acesso por 30 dias",
                "deliver": {"vip_chat_id": vip_chat_id, "days": 30},
                "order_bumps": [
                    {"id": "ebook", "text": "Leve também o e-book", "price": "9.90"},
                    {"id": "mentoria", "text": "E a mentoria em grupo?", "price": "47.00"},
                ],
            },
            {
                "id": "anual",
                "button": "Plano Anual",
                "price": "99.90",
                "deliver": {"link": VIP_LINK},
            },
        ],
        "url_buttons": [{"text": "Suporte", "url": "https://t.me/suporte"}],
        "downsells": [
            {
                "id": "d1",
                "after": downsell_after,
                "text": "Última chance, {first_name}!",
                "discount_percent": 30,
            },
        ],
        "upsells": [
            {
                "id": "u1",
                "after_plan": "mensal",
                "after": "1h",
                "text": "Suba de nível",
                "price": "29.90",
                "deliver": {"link": "https://t.me/+upsell"},
            },
        ],
        "owner_chat_ids": [owner_id],
    }


def selling_fleet(
    emulator: TelegramEmulator,
    base_url: str,
    db: DatabaseConfig,
    redis: RedisConfig,
    *,
    downsell_after: str = "2s",
    **funnel_changes: Any,
) -> tuple[dict[str, Any], int, User]:
    """(config, the VIP group's id, the owner) for a one-bot fleet that sells."""
    data = payment_fleet(base_url, db, redis)
    token = data["bots"][0]["token"]
    emulator.add_bot(token)
    vip = emulator.add_group("VIP", bots=[token])
    owner = emulator.add_user("Dona")
    data["funnels"]["main"] = funnel(vip.id, owner.id, downsell_after=downsell_after)
    data["funnels"]["main"] |= funnel_changes
    return data, vip.id, owner


def last_with(transcript: list[Sent], data_prefix: str) -> Sent:
    """The latest message with a button whose callback data starts with ``data_prefix``."""
    for sent in reversed(transcript):
        if any(str(b.get("callback_data", "")).startswith(data_prefix) for b in sent.buttons()):
            return sent
    raise AssertionError(f"no message with a {data_prefix!r} button")
