"""The root of every error botfleet raises on purpose.

A leaf module: anything may import it, it imports nothing of ours.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base class for errors that botfleet raises deliberately."""


class ServiceUnavailable(FleetError):
    """A backing service (PostgreSQL, Redis) did not answer in time."""


class UpdateBusy(FleetError):
    """Another runner holds this update's claim: leave it unconfirmed and try later."""


class UpdateNotStored(FleetError):
    """A failed update could not be written to dead letters: it must stay unconfirmed."""


class SendFailed(FleetError):
    """Telegram refused a reply for good (e.g. a malformed text): the update is dead-lettered."""
