"""Prometheus metrics, one registry per process built by the supervisor.

Labels are bounded: bot id (from config), method, outcome, error kind, state.
Never a user id, chat id or IP.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Outcomes of one update, as the runner and the middlewares see them.
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
        webhook_requests=Counter(
            "botfleet_webhook_requests_total",
            "Telegram webhook requests by result (accepted, retry, forbidden, unknown, malformed);"
            " no bot label: a forged request must not create series.",
            ["result"],
            registry=registry,
        ),
    )
