"""The demo's buyers: simulated users walk each selling bot's funnel on the sandbox gateway.

Each buyer does what a person does, once its message is on screen: /start from an
ad (a campaign code), a plan button, the order bumps (some take one), and then
pays the PIX in the bank app, or lets it be and gets the downsell (due a few
seconds later in the demo), which some take and pay. Owners get a notice per sale
and ask /stats. The summary counts each step from the fleet's own metrics, and
checks every chat for a message received twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.table import Table

from fleet.config import BotConfig, FleetConfig
from fleet.config_funnel import FunnelConfig
from fleet.emulator import TelegramEmulator, User
from fleet.emulator.world import Sent
from fleet.money import format_brl
from fleet.supervisor import Supervisor

DOWNSELL_AFTER = 4  # seconds: the demo does not wait the configured minutes
BUYERS_PER_BOT = 8
_WITHIN = 90.0


def demo_timings(config: FleetConfig) -> FleetConfig:
    """The configuration with every downsell due after :data:`DOWNSELL_AFTER` seconds."""
    funnels = {
        name: funnel.model_copy(
            update={
                "downsells": [
                    d.model_copy(update={"after": min(d.after, DOWNSELL_AFTER)})
                    for d in funnel.downsells
                ]
            }
        )
        for name, funnel in config.funnels.items()
    }
    return config.model_copy(update={"funnels": funnels})


@dataclass
class _Buyer:
    bot: BotConfig
    funnel: FunnelConfig
    user: User
    plan: str
    takes_bump: bool
    pays: bool
    takes_downsell: bool
    step: str = "start"  # start, chose, charged, waiting, offered, done
    seen: int = 0

    @property
    def token(self) -> str:
        return self.bot.token.get_secret_value()


def _selling(config: FleetConfig) -> list[tuple[BotConfig, FunnelConfig]]:
    found = []
    for bot in config.enabled_bots():
        funnel = config.funnel_for(bot)
        gateway = config.gateway(funnel.gateway) if funnel.gateway else None
        if funnel.plans and gateway is not None and gateway.kind == "sandbox":
            found.append((bot, funnel))
    return found


def _prepare(emulator: TelegramEmulator, selling: list[tuple[BotConfig, FunnelConfig]]) -> set[int]:
    """The VIP groups the plans deliver to (the bots their admins), and the owners."""
    owners: set[int] = set()
    for bot, funnel in selling:
        token = bot.token.get_secret_value()
        targets = [p.deliver for p in funnel.plans] + [u.deliver for u in funnel.upsells]
        for deliver in targets:
            chat_id = deliver.vip_chat_id
            if chat_id is None:
                continue
            chat = emulator.chats.get(chat_id)
            if chat is None:
                emulator.add_group(f"VIP {chat_id}", bots=[token], chat_id=chat_id)
            else:
                chat.members[emulator.bot(token).id] = "administrator"
        owners.update(funnel.owner_chat_ids)
    for owner in owners:
        emulator.add_user("Dona", user_id=owner)  # the one there already, if any
    return owners


async def demo_funnel(supervisor: Supervisor, emulator: TelegramEmulator) -> Table | None:
    """Walk the funnel with simulated buyers; the summary (None: no bot sells)."""
    selling = _selling(supervisor.config)
    payments = supervisor.payments
    if not selling or payments is None:
        return None
    owners = _prepare(emulator, selling)
    for bot, _ in selling:
        for owner in owners:
            if owner in bot_owners(supervisor.config, bot):
                emulator.user_sends(bot.token.get_secret_value(), owner, "/start")
    buyers: list[_Buyer] = []
    for bot, funnel in selling:
        for i in range(BUYERS_PER_BOT):
            buyers.append(
                _Buyer(
                    bot, funnel, emulator.add_user(f"Lead{len(buyers) + 1}"),
                    plan=funnel.plans[i % len(funnel.plans)].id, takes_bump=i % 4 == 0,
                    pays=i % 3 != 2, takes_downsell=i % 6 == 5,
                )
            )  # fmt: skip
    started = time.monotonic()
    for buyer in buyers:
        emulator.user_sends(buyer.token, buyer.user, "/start anuncio_demo")
    deadline = time.monotonic() + _WITHIN
    while any(b.step != "done" for b in buyers) and time.monotonic() < deadline:
        for buyer in buyers:
            await _advance(emulator, supervisor, buyer)
        await asyncio.sleep(0.1)  # buyers look at their phones now and then
    walked = time.monotonic() - started
    await _settle(supervisor)
    stats = await _stats(emulator, supervisor, selling[0][0], owners)
    return _summary(supervisor, emulator, buyers, owners, walked, stats)


def bot_owners(config: FleetConfig, bot: BotConfig) -> list[int]:
    return config.funnel_for(bot).owner_chat_ids


def _button(sent: Sent, prefix: str) -> str | None:
    datas = (str(b.get("callback_data", "")) for b in sent.buttons())
    return next((data for data in datas if data.startswith(prefix)), None)


async def _advance(emulator: TelegramEmulator, supervisor: Supervisor, buyer: _Buyer) -> None:
    transcript = emulator.transcript(buyer.token, buyer.user)
    fresh, buyer.seen = transcript[buyer.seen :], len(transcript)
    for sent in fresh:
        text = sent.text or ""
        if buyer.step == "start" and _button(sent, "pl:"):
            emulator.press_button(buyer.token, buyer.user, sent, data=f"pl:{buyer.plan}")
            buyer.step = "chose"
        elif buyer.step == "chose" and (bump := _button(sent, "bu:")):
            answer = bump[:-1] + ("1" if buyer.takes_bump else "0")
            emulator.press_button(buyer.token, buyer.user, sent, data=answer)
        elif buyer.step in ("chose", "offered") and (check := _button(sent, "ck:")):
            if buyer.pays or buyer.step == "offered":
                assert supervisor.payments is not None  # checked by the caller
                payment = await supervisor.payments.get(int(check[3:]))
                if payment is not None and payment.transaction_id is not None:
                    emulator.pix.pay(payment.transaction_id)  # in the bank app
                buyer.step = "waiting"
            else:
                buyer.step = "charged"  # lets it be: the downsell comes
        elif buyer.step == "charged" and (offer := _button(sent, "ds:")):
            if buyer.takes_downsell:
                emulator.press_button(buyer.token, buyer.user, sent, data=offer)
                buyer.step = "offered"
            else:
                buyer.step = "done"
        elif buyer.step == "waiting" and "t.me/" in text:
            buyer.step = "done"  # access received


async def _settle(supervisor: Supervisor) -> None:
    """The outbox drained: owners' notices and upsell timers done before the counting."""
    outbox = supervisor.outbox
    if outbox is None:
        return
    async with asyncio.timeout(30):
        while await outbox.backlog(datetime.now(UTC)):  # noqa: ASYNC110 - the state lives in PostgreSQL
            await asyncio.sleep(0.1)


