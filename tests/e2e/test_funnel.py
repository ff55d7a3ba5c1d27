"""The sales funnel end to end: a buyer walks it through the emulator, pays in the sandbox
gateway and gets access, on real PostgreSQL and Redis; forged buttons change nothing."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import EmulatorServer, TelegramEmulator, User
from fleet.emulator.world import Action, Sent
from storage.models import BotUser, Payment, Timer
from tests.e2e.conftest import StartFleet, metric
from tests.e2e.funnel_rig import AUDIO, VIP_LINK, last_with, selling_fleet
from tests.e2e.payments_rig import eventually

BOT = "bot-000"


async def payments_of(sessions: async_sessionmaker[AsyncSession], user_id: int) -> list[Payment]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Payment).where(Payment.telegram_user_id == user_id).order_by(Payment.id)
        )
        return list(rows)


async def timers_of(sessions: async_sessionmaker[AsyncSession], user_id: int) -> list[Timer]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Timer).where(Timer.telegram_user_id == user_id).order_by(Timer.id)
        )
        return list(rows)


async def wait_messages(
    emulator: TelegramEmulator, token: str, user: User, count: int
) -> list[Sent]:
    await emulator.wait_for(lambda: len(emulator.transcript(token, user)) >= count, 15)
    return emulator.transcript(token, user)


def press(emulator: TelegramEmulator, token: str, user: User, prefix: str, data: str) -> Action:
    message = last_with(emulator.transcript(token, user), prefix)
    return emulator.press_button(token, user, message, data=data)


def shape(sent: Sent) -> str:
    """A transcript entry as the test reads it: what kind, and the start of its text."""
    return f"{sent.media or 'text'}:{(sent.text or '').splitlines()[0][:22] if sent.text else ''}"


async def test_one_buyer_goes_the_whole_way_and_every_message_arrives_once(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator = emulator_server.emulator
    data, vip, owner = selling_fleet(
        emulator, emulator_server.base_url, db_config, redis_config, downsell_after="6s"
    )
    token = data["bots"][0]["token"]
    fleet = await start_fleet(data=data)
    user = emulator.add_user("Ana")
    emulator.user_sends(token, owner, "/start")

    emulator.user_sends(token, user, "/start camp_verao-2026")
    welcome = await wait_messages(emulator, token, user, 3)
    assert [s.media for s in welcome] == ["video", None, "audio"]
    assert welcome[0].text is None  # the text (over 1,024 characters) comes on its own
    assert welcome[1].text is not None and welcome[1].text.startswith("Olá Ana! Conteúdo")
    labels = [b["text"] for b in welcome[1].buttons()]
    assert labels == ["Plano Mensal - R$ 19,90", "Plano Anual - R$ 99,90", "Suporte"]
    assert welcome[1].reply_markup is not None
    assert {"text": "Suporte", "url": "https://t.me/suporte"} in [
        b for row in welcome[1].reply_markup["inline_keyboard"] for b in row
    ]

    chose = press(emulator, token, user, "pl:", "pl:mensal")
    first = await wait_messages(emulator, token, user, 4)
    assert first[-1].text is not None and first[-1].text.startswith("Leve também o e-book")
    accept = next(
        b["callback_data"] for b in first[-1].buttons() if b["callback_data"].endswith(":1")
    )
    emulator.press_button(token, user, first[-1], data=accept)
    second = await wait_messages(emulator, token, user, 5)
    assert second[-1].text is not None and second[-1].text.startswith("E a mentoria")
    decline = next(
        b["callback_data"] for b in second[-1].buttons() if b["callback_data"].endswith(":0")
    )
    emulator.press_button(token, user, second[-1], data=decline)
    pix = await wait_messages(emulator, token, user, 7)
    assert [s.media for s in pix[-2:]] == ["photo", None]  # the QR, then the code
    (payment,) = await payments_of(session_factory, user.id)
    assert payment.amount_cents == 1990 + 990  # the plan and the bump taken, not the other
    assert payment.offer_ref == "plan:mensal+ebook"
    assert payment.pix_code is not None and payment.pix_code in (pix[-1].text or "")
    assert [b["callback_data"] for b in pix[-1].buttons()] == [f"ck:{payment.id}"]
    assert chose.answer is not None  # every press answered

    assert payment.transaction_id is not None
    emulator.pix.pay(payment.transaction_id)
    paid = await wait_messages(emulator, token, user, 8)
    links = re.findall(r"https://t\.me/\+\S+", paid[-1].text or "")
    assert len(links) == 1  # a one-time invite to the VIP group
    await eventually(lambda: _delivered(session_factory, payment.id))
    async with session_factory() as session:
        stored = await session.get(Payment, payment.id)
        person = await session.scalar(
            select(BotUser).where(BotUser.bot_id == BOT, BotUser.telegram_user_id == user.id)
        )
    assert stored is not None and stored.access_link == links[0]
    assert person is not None and person.campaign_code == "camp_verao-2026"
    assert person.starts == 1
    invite = emulator.invite_links[links[0]]
    assert invite.member_limit == 1 and invite.chat_id == vip and invite.name == f"pay_{payment.id}"
    emulator.join_via_invite(user, links[0])
    assert emulator.chats[vip].status_of(user.id) == "member"

    def sales() -> list[Sent]:
        return [s for s in emulator.transcript(token, owner) if "Venda" in (s.text or "")]

    sale = await emulator.wait_for(sales, 10)
    assert len(sale) == 1 and "R$ 29,80" in (sale[0].text or "")

    # The downsell due 6 s after the PIX is moot: the buyer paid.
    async def downsell_settled() -> bool:
        timers = await timers_of(session_factory, user.id)
        return any(t.kind == "downsell" and t.state != "scheduled" for t in timers)

    await eventually(downsell_settled)
    timers = await timers_of(session_factory, user.id)
    assert [(t.kind, t.state, t.result) for t in timers if t.kind == "downsell"] == [
        ("downsell", "done", "moot: bought since")
    ]
    assert [t.kind for t in timers if t.kind == "upsell"] == ["upsell"]  # due in an hour

    transcript = emulator.transcript(token, user)
    assert [shape(s) for s in transcript] == [
        "video:",
        "text:Olá Ana! Conteúdo do c",
        "audio:",
        "text:Leve também o e-book",
        "text:E a mentoria em grupo?",
        "photo:",
        "text:Plano Mensal: R$ 29,80",
        "text:Pagamento confirmado! ",
    ]
    assert AUDIO  # the audio is the configured one (by URL)
    supervisor = fleet.supervisor
    assert metric(supervisor, "botfleet_funnel_steps_total", bot=BOT, step="bump_accepted") == 1
    assert metric(supervisor, "botfleet_funnel_steps_total", bot=BOT, step="bump_declined") == 1
    assert metric(supervisor, "botfleet_deliveries_total", kind="invite", result="delivered") == 1


async def _delivered(sessions: async_sessionmaker[AsyncSession], payment_id: int) -> bool:
    async with sessions() as session:
        payment = await session.get(Payment, payment_id)
        return payment is not None and payment.delivery_state == "delivered"


async def test_forged_buttons_change_nothing_that_is_charged_or_delivered(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator = emulator_server.emulator
    data, _, _ = selling_fleet(emulator, emulator_server.base_url, db_config, redis_config)
    data["funnels"]["main"]["downsells"] = []
    token = data["bots"][0]["token"]
    fleet = await start_fleet(data=data)
    ana, bia = emulator.add_user("Ana"), emulator.add_user("Bia")
    for user in (ana, bia):
        emulator.user_sends(token, user, "/start")
        await wait_messages(emulator, token, user, 3)
    emulator.press_button(
        token, bia, last_with(emulator.transcript(token, bia), "pl:"), data="pl:anual"
    )
    await wait_messages(emulator, token, bia, 5)
    (bias,) = await payments_of(session_factory, bia.id)

    welcome = last_with(emulator.transcript(token, ana), "pl:")
    forged = [
        "pl:vitalicio",  # a plan nobody configured
        "pl:anual:1",  # junk after a real id
        f"ck:{bias.id}",  # another user's charge
        "ds:d1",  # a downsell never offered to her
        "up:u1",  # an upsell never offered to her
        "bu:abcd1234:ebook:1",  # a bump of a session she does not have
        "pl:anual;price=100",
        "x" * 64,
    ]
    actions = [emulator.press_button(token, ana, welcome, forged=data) for data in forged]
    await emulator.wait_for(lambda: all(a.answer is not None for a in actions), 10)
    stale = data["funnels"]["main"].get("messages", {}).get("stale")
    for action in actions:  # each answered politely, none with an error
        assert action.answer is not None and action.answer.text
        if stale:
            assert action.answer.text == stale
    assert await payments_of(session_factory, ana.id) == []
    assert len(emulator.transcript(token, ana)) == 3  # nothing more than her welcome
    (still,) = await payments_of(session_factory, bia.id)
    assert still.status == "pending" and still.amount_cents == 9990
    supervisor = fleet.supervisor
    refused = sum(
        metric(supervisor, "botfleet_funnel_rejected_total", bot=BOT, reason=reason)
        for reason in ("malformed", "unknown", "foreign", "not offered", "stale")
    )
    assert refused == len(forged)

    # A real button of hers, pressed with another plan's id, charges that plan's own price.
    emulator.press_button(token, ana, welcome, forged="pl:anual")
    await wait_messages(emulator, token, ana, 5)
    (hers,) = await payments_of(session_factory, ana.id)
    assert (hers.offer_ref, hers.amount_cents) == ("plan:anual", 9990)
    assert hers.transaction_id is not None
    emulator.pix.pay(hers.transaction_id)
    delivered = await wait_messages(emulator, token, ana, 6)
    assert VIP_LINK in (delivered[-1].text or "")
    assert len(emulator.transcript(token, bia)) == 5  # Bia got nothing of Ana's


async def test_media_telegram_refuses_falls_back_to_the_text(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
) -> None:
    emulator = emulator_server.emulator
    data, _, _ = selling_fleet(emulator, emulator_server.base_url, db_config, redis_config)
    main = data["funnels"]["main"]
    main["welcome"] = {
        "text": "Oi {first_name}, veja os planos:",
        "media": {"type": "photo", "url": "https://cdn.invalid/gone.jpg"},
    }
    token = data["bots"][0]["token"]
    fleet = await start_fleet(data=data)
    user = emulator.add_user("Caio")
    emulator.user_sends(token, user, "/start")
    (welcome,) = await wait_messages(emulator, token, user, 1)
    assert welcome.media is None and welcome.text == "Oi Caio, veja os planos:"
    assert len(welcome.buttons()) == 3
    assert metric(fleet.supervisor, "botfleet_funnel_media_fallbacks_total", bot=BOT) == 1


async def test_an_unpaid_pix_gets_its_downsell_once_at_a_price_computed_here(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator = emulator_server.emulator
    data, _, _ = selling_fleet(emulator, emulator_server.base_url, db_config, redis_config)
    token = data["bots"][0]["token"]
    await start_fleet(data=data)
    user = emulator.add_user("Duda")
    emulator.user_sends(token, user, "/start")
    await wait_messages(emulator, token, user, 3)
    press(emulator, token, user, "pl:", "pl:anual")
    await wait_messages(emulator, token, user, 5)
    offer = await wait_messages(emulator, token, user, 6)  # the downsell, 2 s later
    assert offer[-1].text == "Última chance, Duda!"
    assert [b["text"] for b in offer[-1].buttons()] == ["Quero com desconto - R$ 69,93"]

    press(emulator, token, user, "ds:", "ds:d1")
    await wait_messages(emulator, token, user, 8)
    first, taken = await payments_of(session_factory, user.id)
    assert (taken.offer_ref, taken.amount_cents) == ("downsell:d1>anual", 6993)  # 30% off
    assert taken.transaction_id is not None
    emulator.pix.pay(taken.transaction_id)
    done = await wait_messages(emulator, token, user, 9)
    assert VIP_LINK in (done[-1].text or "")  # the downsell delivers the plan it discounts
    timers = await timers_of(session_factory, user.id)
    assert [(t.kind, t.result) for t in timers] == [("downsell", "sent")]  # once
    assert first.status == "pending"


async def test_i_paid_owners_stats_and_an_upsell_after_the_paid_plan(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator = emulator_server.emulator
    data, _, owner = selling_fleet(
        emulator, emulator_server.base_url, db_config, redis_config, downsell_after="1h"
    )
    data["funnels"]["main"]["upsells"][0]["after"] = "2s"
    data["funnels"]["main"]["plans"][0]["order_bumps"] = []
    token = data["bots"][0]["token"]
    await start_fleet(data=data)
    user = emulator.add_user("Gil")
    emulator.user_sends(token, user, "/start")
    await wait_messages(emulator, token, user, 3)
    press(emulator, token, user, "pl:", "pl:mensal")
    pix = await wait_messages(emulator, token, user, 5)
    (payment,) = await payments_of(session_factory, user.id)

    check = press(emulator, token, user, "ck:", f"ck:{payment.id}")  # not paid yet
    pending = await wait_messages(emulator, token, user, 6)
    assert check.answer is not None and check.answer.text == "Verificando o seu pagamento…"
    assert (pending[-1].text or "").startswith("Ainda não recebemos o seu pagamento de R$ 19,90")

    assert payment.transaction_id is not None
    emulator.pix.pay(payment.transaction_id)
    paid = await wait_messages(emulator, token, user, 7)
    assert (paid[-1].text or "").startswith("Pagamento confirmado!")
    upsell = await wait_messages(emulator, token, user, 8)  # 2 s after the payment
    assert upsell[-1].text == "Suba de nível"
    assert [b["text"] for b in upsell[-1].buttons()] == ["Quero - R$ 29,90"]
    press(emulator, token, user, "up:", "up:u1")
    await wait_messages(emulator, token, user, 10)
    first, second = await payments_of(session_factory, user.id)
    assert (second.offer_ref, second.amount_cents) == ("upsell:u1", 2990)
    assert second.transaction_id is not None
    emulator.pix.pay(second.transaction_id)
    access = await wait_messages(emulator, token, user, 11)
    assert "https://t.me/+upsell" in (access[-1].text or "")
    assert pix[-1].text is not None and first.id == payment.id

    # /stats: the owner's figures; anyone else gets the fallback.
    emulator.user_sends(token, owner, "/start")
    await wait_messages(emulator, token, owner, 3)
    emulator.user_sends(token, owner, "/stats")
    stats = await emulator.wait_for(
        lambda: [s for s in emulator.transcript(token, owner) if "hoje / total" in (s.text or "")],
        10,
    )
    assert "Vendas: 2 / 2" in (stats[0].text or "")
    assert "Faturamento: R$ 49,80 / R$ 49,80" in (stats[0].text or "")
    emulator.user_sends(token, user, "/stats")
    refused = await wait_messages(emulator, token, user, 12)
    assert refused[-1].text == "Toque em /start."
