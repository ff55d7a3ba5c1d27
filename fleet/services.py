"""Building what every runner shares, for the composition root (``fleet.supervisor``).

Each resource is pushed on the caller's ``AsyncExitStack`` as it is made, so
they close in reverse order, after every bot has stopped. Redis must answer
at start (leases, claims and rate limits live there); PostgreSQL need not:
bots poll and answer while it is away, rows wait in their bounded batches,
failures that must be stored are retried, and the bot registry is written
once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.batcher import BatchWriter
from fleet.config import FleetConfig
from fleet.errors import ServiceUnavailable
from fleet.http import HttpPool
from fleet.metrics import FleetMetrics
from fleet.outbox import OutboxDispatcher
from fleet.payments.base import Gateway
from fleet.payments.inbox import InboxWriter
from fleet.payments.registry import build_gateway
from fleet.payments.service import PaymentService, url_secret
from fleet.pipeline import UpdatePipeline
from fleet.ratelimit import Bucket, SendGate, SendLimits
from fleet.runner import RunnerServices
from fleet.sales.delivery import Delivery
from fleet.sales.directory import FunnelDirectory
from fleet.sales.flow import SalesFlow
from fleet.sales.followups import DOWNSELL, UPSELL, FollowUps
from fleet.sales.outbound import Outbound
from fleet.sender import Sender
from fleet.sequencer import ChatSequencer
from fleet.timers import TimerDispatcher
from middlewares.admission import BatchAdmission
from scheduler.jobs import JobContext
from storage.batching import CommandBatcher
from storage.bumps import BumpSessions
from storage.database import create_engine, create_session_factory, ping_database
from storage.funnel import FunnelStore
from storage.idempotency import SendLedger
from storage.keys import RedisKeys
from storage.payments import Charges, Outbox, PaymentInbox, PaymentLedger
from storage.quota import UserQuota
from storage.redis import create_redis, ping_redis
from storage.repositories.funnel import Start
from storage.repositories.messages import MessageRecord
from storage.repositories.users import UserSeen
from storage.services import BotRegistry, DeadLetters, MessageLog, SessionFactory, UserActivity
from storage.timers import Timers
from storage.updates import UpdateClaims

log = logging.getLogger(__name__)

HealthCheck = tuple[str, Callable[[], Awaitable[None]]]


@dataclass(frozen=True, slots=True)
class Services:
    runner: RunnerServices
    redis: Redis
    keys: RedisKeys
    engine: AsyncEngine
    sessions: SessionFactory
    batcher: CommandBatcher
    dead_letters: DeadLetters
    messages: BatchWriter[MessageRecord]
    health: list[HealthCheck]
    payments: PaymentService
    gateways: dict[str, Gateway]
    url_secrets: dict[str, str]  # gateway id -> the secret in its webhook URL
    inbox_writer: InboxWriter
    outbox: OutboxDispatcher
    timers: TimerDispatcher
    funnels: FunnelDirectory
    starts: BatchWriter[Start]
    jobs: JobContext


async def build_services(
    config: FleetConfig, stack: AsyncExitStack, metrics: FleetMetrics
) -> Services:
    redis = create_redis(config.redis)
    stack.push_async_callback(redis.aclose)
    await ping_redis(redis, "redis", config.redis.connect_timeout)
    engine = create_engine(config.database)
    stack.push_async_callback(engine.dispose)
    try:
        await ping_database(engine, config.database.connect_timeout)
    except ServiceUnavailable as exc:
        log.error("%s; bots run meanwhile, rows wait in their batches", exc)
    sessions = create_session_factory(engine)
    keys = RedisKeys(config.redis.key_prefix)
    runtime = config.runtime

    batcher = CommandBatcher(
        redis, timeout=config.redis.command_timeout, on_round_trip=metrics.redis_pipelines.inc
    )
    stack.push_async_callback(batcher.aclose)
    ledger = SendLedger(batcher, keys)
    limits = config.telegram.send_limits
    gate = SendGate(
        batcher,
        keys,
        ledger,
        SendLimits(
            bot=Bucket(limits.bot_per_second, limits.bot_burst),
            private_chat=Bucket(limits.chat_per_second, limits.chat_burst),
            group=Bucket(limits.group_per_minute / 60, limits.group_burst),
        ),
    )
    stack.push_async_callback(gate.aclose)
    claims = UpdateClaims(
        batcher,
        keys,
        flood_limit=runtime.user_messages_per_minute,
        debounce_seconds=runtime.start_debounce_seconds,
    )

    # Long polls get their own unbounded pool: one open connection per bot by design.
    poll_http = HttpPool(config.telegram.api_base, limit=0)
    stack.push_async_callback(poll_http.aclose)
    # Every admitted update may be sending at once: no send waits for a connection.
    send_http = HttpPool(config.telegram.api_base, limit=runtime.max_concurrent_updates + 64)
    stack.push_async_callback(send_http.aclose)
    api = TelegramAPIServer.from_base(config.telegram.api_base.rstrip("/"))
    api_session = AiohttpSession(api=api, limit=64)
    stack.push_async_callback(api_session.close)

    messages = BatchWriter[MessageRecord]("messages", MessageLog(sessions).record, metrics=metrics)
    users = BatchWriter[UserSeen](
        "users",
        UserActivity(sessions).record_seen,
        key=lambda seen: (seen.bot_id, seen.telegram_user_id),
        metrics=metrics,
    )
    dead_letters = DeadLetters(sessions)
    sender = Sender(
        send_http,
        gate,
        ledger,
        messages,
        metrics,
        max_attempts=config.telegram.send_attempts,
        max_wait=config.telegram.send_max_wait,
    )
    # Gateways: one HTTP pool for all of them (each call sets its own timeout).
    gateway_http = aiohttp.ClientSession()
    stack.push_async_callback(gateway_http.close)
    gateways = {g.id: build_gateway(g, gateway_http) for g in config.gateways}
    for gateway in gateways.values():
        stack.push_async_callback(gateway.aclose)
    instance_secret = config.payments.url_secret
    url_secrets = {
        gateway_id: url_secret(instance_secret.get_secret_value(), gateway_id)
        for gateway_id in gateways
        if instance_secret is not None
    }
    inbox = PaymentInbox(sessions)
    payments = PaymentService(
        gateways,
        Charges(sessions),
        PaymentLedger(sessions),
        inbox,
        config.payments,
        metrics,
        public_url=config.http.public_url,
        check_quota=UserQuota(redis, keys, "paycheck", config.payments.checks_per_minute),
    )
    inbox_writer = InboxWriter(inbox)
    stack.push_async_callback(inbox_writer.aclose)
    outbox = OutboxDispatcher(Outbox(sessions), metrics)
    timers = TimerDispatcher(Timers(sessions), metrics)
    # The funnel: what the handlers, the timers and the outbox subscribers share.
    funnels = FunnelDirectory()
    sender.know(funnels.update(config))
    store = FunnelStore(sessions)
    outbound = Outbound(sender, metrics)
    followups = FollowUps(funnels, store, outbound, metrics)
    timers.handle(DOWNSELL, followups.fire_downsell)
    timers.handle(UPSELL, followups.fire_upsell)
    delivery = Delivery(
        funnels, store, outbound, followups, metrics,
        is_done=lambda key: SendLedger.is_done(redis, key),
    )  # fmt: skip
    outbox.subscribe("payment.paid", "funnel-delivery", delivery.deliver)
    outbox.subscribe("payment.paid", "funnel-owners", delivery.notify_owners)
    outbox.subscribe("payment.paid", "funnel-upsells", delivery.schedule_upsells)
    starts = BatchWriter[Start]("starts", store.record_starts, metrics=metrics)
    sales = SalesFlow(
        funnels, payments, store, BumpSessions(redis, keys, batcher), outbound, followups,
        metrics, starts,
    )  # fmt: skip
    runner = RunnerServices(
        telegram=config.telegram,
        runtime=runtime,
        public_url=config.http.public_url,
        poll_http=poll_http,
        api_session=api_session,
        sequencer=ChatSequencer(runtime.max_concurrent_updates, runtime.max_updates_per_bot),
        sender=sender,
        claims=claims,
        admission=BatchAdmission(claims),
        pipeline=UpdatePipeline(dead_letters, attempts=runtime.update_attempts),
        registry=BotRegistry(sessions),
        users=users,
        metrics=metrics,
        sales=sales,
    )
    health: list[HealthCheck] = [
        ("redis", lambda: ping_redis(redis, "redis", 2.0)),
        ("database", lambda: ping_database(engine, 2.0)),
    ]
    return Services(
        runner=runner,
        redis=redis,
        keys=keys,
        engine=engine,
        sessions=sessions,
        batcher=batcher,
        dead_letters=dead_letters,
        messages=messages,
        health=health,
        payments=payments,
        gateways=gateways,
        url_secrets=url_secrets,
        inbox_writer=inbox_writer,
        outbox=outbox,
        timers=timers,
        funnels=funnels,
        starts=starts,
        jobs=JobContext(
            payments,
            inbox,
            outbox,
            metrics,
            timers,
            retry_base=timedelta(seconds=config.payments.retry_base_seconds),
        ),
    )
