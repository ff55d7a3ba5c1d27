"""What every PIX gateway adapter offers: create a charge, fetch one, authenticate a webhook.

Adding a gateway is one module that implements :class:`Gateway` and registers
its ``kind`` in ``fleet.payments.registry``. Money crosses this interface in
integer cents; an adapter converts at its own edge. A webhook is only ever a
*notice* that something may have changed: unless the adapter can prove the
body's origin and content (``trusted``), processing fetches the charge from the
gateway with our credentials before it believes any status or amount.

Errors: :class:`GatewayUnavailable` (5xx, timeout, network: try again later,
nothing is lost), :class:`GatewayRefused` (4xx: this request will never work),
:class:`WebhookRejected` (not authentic or not readable; its ``reason`` is a
short fixed word, a metric label).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from fleet.errors import FleetError, RetryLater
from storage.models import PaymentStatus

__all__ = [
    "Charge",
    "ChargeNotFound",
    "ChargeRequest",
    "Gateway",
    "GatewayError",
    "GatewayRefused",
    "GatewayState",
    "GatewayUnavailable",
    "PaymentStatus",
    "WebhookNotice",
    "WebhookRejected",
    "WebhookRequest",
]


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    idempotency_key: str  # ours, stable per logical charge: a retry creates nothing new
    reference: str  # our payment id, sent as the gateway's external reference
    amount_cents: int
    currency: str  # ISO 4217, "BRL"
    description: str  # the product name shown to the payer
    expires_at: datetime  # aware, UTC
    notification_url: str | None  # where the gateway posts webhooks (None: it is set elsewhere)
    payer_ref: str  # a stable pseudonymous id of the buyer: never a real person's data


@dataclass(frozen=True, slots=True)
class Charge:
    """A charge as the gateway created it."""

    transaction_id: str
    status: PaymentStatus
    amount_cents: int
    currency: str
    pix_code: str  # EMV "copia e cola"
    qr_png_base64: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GatewayState:
    """A charge as the gateway reports it now (fetched with our credentials)."""

    transaction_id: str
    status: PaymentStatus
    amount_cents: int
    currency: str
    raw_status: str  # the gateway's own word, for the event log
    paid_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    headers: Mapping[str, str]  # names lower-cased
    query: Mapping[str, str]
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class WebhookNotice:
    """An authenticated webhook, read."""

    event_id: str  # unique per gateway event: the inbox stores each once
    transaction_id: str
    claimed_status: PaymentStatus | None = None  # what the body says
    trusted: bool = False  # origin and content proven (signed body): no fetch needed
    amount_cents: int | None = None
    currency: str | None = None
    details: dict[str, str] = field(default_factory=dict)  # for the event log, no secrets
    paid_at: datetime | None = None  # when the gateway says it was paid (trusted bodies)


class GatewayError(FleetError):
    """A gateway call failed."""


class GatewayUnavailable(GatewayError, RetryLater):
    """5xx, timeout, network: nothing is decided, try again later."""


class GatewayRefused(GatewayError):
    """4xx: the gateway will never accept this request (bad amount, bad credentials)."""


class ChargeNotFound(GatewayError):
    """The gateway does not know this transaction."""


class WebhookRejected(FleetError):
    """Not authentic, or not a webhook this adapter can read."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # "signature", "stale", "malformed", "secret", ...


class Gateway(Protocol):
    @property
    def id(self) -> str:
        """The ``gateways[].id`` this adapter serves."""
        ...

    @property
    def notice(self) -> str | None:
        """Text the PIX message must carry (PushinPay's processor notice), if any."""
        ...

    async def create_charge(self, request: ChargeRequest) -> Charge: ...

    async def fetch(self, transaction_id: str) -> GatewayState: ...

    def authenticate(self, webhook: WebhookRequest) -> WebhookNotice:
        """Check the webhook's authentication (the URL secret was checked already) and read it;
        raises :class:`WebhookRejected`."""
        ...

    async def aclose(self) -> None: ...
