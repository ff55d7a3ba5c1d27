"""The Mercado Pago adapter against a fake Payments API over real HTTP (loopback): request
shapes, status mapping, errors, and webhook signatures."""

from __future__ import annotations

import asyncio
import json
import re
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config import GatewayConfig
from fleet.payments.base import (
    ChargeNotFound,
    ChargeRequest,
    GatewayRefused,
    GatewayUnavailable,
    PaymentStatus,
    WebhookRejected,
    WebhookRequest,
)
from fleet.payments.mercadopago import TOLERANCE, MercadoPago
from tests.fakes.mercadopago import FakeMercadoPago, notification, signature
from tests.services import free_port

TOKEN = "APP_USR-1234567890-token-that-must-never-leak"
SECRET = "mp-signing-secret-that-must-never-leak"
NOW = 1_767_000_000.0  # the adapter's clock in webhook tests
EXPIRES = datetime(2026, 11, 23, 20, 30, 0, 250_000, tzinfo=UTC)


@pytest.fixture
async def mp() -> AsyncIterator[FakeMercadoPago]:
    async with FakeMercadoPago(TOKEN) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def adapter(
    http: aiohttp.ClientSession, base: str, *, token: str = TOKEN, timeout: float = 5.0
) -> MercadoPago:
    config = GatewayConfig.model_validate(
        {
            "id": "mp",
            "kind": "mercadopago",
            "api_base": base,
            "access_token": token,
            "webhook_secret": SECRET,
            "timeout": timeout,
            "payer_email_domain": "buyers.example.org",
        }
    )
    return MercadoPago(config, http, clock=lambda: NOW)


def charge(
    cents: int = 1990, key: str = "idem-1", url: str | None = "https://h/wh"
) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        reference="42",
        amount_cents=cents,
        currency="BRL",
        description="Curso VIP",
        expires_at=EXPIRES,
        notification_url=url,
        payer_ref="a1b2c3d4e5f6a1b2c3d4e5f6",
    )


