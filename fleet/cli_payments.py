"""``botfleet payments list | show ID | check ID | stats``: charges, for operators.

``list`` and ``show`` read the database only; ``check`` also asks the charge's
gateway (with the configured credentials) and applies its answer exactly as a
webhook would: forward only, amount checked, one event per transition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from fleet.config_file import ConfigError, load_config

_STATUSES = ["pending", "paid", "refunded", "chargeback", "expired", "failed", "cancelled"]
_CONFIG = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="config.yaml",
    show_default=True,
    help="Configuration file.",
)


def _load(config_path: Path) -> Any:
    from fleet.cli import EXIT_BAD_INPUT, _fail

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if config.database.url is None:
        _fail(f"database.url: not set in {config_path}", EXIT_BAD_INPUT)
    return config


def _sessions(engine: Any) -> Any:
    from storage.database import create_session_factory

    return create_session_factory(engine)


@click.group("payments")
def payments_group() -> None:
    """PIX charges: list them, show one's life, ask its gateway now."""


@payments_group.command("list")
@_CONFIG
@click.option("--bot", "bot_id", metavar="ID", help="Only this bot's charges.")
@click.option("--status", type=click.Choice(_STATUSES))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def payments_list(
    config_path: Path, bot_id: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """Charges, newest first."""
    from fleet.cli import _with_engine
    from storage.payments import Charges

    config = _load(config_path)
    found = _with_engine(
        config.database, lambda e: Charges(_sessions(e)).listing(bot_id, status, limit)
    )
    if as_json:
        for payment in found:
            click.echo(orjson.dumps(_payment(payment)).decode())
        return
    click.echo(_table(found))


@payments_group.command("stats")
@_CONFIG
@click.option("--bot", "bot_id", metavar="ID", help="Only this bot.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bot.")
def payments_stats(config_path: Path, bot_id: str | None, as_json: bool) -> None:
    """Each bot's funnel today (Brasília) and in total: users, /starts, PIX, sales, revenue
    (what owners get with /stats)."""
    from fleet.cli import _with_engine
    from fleet.funnel.steps import BRASILIA
    from fleet.money import format_brl
    from storage.funnel import FunnelStore

    config = _load(config_path)
    bots = [b.id for b in config.bots if bot_id in (None, b.id)]
    midnight = datetime.combine(datetime.now(BRASILIA).date(), datetime.min.time(), BRASILIA)

    async def work(engine: Any) -> Any:
        store = FunnelStore(_sessions(engine))
        return [(b, await store.figures(b, midnight), await store.figures(b, None)) for b in bots]

    rows = _with_engine(config.database, work)
    if as_json:
        for bot, today, total in rows:
            click.echo(orjson.dumps({"bot": bot, "today": vars_of(today), "total": vars_of(total)}))
        return
    click.echo(f"{'bot':<20} {'users':>13} {'starts':>13} {'PIX':>11} {'sales':>11}  revenue")
    for bot, today, total in rows:
        click.echo(
            f"{bot:<20} {today.users:>6}/{total.users:<6} {today.starts:>6}/{total.starts:<6}"
            f" {today.charges:>5}/{total.charges:<5} {today.sales:>5}/{total.sales:<5}"
            f"  {format_brl(today.revenue_cents)} / {format_brl(total.revenue_cents)}"
        )
    click.echo("(today / total; today from midnight in Brasília)")


def vars_of(figures: Any) -> dict[str, int]:
    return {name: getattr(figures, name) for name in figures.__dataclass_fields__}


@payments_group.command("show")
@click.argument("payment_id", type=int)
@_CONFIG
@click.option("--json", "as_json", is_flag=True)
def payments_show(config_path: Path, payment_id: int, as_json: bool) -> None:
    """One charge with the webhooks stored for it and the events it produced."""
    from fleet.cli import EXIT_UNAVAILABLE, _fail, _with_engine
    from storage.payments import Charges

    config = _load(config_path)

    async def work(engine: Any) -> Any:
        charges = Charges(_sessions(engine))
        payment = await charges.get(payment_id)
        if payment is None:
            return None
        return payment, *(await charges.history(payment))

    found = _with_engine(config.database, work)
    if found is None:
        _fail(f"no charge {payment_id}", EXIT_UNAVAILABLE)
    payment, webhooks, events = found
    document = {
        **_payment(payment),
        "webhooks": [
            {
                "received_at": w.received_at.isoformat(),
                "event_id": w.event_id,
                "claimed_status": w.claimed_status,
                "verification": w.verification,
                "result": w.result,
                "attempts": w.attempts,
            }
            for w in webhooks
        ],
        "events": [
            {
                "topic": e.topic,
                "created_at": e.created_at.isoformat(),
                "delivered_at": e.delivered_at.isoformat() if e.delivered_at else None,
                "source": e.payload.get("source"),
            }
            for e in events
        ],
    }
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(_table([payment]))
    for w in document["webhooks"]:
        click.echo(f"  webhook {w['received_at']}  {w['claimed_status'] or '-'}  {w['result']}")
    for e in document["events"]:
        click.echo(f"  event   {e['created_at']}  {e['topic']}  ({e['source']})")


@payments_group.command("check")
@click.argument("payment_id", type=int)
@_CONFIG
def payments_check(config_path: Path, payment_id: int) -> None:
    """Ask the charge's gateway now and apply the answer (as a webhook would)."""
    from fleet.cli import EXIT_UNAVAILABLE, _fail, _run_async

    config = _load(config_path)

    async def work() -> tuple[str, str] | None:
        import aiohttp

        from fleet.metrics import build_metrics
        from fleet.payments.registry import build_gateway
        from fleet.payments.service import PaymentService
        from storage.database import create_engine
        from storage.payments import Charges, PaymentInbox, PaymentLedger

        engine = create_engine(config.database)
        try:
            sessions = _sessions(engine)
            async with aiohttp.ClientSession() as http:
                gateways = {g.id: build_gateway(g, http) for g in config.gateways}
                service = PaymentService(
                    gateways, Charges(sessions), PaymentLedger(sessions), PaymentInbox(sessions),
                    config.payments, build_metrics(), public_url=config.http.public_url,
                )  # fmt: skip
                before = await Charges(sessions).get(payment_id)
                if before is None:
                    return None
                if before.gateway_id not in gateways:
                    gateway = before.gateway_id
                    _fail(
                        f"charge {payment_id}: gateway {gateway} not configured", EXIT_UNAVAILABLE
                    )
                after = await service.check(payment_id, datetime.now(UTC))
                assert after is not None
                return before.status, after.status
        finally:
            await engine.dispose()

    result = _run_async(work)
    if result is None:
        _fail(f"no charge {payment_id}", EXIT_UNAVAILABLE)
    before, after = result
    change = f"{before} -> {after}" if before != after else f"{after} (unchanged)"
    click.echo(f"charge {payment_id}: {change}")


def _payment(payment: Any) -> dict[str, Any]:
    return {
        "id": payment.id,
        "bot": payment.bot_id,
        "user": payment.telegram_user_id,
        "offer": payment.offer_ref,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "gateway": payment.gateway_id,
        "transaction_id": payment.transaction_id,
        "status": payment.status,
        "created_at": payment.created_at.isoformat(),
        "expires_at": payment.expires_at.isoformat(),
        "paid_at": payment.paid_at.isoformat() if payment.paid_at else None,
        "delivery": payment.delivery_state,
    }


def _table(payments: Sequence[Any]) -> str:
    from fleet.status import _table as render

    rows = [
        [
            str(p.id), p.bot_id, str(p.telegram_user_id), p.offer_ref,
            f"{p.amount_cents // 100}.{p.amount_cents % 100:02d} {p.currency}", p.gateway_id,
            p.status,
            p.created_at.strftime("%Y-%m-%d %H:%M"), p.delivery_state,
        ]
        for p in payments
    ]  # fmt: skip
    return render(
        ["ID", "BOT", "USER", "OFFER", "AMOUNT", "GATEWAY", "STATUS", "CREATED", "DELIVERY"], rows
    )
