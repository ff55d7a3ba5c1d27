"""The PushinPay adapter against a fake API over real HTTP (loopback): cents, statuses,
errors, and webhooks that are only a hint (an optional custom header, JSON or form)."""

from __future__ import annotations

import asyncio
import base64
import json
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast
from urllib.parse import urlencode

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
from fleet.payments.pushinpay import HEADER, PushinPay
from tests.fakes.pushinpay import FakePushinPay, webhook
from tests.services import free_port

TOKEN = "31337|pushinpay-token-that-must-never-leak"
SECRET = "pushinpay-header-secret-never-leak"


@pytest.fixture
async def pp() -> AsyncIterator[FakePushinPay]:
    async with FakePushinPay(TOKEN) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def adapter(
    http: aiohttp.ClientSession,
    base: str,
    *,
    token: str = TOKEN,
    secret: str | None = None,
    timeout: float = 5.0,
) -> PushinPay:
    config = GatewayConfig.model_validate(
        {
            "id": "pp",
            "kind": "pushinpay",
            "api_base": base,
            "access_token": token,
            "webhook_secret": secret,
            "timeout": timeout,
        }
    )
    return PushinPay(config, http)


def charge(cents: int = 1990, url: str | None = "https://h/webhook/payment/pp/s") -> ChargeRequest:
    return ChargeRequest(
        idempotency_key="idem-1",
        reference="42",
        amount_cents=cents,
        currency="BRL",
        description="Curso VIP",
        expires_at=datetime(2026, 11, 23, 20, 30, tzinfo=UTC),
        notification_url=url,
        payer_ref="a1b2c3",
    )


def assert_no_secrets(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    assert TOKEN not in text
    assert SECRET not in text


# -- charges ------------------------------------------------------------------------------


async def test_create_charge_sends_cents(pp: FakePushinPay, http: aiohttp.ClientSession) -> None:
    made = await adapter(http, pp.base_url).create_charge(charge(1990))

    [sent] = pp.calls("POST", "/pix/cashIn")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["content-type"].startswith("application/json")
    assert sent.json() == {"value": 1990, "webhook_url": "https://h/webhook/payment/pp/s"}
    assert b'"value":1990' in sent.body  # an integer, not 1990.0 nor "19.90"

    transaction = pp.transactions[made.transaction_id]
    assert made.status == PaymentStatus.PENDING
    assert (made.amount_cents, made.currency) == (1990, "BRL")
    assert made.pix_code == transaction["qr_code"]
    assert made.qr_png_base64 is not None and not made.qr_png_base64.startswith("data:")
    assert base64.b64decode(made.qr_png_base64).startswith(b"\x89PNG")
    assert made.expires_at is None  # the core applies its own


async def test_no_webhook_url_when_none(pp: FakePushinPay, http: aiohttp.ClientSession) -> None:
    await adapter(http, pp.base_url).create_charge(charge(url=None))
    assert pp.calls("POST")[0].json() == {"value": 1990}


async def test_below_the_minimum_is_refused_with_the_gateway_message(
    pp: FakePushinPay, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(GatewayRefused) as caught:
        await adapter(http, pp.base_url).create_charge(charge(49))
    assert "422" in str(caught.value)
    assert "mínimo 50" in str(caught.value)
    assert pp.transactions == {}


# -- fetch and statuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("created", PaymentStatus.PENDING),
        ("paid", PaymentStatus.PAID),
        ("canceled", PaymentStatus.CANCELLED),
        ("expired", PaymentStatus.EXPIRED),
        ("refunded", PaymentStatus.REFUNDED),
        ("something_new", PaymentStatus.PENDING),
    ],
)
async def test_statuses_are_mapped(
    pp: FakePushinPay, http: aiohttp.ClientSession, status: str, expected: PaymentStatus
) -> None:
    gateway = adapter(http, pp.base_url)
    made = await gateway.create_charge(charge(1990))
    pp.set_status(made.transaction_id, status)

    state = await gateway.fetch(made.transaction_id)

    assert (state.status, state.raw_status) == (expected, status)
    assert (state.transaction_id, state.amount_cents, state.currency) == (
        made.transaction_id,
        1990,
        "BRL",
    )
    [got] = pp.calls("GET")
    assert got.path == f"/transactions/{made.transaction_id}"
    assert got.headers["authorization"] == f"Bearer {TOKEN}"


