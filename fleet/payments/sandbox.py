"""``kind: sandbox``: our own PIX gateway, served by the emulator (``fleet.emulator.pix``).

The emulator stands alone, so its wire format is mirrored here, not imported:

- ``POST {api_base}/pix/v1/charges`` with ``Idempotency-Key`` (ours, stable per
  logical charge) and ``Authorization: Bearer <access_token>`` when one is
  configured; body ``{reference, amount_cents, currency, description,
  expires_at, notification_url?, payer_ref}``; 201 with the charge plus
  ``pix_code`` and ``qr_png_base64``.
- ``GET {api_base}/pix/v1/charges/{id}``: ``{id, status, amount_cents,
  currency, paid_at, ...}``; 404 for an unknown id.
- Webhooks: JSON ``{event_id, type, created_at, charge}`` signed in
  ``X-Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
  f"{t}.".encode() + body)>``. A valid signature with a fresh timestamp proves
  origin and content, so the notice is ``trusted``: no fetch needed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson

from fleet.config import GatewayConfig
from fleet.payments.base import (
    Charge,
    ChargeNotFound,
    ChargeRequest,
    GatewayRefused,
    GatewayState,
    GatewayUnavailable,
    PaymentStatus,
    WebhookNotice,
    WebhookRejected,
    WebhookRequest,
)

__all__ = ["DEFAULT_SECRET", "SIGNATURE_HEADER", "TOLERANCE_SECONDS", "SandboxGateway"]

DEFAULT_SECRET = "sandbox-signing-secret"  # noqa: S105 - the sandbox's published test secret
SIGNATURE_HEADER = "x-sandbox-signature"  # WebhookRequest headers are lower-cased
TOLERANCE_SECONDS = 300  # a signature older (or newer) than this is a replay: "stale"
_CHARGES = "/pix/v1/charges"
_MAX_EVENT_ID = 200
_MAX_SIGNATURES = 4  # v1 candidates checked (a key rotation needs two)

T = TypeVar("T")

_STATUSES: dict[str, PaymentStatus] = {
    "pending": PaymentStatus.PENDING,
    "paid": PaymentStatus.PAID,
    "refunded": PaymentStatus.REFUNDED,
    "expired": PaymentStatus.EXPIRED,
    "cancelled": PaymentStatus.CANCELLED,
    "chargeback": PaymentStatus.CHARGEBACK,
    "failed": PaymentStatus.FAILED,
}


class SandboxGateway:
    """The sandbox's client. The session is shared (built by the registry's owner): never
    closed here."""

    def __init__(
        self,
        config: GatewayConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._session = session
        self._clock = clock
        base = config.base_url
        self._base = base.rstrip("/") if base else None
        secret = config.webhook_secret
        self._secret = (secret.get_secret_value() if secret else DEFAULT_SECRET).encode()
        token = config.access_token
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)

    @property
    def id(self) -> str:
        return self._config.id

    @property
    def notice(self) -> str | None:
        return None

    # -- API ------------------------------------------------------------------------------

    async def create_charge(self, request: ChargeRequest) -> Charge:
        body: dict[str, Any] = {
            "reference": request.reference,
            "amount_cents": request.amount_cents,
            "currency": request.currency,
            "description": request.description,
            "expires_at": request.expires_at.isoformat(),
            "payer_ref": request.payer_ref,
        }
        if request.notification_url is not None:
            body["notification_url"] = request.notification_url
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": request.idempotency_key,
        }
        status, answer = await self._call("POST", _CHARGES, "create", orjson.dumps(body), headers)
        if status not in (200, 201):
            raise self._refused("create", status, answer)
        data = self._read(answer, "create")
        charge = Charge(
            transaction_id=_field(data, "id", str),
            status=_status(data),
            amount_cents=_field(data, "amount_cents", int),
            currency=_field(data, "currency", str),
            pix_code=_field(data, "pix_code", str),
            qr_png_base64=_optional(data, "qr_png_base64", str),
            expires_at=_time(data.get("expires_at")),
        )
        if charge.amount_cents != request.amount_cents or charge.currency != request.currency:
            # Never sell through a charge for another amount than ours.
            raise GatewayRefused(
                f"sandbox {self.id}: charge {charge.transaction_id} created for"
                f" {charge.amount_cents} {charge.currency}, not {request.amount_cents}"
                f" {request.currency}"
            )
        return charge

    async def fetch(self, transaction_id: str) -> GatewayState:
        path = f"{_CHARGES}/{quote(transaction_id, safe='')}"
        status, answer = await self._call("GET", path, "fetch", None, self._headers)
        if status == 404:
            raise ChargeNotFound(f"sandbox {self.id}: no charge {transaction_id!r}")
        if status != 200:
            raise self._refused("fetch", status, answer)
        data = self._read(answer, "fetch")
        return GatewayState(
            transaction_id=_field(data, "id", str),
            status=_status(data),
            amount_cents=_field(data, "amount_cents", int),
            currency=_field(data, "currency", str),
            raw_status=_field(data, "status", str),
            paid_at=_time(data.get("paid_at")),
        )

    async def _call(
        self, method: str, path: str, what: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        if self._base is None:
            raise GatewayRefused(f"sandbox {self.id}: no api_base configured")
        try:
            async with self._session.request(
                method, self._base + path, data=body, headers=headers, timeout=self._timeout
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise GatewayUnavailable(
                f"sandbox {self.id}: {what} failed: {type(exc).__name__}"
            ) from None

    def _refused(self, what: str, status: int, answer: bytes) -> Exception:
        code = _error_code(answer)
        message = f"sandbox {self.id}: {what} answered {status} {code}".rstrip()
        if status >= 500 or status in (408, 425, 429):
            return GatewayUnavailable(message)
        return GatewayRefused(message)

    def _read(self, answer: bytes, what: str) -> dict[str, Any]:
        try:
            data = orjson.loads(answer)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            # A gateway answering 2xx with something unreadable is broken for now: try later.
            raise GatewayUnavailable(f"sandbox {self.id}: {what} answer is not a JSON object")
        return data

    # -- webhooks ------------------------------------------------------------------------------

    def authenticate(self, webhook: WebhookRequest) -> WebhookNotice:
        header = webhook.headers.get(SIGNATURE_HEADER)
        if not header:
            raise WebhookRejected("signature", "no X-Sandbox-Signature header")
        timestamp, signatures = _parse_signature(header)
        expected = hmac.new(
            self._secret, f"{timestamp}.".encode() + webhook.body, hashlib.sha256
        ).hexdigest()
        # Every candidate compared (constant time each): which one matched leaks nothing.
        matched = False
        for candidate in signatures:
            matched |= hmac.compare_digest(candidate.encode(), expected.encode())
        if not matched:
            raise WebhookRejected("signature", "the signature does not match")
        if abs(self._clock() - timestamp) > TOLERANCE_SECONDS:
            raise WebhookRejected("stale", "signed more than 300 s away from now")
        return _notice(webhook.body)

    async def aclose(self) -> None:
        """Nothing of our own to close: the session belongs to whoever built it."""


# -- reading answers and webhooks ------------------------------------------------------------


def _parse_signature(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value and len(signatures) < _MAX_SIGNATURES:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookRejected("signature", "the signature header is not t=...,v1=...")
    return timestamp, signatures


def _notice(body: bytes) -> WebhookNotice:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected("malformed", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected("malformed", "the body is not a JSON object")
    event_id, kind, charge = data.get("event_id"), data.get("type"), data.get("charge")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= _MAX_EVENT_ID:
        raise WebhookRejected("malformed", "no event_id")
    if not isinstance(kind, str) or not isinstance(charge, dict):
        raise WebhookRejected("malformed", "no type or charge")
    transaction_id = charge.get("id")
    raw_status = charge.get("status")
    amount = charge.get("amount_cents")
    currency = charge.get("currency")
    if (
        not isinstance(transaction_id, str)
        or not transaction_id
        or not isinstance(raw_status, str)
        or isinstance(amount, bool)
        or not isinstance(amount, int)
        or not isinstance(currency, str)
    ):
        raise WebhookRejected("malformed", "the charge lacks id, status, amount or currency")
    return WebhookNotice(
        event_id=event_id,
        transaction_id=transaction_id,
        # An unknown word claims nothing: the charge is then fetched instead.
        claimed_status=_STATUSES.get(raw_status),
        trusted=True,
        amount_cents=amount,
        currency=currency,
        details={"type": kind[:64], "raw_status": raw_status[:32]},
        paid_at=_time(charge.get("paid_at")),
    )


def _error_code(answer: bytes) -> str:
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return ""
    code = data.get("error") if isinstance(data, dict) else None
    return code[:64] if isinstance(code, str) else ""


def _field(data: dict[str, Any], name: str, kind: type[T]) -> T:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise GatewayUnavailable(f"sandbox answer without a valid {name}")
    return value


def _optional(data: dict[str, Any], name: str, kind: type[T]) -> T | None:
    return None if data.get(name) is None else _field(data, name, kind)


def _status(data: dict[str, Any]) -> PaymentStatus:
    raw = _field(data, "status", str)
    status = _STATUSES.get(raw)
    if status is None:
        raise GatewayUnavailable(f"sandbox answered an unknown status {raw[:32]!r}")
    return status


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
