"""A charge carries where its buyer came from, as it was when the charge was made, and
its domain events carry it on (the Purchase event of the ads issue reads it there)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import OutboxEvent, PaymentStatus
from storage.payments import Charges, Opened, PaymentLedger, Word
from storage.repositories import Attribution, UserSeen
from storage.repositories.payments import NewCharge
from storage.services import UserActivity
from tests.integration.test_storage import T0, bot, registered


async def test_the_charge_keeps_the_buyers_first_touch_and_its_events_carry_it(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    activity = UserActivity(session_factory)
    await activity.record_seen([UserSeen("a", 10, T0)])
    await activity.attribute(
        "a", 10, Attribution(tracking_token="tk1", utm_source="facebook", fbclid="fb.1"), T0
    )
    charges = Charges(session_factory)
    new = NewCharge(
        "a", 10, "plan:mensal", "Mensal", 1990, "BRL", "sbx", "key-1", T0 + timedelta(minutes=30)
    )
    opening = await charges.open(new, T0, reuse=timedelta(0), cooldown=timedelta(0))
    assert opening.result == Opened.NEW and opening.payment is not None
    payment = await charges.attach(
        opening.payment.id, transaction_id="tx-1", pix_code="000201", qr_png_base64=None,
        expires_at=T0 + timedelta(minutes=30),
    )  # fmt: skip
    expected = {"tracking_token": "tk1", "utm_source": "facebook", "fbclid": "fb.1"}
    assert payment.attribution == expected

    word = Word("sbx", "tx-1", PaymentStatus.PAID, 1990, "BRL", T0 + timedelta(minutes=1))
    await PaymentLedger(session_factory).apply(word, T0 + timedelta(minutes=1), source="webhook")
    async with session_factory() as session:
        (event,) = (await session.scalars(select(OutboxEvent))).all()
    assert event.topic == "payment.paid"
    assert event.payload["attribution"] == expected
    assert (event.payload["amount_cents"], event.payload["source"]) == (1990, "webhook")
