"""The sandbox PIX gateway alone: charges over HTTP, the simulated payer, signed webhooks
received by a real local server, and every webhook and API fault."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web

from fleet.emulator import (
    EmulatorClient,
    EmulatorControlError,
    EmulatorServer,
    PixError,
    PixFaults,
    PixGateway,
    TelegramEmulator,
)
from tests.services import free_port

T = TypeVar("T")
SECRET = "sandbox-signing-secret"  # the documented default


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data = orjson.loads(self.body)
        assert isinstance(data, dict)
        return data

    @property
    def type(self) -> str:
        return str(self.json["type"])

    @property
    def event_id(self) -> str:
        return str(self.json["event_id"])


class Receiver:
    """A webhook endpoint on a real port: records every POST, answers the queued statuses
    (then 200), or holds every answer while ``hold`` is set."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        self.hold = False
        self._release = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.received.append(Received(headers, await request.read()))
        self._changed.set()
        self._changed = asyncio.Event()
        if self.hold:
            await self._release.wait()
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="ok")

    def release(self) -> None:
        """Answer the held requests (and every later one at once)."""
        self.hold = False
        self._release.set()

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 10.0) -> T:
        async with asyncio.timeout(within):
            while True:
                result = predicate()
                if result:
                    return result
                await self._changed.wait()

    async def count(self, n: int, within: float = 10.0) -> list[Received]:
        await self.wait_for(lambda: len(self.received) >= n, within)
        return self.received


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


