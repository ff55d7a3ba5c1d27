"""Payments end to end: a sandbox charge, its webhooks (honest, forged, repeated, late), its
reconciliation, on real PostgreSQL and Redis, the sandbox gateway served by the emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, FleetConfig, RedisConfig
from fleet.emulator import EmulatorServer
from fleet.emulator.pix import PixFaults, sign
from fleet.supervisor import Supervisor
from storage.models import OutboxEvent, Payment, PaymentEvent
from tests.e2e.conftest import StartFleet, metric, write_config
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

Calls = list[tuple[str, int]]


def subscribe(supervisor: Supervisor, calls: Calls, name: str = "test") -> None:
    async def subscriber(topic: str, payload: dict[str, Any]) -> None:
        calls.append((topic, int(payload["payment_id"])))

    assert supervisor.outbox is not None
    supervisor.outbox.subscribe("payment.", name, subscriber)


def signed(body: bytes, *, secret: str = SIGNING, at: int | None = None) -> dict[str, str]:
    moment = int(time.time()) if at is None else at
    return {
        "Content-Type": "application/json",
        "X-Sandbox-Signature": f"t={moment},v1={sign(secret, body, moment)}",
    }


async def test_a_paid_charge_is_confirmed_once_and_its_event_delivered_once(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(duplicate=3))  # every webhook three times, at once
    fleet = await start_fleet(data=payment_fleet(emulator_server.base_url, db_config, redis_config))
    calls: Calls = []
    subscribe(fleet.supervisor, calls)
    payment = await charge(fleet.supervisor, 5001)
    assert payment.transaction_id and payment.pix_code and payment.amount_cents == 1990
    pix.pay(payment.transaction_id)

    async def confirmed() -> bool:
        return await status_of(session_factory, payment.id) == "paid" and bool(calls)

    await eventually(confirmed)
    await eventually(lambda: _settled(session_factory))
    assert calls == [("payment.paid", payment.id)]
    assert await events(session_factory, payment.id) == ["payment.paid"]
    async with session_factory() as session:
        stored = await session.get(Payment, payment.id)
    at_gateway = pix.get(payment.transaction_id).paid_at
    assert stored is not None and stored.paid_at is not None and at_gateway is not None
    assert abs((stored.paid_at - at_gateway).total_seconds()) < 0.001  # its time, in ms
    supervisor = fleet.supervisor
    assert (
        metric(supervisor, "botfleet_payment_webhooks_total", gateway="sbx", result="stored") == 1
    )
    assert (
        metric(supervisor, "botfleet_payment_webhooks_total", gateway="sbx", result="duplicate")
        == 2
    )

    pix.refund(payment.transaction_id)  # a refund after payment: refunded, one event
    await eventually(lambda: _status_is(session_factory, payment.id, "refunded"))
    await eventually(lambda: _called(calls, 2))
    assert calls == [("payment.paid", payment.id), ("payment.refunded", payment.id)]


async def test_the_same_paid_webhook_twenty_times_to_two_instances_moves_it_once(
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    tmp_path: Any,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(lose=1.0))  # we deliver the webhooks ourselves
    supervisors: list[Supervisor] = []
    tasks: list[asyncio.Task[None]] = []
    calls: Calls = []
    try:
        for name in ("pay-a", "pay-b"):
            data = payment_fleet(emulator_server.base_url, db_config, redis_config, instance=name)
            emulator_server.emulator.add_bot(data["bots"][0]["token"])
            path = write_config(tmp_path / f"{name}.yaml", data)
            supervisor = Supervisor(FleetConfig.model_validate(data), config_path=path)
            tasks.append(asyncio.create_task(supervisor.run()))
            await asyncio.wait_for(supervisor.wait_ready(), 60)
            subscribe(supervisor, calls)  # the same subscriber on both, as code is
            supervisors.append(supervisor)
        payment = await charge(supervisors[0], 5002)
        assert payment.transaction_id is not None
        pix.pay(payment.transaction_id)
        [event] = [e for e in pix.events.values() if e.type == "charge.paid"]
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(
                *(
                    post(http, webhook_url(s), event.body, signed(event.body))
                    for s in supervisors
                    for _ in range(20)
                )
            )
        assert set(statuses) == {200}
        await eventually(lambda: _status_is(session_factory, payment.id, "paid"))
        await eventually(lambda: _called(calls, 1))
        await eventually(lambda: _settled(session_factory))
        assert await count(session_factory, PaymentEvent) == 1
        assert await events(session_factory, payment.id) == ["payment.paid"]
        assert calls == [("payment.paid", payment.id)]  # one delivery call downstream
        moved = sum(
            metric(s, "botfleet_payment_transitions_total", gateway="sbx", status="paid",
                   source="webhook")
            for s in supervisors
        )  # fmt: skip
        assert moved == 1
    finally:
        for supervisor in supervisors:
            supervisor.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_forged_and_odd_webhooks_change_nothing_and_are_counted(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(lose=1.0))
    fleet = await start_fleet(data=payment_fleet(emulator_server.base_url, db_config, redis_config))
    supervisor = fleet.supervisor
    payment = await charge(supervisor, 5003)
    assert payment.transaction_id is not None
    # A plausible body for the right transaction, never signed by the gateway.
    view = {
        **pix.charge(payment.transaction_id),
        "status": "paid",
        "paid_at": "2026-01-01T00:00:00Z",
    }
    body = orjson.dumps(  # the gateway's shape, our forgery
        {
            "event_id": "evt_forged",
            "type": "charge.paid",
            "created_at": view["created_at"],
            "charge": view,
        }
    )
    url = webhook_url(supervisor)
    async with aiohttp.ClientSession() as http:
        forged = await post(http, url, body, signed(body, secret="not-the-secret"))
        unsigned = await post(http, url, body, {"Content-Type": "application/json"})
        stale = await post(http, url, body, signed(body, at=int(time.time()) - 3600))
        wrong_secret = await post(http, url.rsplit("/", 1)[0] + "/nope", body, signed(body))
        unknown = await post(http, url.replace("/sbx/", "/other/"), body, signed(body))
        big = b"{" + b" " * 70_000 + b"}"
        too_large = await post(http, url, big, signed(big))
        text = await post(http, url, body, {**signed(body), "Content-Type": "image/png"})
        junk = b"not json at all"
        malformed = await post(http, url, junk, signed(junk))
    assert (forged, unsigned, stale) == (401, 401, 401)
    assert (wrong_secret, unknown, too_large, text, malformed) == (403, 404, 413, 415, 400)
    assert await count(session_factory, PaymentEvent) == 0

    # Authentic but lying or odd: another amount, a refund before any payment.
    pix.emit(payment.transaction_id, "charge.paid", {"status": "paid", "amount_cents": 1})
    pix.emit(payment.transaction_id, "charge.paid", {"status": "paid", "currency": "USD"})
    pix.emit(payment.transaction_id, "charge.refunded", {"status": "refunded"})
    stranger = orjson.dumps(  # signed, about a transaction that is none of ours
        {"event_id": "evt_stranger", "type": "charge.paid", "created_at": view["created_at"],
         "charge": {**view, "id": "sbx_000000000000000000000000"}}
    )  # fmt: skip
    bodies = [event.body for event in pix.events.values()] + [stranger]
    for authentic in bodies:
        async with aiohttp.ClientSession() as http:
            assert await post(http, url, authentic, signed(authentic)) == 200
    # The refund's claim is asked about again later (the gateway says pending): looked at
    # once is enough here.
    await eventually(lambda: _looked_at(session_factory))
    async with session_factory() as session:
        results = set((await session.scalars(select(PaymentEvent.result))).all())
    assert "retry: the gateway says pending, not refunded" in results
    assert await status_of(session_factory, payment.id) == "pending"
    assert await events(session_factory, payment.id) == []
    reasons = {
        reason: metric(
            supervisor, "botfleet_payment_webhook_rejections_total", gateway=gateway, reason=reason
        )
        for gateway, reason in [
            ("sbx", "signature"), ("sbx", "stale"), ("sbx", "url_secret"),
            ("unknown", "unknown_gateway"), ("sbx", "too_large"), ("sbx", "content_type"),
            ("sbx", "malformed"),
        ]
    }  # fmt: skip
    assert reasons == {
        "signature": 2, "stale": 1, "url_secret": 1, "unknown_gateway": 1, "too_large": 1,
        "content_type": 1, "malformed": 1,
    }  # fmt: skip
    assert metric(supervisor, "botfleet_payment_amount_mismatches_total", gateway="sbx") == 2
    processed = {
        result: metric(
            supervisor, "botfleet_payment_events_processed_total", gateway="sbx", result=result
        )
        for result in ("mismatch", "unknown")
    }
    assert processed == {"mismatch": 2, "unknown": 1}


async def test_lost_webhooks_are_made_up_by_reconciliation_even_after_a_gateway_outage(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(lose=1.0, error_rate=1.0))  # no webhooks, and the API down
    data = payment_fleet(
        emulator_server.base_url, db_config, redis_config, reconcile_after_seconds=1
    )
    fleet = await start_fleet(data=data)
    pix.set_faults(PixFaults(lose=1.0))  # up for the charge to be made
    payment = await charge(fleet.supervisor, 5004)
    assert payment.transaction_id is not None
    pix.set_faults(PixFaults(lose=1.0, error_rate=1.0))
    pix.pay(payment.transaction_id)  # paid at the gateway; nobody tells us
    await eventually(lambda: _failed_calls(pix, 2))  # reconciliation tried, the gateway was down
    assert await status_of(session_factory, payment.id) == "pending"
    pix.set_faults(PixFaults(lose=1.0))  # the gateway is back
    await eventually(lambda: _status_is(session_factory, payment.id, "paid"))
    assert await events(session_factory, payment.id) == ["payment.paid"]
    assert (
        metric(fleet.supervisor, "botfleet_payment_transitions_total", gateway="sbx",
               status="paid", source="reconcile")
        == 1
    )  # fmt: skip


async def test_a_late_pending_never_undoes_paid_and_reordered_events_settle_forward(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    pix = emulator_server.emulator.pix
    pix.set_faults(PixFaults(reorder=2))  # paid and refunded arrive newest first
    fleet = await start_fleet(data=payment_fleet(emulator_server.base_url, db_config, redis_config))
    calls: Calls = []
    subscribe(fleet.supervisor, calls)
    payment = await charge(fleet.supervisor, 5005)
    assert payment.transaction_id is not None
    pix.pay(payment.transaction_id)
    pix.refund(payment.transaction_id)
    pix.emit(payment.transaction_id, "charge.pending", {"status": "pending"})  # late, odd
    pix.release()
    await eventually(lambda: _status_is(session_factory, payment.id, "refunded"))
    await eventually(lambda: _called(calls, 2))
    await eventually(lambda: _settled(session_factory))
    assert await status_of(session_factory, payment.id) == "refunded"
    assert sorted(t for t, _ in calls) == ["payment.paid", "payment.refunded"]


async def _status_is(
    sessions: async_sessionmaker[AsyncSession], payment_id: int, status: str
) -> bool:
    return await status_of(sessions, payment_id) == status


async def _called(calls: Calls, n: int) -> bool:
    return len(calls) >= n


async def _settled(sessions: async_sessionmaker[AsyncSession]) -> bool:
    return await count(sessions, PaymentEvent, PaymentEvent.processed_at.is_(None)) == 0


async def _looked_at(sessions: async_sessionmaker[AsyncSession]) -> bool:
    return await count(sessions, PaymentEvent, PaymentEvent.result.is_(None)) == 0


async def _failed_calls(pix: Any, n: int) -> bool:
    statuses = pix.counters.to_json()["api_statuses"]
    return sum(int(count) for code, count in statuses.items() if code.startswith("5")) >= n


async def test_a_failing_subscriber_is_called_again_and_the_others_are_not(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    fleet = await start_fleet(data=payment_fleet(emulator_server.base_url, db_config, redis_config))
    steady: Calls = []
    subscribe(fleet.supervisor, steady, "steady")
    flaky: Calls = []

    async def fails_once(topic: str, payload: dict[str, Any]) -> None:
        flaky.append((topic, int(payload["payment_id"])))
        if len(flaky) == 1:
            raise RuntimeError("the access service is down")

    assert fleet.supervisor.outbox is not None
    fleet.supervisor.outbox.subscribe("payment.paid", "flaky", fails_once)
    payment = await charge(fleet.supervisor, 5006)
    assert payment.transaction_id is not None
    emulator_server.emulator.pix.pay(payment.transaction_id)
    supervisor = fleet.supervisor

    async def backlog_is(n: int) -> bool:
        return metric(supervisor, "botfleet_outbox_backlog") == n

    await eventually(lambda: backlog_is(1))  # owed to flaky, shown on /metrics
    await eventually(lambda: _called(flaky, 2))  # after its back-off
    await eventually(lambda: backlog_is(0))
    await eventually(lambda: _delivered(session_factory))
    assert steady == [("payment.paid", payment.id)]  # not called again for flaky's sake
    assert flaky == [("payment.paid", payment.id)] * 2
    deliveries = {
        (name, result): metric(
            fleet.supervisor, "botfleet_outbox_deliveries_total", subscriber=name, result=result
        )
        for name in ("steady", "flaky")
        for result in ("ok", "failed")
    }
    assert deliveries == {
        ("steady", "ok"): 1, ("steady", "failed"): 0, ("flaky", "ok"): 1, ("flaky", "failed"): 1
    }  # fmt: skip


async def _delivered(sessions: async_sessionmaker[AsyncSession]) -> bool:
    return await count(sessions, OutboxEvent, OutboxEvent.delivered_at.is_(None)) == 0
