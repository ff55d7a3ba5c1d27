"""The demo's sale (``botfleet demo``): it really sells once, through the real fleet."""

from __future__ import annotations

from io import StringIO

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, RedisConfig
from fleet.demo_payments import demo_sale, print_sale
from fleet.emulator import EmulatorServer
from storage.models import Payment
from tests.e2e.conftest import StartFleet, metric
from tests.e2e.payments_rig import count, payment_fleet


async def test_the_demo_sale_is_paid_once_and_delivered_once(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    fleet = await start_fleet(data=payment_fleet(emulator_server.base_url, db_config, redis_config))
    buyer = emulator_server.emulator.add_user("Carla")
    table = await demo_sale(fleet.supervisor, emulator_server, buyer)
    assert table is not None
    out = StringIO()
    print_sale(Console(file=out, width=200), table)
    text = out.getvalue()
    assert "HTTP 401" in text  # the forged webhook
    assert "1 delivery call(s)" in text and "is paid" in text
    assert "webhooks duplicate 2, rejected 1, stored 1" in text
    assert await count(session_factory, Payment, Payment.status == "paid") == 1
    assert metric(fleet.supervisor, "botfleet_charges_total", gateway="sbx", result="new") == 1
