"""``botfleet payments list | show | check`` as operators run them: a real process against
a real database and the sandbox gateway (served by the emulator, over HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import BotConfig, GatewayConfig, PaymentsConfig
from fleet.emulator import EmulatorServer
from fleet.metrics import build_metrics
from fleet.payments.sandbox import SandboxGateway
from fleet.payments.service import PaymentService
from storage.models import Payment
from storage.payments import Charges, PaymentInbox, PaymentLedger
from storage.services import BotRegistry
from tests.integration.test_cli import botfleet, write

TOKEN = "sbx-access-token-never-printed"
URL_SECRET = "cli-url-secret-0123456789"


def config_text(api_base: str) -> str:
    return f"""\
database:
  url: ${{DB_URL}}
gateways:
  - {{id: sbx, kind: sandbox, api_base: "{api_base}", access_token: "{TOKEN}"}}
payments:
  url_secret: {URL_SECRET}
funnels:
  main:
    gateway: sbx
    welcome: {{text: Olá}}
    fallback: {{text: Use /start}}
bots:
  - id: loja
    token: "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
    funnel: main
"""


@pytest.fixture
async def sandbox() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer() as server:
        server.emulator.pix.configure(access_token=TOKEN)
        yield server


async def make_charge(
    sessions: async_sessionmaker[AsyncSession], base_url: str, user_id: int
) -> Payment:
    """A charge as the fleet makes it (no webhook URL: only the CLI will learn it was paid)."""
    gateway = GatewayConfig(
        id="sbx", kind="sandbox", api_base=base_url, access_token=SecretStr(TOKEN)
    )
    async with aiohttp.ClientSession() as http:
        service = PaymentService(
            {"sbx": SandboxGateway(gateway, http)}, Charges(sessions), PaymentLedger(sessions),
            PaymentInbox(sessions), PaymentsConfig(url_secret=SecretStr(URL_SECRET)),
            build_metrics(), public_url=None,
        )  # fmt: skip
        made = await service.charge(
            "loja", user_id, "sbx", offer_ref="plan:mensal", description="Mensal",
            amount_cents=1990,
        )  # fmt: skip
    assert made.payment is not None and made.payment.transaction_id is not None
    return made.payment


async def run(cfg: str, url: str, *args: str) -> tuple[int, str, str]:
    # In a thread: the sandbox gateway answers from this test's event loop.
    result = await asyncio.to_thread(botfleet, "payments", *args, "-c", cfg, env={"DB_URL": url})
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    return result.returncode, result.stdout, result.stderr


async def test_list_show_and_check_a_charge_paid_while_no_webhook_came(
    tmp_path: Path,
    database_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    sandbox: EmulatorServer,
) -> None:
    cfg = write(tmp_path, config_text(sandbox.base_url))
    bot = BotConfig(id="loja", token=SecretStr(f"1:{'x' * 30}"), funnel="main")
    await BotRegistry(session_factory).sync([bot])
    payment = await make_charge(session_factory, sandbox.base_url, 7001)
    other = await make_charge(session_factory, sandbox.base_url, 7002)
    assert payment.transaction_id is not None
    sandbox.emulator.pix.pay(payment.transaction_id)  # nobody tells the fleet

    code, out, err = await run(cfg, database_url, "list")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split()[:7] == ["ID", "BOT", "USER", "OFFER", "AMOUNT", "GATEWAY", "STATUS"]
    assert [row.split()[0] for row in rows] == [str(other.id), str(payment.id)]  # newest first
    assert all("19.90 BRL" in row and "pending" in row for row in rows)

    code, out, err = await run(cfg, database_url, "check", str(payment.id))
    assert (code, out.strip()) == (0, f"charge {payment.id}: pending -> paid"), err
    code, out, err = await run(cfg, database_url, "check", str(payment.id))
    assert out.strip() == f"charge {payment.id}: paid (unchanged)"

    code, out, err = await run(cfg, database_url, "show", str(payment.id), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["status"], shown["amount_cents"], shown["user"]) == ("paid", 1990, 7001)
    assert [(e["topic"], e["source"]) for e in shown["events"]] == [("payment.paid", "check")]

    code, out, err = await run(cfg, database_url, "list", "--status", "pending", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [other.id]

    code, out, err = await run(cfg, database_url, "show", "999999")
    assert code == 1 and "no charge 999999" in err

    # The owners' /stats, for operators: two PIX, one sale of R$ 19,90 (today and in total).
    code, out, err = await run(cfg, database_url, "stats", "--bot", "loja", "--json")
    assert code == 0, err
    (figures,) = [json.loads(line) for line in out.splitlines()]
    assert figures["bot"] == "loja"
    assert figures["total"] == figures["today"]
    assert {k: figures["total"][k] for k in ("charges", "sales", "revenue_cents")} == {
        "charges": 2, "sales": 1, "revenue_cents": 1990,
    }  # fmt: skip
    code, out, err = await run(cfg, database_url, "stats")
    assert code == 0 and "R$ 19,90 / R$ 19,90" in out, err
