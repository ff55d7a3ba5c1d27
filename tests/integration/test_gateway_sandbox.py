"""The sandbox adapter (``fleet.payments.sandbox``) against a running emulator over real HTTP:
charges, statuses, every error class, and webhook authentication on real signed deliveries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from fleet.config import GatewayConfig
from fleet.emulator import EmulatorServer, EmulatorSettings, PixFaults, PixGateway
from fleet.payments.base import (
    ChargeNotFound,
    ChargeRequest,
    GatewayRefused,
    GatewayUnavailable,
    PaymentStatus,
    WebhookRejected,
    WebhookRequest,
)
from fleet.payments.sandbox import SandboxGateway
from tests.services import free_port

SIGNING_SECRET = "whsec-sandbox-test-0123456789"
ACCESS_TOKEN = "sandbox-access-token-abcdef"


class Hooks:
    """A webhook endpoint on a real port: keeps each request as the payment route sees it."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(
            WebhookRequest(headers, dict(request.query), await request.read(), request.content_type)
        )
        self._arrived.set()
        self._arrived = asyncio.Event()
        return web.json_response({"ok": True})

    async def count(self, n: int, within: float = 10.0) -> list[WebhookRequest]:
        async with asyncio.timeout(within):
            while len(self.requests) < n:
                await self._arrived.wait()
        return self.requests


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    settings = EmulatorSettings(seed=5, webhook_backoff_initial=0.05, webhook_backoff_max=0.2)
    async with EmulatorServer(settings=settings) as running:
        yield running


@pytest.fixture
def pix(server: EmulatorServer) -> PixGateway:
    return server.emulator.pix


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as shared:
        yield shared


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    endpoint = Hooks()
    await endpoint.start()
    yield endpoint
    await endpoint.stop()


def make_gateway(session: aiohttp.ClientSession, base_url: str, **config: Any) -> SandboxGateway:
    values: dict[str, Any] = {"id": "demo", "kind": "sandbox", "api_base": base_url} | config
    return SandboxGateway(GatewayConfig.model_validate(values), session)


@pytest.fixture
def gateway(server: EmulatorServer, session: aiohttp.ClientSession) -> SandboxGateway:
    return make_gateway(session, server.base_url, timeout=2.0)


def charge_request(
    url: str | None = None, amount: int = 1990, key: str | None = None
) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key or str(uuid.uuid4()),
        reference=str(uuid.uuid4()),
        amount_cents=amount,
        currency="BRL",
        description="Plano VIP",
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
        notification_url=url,
        payer_ref="u-7f3a",
    )


def signed(body: bytes, secret: str, timestamp: int | None = None) -> WebhookRequest:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return WebhookRequest(
        {"x-sandbox-signature": f"t={t},v1={mac}", "content-type": "application/json"},
        {},
        body,
        "application/json",
    )


def rejected(gateway: SandboxGateway, webhook: WebhookRequest) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        gateway.authenticate(webhook)
    return caught.value


# -- the API --------------------------------------------------------------------------------------


async def test_create_fetch_and_every_status(
    gateway: SandboxGateway, pix: PixGateway, session: aiohttp.ClientSession
) -> None:
    request = charge_request()
    charge = await gateway.create_charge(request)
    assert charge.transaction_id.startswith("sbx_")
    assert charge.status is PaymentStatus.PENDING
    assert (charge.amount_cents, charge.currency) == (1990, "BRL")
    assert "19.90" in charge.pix_code and charge.qr_png_base64
    assert charge.expires_at is not None
    assert abs(charge.expires_at - request.expires_at) < timedelta(milliseconds=1)
    assert pix.charges[charge.transaction_id].reference == request.reference

    # A retry of the same logical charge (same key, same request) creates nothing new.
    again = await gateway.create_charge(request)
    assert again.transaction_id == charge.transaction_id and len(pix.charges) == 1

    state = await gateway.fetch(charge.transaction_id)
    assert (state.status, state.raw_status, state.paid_at) == (
        PaymentStatus.PENDING,
        "pending",
        None,
    )
    pix.pay(charge.transaction_id)
    state = await gateway.fetch(charge.transaction_id)
    assert state.status is PaymentStatus.PAID and state.paid_at is not None
    assert (state.amount_cents, state.currency) == (1990, "BRL")
    pix.refund(charge.transaction_id)
    assert (await gateway.fetch(charge.transaction_id)).status is PaymentStatus.REFUNDED

    expiring = await gateway.create_charge(charge_request(amount=500))
    pix.expire(expiring.transaction_id)
    assert (await gateway.fetch(expiring.transaction_id)).status is PaymentStatus.EXPIRED
    cancelled = await gateway.create_charge(charge_request(amount=600))
    pix.cancel(cancelled.transaction_id)
    assert (await gateway.fetch(cancelled.transaction_id)).status is PaymentStatus.CANCELLED

    await gateway.aclose()
    assert not session.closed  # the shared session is not the adapter's to close
    assert gateway.id == "demo" and gateway.notice is None


