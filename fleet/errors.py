"""The root of every error botfleet raises on purpose.

A leaf module: anything may import it, it imports nothing of ours.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base class for errors that botfleet raises deliberately."""


class ServiceUnavailable(FleetError):
    """A backing service (PostgreSQL, Redis) did not answer in time."""


class SendFailed(FleetError):
    """Telegram refused a reply for good (e.g. a malformed text): the update is dead-lettered."""


class RetryLater(FleetError):
    """A passing condition (a rate-limit wait too long, a lock held elsewhere): nothing was
    done; the runtime retries the update with back-off instead of storing it as failed."""


def is_transient(exc: BaseException) -> bool:
    """Infrastructure that may come back (Redis, PostgreSQL, the network, a wait too long):
    retry the update later. Anything else (a handler bug, a reply Telegram refuses) is for
    good: the update goes to dead letters at once."""
    if isinstance(exc, RetryLater | ServiceUnavailable | OSError | TimeoutError):
        return True
    # Third-party families, by module: this leaf imports none of them.
    module = type(exc).__module__
    if module.startswith("redis."):
        return True  # a reply error too (OOM, a script busy): bounded by the retry limit
    if module.startswith("asyncpg."):
        names = {cls.__name__ for cls in type(exc).__mro__}
        return bool(names & _ASYNCPG_TRANSIENT)
    if module.startswith("sqlalchemy."):
        return bool(getattr(exc, "connection_invalidated", False)) or type(exc).__name__ in (
            "OperationalError",
            "InterfaceError",
            "TimeoutError",
        )
    return module.startswith("aiohttp.")


_ASYNCPG_TRANSIENT = {
    "PostgresConnectionError",
    "InterfaceError",
    "CannotConnectNowError",
    "TooManyConnectionsError",
    "ConnectionDoesNotExistError",
}
