"""Fleets with a sandbox PIX gateway (served by the emulator) for the payment tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.payments.service import url_secret
from fleet.supervisor import Supervisor
from storage.models import OutboxEvent, Payment
from tests.e2e.conftest import fleet_dict
from tests.services import free_port

URL_SECRET = "payments-url-secret-0123456789"
SIGNING = "sandbox-signing-secret"


def payment_fleet(
    base_url: str,
    db: DatabaseConfig,
    redis: RedisConfig,
    *,
    instance: str = "e2e-1",
    jobs_interval: float = 0.3,
    **payments: Any,
) -> dict[str, Any]:
    """One bot whose funnel charges through the sandbox gateway ``sbx``."""
    data = fleet_dict(base_url, db, redis, 1)
    port = free_port()  # the gateway must know where to post before the fleet starts
    data["instance"] = {"id": instance}
    data["http"] = {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"}
    data["gateways"] = [
        {"id": "sbx", "kind": "sandbox", "api_base": base_url, "webhook_secret": SIGNING}
    ]
    data["payments"] = {
        "url_secret": URL_SECRET,
        "jobs_interval": jobs_interval,
        "cooldown_seconds": 0,
        "reconcile_after_seconds": 10,
        "retry_base_seconds": 0.3,
    } | payments
    data["funnels"]["main"]["gateway"] = "sbx"
    return data


def webhook_url(supervisor: Supervisor, gateway: str = "sbx") -> str:
    port = supervisor.web_port
    return f"http://127.0.0.1:{port}/webhook/payment/{gateway}/{url_secret(URL_SECRET, gateway)}"


async def charge(supervisor: Supervisor, user_id: int, cents: int = 1990) -> Payment:
    assert supervisor.payments is not None
    result = await supervisor.payments.charge(
        "bot-000", user_id, "sbx", offer_ref="plan:mensal", description="Plano Mensal",
        amount_cents=cents,
    )  # fmt: skip
    assert result.payment is not None, result
    return result.payment


async def status_of(sessions: async_sessionmaker[AsyncSession], payment_id: int) -> str:
    async with sessions() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return payment.status


async def events(sessions: async_sessionmaker[AsyncSession], payment_id: int) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxEvent.topic)
            .where(OutboxEvent.key.like(f"payment.%:{payment_id}"))
            .order_by(OutboxEvent.id)
        )
        return list(rows)


async def count(sessions: async_sessionmaker[AsyncSession], model: Any, *where: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def eventually(check: Callable[[], Awaitable[object]], within: float = 20) -> None:
    """Poll a database condition (no event to wait on) until it holds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state lives in PostgreSQL
            await asyncio.sleep(0.05)


async def post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with http.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status
