"""Dead letters: listing, the replay queue and its claims, and ``botfleet dead-letters``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config import BotConfig, DatabaseConfig
from migrations import runner
from storage.database import create_engine
from storage.models import DeadLetter
from storage.repositories import FailedUpdate
from storage.services import BotRegistry, DeadLetters
from storage.uow import UnitOfWork
from tests.integration.test_cli import botfleet, write
from tests.services import free_port

Sessions = async_sessionmaker[AsyncSession]
SECRET_TEXT = "meu cartão 4111 1111"  # what a user wrote: only --json may show it
LEAKED_TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"


def failed(bot_id: str, update_id: int, error: str = "boom") -> FailedUpdate:
    payload = {"update_id": update_id, "message": {"text": SECRET_TEXT}}
    return FailedUpdate(bot_id, update_id, payload, "KeyError", error)


async def with_letters(sessions: Sessions, bots: dict[str, Sequence[int]]) -> DeadLetters:
    configs = [
        BotConfig(id=b, token=SecretStr(f"{n + 1}:{'x' * 30}"), funnel="main")
        for n, b in enumerate(bots)
    ]
    await BotRegistry(sessions).sync(configs)
    letters = DeadLetters(sessions)
    for bot_id, update_ids in bots.items():
        for update_id in update_ids:
            await letters.record(failed(bot_id, update_id))
    return letters


async def execute(sessions: Sessions, sql: str, **params: object) -> None:
    async with UnitOfWork(sessions) as uow:
        await uow.session.execute(text(sql), params)
        await uow.commit()


async def by_update(letters: DeadLetters, bot_id: str) -> dict[int, DeadLetter]:
    return {d.update_id: d for d in await letters.list(bot_id, include_resolved=True)}


def update_ids(letters: Sequence[DeadLetter]) -> list[int]:
    return [letter.update_id for letter in letters]


# --- service and repository ---


async def test_list_newest_failure_first_by_bot_and_resolution(
    session_factory: Sessions,
) -> None:
    letters = await with_letters(session_factory, {"a": [1, 2, 3], "b": [9]})
    for update_id, minutes_ago in [(1, 30), (2, 10), (3, 20), (9, 5)]:
        await execute(
            session_factory,
            "UPDATE dead_letters SET last_failed_at = now() - make_interval(mins => :m) "
            "WHERE update_id = :u",
            m=minutes_ago,
            u=update_id,
        )
    assert await letters.resolve("a", 3)

    assert update_ids(await letters.list("a")) == [2, 1]
    assert update_ids(await letters.list("a", include_resolved=True)) == [2, 3, 1]
    assert update_ids(await letters.list(None)) == [9, 2, 1]
    assert update_ids(await letters.list(None, include_resolved=True, limit=2)) == [9, 2]
    assert await letters.list("nobody") == []


async def test_request_replay_marks_unresolved_letters_only(session_factory: Sessions) -> None:
    letters = await with_letters(session_factory, {"a": [1, 2, 3, 4], "b": [1]})
    assert await letters.resolve("a", 4)

    assert await letters.request_replay("a", [1, 4, 99]) == 1  # 4 resolved, 99 unknown
    assert await letters.request_replay("a", []) == 0
    first = (await by_update(letters, "a"))[1].replay_requested_at
    assert first is not None

    assert await letters.request_replay("a", None) == 3  # 1 (again), 2 and 3; never 4
    rows = await by_update(letters, "a")
    assert rows[1].replay_requested_at == first  # a queued letter keeps its place
    assert rows[2].replay_requested_at is not None
    assert rows[4].replay_requested_at is None
    assert (await by_update(letters, "b"))[1].replay_requested_at is None
    assert await letters.request_replay("nobody", None) == 0


async def test_claims_take_requested_letters_oldest_request_first(
    session_factory: Sessions,
) -> None:
    letters = await with_letters(session_factory, {"a": [1, 2, 3, 4], "b": [5], "c": [6]})
    for bot_id, update_id in [("a", 1), ("a", 2), ("a", 3), ("b", 5), ("c", 6)]:
        await letters.request_replay(bot_id, [update_id])
    await execute(
        session_factory,
        "UPDATE dead_letters SET replay_requested_at = now() - update_id * interval '1 minute' "
        "WHERE replay_requested_at IS NOT NULL",
    )  # update 5 asked first, then 3, 2, 1

    claimed = await letters.claim_replays({"a", "b"}, "inst-1", limit=3)
    assert update_ids(claimed) == [5, 3, 2]  # not 4 (never asked), not 6 (bot c not ours)
    assert all(d.replay_owner == "inst-1" and d.replays == 1 for d in claimed)
    assert all(d.replay_started_at is not None for d in claimed)

    # A live claim is not taken again; the rest of the queue is.
    assert update_ids(await letters.claim_replays(["a", "b"], "inst-2")) == [1]
    assert await letters.claim_replays(["a", "b"], "inst-2") == []
    assert await letters.claim_replays([], "inst-2") == []


async def test_a_stale_claim_is_taken_again(session_factory: Sessions) -> None:
    letters = await with_letters(session_factory, {"a": [1, 2]})
    await letters.request_replay("a", None)
    assert update_ids(await letters.claim_replays(["a"], "dead-instance")) == [1, 2]
    await execute(
        session_factory,
        "UPDATE dead_letters SET replay_started_at = now() - interval '6 minutes' "
        "WHERE update_id = 1",
    )

    [retaken] = await letters.claim_replays(["a"], "inst-2")
    assert (retaken.update_id, retaken.replay_owner, retaken.replays) == (1, "inst-2", 2)
    assert await letters.claim_replays(["a"], "inst-3", stale_after=timedelta(minutes=10)) == []


async def test_concurrent_claims_get_disjoint_letters(session_factory: Sessions) -> None:
    letters = await with_letters(session_factory, {"a": range(1, 41)})
    await letters.request_replay("a", None)

    # One claim holds its rows (uncommitted) while another runs: it skips them.
    async with UnitOfWork(session_factory) as uow:
        held = await uow.dead_letters.claim_replays(["a"], "inst-1", limit=10)
        other = await asyncio.wait_for(letters.claim_replays(["a"], "inst-2", limit=15), 5)
        await uow.commit()
    assert len(held) == 10 and len(other) == 15
    assert not set(update_ids(held)) & set(update_ids(other))

    # Two claims racing over what is left split it between them.
    first, second = await asyncio.gather(
        letters.claim_replays(["a"], "inst-3", limit=15),
        letters.claim_replays(["a"], "inst-4", limit=15),
    )
    assert not set(update_ids(first)) & set(update_ids(second))
    assert len(first) + len(second) == 15
    owners = {d.update_id: d.replay_owner for d in await letters.list("a", include_resolved=True)}
    assert len(owners) == 40 and None not in owners.values()


async def test_replay_ok_resolves_the_letter_for_good(session_factory: Sessions) -> None:
    letters = await with_letters(session_factory, {"a": [1]})
    await letters.request_replay("a", None)
    [claimed] = await letters.claim_replays(["a"], "inst-1")

    await letters.replayed(claimed.id, ok=True)
    row = (await by_update(letters, "a"))[1]
    assert row.resolved_at is not None
    assert (row.replay_requested_at, row.replay_started_at, row.replay_owner) == (None, None, None)
    assert (row.attempts, row.replays) == (1, 1)
    assert await letters.list("a") == []
    assert await letters.request_replay("a", None) == 0  # resolved: never marked again
    assert await letters.claim_replays(["a"], "inst-1") == []


async def test_replay_failing_again_counts_an_attempt_and_leaves_the_queue(
    session_factory: Sessions,
) -> None:
    letters = await with_letters(session_factory, {"a": [1]})
    before = (await by_update(letters, "a"))[1]
    await letters.request_replay("a", None)
    [claimed] = await letters.claim_replays(["a"], "inst-1")

    await letters.replayed(claimed.id, ok=False, error_type="TelegramBadRequest", error="x" * 9000)
    row = (await by_update(letters, "a"))[1]
    assert row.resolved_at is None
    assert (row.attempts, row.replays, row.error_type) == (2, 1, "TelegramBadRequest")
    assert len(row.error) == 4_000
    assert row.last_failed_at > before.last_failed_at
    assert (row.replay_requested_at, row.replay_started_at, row.replay_owner) == (None, None, None)
    assert await letters.claim_replays(["a"], "inst-1") == []

    # Without a new error text the last one stays; it can be queued once more.
    assert await letters.request_replay("a", [1]) == 1
    [again] = await letters.claim_replays(["a"], "inst-2")
    await letters.replayed(again.id, ok=False)
    row = (await by_update(letters, "a"))[1]
    assert (row.attempts, row.replays, row.error_type) == (3, 2, "TelegramBadRequest")


async def test_a_fresh_failure_leaves_the_replay_fields_alone(session_factory: Sessions) -> None:
    letters = await with_letters(session_factory, {"a": [1, 2]})
    await letters.request_replay("a", [1])
    [claimed] = await letters.claim_replays(["a"], "inst-1")
    assert await letters.resolve("a", 2)

    assert await letters.record(failed("a", 1, "again")) == 2
    assert await letters.record(failed("a", 2, "back")) == 2
    rows = await by_update(letters, "a")
    assert rows[1].replay_owner == "inst-1" and rows[1].replays == 1
    assert rows[1].replay_requested_at == claimed.replay_requested_at
    assert rows[2].resolved_at is None and rows[2].error == "back"


# --- botfleet dead-letters ---


@pytest.fixture
async def fleet_db(database_url: str, session_factory: Sessions) -> str:
    """loja: updates 1-3 unresolved (3 with a token in its error), 4 resolved; vip: none."""
    letters = await with_letters(session_factory, {"loja": [1, 2, 4], "vip": []})
    await letters.record(failed("loja", 3, f"Bad Request: token {LEAKED_TOKEN}\nsecond line"))
    assert await letters.resolve("loja", 4)
    return database_url


def config_for(tmp_path: Path) -> str:
    return write(tmp_path, "database:\n  url: ${DB_URL}\nbots: this section is not read\n")


def run(tmp_path: Path, url: str, *args: str) -> tuple[int, str, str]:
    result = botfleet("dead-letters", *args, "-c", config_for(tmp_path), env={"DB_URL": url})
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, result.stderr


def test_list_shows_a_table_without_payloads_or_tokens(tmp_path: Path, fleet_db: str) -> None:
    code, out, err = run(tmp_path, fleet_db, "list")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split() == [
        "ID", "BOT", "UPDATE", "ERROR", "TYPE", "ERROR", "ATTEMPTS", "REPLAYS",
        "FIRST", "FAILED", "LAST", "FAILED", "STATE",
    ]  # fmt: skip
    assert [row.split()[2] for row in rows] == ["3", "2", "1"]  # newest failure first
    assert all(row.endswith("unresolved") and " ago " in row for row in rows)
    assert "Bad Request: token <token>" in rows[0] and "second line" not in out
    assert SECRET_TEXT not in out and LEAKED_TOKEN not in out + err

    code, out, _ = run(tmp_path, fleet_db, "list", "--bot", "loja", "--all", "--limit", "2")
    assert code == 0
    assert len(out.strip().splitlines()) == 3  # header and the newest two
    code, out, _ = run(tmp_path, fleet_db, "list", "--bot", "vip")
    assert (code, out.strip().splitlines()[1]) == (0, "(none)")


def test_list_json_has_one_letter_per_line_with_its_payload(tmp_path: Path, fleet_db: str) -> None:
    code, out, err = run(tmp_path, fleet_db, "list", "--json", "--all")
    assert code == 0, err
    letters = [json.loads(line) for line in out.splitlines()]
    assert [(d["update_id"], d["state"]) for d in letters] == [
        (3, "unresolved"), (4, "resolved"), (2, "unresolved"), (1, "unresolved"),
    ]  # fmt: skip
    newest = letters[0]
    assert newest["payload"] == {"update_id": 3, "message": {"text": SECRET_TEXT}}
    assert newest["error"].startswith("Bad Request: token <token>")
    assert (newest["attempts"], newest["replays"], newest["replay_owner"]) == (1, 0, None)
    assert LEAKED_TOKEN not in out


async def test_list_shows_a_claimed_letter_as_replaying(
    tmp_path: Path, fleet_db: str, session_factory: Sessions
) -> None:
    letters = DeadLetters(session_factory)
    assert await letters.request_replay("loja", [1, 2]) == 2
    await letters.claim_replays(["loja"], "inst-7", limit=1)
    cfg = config_for(tmp_path)
    env = {"DB_URL": fleet_db}
    table = await asyncio.to_thread(botfleet, "dead-letters", "list", "-c", cfg, env=env)
    assert table.returncode == 0, table.stderr
    states = {row.split()[2]: row.split("ago")[-1].strip() for row in table.stdout.splitlines()[1:]}
    assert states == {"1": "replaying", "2": "replay requested", "3": "unresolved"}
    lines = await asyncio.to_thread(botfleet, "dead-letters", "list", "--json", "-c", cfg, env=env)
    claimed = [d for d in map(json.loads, lines.stdout.splitlines()) if d["update_id"] == 1]
    assert [(d["replay_owner"], d["replays"]) for d in claimed] == [("inst-7", 1)]


def test_replay_marks_letters_and_list_shows_them_requested(tmp_path: Path, fleet_db: str) -> None:
    code, out, err = run(tmp_path, fleet_db, "replay", "--bot", "loja", "--update", "1")
    assert (code, err) == (0, "")
    assert out.startswith("1 dead letter of bot loja marked for replay;")

    code, out, err = run(
        tmp_path, fleet_db, "replay", "--bot", "loja", "--update", "2", "--update", "4"
    )
    assert code == 0
    assert out.startswith("1 dead letter of bot loja marked for replay;")
    assert err.strip() == "1 of the 2 update ids have no unresolved letter"  # 4 is resolved

    code, out, _ = run(tmp_path, fleet_db, "replay", "--bot", "loja", "--all")
    assert (code, out.split(" ", 1)[0]) == (0, "3")
    code, out, _ = run(tmp_path, fleet_db, "list", "--json", "--all")
    states = {d["update_id"]: d["state"] for d in map(json.loads, out.splitlines())}
    assert states == {1: "replay requested", 2: "replay requested", 3: "replay requested",
                      4: "resolved"}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        pytest.param(["--bot", "loja"], 2, "exactly one of --update", id="neither"),
        pytest.param(["--bot", "loja", "--all", "--update", "1"], 2, "exactly one", id="both"),
        pytest.param(["--all"], 2, "Missing option '--bot'", id="no-bot"),
        pytest.param(["--bot", "loja", "--update", "x"], 2, "'x' is not a valid", id="not-int"),
        pytest.param(
            ["--bot", "lojja", "--all"], 2, "--bot lojja: no such bot in the database", id="typo"
        ),
        pytest.param(
            ["--bot", "loja", "--update", "4", "--update", "7"],
            1,
            "bot loja: no unresolved dead letter for update 4, 7; nothing marked",
            id="resolved-or-unknown",
        ),
        pytest.param(
            ["--bot", "vip", "--all"], 1, "bot vip: no unresolved dead letter;", id="none-left"
        ),
    ],
)
def test_replay_refuses_bad_input_and_says_when_nothing_matches(
    tmp_path: Path, fleet_db: str, args: list[str], code: int, expected: str
) -> None:
    returncode, out, err = run(tmp_path, fleet_db, "replay", *args)
    assert returncode == code
    assert expected in err and out == ""
    if code == 1 or "database" in expected:
        assert len(err.strip().splitlines()) == 1


def test_list_of_an_unknown_bot_is_bad_input(tmp_path: Path, fleet_db: str) -> None:
    code, out, err = run(tmp_path, fleet_db, "list", "--bot", "lojja")
    assert (code, out) == (2, "")
    assert (
        err.strip()
        == "--bot lojja: no such bot in the database (bots appear once the fleet has run)"
    )


@pytest.mark.parametrize("command", [["list"], ["replay", "--bot", "loja", "--all"]])
def test_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    code, out, err = run(tmp_path, f"postgresql://bf:hunter2@127.0.0.1:{port}/x", *command)
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: PostgreSQL at postgresql+asyncpg://bf:***@127.0.0.1:{port}/x")
    assert "is unreachable" in line
    assert "hunter2" not in err


async def test_a_schema_behind_the_code_fails_in_one_line(
    tmp_path: Path, empty_database_url: str
) -> None:
    engine = create_engine(DatabaseConfig(url=SecretStr(empty_database_url)))
    try:
        await runner.upgrade(engine, "0001")
    finally:
        await engine.dispose()
    result = await asyncio.to_thread(
        botfleet,
        "dead-letters",
        "list",
        "-c",
        config_for(tmp_path),
        env={"DB_URL": empty_database_url},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: database query failed: column dead_letters.replay_requested_at does not exist "
        "(is the schema up to date? see botfleet db current)"
    ]
