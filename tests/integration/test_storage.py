"""Repositories and services against a real PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import BotConfig
from storage.models import BotState, BotUser, Direction
from storage.repositories import Attribution, FailedUpdate, MessageRecord, UserSeen
from storage.services import BotRegistry, DeadLetters, MessageLog, UserActivity
from storage.uow import UnitOfWork

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def bot(bot_id: str, number: int, enabled: bool = True) -> BotConfig:
    return BotConfig(
        id=bot_id, token=SecretStr(f"{number}:{'x' * 30}"), enabled=enabled, funnel="main"
    )


async def registered(sessions: async_sessionmaker[AsyncSession], *bots: BotConfig) -> BotRegistry:
    registry = BotRegistry(sessions)
    await registry.sync(list(bots))
    return registry


async def test_bot_registry_follows_config_and_keeps_runner_verdicts(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    registry = await registered(session_factory, bot("a", 1), bot("b", 2, enabled=False))
    states = {b.id: (b.telegram_id, b.state) for b in await registry.all()}
    assert states == {"a": (1, BotState.UNKNOWN), "b": (2, BotState.DISABLED)}

    await registry.mark("a", BotState.UNAUTHORIZED, "401 Unauthorized", username="loja_bot")
    await registry.sync([bot("a", 1), bot("b", 2, enabled=True)])  # b re-enabled
    rows = {b.id: b for b in await registry.all()}
    assert rows["a"].state is BotState.UNAUTHORIZED  # a config re-sync does not erase a verdict
    assert rows["a"].state_reason == "401 Unauthorized" and rows["a"].username == "loja_bot"
    assert rows["b"].state is BotState.UNKNOWN

    await registry.sync([bot("a", 1, enabled=False)])
    assert {b.id: b.state for b in await registry.all()}["a"] is BotState.DISABLED


async def test_user_sightings_are_batched_into_one_row_per_user(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1), bot("b", 2))
    activity = UserActivity(session_factory)
    await activity.record_seen(
        [
            UserSeen("a", 10, T0 + timedelta(minutes=5), username="ana", first_name="Ana"),
            UserSeen("a", 10, T0, first_name=None),
            UserSeen("a", 10, T0 + timedelta(minutes=2), first_name="Ana Maria"),
            UserSeen("b", 10, T0),
            UserSeen("a", 11, T0),
        ]
    )
    # A later batch with an older sighting moves nothing backwards.
    await activity.record_seen([UserSeen("a", 10, T0 - timedelta(days=1), last_name="Silva")])

    async with UnitOfWork(session_factory) as uow:
        count = await uow.session.scalar(select(func.count()).select_from(BotUser))
        ana = await uow.users.get("a", 10)
    assert count == 3
    assert ana is not None
    assert ana.first_interaction_at == T0 - timedelta(days=1)
    assert ana.last_interaction_at == T0 + timedelta(minutes=5)
    assert (ana.username, ana.first_name, ana.last_name) == ("ana", "Ana", "Silva")


async def test_attribution_keeps_the_first_touch_and_blocking_is_recorded(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    activity = UserActivity(session_factory)
    await activity.record_seen([UserSeen("a", 10, T0)])
    first = Attribution(tracking_token="tk1", utm_source="facebook", fbclid="fb.1")
    assert await activity.attribute("a", 10, first, T0)
    assert not await activity.attribute("a", 10, Attribution(utm_source="google"), T0)
    await activity.set_blocked("a", 10, True, T0)

    async with UnitOfWork(session_factory) as uow:
        user = await uow.users.get("a", 10)
    assert user is not None
    assert (user.utm_source, user.tracking_token, user.fbclid) == ("facebook", "tk1", "fb.1")
    assert user.blocked and user.blocked_at == T0


async def test_message_log_skips_repeats(session_factory: async_sessionmaker[AsyncSession]) -> None:
    await registered(session_factory, bot("a", 1))
    log = MessageLog(session_factory)
    batch = [
        MessageRecord("a", 10, 1, Direction.IN, T0, user_id=10, update_id=500, text="/start"),
        MessageRecord("a", 10, 2, Direction.OUT, T0, text="Olá"),
    ]
    await log.record(batch)
    await log.record([*batch, MessageRecord("a", 10, 3, Direction.OUT, T0)])  # two repeats
    async with UnitOfWork(session_factory) as uow:
        assert await uow.messages.count("a") == 3
        assert await uow.messages.count("a", Direction.OUT) == 2
        assert [m.message_id for m in await uow.messages.for_chat("a", 10)] == [1, 2, 3]


async def test_dead_letters_count_attempts_and_resolve(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    letters = DeadLetters(session_factory)
    failed = FailedUpdate("a", 77, {"update_id": 77, "message": {"text": "x"}}, "KeyError", "boom")
    assert await letters.record(failed) == 1
    assert await letters.record(failed) == 2
    [row] = await letters.unresolved("a")
    assert (row.update_id, row.attempts, row.payload["update_id"]) == (77, 2, 77)
    assert await letters.resolve("a", 77)
    assert not await letters.resolve("a", 77)
    assert await letters.unresolved("a") == []


async def test_unit_of_work_without_commit_rolls_back(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    async with UnitOfWork(session_factory) as uow:
        await uow.users.touch([UserSeen("a", 10, T0)])
        assert await uow.users.get("a", 10) is not None  # visible inside the transaction
    async with UnitOfWork(session_factory) as uow:
        assert await uow.users.get("a", 10) is None