async def test_the_amount_is_the_gateways(pp: FakePushinPay, http: aiohttp.ClientSession) -> None:
    gateway = adapter(http, pp.base_url)
    made = await gateway.create_charge(charge(1990))
    pp.update(made.transaction_id, value=1989)
    assert (await gateway.fetch(made.transaction_id)).amount_cents == 1989  # the core compares


@pytest.mark.parametrize("as_404", [False, True])
async def test_an_unknown_transaction_is_not_found(
    pp: FakePushinPay, http: aiohttp.ClientSession, as_404: bool
) -> None:
    pp.unknown_as_404 = as_404
    gateway = adapter(http, pp.base_url)
    unknown = "9c29870c-9f69-4bb6-90d3-2dce9453bb45"
    with pytest.raises(ChargeNotFound):
        await gateway.fetch(unknown)
    with pytest.raises(ChargeNotFound):
        await gateway.fetch("../pix/cashIn")  # never sent: not a transaction id
    assert [r.path for r in pp.requests] == [f"/transactions/{unknown}"]


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "503", "429", "timeout", "malformed"])
@pytest.mark.parametrize("call", ["create", "fetch"])
async def test_passing_failures_are_unavailable(
    pp: FakePushinPay, http: aiohttp.ClientSession, fault: str, call: str
) -> None:
    steady = adapter(http, pp.base_url)  # set-up and the check after: no tight timeout
    made = await steady.create_charge(charge())
    gateway = adapter(http, pp.base_url, timeout=0.5)  # a held request gives up soon
    pp.fail_next(fault)
    async with asyncio.timeout(10):
        with pytest.raises(GatewayUnavailable) as caught:
            if call == "create":
                await gateway.create_charge(charge())
            else:
                await gateway.fetch(made.transaction_id)
    assert_no_secrets(caught.value)
    assert await steady.fetch(made.transaction_id)  # the next call goes through


async def test_an_unreachable_gateway_is_unavailable(http: aiohttp.ClientSession) -> None:
    with pytest.raises(GatewayUnavailable) as caught:
        await adapter(http, f"http://127.0.0.1:{free_port()}").create_charge(charge())
    assert_no_secrets(caught.value)


async def test_a_bad_token_is_refused_without_leaking_it(
    pp: FakePushinPay, http: aiohttp.ClientSession
) -> None:
    pp.fail_next("401")  # the fake's message echoes the bearer token
    with pytest.raises(GatewayRefused) as caught:
        await adapter(http, pp.base_url).create_charge(charge())
    assert "401" in str(caught.value)
    assert_no_secrets(caught.value)

    wrong = "999|another-secret-token"
    with pytest.raises(GatewayRefused) as caught:
        await adapter(http, pp.base_url, token=wrong).fetch("9c29870c-9f69-4bb6-90d3-2dce9453bb45")
    assert "Unauthenticated" in str(caught.value)
    assert wrong not in "".join(traceback.format_exception(caught.value))


async def test_notice_and_repr(pp: FakePushinPay, http: aiohttp.ClientSession) -> None:
    gateway = adapter(http, pp.base_url, secret=SECRET)
    assert gateway.notice is not None
    assert "processadora de pagamentos" in gateway.notice
    assert TOKEN not in repr(gateway) and SECRET not in repr(gateway)
    await gateway.aclose()
    assert not http.closed  # the shared session is its owner's


# -- webhooks -----------------------------------------------------------------------------

TXID = "9c29870c-9f69-4bb6-90d3-2dce9453bb45"
PAID = {"id": TXID, "status": "paid", "value": 1990, "end_to_end_id": "E0000", "split_rules": []}


@pytest.mark.parametrize("form", [False, True])
async def test_webhook_bodies_json_and_form(
    pp: FakePushinPay, http: aiohttp.ClientSession, form: bool
) -> None:
    notice = adapter(http, pp.base_url).authenticate(webhook(PAID, form=form))

    assert notice.transaction_id == TXID
    assert notice.event_id == f"{TXID}:paid"
    assert notice.claimed_status == PaymentStatus.PAID  # a hint: the core fetches
    assert not notice.trusted
    assert notice.amount_cents == 1990


