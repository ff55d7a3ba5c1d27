"""Random requests at the payment webhook route of a running fleet: never a 5xx while
PostgreSQL is up, never a stored row or a moved charge without a valid authentication.

Hypothesis drives a worker thread; each example is posted on the fleet's event loop
(``run_coroutine_threadsafe``), so the fleet keeps running between examples.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.emulator import EmulatorServer
from fleet.emulator.pix import PixFaults, sign
from fleet.payments.service import url_secret
from storage.models import PaymentEvent
from tests.e2e.conftest import StartFleet
from tests.e2e.payments_rig import (
    SIGNING,
    URL_SECRET,
    charge,
    count,
    events,
    payment_fleet,
    status_of,
)

_PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-0123456789"), min_size=1, max_size=16)
_STATUSES = st.sampled_from(["paid", "pending", "refunded", "expired", "PAID", "", "chargeback"])
_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | _PRINTABLE
)


@dataclass(frozen=True)
class Attempt:
    gateway: str
    secret: str
    content_type: str | None
    signature: str  # "none", "junk", "valid", "stale", "other-key"
    junk: str
    query: dict[str, str]
    extra_headers: dict[str, str]
    body: bytes

    def authentic(self, real_secret: str) -> bool:
        return self.gateway == "sbx" and self.secret == real_secret and self.signature == "valid"


def _charge_like(transaction_ids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """The sandbox's webhook shape with random values (mostly well typed, sometimes not)."""
    charge = st.fixed_dictionaries(
        {
            "id": transaction_ids,
            "status": _STATUSES,
            "amount_cents": st.integers(-10, 10**9) | st.sampled_from(["19.90", None]),
            "currency": st.sampled_from(["BRL", "BRL", "USD", "", "brl"]),
        },
        optional={"paid_at": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", ""])},
    )
    return st.fixed_dictionaries(
        {
            "event_id": _TOKEN,
            "type": st.sampled_from(["charge.paid", "charge.refunded", "charge.expired", "x"]),
            "charge": charge,
        },
        optional={"created_at": _PRINTABLE},
    )


def _bodies(transaction_ids: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    json_values = st.recursive(
        _JSON_LEAF,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_PRINTABLE, inner, max_size=4),
        max_leaves=12,
    )
    charges = _charge_like(transaction_ids).map(orjson.dumps)
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(orjson.dumps),
        charges,
        charges,
        charges,
        st.just(b"{" + b" " * 70_000 + b"}"),  # over the size limit
    )


@st.composite
def _attempts(draw: st.DrawFn, real_secret: str, real_transaction: str) -> Attempt:
    # Lists repeat the usual value: Hypothesis has no weights, and the deep paths (stored,
    # processed) need the outer checks passed.
    signature = draw(st.sampled_from(["valid"] * 3 + ["other-key"] * 3 + ["none", "junk", "stale"]))
    # Validly signed bodies never name the real charge (one could pay it, rightly); the
    # others do, so a forgery has every chance.
    ids = _TOKEN if signature == "valid" else st.just(real_transaction) | _TOKEN
    return Attempt(
        gateway=draw(st.sampled_from(["sbx"] * 12 + ["SBX", "other", "sbx x", "", "sbx/.."])),
        secret=draw(st.sampled_from([real_secret] * 12 + [real_secret[:-1], "", "0" * 40])),
        content_type=draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json",
                    "text/plain",
                    "image/png",
                    "application/x-www-form-urlencoded",
                    "application/json; charset=utf-8",
                    None,
                ]
            )
        ),
        signature=signature,
        junk=draw(_PRINTABLE),
        query=draw(st.dictionaries(_TOKEN, _PRINTABLE, max_size=3)),
        extra_headers=draw(st.dictionaries(_TOKEN.map(lambda t: f"x-{t}"), _PRINTABLE, max_size=3)),
        body=draw(_bodies(ids)),
    )


def _headers(attempt: Attempt) -> dict[str, str]:
    headers = dict(attempt.extra_headers)
    if attempt.content_type is not None:
        headers["Content-Type"] = attempt.content_type
    now = int(time.time())
    if attempt.signature == "junk":
        headers["X-Sandbox-Signature"] = attempt.junk
    elif attempt.signature in ("valid", "stale", "other-key"):
        at = now - 3600 if attempt.signature == "stale" else now
        key = "not-the-signing-secret" if attempt.signature == "other-key" else SIGNING
        headers["X-Sandbox-Signature"] = f"t={at},v1={sign(key, attempt.body, at)}"
    return headers


async def test_random_requests_never_5xx_and_never_change_state_unauthenticated(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator_server.emulator.pix.set_faults(PixFaults(lose=1.0))
    data = payment_fleet(
        emulator_server.base_url, db_config, redis_config, reconcile_after_seconds=3600
    )
    fleet = await start_fleet(data=data)
    payment = await charge(fleet.supervisor, 7001)
    assert payment.transaction_id is not None
    real_secret = url_secret(URL_SECRET, "sbx")
    base = f"http://127.0.0.1:{fleet.supervisor.web_port}/webhook/payment"
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, bool]] = []

    async def send(attempt: Attempt, http: aiohttp.ClientSession) -> tuple[int, int, int]:
        before = await count(session_factory, PaymentEvent)
        url = f"{base}/{quote(attempt.gateway, safe='')}/{quote(attempt.secret, safe='')}"
        async with http.post(
            url, data=attempt.body, headers=_headers(attempt), params=attempt.query
        ) as response:
            await response.read()
            status = response.status
        return status, before, await count(session_factory, PaymentEvent)

    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http:

        @settings(
            max_examples=300,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(attempt=_attempts(real_secret, payment.transaction_id))
        def example(attempt: Attempt) -> None:
            future = asyncio.run_coroutine_threadsafe(send(attempt, http), loop)
            status, before, after = future.result(timeout=30)
            authentic = attempt.authentic(real_secret)
            seen.append((status, authentic))
            assert status < 500, (status, attempt)
            if not authentic:
                assert after == before, attempt  # nothing stored without authentication

        await asyncio.to_thread(example)

    assert len(seen) >= 100
    assert {status for status, _ in seen} >= {200, 400, 401, 403, 404}  # the paths were reached
    # Signed bodies may be stored, but no body (signed or not) moved the real charge: the
    # signed ones never name it, the unsigned ones are not believed.
    assert await status_of(session_factory, payment.id) == "pending"
    assert await events(session_factory, payment.id) == []