async def test_unknown_charges_and_refusals(gateway: SandboxGateway, pix: PixGateway) -> None:
    with pytest.raises(ChargeNotFound):
        await gateway.fetch("sbx_does_not_exist")
    with pytest.raises(ChargeNotFound):
        await gateway.fetch("../../_emulator/pix_charges")  # quoted: stays one path segment

    request = charge_request()
    await gateway.create_charge(request)
    with pytest.raises(GatewayRefused, match="409"):  # same key, another amount
        await gateway.create_charge(charge_request(amount=1989, key=request.idempotency_key))
    with pytest.raises(GatewayRefused, match="400"):
        await gateway.create_charge(charge_request(amount=0))
    assert len(pix.charges) == 1


async def test_credentials_are_sent_and_a_wrong_one_is_refused(
    server: EmulatorServer, session: aiohttp.ClientSession, pix: PixGateway
) -> None:
    pix.configure(access_token=ACCESS_TOKEN)
    good = make_gateway(session, server.base_url, access_token=ACCESS_TOKEN)
    made = await good.create_charge(charge_request())
    assert (await good.fetch(made.transaction_id)).status is PaymentStatus.PENDING

    wrong = make_gateway(session, server.base_url, access_token="not-the-token-123")
    with pytest.raises(GatewayRefused, match="401") as caught:
        await wrong.fetch(made.transaction_id)
    assert "not-the-token-123" not in str(caught.value)
    assert ACCESS_TOKEN not in str(caught.value)


async def test_5xx_timeouts_and_a_dead_server_are_unavailable(
    server: EmulatorServer,
    session: aiohttp.ClientSession,
    gateway: SandboxGateway,
    pix: PixGateway,
) -> None:
    made = await gateway.create_charge(charge_request())

    pix.set_faults(PixFaults(fail_next=1))
    with pytest.raises(GatewayUnavailable, match="503"):
        await gateway.fetch(made.transaction_id)
    pix.set_faults(PixFaults(error_rate=1.0))
    with pytest.raises(GatewayUnavailable):
        await gateway.create_charge(charge_request())
    pix.set_faults(PixFaults(drop_rate=1.0))
    with pytest.raises(GatewayUnavailable):
        await gateway.fetch(made.transaction_id)

    pix.set_faults(PixFaults(latency=30.0))
    hasty = make_gateway(session, server.base_url, timeout=0.3)
    with pytest.raises(GatewayUnavailable):
        await hasty.fetch(made.transaction_id)
    pix.clear_faults()
    assert (await gateway.fetch(made.transaction_id)).status is PaymentStatus.PENDING

    nowhere = make_gateway(session, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GatewayUnavailable):
        await nowhere.create_charge(charge_request())


async def test_a_lost_answer_is_retried_with_the_same_key(
    gateway: SandboxGateway, pix: PixGateway
) -> None:
    request = charge_request()
    pix.set_faults(PixFaults(drop_after_rate=1.0))
    with pytest.raises(GatewayUnavailable):
        await gateway.create_charge(request)  # made at the gateway, answer lost
    pix.clear_faults()
    charge = await gateway.create_charge(request)
    assert list(pix.charges) == [charge.transaction_id]


async def test_no_api_base_is_refused_not_retried(session: aiohttp.ClientSession) -> None:
    gateway = SandboxGateway(GatewayConfig.model_validate({"id": "d", "kind": "sandbox"}), session)
    with pytest.raises(GatewayRefused, match="api_base"):
        await gateway.fetch("sbx_x")


# -- webhooks ------------------------------------------------------------------------------------


async def test_a_real_webhook_authenticates_as_a_trusted_notice(
    gateway: SandboxGateway, pix: PixGateway, hooks: Hooks
) -> None:
    charge = await gateway.create_charge(charge_request(hooks.url))
    pix.pay(charge.transaction_id)
    pix.refund(charge.transaction_id)
    paid, refunded = sorted(
        await hooks.count(2), key=lambda w: orjson.loads(w.body)["type"] != "charge.paid"
    )
    notice = gateway.authenticate(paid)
    assert notice.transaction_id == charge.transaction_id
    assert notice.claimed_status is PaymentStatus.PAID and notice.trusted
    assert (notice.amount_cents, notice.currency) == (1990, "BRL")
    assert notice.event_id == orjson.loads(paid.body)["event_id"]
    assert notice.details["type"] == "charge.paid"
    again = gateway.authenticate(refunded)
    assert again.claimed_status is PaymentStatus.REFUNDED
    assert again.event_id != notice.event_id