async def test_webhook_ids_are_normalised(pp: FakePushinPay, http: aiohttp.ClientSession) -> None:
    gateway = adapter(http, pp.base_url)
    upper = gateway.authenticate(webhook({**PAID, "id": TXID.upper(), "status": "PAID"}))
    assert (upper.transaction_id, upper.event_id) == (TXID, f"{TXID}:paid")
    created = gateway.authenticate(webhook({**PAID, "status": "created"}))
    assert created.event_id != upper.event_id  # one event per status change
    assert created.claimed_status == PaymentStatus.PENDING


async def test_the_configured_header_is_required(
    pp: FakePushinPay, http: aiohttp.ClientSession
) -> None:
    gateway = adapter(http, pp.base_url, secret=SECRET)
    assert gateway.authenticate(webhook(PAID, header=(HEADER, SECRET))).transaction_id == TXID
    for header in [None, (HEADER, "wrong"), (HEADER, ""), ("x-other", SECRET)]:
        with pytest.raises(WebhookRejected) as caught:
            gateway.authenticate(webhook(PAID, header=header, form=True))
        assert caught.value.reason == "header"
        assert_no_secrets(caught.value)

    # No secret configured: the URL secret (checked by the core) is all there is.
    assert adapter(http, pp.base_url).authenticate(webhook(PAID)).transaction_id == TXID


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"status": "paid"}', "application/json"),
        (b"status=paid", "application/x-www-form-urlencoded"),
        (b"id=../../pix/cashIn&status=paid", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "text/plain"),
    ],
)
async def test_unreadable_webhooks_are_malformed(
    pp: FakePushinPay, http: aiohttp.ClientSession, body: bytes, content_type: str
) -> None:
    request = webhook(PAID)
    unreadable = type(request)(request.headers, request.query, body, content_type)
    with pytest.raises(WebhookRejected) as caught:
        adapter(http, pp.base_url).authenticate(unreadable)
    assert caught.value.reason == "malformed"


# -- anything at all ------------------------------------------------------------------------

_TEXT = st.text(max_size=40)
_FIELDS = st.dictionaries(
    st.sampled_from(["id", "status", "value"]) | _TEXT,
    st.none() | st.integers() | st.decimals(allow_nan=False).map(str) | _TEXT | st.just(TXID),
    max_size=4,
)
_BODY = (
    st.binary(max_size=200)
    | _FIELDS.map(lambda fields: json.dumps(fields).encode())
    | _FIELDS.map(lambda fields: urlencode({k: str(v) for k, v in fields.items()}).encode())
    | st.integers(1, 5000).map(lambda depth: b"[" * depth)
)
_KIND = st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]) | _TEXT
_HEADERS = st.fixed_dictionaries({}, optional={HEADER: _TEXT, "content-type": _TEXT})


def offline_adapter(secret: str | None) -> PushinPay:
    """authenticate() does no I/O: no session is needed."""
    return adapter(cast("aiohttp.ClientSession", object()), "http://127.0.0.1:9", secret=secret)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(headers=_HEADERS, body=_BODY, kind=_KIND)
def test_random_webhooks_without_the_header_are_rejected(
    headers: dict[str, str], body: bytes, kind: str
) -> None:
    request = WebhookRequest(headers=headers, query={}, body=body, content_type=kind)
    with pytest.raises(WebhookRejected) as caught:
        offline_adapter(SECRET).authenticate(request)
    assert caught.value.reason == "header"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(body=_BODY, kind=_KIND)
def test_random_bodies_are_read_or_rejected(body: bytes, kind: str) -> None:
    request = WebhookRequest(headers={HEADER: SECRET}, query={}, body=body, content_type=kind)
    try:
        notice = offline_adapter(SECRET).authenticate(request)
    except WebhookRejected as exc:
        assert exc.reason == "malformed"
    else:
        assert notice.event_id.startswith(f"{notice.transaction_id}:")
        assert notice.amount_cents is None or 0 <= notice.amount_cents < 10**15
        assert not notice.trusted
