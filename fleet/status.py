"""``botfleet status``: live instances and who polls which bot, read from Redis only.

Reads what :class:`fleet.leases.LeaseCoordinator` writes (the members set, the
heartbeat keys, and each bot's lease, epoch, offset and state) and nothing
else: no database, no ``KEYS``/``SCAN`` (the bot list comes from the config).
Every age is measured against Redis ``TIME``, the clock the heartbeats and the
bot states are written in, never this host's clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from storage.keys import RedisKeys

UNOWNED = "unowned"  # no lease: nobody polls the bot
HELD = "held"  # leased, but the (live) holder has not reported the bot under this lease
DISABLED = "disabled"  # `enabled: false` in the config


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    id: str
    host: str | None
    pid: int | None
    capacity: float | None
    version: str | None
    uptime_s: float | None
    heartbeat_age_s: float | None
    expires_in_s: float  # until the members set drops it, unless it heartbeats again
    bots: list[str]  # configured bots whose lease it holds


@dataclass(frozen=True, slots=True)
class BotStatus:
    id: str
    owner: str | None  # instance id from the lease, None when free
    owner_live: bool
    epoch: int | None
    offset: int | None
    state: str
    last_update_age_s: float | None
    pending: int | None


@dataclass(frozen=True, slots=True)
class FleetStatus:
    now_ms: int  # Redis TIME
    instances: list[InstanceStatus]
    bots: list[BotStatus]


async def read_status(
    redis: Redis, keys: RedisKeys, bot_ids: Sequence[str], *, disabled: Collection[str] = ()
) -> FleetStatus:
    """One snapshot (MULTI) of members, leases, epochs, offsets, bot states; then heartbeats."""
    bot_ids = list(bot_ids)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.time()
        pipe.zrange(keys.members(), 0, -1, withscores=True)
        if bot_ids:
            pipe.mget([keys.lease(b) for b in bot_ids])
            pipe.mget([keys.epoch(b) for b in bot_ids])
            pipe.mget([keys.offset(b) for b in bot_ids])
            pipe.mget([keys.bot_state(b) for b in bot_ids])
        answers = await pipe.execute()
    seconds, micros = answers[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    none: list[Any] = [None] * len(bot_ids)
    leases, epochs, offsets, states = answers[2:6] if bot_ids else (none, none, none, none)
    members = [(_text(m), float(score)) for m, score in answers[1] if float(score) >= now_ms]
    bodies = await redis.mget([keys.heartbeat(m) for m, _ in members]) if members else []

    live_ids: set[str] = set()
    instances: list[InstanceStatus] = []
    owners = [_holder(value) for value in leases]
    for (instance_id, expiry), body in sorted(zip(members, bodies, strict=True)):
        if body is None:
            continue  # expired after its last ZADD: not live
        info = _json_object(body)
        live_ids.add(instance_id)
        instances.append(
            InstanceStatus(
                id=instance_id,
                host=_str(info.get("host")),
                pid=_int(info.get("pid")),
                capacity=_float(info.get("capacity")),
                version=_str(info.get("version")),
                uptime_s=_age(now_ms, info.get("started_ms")),
                heartbeat_age_s=_age(now_ms, info.get("heartbeat_ms")),
                expires_in_s=round((expiry - now_ms) / 1000, 3),
                bots=[b for b, owner in zip(bot_ids, owners, strict=True) if owner == instance_id],
            )
        )

    bots: list[BotStatus] = []
    rows = zip(bot_ids, owners, epochs, offsets, states, strict=True)
    for bot_id, owner, epoch, offset, body in rows:
        live = owner in live_ids
        # A holder without a heartbeat is gone or stuck: what it last reported is stale.
        entry = _reported(body, owner, _int(epoch)) if live else None
        if bot_id in disabled:
            state = DISABLED
        elif owner is None:
            state = UNOWNED
        elif entry is None:
            state = HELD
        else:
            state = _str(entry.get("state")) or HELD
        age = _age(now_ms, entry.get("last_update_ms")) if entry else None
        bots.append(
            BotStatus(
                id=bot_id,
                owner=owner,
                owner_live=live,
                epoch=_int(epoch),
                offset=_int(offset),
                state=state,
                last_update_age_s=None if age is None else round(max(age, 0.0), 1),
                pending=_int(entry.get("pending")) if entry else None,
            )
        )
    return FleetStatus(now_ms=now_ms, instances=instances, bots=bots)


def to_json(status: FleetStatus) -> dict[str, Any]:
    return dataclasses.asdict(status)


def render_table(status: FleetStatus) -> str:
    instances = _table(
        ["INSTANCE", "HOST", "PID", "UPTIME", "BOTS", "HEARTBEAT AGE"],
        [
            [i.id, i.host or "-", _cell(i.pid), _duration(i.uptime_s), str(len(i.bots)),
             _duration(i.heartbeat_age_s)]
            for i in status.instances
        ],
    )  # fmt: skip
    bots = _table(
        ["BOT", "OWNER", "EPOCH", "STATE", "LAST UPDATE", "PENDING"],
        [
            [b.id, b.owner or "-", _cell(b.epoch), b.state, _duration(b.last_update_age_s),
             _cell(b.pending)]
            for b in status.bots
        ],
    )  # fmt: skip
    live = len(status.instances)
    owned = sum(1 for b in status.bots if b.owner is not None)
    return (
        f"{live} live instance{'s' if live != 1 else ''}\n{instances}\n\n"
        f"{owned} of {len(status.bots)} bots leased\n{bots}"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines if rows else [*lines, "(none)"])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d{whole % 86_400 // 3600:02d}h"


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _holder(value: bytes | str | None) -> str | None:
    """``{instance}:{nonce}`` -> instance; instance ids may contain ':' themselves."""
    if value is None:
        return None
    instance, sep, _nonce = _text(value).rpartition(":")
    return instance if sep else _text(value)


def _age(now_ms: int, then_ms: Any) -> float | None:
    then = _float(then_ms)  # Redis TIME in ms, as the heartbeat or the bot state holds it
    return None if then is None else round((now_ms - then) / 1000, 3)


def _json_object(body: bytes | str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _reported(
    body: bytes | str | None, owner: str | None, epoch: int | None
) -> dict[str, Any] | None:
    """The bot's state key, if written by its lease holder under the current lease.

    A state outlives its writer's lease (a crash, an expiry): the next holder's
    epoch differs, and until it reports, the bot shows as held.
    """
    if body is None:
        return None
    entry = _json_object(body)
    if entry.get("instance") != owner or _int(entry.get("epoch")) != epoch:
        return None
    return entry


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bytes | str):
        try:
            return int(value)
        except ValueError:
            return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
