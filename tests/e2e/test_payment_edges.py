"""Payments at their edges: PostgreSQL away while a webhook arrives, a PushinPay "paid" the
API denies, "I paid" checks from the buyer (and from someone else), double clicks, cool-downs
and a gateway that fails while a charge is made."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import EmulatorServer
from fleet.emulator.pix import PixFaults, sign
from fleet.payments.base import GatewayUnavailable
from fleet.payments.pushinpay import HEADER
from fleet.payments.service import TooManyChecks
from storage.models import Payment, PaymentEvent
from storage.payments import Opened
from tests.e2e.conftest import StartFleet, metric, through
from tests.e2e.payments_rig import (
    SIGNING,
    charge,
    count,
    events,
    eventually,
    payment_fleet,
    post,
    status_of,
    webhook_url,
)
from tests.fakes.pushinpay import FakePushinPay
from tests.faultproxy import FaultProxy

PP_TOKEN = "4242|pushinpay-token-never-in-a-log"
PP_HEADER_SECRET = "pushinpay-header-value-never-in-a-log"


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def signed(body: bytes) -> dict[str, str]:
    moment = int(time.time())
    return {
        "Content-Type": "application/json",
        "X-Sandbox-Signature": f"t={moment},v1={sign(SIGNING, body, moment)}",
    }


async def test_a_webhook_while_postgres_is_down_gets_503_and_is_stored_when_retried(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    pg_proxy: FaultProxy,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(lose=1.0))  # we post its webhook ourselves, as its retries would
    data = payment_fleet(
        emulator_server.base_url, db_config, redis_config, reconcile_after_seconds=3600
    )
    data["database"]["url"] = through(pg_proxy, db_config)
    fleet = await start_fleet(data=data)
    payment = await charge(fleet.supervisor, 6001)
    assert payment.transaction_id is not None
    pix.pay(payment.transaction_id)
    (paid,) = [e for e in pix.events.values() if e.charge_id == payment.transaction_id]
    url = webhook_url(fleet.supervisor)

    pg_proxy.cut()
    async with aiohttp.ClientSession() as http:
        answers = [await post(http, url, paid.body, signed(paid.body)) for _ in range(3)]
    assert answers == [503, 503, 503]
    assert await count(session_factory, PaymentEvent) == 0  # nothing half stored
    assert await status_of(session_factory, payment.id) == "pending"
    unavailable = metric(
        fleet.supervisor, "botfleet_payment_webhooks_total", gateway="sbx", result="unavailable"
    )
    assert unavailable == 3

    pg_proxy.restore()

    async def retried_until_stored() -> bool:  # as the gateway retries a non-2xx answer
        async with aiohttp.ClientSession() as http:
            return await post(http, url, paid.body, signed(paid.body)) == 200

    await eventually(retried_until_stored)
    await eventually(lambda: _is(session_factory, payment.id, "paid"))
    assert await events(session_factory, payment.id) == ["payment.paid"]
    assert await count(session_factory, PaymentEvent) == 1


@pytest.fixture
async def pushinpay() -> AsyncIterator[FakePushinPay]:
    async with FakePushinPay(PP_TOKEN) as fake:
        yield fake


async def test_a_pushinpay_paid_webhook_the_api_denies_changes_nothing(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    pushinpay: FakePushinPay,
    session_factory: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = payment_fleet(emulator_server.base_url, db_config, redis_config)
    data["gateways"].append(
        {
            "id": "pp",
            "kind": "pushinpay",
            "api_base": pushinpay.base_url,
            "access_token": PP_TOKEN,
            "webhook_secret": PP_HEADER_SECRET,
        }
    )
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    assert supervisor.payments is not None
    made = await supervisor.payments.charge(
        "bot-000", 6002, "pp", offer_ref="plan:vip", description="VIP", amount_cents=4990
    )
    payment = made.payment
    assert payment is not None and payment.transaction_id is not None
    assert made.notice and "PUSHIN PAY" in made.notice  # its terms: shown with the PIX
    tid = payment.transaction_id
    # The gateway's own shape and header, a payer's data included; the API says "created".
    body = json.dumps(
        {"id": tid, "status": "paid", "value": 4990, "payer_name": "FULANO DE TAL",
         "payer_national_registration": "12345678909"}
    ).encode()  # fmt: skip
    headers = {"Content-Type": "application/json", HEADER: PP_HEADER_SECRET}
    async with aiohttp.ClientSession() as http:
        url = webhook_url(supervisor, "pp")
        assert await post(http, url, body, {**headers, HEADER: "guess"}) == 401
        assert await post(http, url, body, headers) == 200
    await eventually(lambda: _result(session_factory, "retry: the gateway says pending"))
    assert await status_of(session_factory, payment.id) == "pending"
    assert await events(session_factory, payment.id) == []
    stored = await _rows(session_factory)
    assert "12345678909" not in stored[0].body and "FULANO" not in stored[0].body
    assert HEADER not in stored[0].headers  # a secret: never kept

    pushinpay.set_status(tid, "paid")  # now really paid: the retry (not a new webhook) sees it
    await eventually(lambda: _is(session_factory, payment.id, "paid"), within=40)
    assert await events(session_factory, payment.id) == ["payment.paid"]
    async with aiohttp.ClientSession() as http:
        metrics_url = f"http://127.0.0.1:{supervisor.web_port}/metrics"
        async with http.get(metrics_url) as response:
            exposed = await response.text()
    for secret in (PP_TOKEN, PP_HEADER_SECRET):
        assert secret not in caplog.text and secret not in exposed


async def test_a_gateway_failing_while_confirming_is_asked_again_and_nothing_is_lost(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    pushinpay: FakePushinPay,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    data = payment_fleet(emulator_server.base_url, db_config, redis_config)
    data["gateways"].append(
        {"id": "pp", "kind": "pushinpay", "api_base": pushinpay.base_url,
         "access_token": PP_TOKEN, "timeout": 1.0}
    )  # fmt: skip
    fleet = await start_fleet(data=data)
    supervisor = fleet.supervisor
    assert supervisor.payments is not None
    made = await supervisor.payments.charge(
        "bot-000", 6003, "pp", offer_ref="plan:vip", description="VIP", amount_cents=4990
    )
    assert made.payment is not None and made.payment.transaction_id is not None
    payment, tid = made.payment, made.payment.transaction_id
    pushinpay.set_status(tid, "paid")
    # Confirming asks the API: 500, 503, then no answer at all; then it answers.
    for fault in ("500", "503", "timeout"):
        pushinpay.fail_next(fault, method="GET")
    body = json.dumps({"id": tid, "status": "paid", "value": 4990}).encode()
    async with aiohttp.ClientSession() as http:
        answer = await post(http, webhook_url(supervisor, "pp"), body, _json())
    assert answer == 200  # stored: the gateway is not asked to send it again
    await eventually(lambda: _is(session_factory, payment.id, "paid"), within=30)
    (row,) = await _rows(session_factory)
    # Three failures, then confirmed (a loaded machine may add a timeout of its own).
    assert row.attempts >= 4 and row.result == "moved"
    assert len(pushinpay.calls("GET", "/transactions/")) == row.attempts
    assert await events(session_factory, payment.id) == ["payment.paid"]
    retried = metric(
        supervisor, "botfleet_payment_events_processed_total", gateway="pp", result="retry"
    )
    assert retried == row.attempts - 1


async def test_i_paid_checks_the_gateway_for_the_buyer_only_and_within_a_quota(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(lose=1.0))  # no webhook will tell us
    data = payment_fleet(
        emulator_server.base_url, db_config, redis_config, reconcile_after_seconds=3600,
        checks_per_minute=2,
    )  # fmt: skip
    fleet = await start_fleet(data=data)
    service = fleet.supervisor.payments
    assert service is not None
    payment = await charge(fleet.supervisor, 6003)
    assert payment.transaction_id is not None
    pix.pay(payment.transaction_id)
    now = datetime.now(UTC)
    assert await service.check(payment.id, now, buyer=("bot-000", 9999)) is None  # not theirs
    assert await status_of(session_factory, payment.id) == "pending"
    checked = await service.check(payment.id, now, buyer=("bot-000", 6003))
    assert checked is not None and checked.status == "paid"
    assert await events(session_factory, payment.id) == ["payment.paid"]
    # Five more: a calendar minute holds at most two, so whichever minute boundary falls
    # between them, at least one is refused.
    limited = 0
    for _ in range(5):
        try:
            await service.check(payment.id, now, buyer=("bot-000", 6003))
        except TooManyChecks as exc:
            assert 0 < exc.retry_after <= 60
            limited += 1
    assert limited >= 1
    assert (
        metric(fleet.supervisor, "botfleet_payment_checks_total", gateway="sbx", result="limited")
        == limited
    )
    assert await events(session_factory, payment.id) == ["payment.paid"]  # still once


async def test_a_double_click_makes_one_charge_and_a_cool_down_holds_the_next(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    data = payment_fleet(emulator_server.base_url, db_config, redis_config, cooldown_seconds=60)
    fleet = await start_fleet(data=data)
    service = fleet.supervisor.payments
    assert service is not None

    async def buy(user: int, offer: str = "plan:mensal", cents: int = 1990) -> Opened:
        assert service is not None
        made = await service.charge(
            "bot-000", user, "sbx", offer_ref=offer, description="Plano", amount_cents=cents
        )
        return Opened(made.result)

    results = await asyncio.gather(*(buy(6004) for _ in range(10)))
    assert results.count(Opened.NEW) == 1
    assert set(results) <= {Opened.NEW, Opened.BUSY, Opened.REUSED}
    assert pix.counters.charges_created == 1
    assert await buy(6004) == Opened.REUSED  # the same offer again: shown again
    assert await buy(6004, "plan:anual", 9990) == Opened.COOLDOWN  # another one: too soon
    assert pix.counters.charges_created == 1
    assert await count(session_factory, Payment, Payment.telegram_user_id == 6004) == 1

    # The gateway fails twice while a charge is made: asked again, one charge results.
    pix.set_faults(PixFaults(fail_next=2))
    assert await buy(6005) == Opened.NEW
    assert pix.counters.charges_created == 2
    # It stays down: the buyer hears "later", the row is closed as failed, nothing dangles.
    pix.set_faults(PixFaults(error_rate=1.0))
    with pytest.raises(GatewayUnavailable):
        await buy(6006)
    async with session_factory() as session:
        failed = await session.scalar(select(Payment).where(Payment.telegram_user_id == 6006))
    assert failed is not None and failed.status == "failed" and failed.transaction_id is None
    assert metric(fleet.supervisor, "botfleet_charges_total", gateway="sbx", result="failed") == 1
    assert metric(fleet.supervisor, "botfleet_charges_total", gateway="sbx", result="new") == 2


async def _is(sessions: async_sessionmaker[AsyncSession], payment_id: int, status: str) -> bool:
    return await status_of(sessions, payment_id) == status


async def _rows(sessions: async_sessionmaker[AsyncSession]) -> list[PaymentEvent]:
    async with sessions() as session:
        return list(await session.scalars(select(PaymentEvent).order_by(PaymentEvent.id)))


async def _result(sessions: async_sessionmaker[AsyncSession], prefix: str) -> bool:
    return any((row.result or "").startswith(prefix) for row in await _rows(sessions))
