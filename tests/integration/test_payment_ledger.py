"""The ledger applies a batch of gateway words in one transaction, in order, forward only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import OutboxEvent, Payment, PaymentStatus
from storage.payments import Applied, Charges, Opened, PaymentLedger, Word
from storage.repositories.payments import NewCharge
from tests.integration.test_storage import T0, bot, registered

PAID, REFUNDED = PaymentStatus.PAID, PaymentStatus.REFUNDED


async def charged(sessions: async_sessionmaker[AsyncSession], n: int) -> list[Payment]:
    charges, made = Charges(sessions), []
    for i in range(n):
        new = NewCharge(
            "a", 10 + i, "plan", "Plano", 1990, "BRL", "sbx", f"k{i}", T0 + timedelta(hours=1)
        )
        opening = await charges.open(new, T0, reuse=timedelta(0), cooldown=timedelta(0))
        assert opening.payment is not None
        made.append(
            await charges.attach(
                opening.payment.id,
                transaction_id=f"tx{i}",
                pix_code="0002",
                qr_png_base64=None,
                expires_at=T0 + timedelta(hours=1),
            )
        )
    return made


async def topics(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(OutboxEvent.key).order_by(OutboxEvent.id)))


async def test_a_batch_is_applied_in_order_forward_only_one_event_per_transition(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    one, two = await charged(session_factory, 2)
    words = [
        Word("sbx", "tx0", PAID, 1990, "BRL"),
        Word("sbx", "tx0", REFUNDED, 1990, "BRL"),  # seen after the payment, in the same batch
        Word("sbx", "tx1", PAID, 1989, "BRL"),  # not what we charged
        Word("sbx", "nobody", PAID, 1990, "BRL"),
        Word("sbx", "tx0", PAID, 1990, "BRL"),  # late: never undoes the refund
        Word("sbx", "tx1", PAID, 1990, "USD"),
    ]
    applied = await PaymentLedger(session_factory).apply_many(words, T0, source="webhook")
    assert [a.result for a in applied] == [
        Applied.MOVED, Applied.MOVED, Applied.MISMATCH, Applied.UNKNOWN, Applied.NO_CHANGE,
        Applied.MISMATCH,
    ]  # fmt: skip
    assert await topics(session_factory) == [f"payment.paid:{one.id}", f"payment.refunded:{one.id}"]
    charges = Charges(session_factory)
    assert [(await charges.get(p.id)).status for p in (one, two)] == ["refunded", "pending"]  # type: ignore[union-attr]


async def test_two_instances_applying_the_same_words_at_once_move_each_charge_once(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    made = await charged(session_factory, 20)
    words = [Word("sbx", f"tx{i}", PAID, 1990, "BRL") for i in range(20)]
    ledgers = [PaymentLedger(session_factory) for _ in range(4)]
    batches = [words, words[::-1], words[5:] + words[:5], words]  # overlapping, any order
    pairs = zip(ledgers, batches, strict=True)
    results = await asyncio.gather(
        *(ledger.apply_many(b, T0, source="webhook") for ledger, b in pairs)
    )
    moved = sum(a.result == Applied.MOVED for batch in results for a in batch)
    assert moved == 20
    assert sorted(await topics(session_factory)) == sorted(f"payment.paid:{p.id}" for p in made)


async def test_a_charge_left_half_made_is_resumed_by_its_own_request_at_once_by_others_later(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Before: a charge whose maker died (or whose database write failed) after the row was
    opened stayed "being made" for good: every later press of the buyer was refused."""
    await registered(session_factory, bot("a", 1))
    charges = Charges(session_factory)
    now = datetime.now(UTC)  # rows are stamped by the database's clock
    expires = now + timedelta(hours=1)
    ours = NewCharge("a", 7, "plan:x", "Plano", 1990, "BRL", "sbx", "update-1", expires)
    other = NewCharge("a", 7, "plan:x", "Plano", 1990, "BRL", "sbx", "update-2", expires)
    windows = {"reuse": timedelta(minutes=5), "cooldown": timedelta(0)}
    first = await charges.open(ours, now, **windows, resume_after=timedelta(seconds=30))
    assert first.result == Opened.NEW and first.payment is not None

    again = await charges.open(ours, now + timedelta(seconds=1), **windows)  # its retry
    assert again.result == Opened.RESUMED and again.payment is not None
    assert again.payment.id == first.payment.id  # the same row, the same idempotency key
    soon = await charges.open(other, now + timedelta(seconds=2), **windows)  # a double click
    assert soon.result == Opened.BUSY
    later = await charges.open(
        other, now + timedelta(seconds=31), **windows, resume_after=timedelta(seconds=30)
    )  # nobody finished it: whoever asks next does
    assert later.result == Opened.RESUMED and later.payment is not None
    assert later.payment.id == first.payment.id

    await charges.give_up(first.payment.id)  # the gateway refused it
    retried = await charges.open(ours, now + timedelta(seconds=40), **windows)
    assert retried.result == Opened.NEW and retried.payment is not None
    assert retried.payment.id != first.payment.id  # a new request, a new key
    assert retried.payment.idempotency_key != "update-1"