async def test_the_configured_secret_is_the_one_that_verifies(
    server: EmulatorServer,
    session: aiohttp.ClientSession,
    pix: PixGateway,
    hooks: Hooks,
) -> None:
    pix.configure(secret=SIGNING_SECRET)
    ours = make_gateway(session, server.base_url, webhook_secret=SIGNING_SECRET)
    default = make_gateway(session, server.base_url)
    charge = await ours.create_charge(charge_request(hooks.url))
    pix.expire(charge.transaction_id)
    (webhook,) = await hooks.count(1)
    assert ours.authenticate(webhook).claimed_status is PaymentStatus.EXPIRED
    error = rejected(default, webhook)
    assert error.reason == "signature"
    assert SIGNING_SECRET not in str(error) and "sandbox-signing-secret" not in str(error)


async def test_forged_webhooks_are_rejected(
    gateway: SandboxGateway, pix: PixGateway, hooks: Hooks
) -> None:
    charge = await gateway.create_charge(charge_request(hooks.url))
    pix.pay(charge.transaction_id)
    (real,) = await hooks.count(1)
    body = orjson.loads(real.body)

    # The right transaction, a plausible body, and no or a wrong signature.
    forged = orjson.dumps(body | {"event_id": "evt_forged"})
    tampered = WebhookRequest(real.headers, {}, forged, real.content_type)
    assert rejected(gateway, tampered).reason == "signature"
    unsigned = WebhookRequest(
        {"content-type": "application/json"}, {}, real.body, "application/json"
    )
    assert rejected(gateway, unsigned).reason == "signature"
    assert rejected(gateway, signed(forged, "guessed-secret")).reason == "signature"
    for header in ("", "garbage", "t=abc,v1=00", "v1=" + "0" * 64, f"t={int(time.time())}"):
        odd = WebhookRequest({"x-sandbox-signature": header}, {}, real.body, "application/json")
        assert rejected(gateway, odd).reason == "signature"
    # A valid signature among others (a rotation) still verifies.
    header = real.headers["x-sandbox-signature"]
    rotated = WebhookRequest(
        {"x-sandbox-signature": header.replace("v1=", "v1=" + "0" * 64 + ",v1=")},
        {},
        real.body,
        "application/json",
    )
    assert gateway.authenticate(rotated).transaction_id == charge.transaction_id


async def test_replayed_webhooks_are_stale(gateway: SandboxGateway) -> None:
    body = orjson.dumps(
        {
            "event_id": "evt_1",
            "type": "charge.paid",
            "created_at": datetime.now(UTC).isoformat(),
            "charge": {"id": "sbx_1", "status": "paid", "amount_cents": 1990, "currency": "BRL"},
        }
    )
    secret = "sandbox-signing-secret"
    now = int(time.time())
    assert gateway.authenticate(signed(body, secret, now - 290)).trusted  # within tolerance
    assert rejected(gateway, signed(body, secret, now - 301)).reason == "stale"
    assert rejected(gateway, signed(body, secret, now + 301)).reason == "stale"
    # A forged old one is a forgery first.
    assert rejected(gateway, signed(body, "other", now - 3600)).reason == "signature"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"type": "charge.paid", "charge": {}}',
        b'{"event_id": "evt_1", "type": "charge.paid"}',
        b'{"event_id": "evt_1", "type": "charge.paid", "charge": {"id": "sbx_1"}}',
        b'{"event_id": "evt_1", "type": "charge.paid", "charge": {"id": "sbx_1",'
        b' "status": "paid", "amount_cents": "19.90", "currency": "BRL"}}',
        b'{"event_id": "", "type": "charge.paid", "charge": {"id": "sbx_1",'
        b' "status": "paid", "amount_cents": 1990, "currency": "BRL"}}',
    ],
)
async def test_signed_but_unreadable_bodies_are_malformed(
    gateway: SandboxGateway, body: bytes
) -> None:
    assert rejected(gateway, signed(body, "sandbox-signing-secret")).reason == "malformed"


async def test_an_unknown_status_claims_nothing(gateway: SandboxGateway) -> None:
    body = orjson.dumps(
        {
            "event_id": "evt_2",
            "type": "charge.disputed",
            "charge": {"id": "sbx_2", "status": "disputed", "amount_cents": 5, "currency": "BRL"},
        }
    )
    notice = gateway.authenticate(signed(body, "sandbox-signing-secret"))
    assert notice.claimed_status is None and notice.transaction_id == "sbx_2"