@pytest.fixture
def pix(emulator: TelegramEmulator) -> PixGateway:
    return emulator.pix


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def charge_body(
    url: str | None = None, amount: int = 1990, expires_in: float = 1800, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reference": "pay-1",
        "amount_cents": amount,
        "currency": "BRL",
        "description": "Plano VIP",
        "expires_at": (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat(),
    }
    if url is not None:
        body["notification_url"] = url
    return body | extra


async def post_charge(
    http: aiohttp.ClientSession,
    server: EmulatorServer,
    body: Any,
    key: str | None = "key-1",
    **headers: str,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    sent = dict(headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    async with http.post(
        f"{server.base_url}/pix/v1/charges", data=orjson.dumps(body), headers=sent
    ) as response:
        answer = orjson.loads(await response.read())
        return response.status, answer, dict(response.headers)


async def create(
    http: aiohttp.ClientSession, server: EmulatorServer, url: str | None = None, **kw: Any
) -> dict[str, Any]:
    body = charge_body(url, **kw)
    status, answer, _ = await post_charge(http, server, body, key=secrets.token_hex(8))
    assert status == 201, answer
    return answer


async def get_charge(
    http: aiohttp.ClientSession, server: EmulatorServer, charge_id: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{server.base_url}/pix/v1/charges/{charge_id}") as response:
        return response.status, orjson.loads(await response.read())


def verify(received: Received, secret: str = SECRET) -> int:
    """The signature checked independently of both the emulator and the adapter."""
    header = received.headers["x-sandbox-signature"]
    parts = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), "bad signature"
    return timestamp


def signature_valid(received: Received, secret: str) -> bool:
    try:
        verify(received, secret)
    except AssertionError:
        return False
    return True


# -- charges ------------------------------------------------------------------------------------


async def test_create_and_get_a_charge(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, charge, _ = await post_charge(http, emulator_server, charge_body(), key="a")
    assert status == 201
    assert charge["id"].startswith("sbx_")
    assert charge["status"] == "pending"
    assert (charge["amount_cents"], charge["currency"]) == (1990, "BRL")
    assert charge["paid_at"] is None and charge["reference"] == "pay-1"
    # A BR Code with the amount in reais (tag 54) and a CRC (tag 63) at the end.
    assert charge["pix_code"].startswith("000201") and "540519.90" in charge["pix_code"]
    assert charge["pix_code"][-8:-4] == "6304"
    assert base64.b64decode(charge["qr_png_base64"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert datetime.fromisoformat(charge["expires_at"]) > datetime.now(UTC)

    status, fetched = await get_charge(http, emulator_server, charge["id"])
    assert status == 200
    assert fetched == {k: v for k, v in charge.items() if k not in ("pix_code", "qr_png_base64")}

    status, missing = await get_charge(http, emulator_server, "sbx_nope")
    assert status == 404 and missing["error"] == "not_found"


async def test_an_idempotency_key_makes_one_charge_and_refuses_another_body(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    body = charge_body()
    status, first, headers = await post_charge(http, emulator_server, body, key="same")
    assert status == 201 and "Idempotent-Replayed" not in headers
    again = await asyncio.gather(
        *(post_charge(http, emulator_server, body, key="same") for _ in range(5))
    )
    assert {answer["id"] for _, answer, _ in again} == {first["id"]}
    assert all(h.get("Idempotent-Replayed") == "true" for _, _, h in again)

    status, conflict, _ = await post_charge(
        http, emulator_server, body | {"amount_cents": 1989}, key="same"
    )
    assert status == 409 and conflict["error"] == "idempotency_conflict"
    status, _, _ = await post_charge(http, emulator_server, body, key=None)
    assert status == 400
    assert [c["id"] for c in pix.list_charges()] == [first["id"]]


@pytest.mark.parametrize(
    "change",
    [
        {"amount_cents": 0},
        {"amount_cents": 19.9},
        {"amount_cents": "1990"},
        {"amount_cents": True},
        {"currency": "USD"},
        {"reference": ""},
        {"expires_at": "2030-01-01T00:00:00"},  # no offset
        {"expires_at": (datetime.now(UTC) - timedelta(seconds=5)).isoformat()},
        {"expires_at": "tomorrow"},
        {"notification_url": "ftp://example.com/hook"},
    ],
)
async def test_invalid_charges_are_refused_and_create_nothing(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    change: dict[str, Any],
) -> None:
    status, answer, _ = await post_charge(http, emulator_server, charge_body() | change)
    assert status == 400 and answer["error"] == "invalid_request", answer
    assert pix.list_charges() == []


async def test_a_configured_access_token_is_required(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    pix.configure(access_token="tok-123")
    status, _, _ = await post_charge(http, emulator_server, charge_body(), key="a")
    assert status == 401
    status, _, _ = await post_charge(
        http, emulator_server, charge_body(), key="a", Authorization="Bearer wrong"
    )
    assert status == 401
    status, _, _ = await post_charge(
        http, emulator_server, charge_body(), key="a", Authorization="Bearer tok-123"
    )
    assert status == 201
    assert "tok-123" not in orjson.dumps(pix.configuration()).decode()


# -- the payer and webhooks ----------------------------------------------------------------------


async def test_payment_and_refund_send_signed_webhooks(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    paid = pix.pay(charge["id"])
    (hook,) = await receiver.count(1)
    assert abs(verify(hook) - time.time()) < 60
    assert hook.headers["content-type"] == "application/json"
    body = hook.json
    assert body["type"] == "charge.paid" and body["event_id"].startswith("evt_")
    assert hook.headers["x-sandbox-event-id"] == body["event_id"]
    assert body["charge"] == paid
    assert body["charge"]["status"] == "paid" and body["charge"]["paid_at"] is not None
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    status, fetched = await get_charge(http, emulator_server, charge["id"])
    assert status == 200 and fetched == paid

    with pytest.raises(PixError) as twice:
        pix.pay(charge["id"])
    assert twice.value.status == 409

    pix.refund(charge["id"])
    hooks = await receiver.count(2)
    verify(hooks[1])
    assert hooks[1].type == "charge.refunded"
    assert hooks[1].json["charge"]["status"] == "refunded"
    assert hooks[1].event_id != hooks[0].event_id
    await pix.wait_for(lambda: len([d for d in pix.deliveries if d.ok]) == 2)
    assert sorted((d.type, d.attempt, d.status) for d in pix.deliveries) == [
        ("charge.paid", 1, 200),
        ("charge.refunded", 1, 200),
    ]


async def test_refund_before_payment_is_refused(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    charge = await create(http, emulator_server)
    with pytest.raises(PixError) as refused:
        pix.refund(charge["id"])
    assert refused.value.status == 409
    assert pix.charge(charge["id"])["status"] == "pending"
    assert pix.events == {}


async def test_control_api_drives_the_gateway(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    async with EmulatorClient(emulator_server.base_url) as control:
        with pytest.raises(EmulatorControlError) as refused:
            await control.pix_refund(id=charge["id"])
        assert refused.value.status == 409
        with pytest.raises(EmulatorControlError) as unknown:
            await control.pix_pay(id="sbx_missing")
        assert unknown.value.status == 404
        assert (await control.pix_pay(id=charge["id"]))["status"] == "paid"
        (hook,) = await receiver.count(1)
        assert (await control.pix_get(id=charge["id"]))["status"] == "paid"
        assert [c["id"] for c in await control.pix_charges()] == [charge["id"]]
        events = await control.pix_events(charge_id=charge["id"])
        assert [e["event_id"] for e in events] == [hook.event_id]

        await control.pix_redeliver(event_id=hook.event_id)
        second = (await receiver.count(2))[1]
        assert second.body == hook.body
        await pix.wait_for(lambda: len([d for d in pix.deliveries if d.ok]) == 2)
        log = await control.pix_webhooks(event_id=hook.event_id)
        assert sorted((d["attempt"], d["redelivery"], d["status"]) for d in log) == [
            (1, False, 200),
            (1, True, 200),
        ]
        counters = await control.pix_counters()
        assert counters["delivered"] == 2 and counters["charges_created"] == 1

        configured = await control.pix_configure(secret="rotated-secret", attempts=2)
        assert (
            configured["attempts"] == 2
            and "rotated-secret" not in orjson.dumps(configured).decode()
        )
        faults = await control.pix_faults(duplicate=2, lose=0.0)
        assert faults["duplicate"] == 2
        with pytest.raises(EmulatorControlError):
            await control.pix_faults(nonsense=1)
        assert (await control.pix_faults())["duplicate"] == 1
        assert (await control.pix_refund(id=charge["id"]))["status"] == "refunded"
        third = (await receiver.count(3))[2]
        assert third.type == "charge.refunded" and signature_valid(third, "rotated-secret")
        assert not signature_valid(third, SECRET)


async def test_a_charge_expires_on_its_own_and_then_cannot_be_paid(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url, expires_in=2.0)
    # Nobody reads it: the gateway's own clock sends the webhook at expiry.
    (hook,) = await receiver.count(1, within=15)
    verify(hook)
    assert hook.type == "charge.expired" and hook.json["charge"]["status"] == "expired"
    _, fetched = await get_charge(http, emulator_server, charge["id"])
    assert fetched["status"] == "expired"
    assert datetime.now(UTC) >= datetime.fromisoformat(charge["expires_at"])
    with pytest.raises(PixError) as late:
        pix.pay(charge["id"])
    assert late.value.status == 409
    assert len(pix.events) == 1


async def test_expire_and_cancel_now(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    first = await create(http, emulator_server, receiver.url, amount=100)
    second = await create(http, emulator_server, receiver.url, amount=200)
    assert pix.expire(first["id"])["status"] == "expired"
    assert pix.cancel(second["id"])["status"] == "cancelled"
    hooks = await receiver.count(2)
    assert sorted(h.type for h in hooks) == ["charge.cancelled", "charge.expired"]
    for charge_id in (first["id"], second["id"]):
        with pytest.raises(PixError):
            pix.pay(charge_id)
        with pytest.raises(PixError):
            pix.refund(charge_id)


async def test_odd_events_are_signed_without_changing_the_charge(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    pix.emit(charge["id"], "charge.refunded", {"status": "refunded", "amount_cents": 1})
    (hook,) = await receiver.count(1)
    verify(hook)
    assert hook.json["charge"]["status"] == "refunded"
    assert hook.json["charge"]["amount_cents"] == 1
    assert pix.charge(charge["id"])["status"] == "pending"


async def test_the_default_webhook_url_serves_charges_without_one(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    silent = await create(http, emulator_server)
    pix.pay(silent["id"])
    assert [(d.attempt, d.error) for d in pix.deliveries] == [(0, "no_url")]
    pix.configure(webhook_url=receiver.url)
    later = await create(http, emulator_server, amount=500)
    pix.pay(later["id"])
    (hook,) = await receiver.count(1)
    assert hook.json["charge"]["id"] == later["id"]


# -- webhook faults ------------------------------------------------------------------------------


async def test_a_lost_webhook_is_never_sent_until_redelivered(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    pix.set_faults(PixFaults(lose=1.0))
    pix.pay(charge["id"])
    (lost,) = pix.deliveries
    assert (lost.attempt, lost.error, lost.status) == (0, "lost", None)
    assert pix.busy == 0 and pix.counters.lost == 1  # nothing was even scheduled
    pix.clear_faults()
    pix.redeliver(lost.event_id)
    (hook,) = await receiver.count(1)
    verify(hook)
    assert hook.event_id == lost.event_id and hook.type == "charge.paid"
    await pix.wait_for(lambda: pix.busy == 0)
    assert len(receiver.received) == 1


async def test_a_delayed_webhook_comes_after_the_delay(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    pix.set_faults(PixFaults(delay=0.5))
    loop = asyncio.get_running_loop()
    started = loop.time()
    pix.pay(charge["id"])
    assert pix.busy == 1 and receiver.received == []
    await receiver.count(1)
    # A lower bound only: it cannot have arrived before the injected delay.
    assert loop.time() - started >= 0.5


async def test_duplicated_webhooks_arrive_concurrently_with_one_event_id(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    pix.set_faults(PixFaults(duplicate=4))
    receiver.hold = True  # all four copies must be in flight at once to be received
    pix.pay(charge["id"])
    hooks = await receiver.count(4)
    receiver.release()
    assert len({h.event_id for h in hooks}) == 1 and len({h.body for h in hooks}) == 1
    for hook in hooks:
        verify(hook)
    await pix.wait_for(lambda: len([d for d in pix.deliveries if d.ok]) == 4)
    assert sorted(d.copy for d in pix.deliveries) == [0, 1, 2, 3]


async def test_reordered_webhooks_arrive_newest_first(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    pix.set_faults(PixFaults(reorder=2))
    pix.pay(charge["id"])
    assert pix.held == 1 and pix.busy == 0  # held, not sent
    pix.refund(charge["id"])
    hooks = await receiver.count(2)
    # The core sees "refunded" before "paid": it must not undo or lose either.
    assert [h.type for h in hooks] == ["charge.refunded", "charge.paid"]
    assert pix.held == 0


async def test_released_events_go_newest_first(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charges = [await create(http, emulator_server, receiver.url, amount=n) for n in (1, 2, 3)]
    pix.set_faults(PixFaults(reorder=10))
    for charge in charges:
        pix.pay(charge["id"])
    assert pix.held == 3
    assert pix.release() == 3
    hooks = await receiver.count(3)
    assert [h.json["charge"]["amount_cents"] for h in hooks] == [3, 2, 1]


async def test_redelivery_sends_the_same_event_signed_afresh(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    pix.pay(charge["id"])
    (first,) = await receiver.count(1)
    pix.redeliver(first.event_id)
    second = (await receiver.count(2))[1]
    assert second.body == first.body
    verify(second)
    with pytest.raises(PixError) as unknown:
        pix.redeliver("evt_unknown")
    assert unknown.value.status == 404


async def test_a_failing_receiver_is_retried_until_it_answers_2xx(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    charge = await create(http, emulator_server, receiver.url)
    receiver.answers = [500, 503]
    pix.pay(charge["id"])
    hooks = await receiver.count(3)
    assert len({h.event_id for h in hooks}) == 1
    await pix.wait_for(lambda: any(d.ok for d in pix.deliveries))
    assert [(d.attempt, d.status) for d in pix.deliveries] == [(1, 500), (2, 503), (3, 200)]
    assert pix.counters.given_up == 0


async def test_retries_are_bounded(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    pix.configure(attempts=3)
    charge = await create(http, emulator_server, receiver.url)
    receiver.answers = [500] * 10
    pix.pay(charge["id"])
    await pix.wait_for(lambda: pix.counters.given_up == 1)
    assert [d.attempt for d in pix.deliveries] == [1, 2, 3]
    assert len(receiver.received) == 3 and pix.busy == 0


async def test_connection_errors_are_retried_and_recorded(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    pix.configure(attempts=2)
    charge = await create(http, emulator_server, f"http://127.0.0.1:{free_port()}/hook")
    pix.pay(charge["id"])
    await pix.wait_for(lambda: pix.counters.given_up == 1)
    assert [(d.attempt, d.status) for d in pix.deliveries] == [(1, None), (2, None)]
    assert all(d.error for d in pix.deliveries)


async def test_stopping_the_server_cancels_deliveries_and_holds_new_ones(
    emulator_server: EmulatorServer,
    http: aiohttp.ClientSession,
    pix: PixGateway,
    receiver: Receiver,
) -> None:
    first = await create(http, emulator_server, receiver.url, amount=100)
    second = await create(http, emulator_server, receiver.url, amount=200)
    receiver.hold = True  # the delivery stays in flight
    pix.pay(first["id"])
    await receiver.count(1)
    assert pix.busy == 1
    await emulator_server.stop()
    assert pix.busy == 0
    assert [(d.error, d.status) for d in pix.deliveries] == [("cancelled", None)]
    receiver.release()
    pix.pay(second["id"])  # the gateway is down: its webhook waits for it
    assert pix.busy == 0
    await emulator_server.start()
    hooks = await receiver.count(2)
    assert hooks[1].json["charge"]["id"] == second["id"]


# -- API faults -----------------------------------------------------------------------------------


async def test_the_next_calls_fail_then_the_api_recovers(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    pix.set_faults(PixFaults(fail_next=2))
    statuses = [(await post_charge(http, emulator_server, charge_body(), key="k"))[0]]
    statuses.append((await get_charge(http, emulator_server, "sbx_x"))[0])
    statuses.append((await post_charge(http, emulator_server, charge_body(), key="k"))[0])
    assert statuses == [503, 503, 201]
    assert len(pix.list_charges()) == 1


async def test_error_rate_answers_5xx_without_running_the_call(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    pix.set_faults(PixFaults(error_rate=1.0))
    for _ in range(5):
        status, _, _ = await post_charge(http, emulator_server, charge_body(), key="k")
        assert status in (500, 502, 503)
    assert pix.list_charges() == []
    pix.clear_faults()
    assert (await post_charge(http, emulator_server, charge_body(), key="k"))[0] == 201


async def test_dropped_connections_before_and_after_the_call(
    emulator_server: EmulatorServer, http: aiohttp.ClientSession, pix: PixGateway
) -> None:
    body = charge_body()  # one body: a retry sends the same bytes
    pix.set_faults(PixFaults(drop_rate=1.0))
    with pytest.raises(aiohttp.ClientError):
        await post_charge(http, emulator_server, body, key="k")
    assert pix.list_charges() == []

    pix.set_faults(PixFaults(drop_after_rate=1.0))
    with pytest.raises(aiohttp.ClientError):
        await post_charge(http, emulator_server, body, key="k")
    (made,) = pix.list_charges()  # the caller saw an error, yet the charge exists
    pix.clear_faults()
    status, again, _ = await post_charge(http, emulator_server, body, key="k")
    assert status == 201 and again["id"] == made["id"]  # why a retry keeps its key
    assert len(pix.list_charges()) == 1


async def test_latency_outlasts_a_client_timeout(
    emulator_server: EmulatorServer, pix: PixGateway
) -> None:
    pix.set_faults(PixFaults(latency=30.0))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as slow:
        with pytest.raises(TimeoutError):
            await get_charge(slow, emulator_server, "sbx_x")
    pix.clear_faults()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as fast:
        assert (await get_charge(fast, emulator_server, "sbx_x"))[0] == 404


def test_fault_plans_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PixFaults.from_json({"loose": 1})
    with pytest.raises(ValueError):
        PixFaults.from_json({"lose": 2})
    with pytest.raises(ValueError):
        PixFaults.from_json({"duplicate": 1.5})
    assert PixFaults.from_json({"duplicate": 3, "delay": 1}) == PixFaults(duplicate=3, delay=1.0)