async def _stats(
    emulator: TelegramEmulator, supervisor: Supervisor, bot: BotConfig, owners: set[int]
) -> str:
    owner = next((o for o in owners if o in bot_owners(supervisor.config, bot)), None)
    if owner is None:
        return "-"
    action = emulator.user_sends(bot.token.get_secret_value(), owner, "/stats")
    (reply,) = await emulator.wait_for_replies(action, 1, within=15)
    return reply.text or ""


def _steps(supervisor: Supervisor) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in supervisor.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "botfleet_funnel_steps_total":
                counts[sample.labels["step"]] += int(sample.value)
    return counts


def _summary(
    supervisor: Supervisor,
    emulator: TelegramEmulator,
    buyers: list[_Buyer],
    owners: set[int],
    walked: float,
    stats: str,
) -> Table:
    steps = _steps(supervisor)
    twice = 0
    access = 0
    for buyer in buyers:
        transcript = emulator.transcript(buyer.token, buyer.user)
        # Media without a caption (a QR code per charge) is not text to compare.
        seen = Counter((s.method, s.text) for s in transcript if s.text)
        twice += sum(n - 1 for n in seen.values() if n > 1)
        access += sum(1 for s in transcript if "t.me/" in (s.text or ""))
    notices = sum(
        1
        for buyer_bot in {b.bot.id: b.token for b in buyers}.values()
        for owner in owners
        for s in emulator.transcript(buyer_bot, owner)
        if "Venda confirmada" in (s.text or "")
    )
    revenue = sum(c["amount_cents"] for c in emulator.pix.list_charges() if c["status"] == "paid")
    table = Table(title=f"the funnel: {len(buyers)} simulated buyers on the sandbox gateway")
    table.add_column("step")
    table.add_column("count", justify="right")
    rows = [
        ("/start (buyers from an ad, and everyone else)", steps["start"]),
        ("welcome sent (media, text, buttons)", steps["welcome"]),
        ("plan chosen", steps["plan"]),
        ("order bump taken", steps["bump_accepted"]),
        ("order bump declined", steps["bump_declined"]),
        ("PIX generated (QR + copy-paste code)", steps["pix"]),
        ("downsell sent (unpaid PIX)", steps["downsell_sent"]),
        ("downsell skipped (bought meanwhile)", steps["downsell_moot"]),
        ("downsell taken", steps["downsell_taken"]),
        ("paid and delivered (link or one-time invite)", steps["delivered"]),
        ("access messages in the chats", access),
        ("sale notices to owners", notices),
        ("messages received twice", twice),
        ("buyers stuck (see the log)", sum(1 for b in buyers if b.step != "done")),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    table.add_row("revenue (sandbox)", format_brl(revenue))
    table.add_row("time for the whole walk", f"{walked:.1f} s")
    table.add_row("/stats for an owner", stats.replace("\n", " · "))
    return table
