"""The demo's sale: one PIX charge through the sandbox gateway, from creation to delivery.

The emulator serves the sandbox gateway. A buyer of the first bot whose funnel
names a gateway gets a charge (the price parsed from text, exactly); a forged
webhook for it (right transaction, wrong signature) is refused; the buyer pays
in the simulated bank app and the gateway posts its signed webhook three times
at once; the fleet stores it once, moves the charge to ``paid`` once and calls
each ``payment.paid`` subscriber (the funnel's delivery, and one the demo adds to
watch) once: the buyer gets their access once. Then the charge's
life is printed as ``botfleet payments show`` reads it from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from fleet.config import BotConfig
from fleet.emulator import EmulatorServer, User
from fleet.emulator.pix import SIGNATURE_HEADER, PixFaults, sign
from fleet.funnel.offers import plan_offer
from fleet.money import format_brl
from fleet.payments.service import url_secret
from fleet.supervisor import Supervisor

_WITHIN = 30.0


def gateway_bot(supervisor: Supervisor) -> tuple[BotConfig, str] | None:
    """The first enabled bot whose funnel sells through a sandbox gateway."""
    config = supervisor.config
    for bot in config.enabled_bots():
        gateway_id = config.funnels[bot.funnel].gateway
        if gateway_id is not None and config.gateway(gateway_id).kind == "sandbox":
            return bot, gateway_id
    return None


def point_sandbox_webhooks(supervisor: Supervisor, server: EmulatorServer) -> None:
    """Tell the sandbox where to post (as an operator does in a gateway's panel)."""
    found = gateway_bot(supervisor)
    config = supervisor.config
    if found is None or config.payments.url_secret is None:
        return
    gateway_id = found[1]
    secret = url_secret(config.payments.url_secret.get_secret_value(), gateway_id)
    hook = f"http://127.0.0.1:{supervisor.web_port}/webhook/payment/{gateway_id}/{secret}"
    server.emulator.pix.configure(webhook_url=hook)


async def demo_sale(supervisor: Supervisor, server: EmulatorServer, buyer: User) -> Table | None:
    """Sell once; the life of the charge as a table (None: no bot sells through a sandbox)."""
    found = gateway_bot(supervisor)
    payments, outbox = supervisor.payments, supervisor.outbox
    if found is None or payments is None or outbox is None:
        return None
    bot, gateway_id = found
    config = supervisor.config
    assert config.payments.url_secret is not None  # required with gateways (config check)
    secret = url_secret(config.payments.url_secret.get_secret_value(), gateway_id)
    hook = f"http://127.0.0.1:{supervisor.web_port}/webhook/payment/{gateway_id}/{secret}"
    pix = server.emulator.pix
    pix.configure(webhook_url=hook)  # as an operator sets it in the gateway's panel

    life: list[tuple[str, str]] = []
    start = time.monotonic()

    def note(what: str) -> None:
        life.append((f"{(time.monotonic() - start) * 1000:7.0f}", what))

    delivered: list[tuple[str, int]] = []
    wanted: set[int] = set()
    paid = asyncio.Event()

    async def deliver_access(topic: str, payload: dict[str, Any]) -> None:
        if int(payload["payment_id"]) in wanted:
            delivered.append((topic, int(payload["payment_id"])))
            paid.set()

    outbox.subscribe("payment.paid", "demo-delivery", deliver_access)

    funnel = config.funnel_for(bot)
    offer = plan_offer(funnel, funnel.plans[0].id) if funnel.plans else None
    if offer is None:
        return None
    token = bot.token.get_secret_value()
    emulator = server.emulator
    emulator.user_sends(token, buyer, "/start")  # a bot writes only to who started it
    await emulator.wait_for(lambda: emulator.transcript(token, buyer), _WITHIN)
    made = await payments.charge(
        bot.id, buyer.id, gateway_id, offer_ref=offer.ref, description=offer.title,
        amount_cents=offer.amount_cents,
    )  # fmt: skip
    payment = made.payment
    assert payment is not None and payment.transaction_id is not None, made
    wanted.add(payment.id)
    note(
        f"charge {payment.id} created at {gateway_id}: {format_brl(payment.amount_cents)}"
        f" ({payment.amount_cents} cents, {offer.ref}), PIX code {(payment.pix_code or '')[:24]}…"
    )

    forged = await _forge(hook, pix.charge(payment.transaction_id))
    note(f"forged 'paid' webhook (right transaction, wrong signature): HTTP {forged}")

    pix.set_faults(PixFaults(duplicate=3))  # the gateway posts each event three times at once
    pix.pay(payment.transaction_id)
    note("buyer paid in the bank app; the gateway posts its webhook 3 times")
    async with asyncio.timeout(_WITHIN):
        await paid.wait()
    note(f"subscriber 'demo-delivery' called: {delivered[0][0]} (it watches)")

    def access() -> list[str]:
        return [
            s.text or "" for s in emulator.transcript(token, buyer) if "t.me/" in (s.text or "")
        ]

    (sent,) = await emulator.wait_for(access, _WITHIN)
    note(f"the buyer got their access (subscriber 'funnel-delivery'): {sent[:60]}")
    await server.emulator.wait_for(lambda: pix.busy == 0, _WITHIN)
    pix.clear_faults()

    async with asyncio.timeout(_WITHIN):
        while True:  # the subscriber was called; its success is recorded right after
            history = await payments.history(payment.id)
            assert history is not None
            row, webhooks, events = history
            if all(event.delivered_at for event in events):
                break
            await asyncio.sleep(0.02)  # polled: the state lives in PostgreSQL
    answers = [d.status for d in pix.webhooks(charge_id=payment.transaction_id)]
    note(f"gateway got answers {answers} for its {len(answers)} posts")
    for webhook in webhooks:
        note(
            f"stored webhook {webhook.event_id[:12]}…: claims {webhook.claimed_status},"
            f" verified by {webhook.verification}, result {webhook.result}"
        )
    for event in events:
        delivered_at = "delivered" if event.delivered_at else "not delivered yet"
        note(f"outbox event {event.topic} ({event.payload.get('source')}): {delivered_at}")
    confirmed = _ms(row.paid_at, next((e.created_at for e in events), None))
    note(
        f"charge {row.id} is {row.status}; {len(delivered)} delivery call(s);"
        f" paid at the gateway -> payment.paid in {confirmed}"
    )

    counted = _webhook_counts(supervisor, gateway_id)
    note(f"/metrics: webhooks {counted}")

    table = Table(title=f"a PIX sale on {bot.id} (sandbox gateway {gateway_id!r})")
    table.add_column("ms", justify="right")
    table.add_column("what happened")
    for at, what in life:
        table.add_row(at, what)
    return table


async def _forge(url: str, charge: dict[str, Any]) -> int:
    body = orjson.dumps(
        {
            "event_id": "evt_forged",
            "type": "charge.paid",
            "created_at": charge["created_at"],
            "charge": {**charge, "status": "paid"},
        }
    )
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: f"t={now},v1={sign('not-the-secret', body, now)}",
    }
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        await r.read()
        return r.status


def _webhook_counts(supervisor: Supervisor, gateway_id: str) -> str:
    """botfleet_payment_webhooks_total by result, as /metrics shows it."""
    counts: dict[str, float] = {}
    for family in supervisor.metrics.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "botfleet_payment_webhooks_total"
                and sample.labels.get("gateway") == gateway_id
            ):
                counts[sample.labels["result"]] = sample.value
    return ", ".join(f"{result} {value:.0f}" for result, value in sorted(counts.items()))


def _ms(since: datetime | None, until: datetime | None) -> str:
    if since is None or until is None:
        return "-"
    return f"{max(0.0, (until - since).total_seconds()) * 1000:.0f} ms"


def print_sale(console: Console, table: Table | None) -> None:
    if table is None:
        console.print("no bot sells through a sandbox gateway: no sale shown")
    else:
        console.print(table)
