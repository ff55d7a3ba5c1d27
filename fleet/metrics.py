"""Prometheus metrics, one registry per process built by the supervisor.

Labels are bounded: bot id (from config), method, outcome, error kind, state.
Never a user id, chat id or IP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Outcomes of one update (fleet.context.Outcome values).
OUTCOMES = ("handled", "duplicate", "failed", "throttled", "debounced", "malformed")


@dataclass(frozen=True, slots=True)
class FleetMetrics:
    registry: CollectorRegistry
    updates_received: Counter
    updates: Counter
    handle_seconds: Histogram
    sends: Counter
    send_retry_after: Counter
    poll_errors: Counter
    bots: Gauge
    config_reloads: Counter
    loop_lag_seconds: Gauge
    users_flushed: Counter
    messages_logged: Counter
    webhook_requests: Counter
    lease_events: Counter
    update_retries: Counter
    update_errors: Counter
    batch_dropped: Counter
    batch_backlog: Gauge
    redis_pipelines: Counter
    dead_letter_replays: Counter
    payment_webhooks: Counter
    payment_webhook_rejections: Counter
    payment_webhook_seconds: Histogram
    payment_events_processed: Counter
    payment_transitions: Counter
    payment_confirm_seconds: Histogram
    payment_amount_mismatches: Counter
    charges: Counter
    payment_checks: Counter
    inbox_backlog: Gauge
    outbox_backlog: Gauge
    outbox_deliveries: Counter
    timers_fired: Counter
    timers_due: Gauge
    funnel_steps: Counter
    funnel_step_seconds: Histogram
    funnel_media_fallbacks: Counter
    funnel_rejected: Counter
    deliveries: Counter
    _bots: dict[str, BotCounters] = field(default_factory=dict)

    def for_bot(self, bot_id: str) -> BotCounters:
        """This bot's series, bound once (``labels()`` costs a lookup and a lock per call)."""
        counters = self._bots.get(bot_id)
        if counters is None:
            counters = self._bots[bot_id] = BotCounters(
                received=self.updates_received.labels(bot_id),
                outcomes={o: self.updates.labels(bot_id, o) for o in OUTCOMES},
                handle_seconds=self.handle_seconds.labels(bot_id),
                retries=self.update_retries.labels(bot_id),
            )
        return counters

    def forget_bot(self, bot_id: str) -> None:
        """Drop every series labelled with this bot (it left this instance)."""
        self._bots.pop(bot_id, None)
        for metric in self._labelled_by_bot():
            series: set[tuple[str, ...]] = set()
            for family in metric.collect():
                for sample in family.samples:
                    if sample.labels.get("bot") == bot_id:
                        # In label-name order; "le" is the histogram's own.
                        series.add(tuple(v for k, v in sample.labels.items() if k != "le"))
            for labels in series:
                metric.remove(*labels)

    def _labelled_by_bot(self) -> tuple[MetricWrapperBase, ...]:
        return (
            self.updates_received, self.updates, self.handle_seconds, self.sends,
            self.send_retry_after, self.poll_errors, self.update_retries, self.update_errors,
            self.funnel_steps, self.funnel_media_fallbacks, self.funnel_rejected,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BotCounters:
    received: Counter
    outcomes: dict[str, Counter]
    handle_seconds: Histogram
    retries: Counter


def build_metrics() -> FleetMetrics:
    registry = CollectorRegistry(auto_describe=True)
    return FleetMetrics(
        registry=registry,
        updates_received=Counter(
            "botfleet_updates_received_total",
            "Updates fetched from Telegram (or taken from a webhook).",
            ["bot"],
            registry=registry,
        ),
        updates=Counter(
            "botfleet_updates_total",
            "Updates by outcome: handled, duplicate, failed, throttled, debounced, malformed.",
            ["bot", "outcome"],
            registry=registry,
        ),
        handle_seconds=Histogram(
            "botfleet_update_handle_seconds",
            "Time to handle one update, middlewares included.",
            ["bot"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        ),
        sends=Counter(
            "botfleet_sends_total",
            "Sends to Telegram by method and result (ok, skipped, blocked, failed, uncertain).",
            ["bot", "method", "result"],
            registry=registry,
        ),
        send_retry_after=Counter(
            "botfleet_send_retry_after_total",
            "429 answers from Telegram (the bot's sends pause for retry_after).",
            ["bot"],
            registry=registry,
        ),
        poll_errors=Counter(
            "botfleet_poll_errors_total",
            "getUpdates failures by kind (network, server, retry_after, conflict, unauthorized).",
            ["bot", "kind"],
            registry=registry,
        ),
        bots=Gauge(
            "botfleet_bots",
            "Bots of this instance by runner state.",
            ["state"],
            registry=registry,
        ),
        config_reloads=Counter(
            "botfleet_config_reloads_total",
            "Config reloads by result (applied, unchanged, rejected).",
            ["result"],
            registry=registry,
        ),
        loop_lag_seconds=Gauge(
            "botfleet_event_loop_lag_seconds",
            "How late the last event-loop tick ran.",
            registry=registry,
        ),
        users_flushed=Counter(
            "botfleet_users_flushed_total",
            "User sightings written to the database in batches.",
            registry=registry,
        ),
        messages_logged=Counter(
            "botfleet_messages_logged_total",
            "Outbound messages written to the database in batches.",
            registry=registry,
        ),
        lease_events=Counter(
            "botfleet_lease_events_total",
            "Bot lease events on this instance (acquired, handoff, released, lost).",
            ["event"],
            registry=registry,
        ),
        update_retries=Counter(
            "botfleet_update_retries_total",
            "Updates tried again after a passing failure (Redis, PostgreSQL, network).",
            ["bot"],
            registry=registry,
        ),
        update_errors=Counter(
            "botfleet_update_errors_total",
            "Errors raised while handling an update, by kind (transient: retried; permanent:"
            " dead-lettered).",
            ["bot", "kind"],
            registry=registry,
        ),
        batch_dropped=Counter(
            "botfleet_batch_dropped_total",
            "Rows a batch writer dropped because its backlog was full (PostgreSQL down).",
            ["writer"],
            registry=registry,
        ),
        batch_backlog=Gauge(
            "botfleet_batch_backlog",
            "Rows waiting in a batch writer.",
            ["writer"],
            registry=registry,
        ),
        redis_pipelines=Counter(
            "botfleet_redis_pipelines_total",
            "Round trips of the hot path's Redis command batcher (admission, grants, completion):"
            " many commands each.",
            registry=registry,
        ),
        dead_letter_replays=Counter(
            "botfleet_dead_letter_replays_total",
            "Dead letters replayed on request, by result (handled, failed).",
            ["result"],
            registry=registry,
        ),
        payment_webhook_seconds=Histogram(
            "botfleet_payment_webhook_seconds",
            "From a payment webhook's request to its answer, when stored (or a duplicate):"
            " what the gateway waits for (Mercado Pago gives up after 22 s).",
            ["gateway"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 22),
            registry=registry,
        ),
        payment_webhooks=Counter(
            "botfleet_payment_webhooks_total",
            "Payment webhooks by gateway and result (stored, duplicate, rejected, unavailable);"
            ' an unconfigured gateway id counts as gateway="unknown".',
            ["gateway", "result"],
            registry=registry,
        ),
        payment_webhook_rejections=Counter(
            "botfleet_payment_webhook_rejections_total",
            "Payment webhooks refused, by reason (url_secret, signature, stale, header,"
            " malformed, too_large, content_type, unknown_gateway, unsupported).",
            ["gateway", "reason"],
            registry=registry,
        ),
        payment_events_processed=Counter(
            "botfleet_payment_events_processed_total",
            "Inbox rows processed by result (moved, no_change, unknown, mismatch, retry).",
            ["gateway", "result"],
            registry=registry,
        ),
        payment_transitions=Counter(
            "botfleet_payment_transitions_total",
            "Charges moved to a status (one per real transition, whatever reported it).",
            ["gateway", "status", "source"],
            registry=registry,
        ),
        payment_confirm_seconds=Histogram(
            "botfleet_payment_confirm_seconds",
            "From the payment at the gateway (when it tells; else the charge's creation) "
            "to its payment.paid event.",
            ["gateway"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        ),
        payment_amount_mismatches=Counter(
            "botfleet_payment_amount_mismatches_total",
            "Gateways reporting a payment of another amount or currency than charged (refused).",
            ["gateway"],
            registry=registry,
        ),
        charges=Counter(
            "botfleet_charges_total",
            "Charge requests by result (new, reused, busy, cooldown, failed).",
            ["gateway", "result"],
            registry=registry,
        ),
        payment_checks=Counter(
            "botfleet_payment_checks_total",
            '"I paid" and operator checks of one charge by result (asked, limited).',
            ["gateway", "result"],
            registry=registry,
        ),
        inbox_backlog=Gauge(
            "botfleet_payment_inbox_backlog",
            "Stored payment webhooks not processed yet.",
            registry=registry,
        ),
        outbox_backlog=Gauge(
            "botfleet_outbox_backlog",
            "Domain events not yet delivered to every subscriber.",
            registry=registry,
        ),
        timers_fired=Counter(
            "botfleet_timers_fired_total",
            "Durable timers fired by kind and result (done, failed).",
            ["kind", "result"],
            registry=registry,
        ),
        timers_due=Gauge(
            "botfleet_timers_due",
            "Durable timers due and not fired yet (a backlog that should stay near zero).",
            registry=registry,
        ),
        funnel_steps=Counter(
            "botfleet_funnel_steps_total",
            "Funnel steps reached by bot and step (start, welcome, plan, bump_accepted,"
            " bump_declined, pix, pix_reused, cooldown, check, delivered, downsell_sent,"
            " downsell_moot, upsell_sent, upsell_moot, downsell_taken, upsell_taken, stats).",
            ["bot", "step"],
            registry=registry,
        ),
        funnel_step_seconds=Histogram(
            "botfleet_funnel_step_seconds",
            "Time to do one funnel step (its sends included), by step.",
            ["step"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        ),
        funnel_media_fallbacks=Counter(
            "botfleet_funnel_media_fallbacks_total",
            "Welcome media Telegram refused (bad URL or file id): the text went alone.",
            ["bot"],
            registry=registry,
        ),
        funnel_rejected=Counter(
            "botfleet_funnel_rejected_total",
            "Input the funnel refused politely, by reason (stale or forged button, another"
            " user's charge, a /start payload no deep link carries).",
            ["bot", "reason"],
            registry=registry,
        ),
        deliveries=Counter(
            "botfleet_deliveries_total",
            "Access deliveries for paid payments by kind (link, invite) and result (delivered,"
            " blocked, retry, undeliverable).",
            ["kind", "result"],
            registry=registry,
        ),
        outbox_deliveries=Counter(
            "botfleet_outbox_deliveries_total",
            "Domain event deliveries by subscriber and result (ok, failed).",
            ["subscriber", "result"],
            registry=registry,
        ),
        webhook_requests=Counter(
            "botfleet_webhook_requests_total",
            "Telegram webhook requests by result (accepted, retry, forbidden, unknown, malformed);"
            " no bot label: a forged request must not create series.",
            ["result"],
            registry=registry,
        ),
    )
