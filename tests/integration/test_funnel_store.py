"""/starts are recorded in batches: first touch kept, last touch followed, counted, and the
funnel begun again (downsells scheduled before the /start cancelled, later ones kept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.funnel import FunnelStore
from storage.models import BotUser, Timer
from storage.repositories.funnel import Start
from storage.repositories.timers import NewTimer
from storage.timers import Timers
from tests.integration.test_storage import bot, registered


async def person(sessions: async_sessionmaker[AsyncSession], user_id: int) -> BotUser:
    async with sessions() as session:
        found = await session.scalar(
            select(BotUser).where(BotUser.bot_id == "a", BotUser.telegram_user_id == user_id)
        )
    assert found is not None
    return found


async def test_first_touch_is_kept_last_touch_follows_and_starts_are_counted(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    store = FunnelStore(session_factory)
    t0 = datetime.now(UTC)
    token = "ab" * 16
    await store.record_starts(
        [
            Start("a", 5, t0 + timedelta(seconds=2), first_name="Ana"),  # no payload
            Start("a", 5, t0, campaign_code="camp_a"),
            Start("a", 6, t0, tracking_token=token),
            Start("a", 5, t0 + timedelta(seconds=1), campaign_code="camp_b"),
        ]
    )  # one batch, out of order, a user twice: merged into one row each
    ana = await person(session_factory, 5)
    assert (ana.campaign_code, ana.last_campaign_code, ana.starts) == ("camp_a", "camp_b", 3)
    assert ana.first_name == "Ana" and ana.attributed_at == t0
    assert ana.last_touched_at == t0 + timedelta(seconds=1)
    assert (await person(session_factory, 6)).tracking_token == token

    await store.record_starts([Start("a", 5, t0 + timedelta(minutes=1), tracking_token=token)])
    await store.record_starts([Start("a", 5, t0 + timedelta(minutes=2))])  # no touch: kept
    ana = await person(session_factory, 5)
    assert (ana.campaign_code, ana.tracking_token) == ("camp_a", None)  # first touch stays
    assert (ana.last_tracking_token, ana.last_campaign_code) == (token, None)
    assert ana.starts == 5 and ana.last_start_at == t0 + timedelta(minutes=2)


async def test_a_start_cancels_the_downsells_scheduled_before_it_only(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await registered(session_factory, bot("a", 1))
    store, timers = FunnelStore(session_factory), Timers(session_factory)
    due = datetime.now(UTC) + timedelta(hours=1)
    await timers.schedule(
        [
            NewTimer("a", 5, "downsell", "old-downsell", due),
            NewTimer("a", 5, "upsell", "old-upsell", due),  # an upsell survives a /start
            NewTimer("a", 6, "downsell", "someone-else", due),
        ]
    )
    started = datetime.now(UTC)
    await timers.schedule([NewTimer("a", 5, "downsell", "after-the-start", due)])
    await store.record_starts([Start("a", 5, started)])  # written a moment after it happened
    async with session_factory() as session:
        rows = (await session.execute(select(Timer.key, Timer.state))).all()
    states = {key: state for key, state in rows}
    assert states == {
        "old-downsell": "cancelled",
        "old-upsell": "scheduled",
        "someone-else": "scheduled",
        "after-the-start": "scheduled",
    }
