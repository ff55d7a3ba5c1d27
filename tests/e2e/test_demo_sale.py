"""The demo (``botfleet demo``): its sale really sells once, and its buyers really walk the
funnel, through the real fleet."""

from __future__ import annotations

from io import StringIO

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import DatabaseConfig, FleetConfig, RedisConfig
from fleet.demo_funnel import DOWNSELL_AFTER, demo_funnel, demo_timings
from fleet.demo_payments import demo_sale, point_sandbox_webhooks, print_sale
from fleet.emulator import EmulatorServer
from storage.models import Payment
from tests.e2e.conftest import StartFleet, metric
from tests.e2e.funnel_rig import selling_fleet
from tests.e2e.payments_rig import count


async def test_the_demo_sale_is_paid_once_and_delivered_once(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    data, _, _ = selling_fleet(
        emulator_server.emulator, emulator_server.base_url, db_config, redis_config
    )
    data["funnels"]["main"]["downsells"] = []
    fleet = await start_fleet(data=data)
    buyer = emulator_server.emulator.add_user("Carla")
    table = await demo_sale(fleet.supervisor, emulator_server, buyer)
    assert table is not None
    out = StringIO()
    print_sale(Console(file=out, width=200), table)
    text = out.getvalue()
    assert "HTTP 401" in text  # the forged webhook
    assert "1 delivery call(s)" in text and "is paid" in text
    assert "the buyer got their access" in text
    assert "webhooks duplicate 2, rejected 1, stored 1" in text
    assert await count(session_factory, Payment, Payment.status == "paid") == 1
    assert metric(fleet.supervisor, "botfleet_charges_total", gateway="sbx", result="new") == 1


async def test_the_demo_buyers_walk_the_funnel_and_it_counts_each_step(
    emulator_server: EmulatorServer,
    start_fleet: StartFleet,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    emulator = emulator_server.emulator
    data, _, _ = selling_fleet(emulator, emulator_server.base_url, db_config, redis_config)
    data["funnels"]["main"]["downsells"][0]["after"] = "10m"
    shortened = demo_timings(FleetConfig.model_validate(data))  # as `botfleet demo` runs it
    assert shortened.funnels["main"].downsells[0].after == DOWNSELL_AFTER
    data["funnels"]["main"]["downsells"][0]["after"] = DOWNSELL_AFTER
    fleet = await start_fleet(data=data)
    point_sandbox_webhooks(fleet.supervisor, emulator_server)
    table = await demo_funnel(fleet.supervisor, emulator)
    assert table is not None
    out = StringIO()
    Console(file=out, width=200).print(table)
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.getvalue().splitlines()
        if line.count("│") == 3
    }
    assert rows["buyers stuck (see the log)"] == "0"
    assert rows["messages received twice"] == "0"
    assert int(rows["order bump taken"]) > 0 and int(rows["order bump declined"]) > 0
    assert int(rows["downsell sent (unpaid PIX)"]) > 0 and int(rows["downsell taken"]) > 0
    paid = await count(session_factory, Payment, Payment.status == "paid")
    assert paid > 0
    assert rows["paid and delivered (link or one-time invite)"] == str(paid)
    assert rows["access messages in the chats"] == str(paid)
    assert rows["sale notices to owners"] == str(paid)
    assert "Vendas" in rows["/stats for an owner"]