def assert_no_secrets(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    assert TOKEN not in text
    assert SECRET not in text


# -- charges ------------------------------------------------------------------------------


async def test_create_charge_sends_the_documented_request(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    made = await adapter(http, mp.base_url).create_charge(charge())

    [sent] = mp.calls("POST", "/v1/payments")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["x-idempotency-key"] == "idem-1"
    assert sent.headers["content-type"].startswith("application/json")
    # The amount in reais as an exact two-decimal number, not a float computed from cents.
    assert re.search(rb'"transaction_amount":\s*19\.90[,}]', sent.body), sent.body
    body: dict[str, Any] = sent.json()
    assert body["payment_method_id"] == "pix"
    assert body["description"] == "Curso VIP"
    assert body["external_reference"] == "42"
    assert body["notification_url"] == "https://h/wh"
    assert body["payer"] == {"email": "a1b2c3d4e5f6a1b2c3d4e5f6@buyers.example.org"}
    expiry = body["date_of_expiration"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", expiry)
    assert datetime.fromisoformat(expiry) == EXPIRES.replace(microsecond=250_000)

    payment = mp.payments[made.transaction_id]
    assert made.transaction_id == str(payment["id"])
    assert made.status == PaymentStatus.PENDING
    assert (made.amount_cents, made.currency) == (1990, "BRL")
    assert made.pix_code == payment["point_of_interaction"]["transaction_data"]["qr_code"]
    assert made.qr_png_base64 is not None and made.qr_png_base64.startswith("iVBOR")
    assert made.expires_at == EXPIRES.replace(microsecond=250_000)


@pytest.mark.parametrize(
    ("cents", "reais"),
    [(1990, "19.90"), (1989, "19.89"), (1999, "19.99"), (1, "0.01"), (100_000, "1000.00")],
)
async def test_amounts_are_exact_reais(
    mp: FakeMercadoPago, http: aiohttp.ClientSession, cents: int, reais: str
) -> None:
    made = await adapter(http, mp.base_url).create_charge(charge(cents))
    [sent] = mp.calls("POST")
    assert f'"transaction_amount":{reais},'.encode() in sent.body
    assert made.amount_cents == cents


async def test_no_notification_url_is_sent_when_none(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    await adapter(http, mp.base_url).create_charge(charge(url=None))
    assert "notification_url" not in mp.calls("POST")[0].json()


async def test_a_retry_with_the_same_key_creates_nothing_new(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    gateway = adapter(http, mp.base_url)
    mp.fail_next("502", after=True)  # created at Mercado Pago, the answer lost
    with pytest.raises(GatewayUnavailable):
        await gateway.create_charge(charge(key="order-7"))
    made = await gateway.create_charge(charge(key="order-7"))

    assert len(mp.payments) == 1
    assert made.transaction_id in mp.payments
    assert [r.headers["x-idempotency-key"] for r in mp.calls("POST")] == ["order-7"] * 2


# -- fetch and statuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        ("pending", "pending_waiting_transfer", PaymentStatus.PENDING),
        ("in_process", "pending_review_manual", PaymentStatus.PENDING),
        ("in_mediation", "in_mediation", PaymentStatus.PENDING),
        ("approved", "accredited", PaymentStatus.PAID),
        ("rejected", "cc_rejected_other_reason", PaymentStatus.FAILED),
        ("cancelled", "by_collector", PaymentStatus.CANCELLED),
        ("cancelled", "expired", PaymentStatus.EXPIRED),
        ("refunded", "refunded", PaymentStatus.REFUNDED),
        ("charged_back", "settled", PaymentStatus.CHARGEBACK),
        ("something_new", "", PaymentStatus.PENDING),
    ],
)
async def test_statuses_are_mapped(
    mp: FakeMercadoPago,
    http: aiohttp.ClientSession,
    status: str,
    detail: str,
    expected: PaymentStatus,
) -> None:
    gateway = adapter(http, mp.base_url)
    made = await gateway.create_charge(charge())
    mp.set_status(made.transaction_id, status, detail or None)

    state = await gateway.fetch(made.transaction_id)

    assert state.status == expected
    assert state.transaction_id == made.transaction_id
    assert (state.amount_cents, state.currency) == (1990, "BRL")
    assert state.raw_status.startswith(status)
    [got] = mp.calls("GET")
    assert got.path == f"/v1/payments/{made.transaction_id}"
    assert got.headers["authorization"] == f"Bearer {TOKEN}"


async def test_paid_at_and_amount_come_from_the_gateway(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    gateway = adapter(http, mp.base_url)
    made = await gateway.create_charge(charge())
    mp.set_status(made.transaction_id, "approved")
    mp.update(made.transaction_id, transaction_amount=19.89, currency_id="USD")

    state = await gateway.fetch(made.transaction_id)

    assert state.paid_at == datetime(2026, 1, 10, 14, 21, 30, tzinfo=UTC)
    assert (state.amount_cents, state.currency) == (1989, "USD")  # the core compares


async def test_an_unknown_payment_is_not_found(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    gateway = adapter(http, mp.base_url)
    with pytest.raises(ChargeNotFound):
        await gateway.fetch("999")
    with pytest.raises(ChargeNotFound):
        await gateway.fetch("../v1/users/me")  # never sent: not a payment id
    assert [r.path for r in mp.requests] == ["/v1/payments/999"]


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "502", "503", "429", "timeout", "malformed"])
@pytest.mark.parametrize("call", ["create", "fetch"])
async def test_passing_failures_are_unavailable(
    mp: FakeMercadoPago, http: aiohttp.ClientSession, fault: str, call: str
) -> None:
    steady = adapter(http, mp.base_url)  # set-up and the check after: no tight timeout
    made = await steady.create_charge(charge())
    gateway = adapter(http, mp.base_url, timeout=0.5)  # a held request gives up soon
    mp.fail_next(fault)
    async with asyncio.timeout(10):
        with pytest.raises(GatewayUnavailable) as caught:
            if call == "create":
                await gateway.create_charge(charge(key="idem-2"))
            else:
                await gateway.fetch(made.transaction_id)
    assert_no_secrets(caught.value)
    assert await steady.fetch(made.transaction_id)  # the next call goes through


async def test_an_unreachable_gateway_is_unavailable(http: aiohttp.ClientSession) -> None:
    gateway = adapter(http, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GatewayUnavailable) as caught:
        await gateway.fetch("123")
    assert_no_secrets(caught.value)


@pytest.mark.parametrize("fault", ["400", "401", "403", "422"])
async def test_refusals_carry_the_gateway_message_but_no_token(
    mp: FakeMercadoPago, http: aiohttp.ClientSession, fault: str
) -> None:
    mp.fail_next(fault)
    with pytest.raises(GatewayRefused) as caught:
        await adapter(http, mp.base_url).create_charge(charge())
    assert f"HTTP {fault}" in str(caught.value)
    assert "request refused" in str(caught.value)  # the fake's message, which echoes...
    assert_no_secrets(caught.value)  # ...the bearer token: scrubbed


async def test_a_wrong_token_is_refused_without_leaking_it(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    wrong = "APP_USR-wrong-token-also-secret"
    with pytest.raises(GatewayRefused) as caught:
        await adapter(http, mp.base_url, token=wrong).fetch("123")
    assert "401" in str(caught.value)
    assert wrong not in "".join(traceback.format_exception(caught.value))


async def test_repr_shows_no_secrets(mp: FakeMercadoPago, http: aiohttp.ClientSession) -> None:
    gateway = adapter(http, mp.base_url)
    assert gateway.notice is None
    assert TOKEN not in repr(gateway) and SECRET not in repr(gateway)
    await gateway.aclose()
    assert not http.closed  # the shared session is its owner's


# -- webhooks -----------------------------------------------------------------------------


def with_(request: WebhookRequest, **changes: Any) -> WebhookRequest:
    headers = {**request.headers, **changes.pop("headers", {})}
    query = {**request.query, **changes.pop("query", {})}
    return WebhookRequest(
        headers={k: v for k, v in headers.items() if v is not None},
        query={k: v for k, v in query.items() if v is not None},
        body=changes.pop("body", request.body),
        content_type=request.content_type,
    )


@pytest.mark.parametrize("ts", [int(NOW), int(NOW * 1000), int(NOW) - 299, int(NOW) + 299])
async def test_a_signed_webhook_is_accepted(
    mp: FakeMercadoPago, http: aiohttp.ClientSession, ts: int
) -> None:
    gateway = adapter(http, mp.base_url)
    note = notification("1325000001", SECRET, ts=ts, request_id="req-1")

    notice = gateway.authenticate(note.request())

    assert notice.transaction_id == "1325000001"
    assert notice.event_id == "1325000001:req-1"
    assert notice.claimed_status is None and not notice.trusted
    assert gateway.authenticate(note.request()).event_id == notice.event_id  # same delivery
    other = notification("1325000001", SECRET, ts=ts, request_id="req-2")
    assert gateway.authenticate(other.request()).event_id != notice.event_id


async def test_signature_parsing_is_tolerant(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    gateway = adapter(http, mp.base_url)
    note = notification("1325000001", SECRET, ts=int(NOW), request_id="req-1").request()
    ts, v1 = note.headers["x-signature"].split(",")
    swapped = with_(note, headers={"x-signature": f" {v1} , {ts.upper()}"})
    assert gateway.authenticate(swapped).transaction_id == "1325000001"

    # An alphanumeric id is signed lower-cased (as Mercado Pago documents).
    upper = notification("ORD01ABC", SECRET, ts=int(NOW), request_id="r").request()
    assert gateway.authenticate(upper).transaction_id == "ORD01ABC"

    # No data.id in the query: the body's; no x-request-id: dropped from the manifest.
    bare = notification("77", SECRET, ts=int(NOW), in_query=False).request()
    sig = signature(SECRET, data_id="77", request_id=None, ts=str(int(NOW)))
    bare = with_(bare, headers={"x-request-id": None, "x-signature": f"ts={int(NOW)},v1={sig}"})
    notice = gateway.authenticate(bare)
    assert (notice.transaction_id, notice.event_id) == ("77", f"77:ts{int(NOW)}")


def forgeries(note: WebhookRequest) -> dict[str, tuple[WebhookRequest, str]]:
    ts, v1 = note.headers["x-signature"].split(",")
    return {
        "missing header": (with_(note, headers={"x-signature": None}), "signature"),
        "no v1": (with_(note, headers={"x-signature": ts}), "signature"),
        "tampered ts": (
            with_(note, headers={"x-signature": f"ts={int(NOW) + 1},{v1}"}),
            "signature",
        ),
        "tampered data.id": (with_(note, query={"data.id": "1325000002"}), "signature"),
        "tampered request id": (with_(note, headers={"x-request-id": "other"}), "signature"),
    }


@pytest.mark.parametrize(
    "case", ["missing header", "no v1", "tampered ts", "tampered data.id", "tampered request id"]
)
async def test_forged_webhooks_are_rejected(
    mp: FakeMercadoPago, http: aiohttp.ClientSession, case: str
) -> None:
    note = notification("1325000001", SECRET, ts=int(NOW), request_id="req-1").request()
    forged, reason = forgeries(note)[case]
    with pytest.raises(WebhookRejected) as caught:
        adapter(http, mp.base_url).authenticate(forged)
    assert caught.value.reason == reason
    assert_no_secrets(caught.value)


async def test_a_webhook_signed_with_another_secret_is_rejected(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    note = notification("1325000001", "not-our-secret", ts=int(NOW))
    with pytest.raises(WebhookRejected) as caught:
        adapter(http, mp.base_url).authenticate(note.request())
    assert caught.value.reason == "signature"


@pytest.mark.parametrize(
    "ts",
    [
        int(NOW - TOLERANCE) - 1,
        int(NOW + TOLERANCE) + 1,
        int((NOW - 3600) * 1000),
        int((NOW + TOLERANCE + 1) * 1000),
    ],
)
async def test_a_replayed_webhook_is_stale(
    mp: FakeMercadoPago, http: aiohttp.ClientSession, ts: int
) -> None:
    note = notification("1325000001", SECRET, ts=ts)  # authentic, but old (or from the future)
    with pytest.raises(WebhookRejected) as caught:
        adapter(http, mp.base_url).authenticate(note.request())
    assert caught.value.reason == "stale"


async def test_authentic_but_unusable_webhooks(
    mp: FakeMercadoPago, http: aiohttp.ClientSession
) -> None:
    gateway = adapter(http, mp.base_url)
    merchant_order = notification("555", SECRET, ts=int(NOW), topic="merchant_order").request()
    with pytest.raises(WebhookRejected) as caught:
        gateway.authenticate(merchant_order)
    assert caught.value.reason == "unsupported"

    note = notification("555", SECRET, ts=int(NOW)).request()
    with pytest.raises(WebhookRejected) as caught:
        gateway.authenticate(with_(note, body=b"{not json"))
    assert caught.value.reason == "malformed"

    weird = notification("a/../b", SECRET, ts=int(NOW)).request()
    with pytest.raises(WebhookRejected) as caught:
        gateway.authenticate(weird)
    assert caught.value.reason == "malformed"


# -- anything at all ------------------------------------------------------------------------

_TEXT = st.text(max_size=40)
_SIGNATURE = st.builds(
    lambda ts, v1, sep: f"ts={ts}{sep}v1={v1}",
    st.integers(0, 2 * 10**12).map(str) | _TEXT,
    st.text("0123456789abcdef", max_size=64) | _TEXT,
    st.sampled_from([",", " , ", ";", ""]),
)
_HEADERS = st.fixed_dictionaries(
    {}, optional={"x-signature": _SIGNATURE | _TEXT, "x-request-id": _TEXT, "content-type": _TEXT}
)
_QUERY = st.dictionaries(
    st.sampled_from(["data.id", "type", "topic", "id"]) | _TEXT, _TEXT, max_size=3
)
_BODY = (
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode())
    | st.integers(1, 5000).map(lambda depth: b"[" * depth)
)


def offline_adapter() -> MercadoPago:
    """authenticate() does no I/O: no session is needed."""
    return adapter(cast("aiohttp.ClientSession", object()), "http://127.0.0.1:9")


@settings(max_examples=400, derandomize=True, deadline=None)
@given(headers=_HEADERS, query=_QUERY, body=_BODY)
def test_random_webhooks_are_rejected_never_crash(
    headers: dict[str, str], query: dict[str, str], body: bytes
) -> None:
    request = WebhookRequest(headers=headers, query=query, body=body, content_type="x")
    with pytest.raises(WebhookRejected) as caught:
        offline_adapter().authenticate(request)
    assert caught.value.reason in {"signature", "stale", "malformed", "unsupported"}


@settings(max_examples=300, derandomize=True, deadline=None)
@given(data_id=_TEXT, request_id=st.none() | _TEXT, query=_QUERY, body=_BODY)
def test_signed_random_webhooks_are_read_or_rejected(
    data_id: str, request_id: str | None, query: dict[str, str], body: bytes
) -> None:
    ts = str(int(NOW))
    v1 = signature(SECRET, data_id=data_id, request_id=request_id, ts=ts)
    headers = {"x-signature": f"ts={ts},v1={v1}"}
    if request_id is not None:
        headers["x-request-id"] = request_id
    request = WebhookRequest(
        headers=headers, query={**query, "data.id": data_id}, body=body, content_type="x"
    )
    try:
        notice = offline_adapter().authenticate(request)
    except WebhookRejected as exc:
        assert exc.reason in {"malformed", "unsupported"}
    else:
        assert notice.transaction_id == data_id and not notice.trusted
