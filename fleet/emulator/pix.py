"""A sandbox PIX gateway: charges, a simulated payer, signed webhooks, and faults.

It lives in the emulator process, on the same aiohttp app as the Bot API, and
is our own gateway for the demo and the tests. ``fleet.payments.sandbox`` is
its client and mirrors this wire format (nothing here imports the rest of
botfleet):

``POST /pix/v1/charges``
    Headers: ``Idempotency-Key`` (required, 1-255 characters);
    ``Authorization: Bearer <token>`` (checked only once an access token is
    configured). Body (JSON): ``reference`` (str), ``amount_cents`` (int >= 1),
    ``currency`` ("BRL"), ``description`` (str, optional), ``expires_at``
    (ISO-8601 with an offset, in the future, at most 30 days on),
    ``notification_url`` (http(s) URL, optional), ``payer_ref`` (str, optional).
    201: the charge (below) plus ``pix_code`` and ``qr_png_base64``. The same key
    with the same body again: 201, the same charge (header
    ``Idempotent-Replayed: true``); the same key with another body: 409.
``GET /pix/v1/charges/{id}``
    200: ``{id, status, amount_cents, currency, reference, description,
    created_at, expires_at, paid_at, refunded_at}`` (times ISO-8601 UTC or
    null); status is one of pending | paid | refunded | expired | cancelled.
    404 for an unknown id.
Errors: ``{"error": code, "message": text}`` with 400, 401, 404, 409, 5xx.

Webhooks: on every status change, ``POST notification_url`` (or the configured
default URL) with ``{event_id, type, created_at, charge}`` (``type``
``charge.paid`` | ``charge.refunded`` | ``charge.expired`` |
``charge.cancelled``; ``charge`` as GET shows it at the change) and the header
``X-Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
f"{t}.".encode() + body)>``, signed afresh on every attempt. A non-2xx answer
or a connection error is retried with back-off (the emulator settings'
``webhook_backoff_*``), ``attempts`` times at most; every attempt is recorded.

Faults (:class:`PixFaults`, set at runtime): API latency, 5xx rate, the next N
calls failing, dropped connections before or after the call ran; webhooks lost,
delayed, duplicated, held and sent in reverse order; any event redelivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import heapq
import hmac
import logging
import random
import secrets
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import aiohttp
import orjson
from aiohttp import web

from fleet.emulator.settings import EmulatorSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

API_PREFIX = "/pix/v1"
DEFAULT_SECRET = "sandbox-signing-secret"  # noqa: S105 - the sandbox's published test secret
SIGNATURE_HEADER = "X-Sandbox-Signature"
EVENT_HEADER = "X-Sandbox-Event-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "botfleet-sandbox-pix/1"
STATUSES = ("pending", "paid", "refunded", "expired", "cancelled")
CURRENCY = "BRL"
MAX_AMOUNT_CENTS = 100_000_000  # R$ 1,000,000.00
MAX_EXPIRY = timedelta(days=30)
EVENT_TYPES = {
    "paid": "charge.paid",
    "refunded": "charge.refunded",
    "expired": "charge.expired",
    "cancelled": "charge.cancelled",
}


class PixError(Exception):
    """A refused API call or control action; ``status`` is the HTTP status it answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": str(self)}


class _Dropped(Exception):
    """Close the connection without an answer."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Sandbox-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="milliseconds")


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PixFaults:
    """What goes wrong. Rates are shares in [0, 1]; the default is nothing."""

    # API (POST/GET /pix/v1/...)
    latency: float = 0.0  # seconds before each call is answered
    error_rate: float = 0.0  # answered 500/502/503 without running the call
    fail_next: int = 0  # the next N calls answer 503 without running
    drop_rate: float = 0.0  # connection closed before the call ran
    drop_after_rate: float = 0.0  # the call ran, then the connection closed without an answer
    # webhooks
    lose: float = 0.0  # share of events never sent
    delay: float = 0.0  # seconds before an event's first attempt
    duplicate: int = 1  # each event sent this many times, concurrently
    reorder: int = 0  # >= 2: events held until this many, then sent newest first

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "drop_after_rate", "lose"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.latency < 0 or self.delay < 0:
            raise ValueError("latency and delay must be >= 0")
        if self.fail_next < 0 or self.reorder < 0:
            raise ValueError("fail_next and reorder must be >= 0")
        if not 1 <= self.duplicate <= 100:
            raise ValueError("duplicate must be within [1, 100]")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PixFaults:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown pix fault fields: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            integer = name in ("fail_next", "duplicate", "reorder")
            if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
                raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}")
            values[name] = value if integer else float(value)
        return cls(**values)


# -- charges, events, deliveries --------------------------------------------------------------


@dataclass(slots=True)
class PixCharge:
    id: str
    reference: str
    amount_cents: int
    currency: str
    description: str
    expires_at: datetime
    notification_url: str | None
    payer_ref: str | None
    created_at: datetime
    pix_code: str
    qr_png_base64: str
    status: str = "pending"
    paid_at: datetime | None = None
    refunded_at: datetime | None = None

    def view(self) -> dict[str, Any]:
        """The charge as ``GET /pix/v1/charges/{id}`` and webhooks show it."""
        return {
            "id": self.id,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "reference": self.reference,
            "description": self.description,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "paid_at": _iso(self.paid_at),
            "refunded_at": _iso(self.refunded_at),
        }

    def created_view(self) -> dict[str, Any]:
        """The answer to ``POST /pix/v1/charges``."""
        return {**self.view(), "pix_code": self.pix_code, "qr_png_base64": self.qr_png_base64}


@dataclass(frozen=True, slots=True)
class PixEvent:
    event_id: str
    type: str
    charge_id: str
    url: str | None
    body: bytes  # fixed at the change; every attempt and redelivery sends these bytes
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "charge_id": self.charge_id,
            "url": self.url,
            "created_at": _iso(self.created_at),
            "body": orjson.loads(self.body),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to deliver one copy of an event (attempt 0: never sent, see ``error``)."""

    event_id: str
    type: str
    charge_id: str
    url: str | None
    attempt: int
    copy: int  # 0.. duplicate-1
    status: int | None  # the receiver's HTTP status; None when none came
    error: str | None  # "lost", "no_url", "cancelled", or the connection error's name
    redelivery: bool
    at: datetime

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "charge_id": self.charge_id,
            "url": self.url,
            "attempt": self.attempt,
            "copy": self.copy,
            "status": self.status,
            "error": self.error,
            "redelivery": self.redelivery,
            "ok": self.ok,
            "at": _iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class _Job:
    event: PixEvent
    copy: int
    delay: float
    redelivery: bool


@dataclass(slots=True)
class PixCounters:
    charges_created: int = 0
    idempotent_replays: int = 0
    delivered: int = 0  # 2xx attempts
    failed: int = 0  # non-2xx or connection errors
    given_up: int = 0  # copies that used up every attempt
    lost: int = 0
    cancelled: int = 0
    api_statuses: Counter[int] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_statuses"}
        data["api_statuses"] = {str(code): n for code, n in self.api_statuses.items()}
        return data


# -- the gateway ------------------------------------------------------------------------------


class PixGateway:
    """The sandbox gateway's state and behaviour; :func:`add_pix_routes` puts it on HTTP.

    Every background task is owned: webhook deliveries and the expiry clock are
    tracked, and :meth:`stop` (the server going down) cancels them; deliveries
    cancelled there are recorded as ``cancelled`` and not resumed
    (:meth:`redeliver` sends an event again).
    """

    def __init__(
        self, settings: EmulatorSettings | None = None, on_change: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self._on_change = on_change
        self.secret = DEFAULT_SECRET
        self.access_token: str | None = None  # None: any or no Authorization accepted
        self.webhook_url: str | None = None  # for charges created without a notification_url
        self.attempts = 5
        self.charges: dict[str, PixCharge] = {}
        self.events: dict[str, PixEvent] = {}
        self.deliveries: list[Delivery] = []
        self.counters = PixCounters()
        self.faults = PixFaults()
        self._fail_next = 0
        self._random = random.Random(self.settings.seed)
        self._idempotency: dict[str, tuple[bytes, str]] = {}
        self._expiries: list[tuple[datetime, str]] = []
        self._held: list[list[_Job]] = []
        self._queued: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._waiters: set[asyncio.Future[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._running = True
        self._closed = False

    # -- configuration and faults -----------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Set ``secret`` (webhook signing), ``access_token`` (None: not checked),
        ``webhook_url`` (default notification URL, None: none), ``attempts`` (per copy)."""
        unknown = set(changes) - {"secret", "access_token", "webhook_url", "attempts"}
        if unknown:
            raise ValueError(f"unknown pix settings: {', '.join(sorted(unknown))}")
        if "secret" in changes:
            secret = changes["secret"]
            if not isinstance(secret, str) or not secret:
                raise ValueError("secret must be a non-empty string")
            self.secret = secret
        if "access_token" in changes:
            token = changes["access_token"]
            if token is not None and (not isinstance(token, str) or not token):
                raise ValueError("access_token must be a non-empty string or null")
            self.access_token = token
        if "webhook_url" in changes:
            url = changes["webhook_url"]
            self.webhook_url = None if url is None else _url(url, "webhook_url")
        if "attempts" in changes:
            attempts = changes["attempts"]
            if isinstance(attempts, bool) or not isinstance(attempts, int):
                raise ValueError("attempts must be an integer")
            if not 1 <= attempts <= 50:
                raise ValueError("attempts must be within [1, 50]")
            self.attempts = attempts
        return self.configuration()

    def configuration(self) -> dict[str, Any]:
        """What is configured; the secret and token never leave, only whether they are set."""
        return {
            "secret_is_default": self.secret == DEFAULT_SECRET,
            "access_token_set": self.access_token is not None,
            "webhook_url": self.webhook_url,
            "attempts": self.attempts,
        }

    def set_faults(self, faults: PixFaults) -> PixFaults:
        """Replace the fault plan; ``fail_next`` starts counting again. Held events are sent
        (newest first) once the new plan holds fewer than are waiting."""
        self.faults = faults
        self._fail_next = faults.fail_next
        if self._held and (faults.reorder < 2 or len(self._held) >= faults.reorder):
            self.release()
        return faults

    def clear_faults(self) -> None:
        self.set_faults(PixFaults())

    def faults_json(self) -> dict[str, Any]:
        return {**self.faults.to_json(), "fail_next": self._fail_next, "held": len(self._held)}

    async def before_call(self) -> None:
        """API faults before a call runs: latency, then 503s, 5xx, a dropped connection."""
        plan = self.faults
        if plan.latency > 0:
            await asyncio.sleep(plan.latency)  # simulated network latency, not synchronisation
        if self._fail_next > 0:
            self._fail_next -= 1
            raise PixError(503, "unavailable", "the sandbox is unavailable (fail_next)")
        if plan.drop_rate and self._random.random() < plan.drop_rate:
            raise _Dropped
        if plan.error_rate and self._random.random() < plan.error_rate:
            status = self._random.choice((500, 502, 503))
            raise PixError(status, "unavailable", "the sandbox failed (error_rate)")

    def drop_after(self) -> bool:
        plan = self.faults
        return bool(plan.drop_after_rate) and self._random.random() < plan.drop_after_rate

    def authorize(self, header: str | None) -> None:
        if self.access_token is None:
            return
        expected = f"Bearer {self.access_token}".encode()
        if header is None or not hmac.compare_digest(header.encode(), expected):
            raise PixError(401, "unauthorized", "missing or wrong access token")

    # -- charges ----------------------------------------------------------------------------

    def create_charge(self, body: Any, idempotency_key: str | None) -> tuple[PixCharge, bool]:
        """The charge for this key (created now, or the one made before: ``True``)."""
        if not idempotency_key or len(idempotency_key) > 255:
            raise PixError(400, "invalid_request", "Idempotency-Key header required (1-255)")
        if not isinstance(body, dict):
            raise PixError(400, "invalid_request", "the body must be a JSON object")
        fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
        known = self._idempotency.get(idempotency_key)
        if known is not None:
            if not hmac.compare_digest(known[0], fingerprint):
                raise PixError(
                    409, "idempotency_conflict", "Idempotency-Key reused with another body"
                )
            self.counters.idempotent_replays += 1
            return self.get(known[1]), True
        now = datetime.now(UTC)
        fields_ = _charge_fields(body, now)
        charge_id = "sbx_" + secrets.token_hex(12)
        code = pix_code(charge_id, fields_["amount_cents"])
        charge = PixCharge(
            id=charge_id,
            created_at=now,
            pix_code=code,
            qr_png_base64=qr_png_base64(code),
            **fields_,
        )
        self.charges[charge_id] = charge
        self._idempotency[idempotency_key] = (fingerprint, charge_id)
        heapq.heappush(self._expiries, (charge.expires_at, charge_id))
        self.counters.charges_created += 1
        self._ensure_clock()
        self._changed()
        return charge, False

    def get(self, charge_id: str) -> PixCharge:
        self.expire_due()
        charge = self.charges.get(charge_id)
        if charge is None:
            raise PixError(404, "not_found", "no such charge")
        return charge

    def charge(self, charge_id: str) -> dict[str, Any]:
        return self.get(charge_id).view()

    def list_charges(self) -> list[dict[str, Any]]:
        self.expire_due()
        return [charge.view() for charge in self.charges.values()]

    def pay(self, charge_id: str) -> dict[str, Any]:
        """The simulated buyer pays; refused (409) unless the charge is pending."""
        charge = self._pending(self.get(charge_id), "paid")
        charge.paid_at = datetime.now(UTC)
        return self._move(charge, "paid")

    def refund(self, charge_id: str) -> dict[str, Any]:
        charge = self.get(charge_id)
        if charge.status != "paid":
            raise PixError(
                409, "invalid_state", f"only a paid charge is refunded (it is {charge.status})"
            )
        charge.refunded_at = datetime.now(UTC)
        return self._move(charge, "refunded")

    def expire(self, charge_id: str) -> dict[str, Any]:
        """Expire a pending charge now."""
        return self._move(self._pending(self.get(charge_id), "expired"), "expired")

    def cancel(self, charge_id: str) -> dict[str, Any]:
        return self._move(self._pending(self.get(charge_id), "cancelled"), "cancelled")

    def expire_due(self, now: datetime | None = None) -> int:
        """Pending charges past their expiry become ``expired`` (each with its webhook)."""
        now = now or datetime.now(UTC)
        moved = 0
        while self._expiries and self._expiries[0][0] <= now:
            _, charge_id = heapq.heappop(self._expiries)
            charge = self.charges.get(charge_id)
            if charge is not None and charge.status == "pending":
                self._move(charge, "expired")
                moved += 1
        return moved

    def _pending(self, charge: PixCharge, to: str) -> PixCharge:
        if charge.status != "pending":
            raise PixError(
                409, "invalid_state", f"charge is {charge.status}, it cannot become {to}"
            )
        return charge

    def _move(self, charge: PixCharge, status: str) -> dict[str, Any]:
        charge.status = status
        view = charge.view()
        self._emit(charge, EVENT_TYPES[status], view)
        self._changed()
        return view

    # -- events -----------------------------------------------------------------------------

    def emit(
        self, charge_id: str, type_: str, charge: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send a signed event about a charge without changing it: ``charge`` overrides
        fields of the body's charge (an odd or lying gateway, e.g. a ``refunded`` event
        for an unpaid charge, or another amount)."""
        current = self.get(charge_id)
        if not isinstance(type_, str) or not type_:
            raise ValueError("type must be a non-empty string")
        if charge is not None and not isinstance(charge, dict):
            raise ValueError("charge must be an object of fields to override")
        view = {**current.view(), **(charge or {})}
        return self._emit(current, type_, view).to_json()

    def _emit(self, charge: PixCharge, type_: str, view: dict[str, Any]) -> PixEvent:
        now = datetime.now(UTC)
        event_id = "evt_" + secrets.token_hex(12)
        body = orjson.dumps(
            {"event_id": event_id, "type": type_, "created_at": _iso(now), "charge": view}
        )
        url = charge.notification_url or self.webhook_url
        event = PixEvent(event_id, type_, charge.id, url, body, now)
        self.events[event_id] = event
        self._dispatch(event)
        return event

    def redeliver(self, event_id: str) -> dict[str, Any]:
        """Send an event again now (one copy, retried as usual; webhook faults do not apply)."""
        event = self.events.get(event_id)
        if event is None:
            raise PixError(404, "not_found", "no such event")
        if event.url is None:
            raise PixError(409, "no_url", "the event has no notification URL")
        self._spawn(functools.partial(self._deliver, _Job(event, 0, 0.0, True)))
        return event.to_json()

    def release(self) -> int:
        """Send the held events now, newest first (one after the other); how many."""
        batch, self._held = self._held, []
        if batch:
            self._spawn(functools.partial(self._deliver_reversed, batch))
        return len(batch)

    def webhooks(self, event_id: str | None = None, charge_id: str | None = None) -> list[Delivery]:
        return [
            d
            for d in self.deliveries
            if (event_id is None or d.event_id == event_id)
            and (charge_id is None or d.charge_id == charge_id)
        ]

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def busy(self) -> int:
        """Webhook deliveries under way (delayed, sending or waiting to retry)."""
        return sum(1 for task in self._tasks if not task.done())

    def _dispatch(self, event: PixEvent) -> None:
        if event.url is None:
            self._record(_Job(event, 0, 0.0, False), 0, None, "no_url")
            return
        plan = self.faults
        if plan.lose and self._random.random() < plan.lose:
            self.counters.lost += 1
            self._record(_Job(event, 0, 0.0, False), 0, None, "lost")
            return
        jobs = [_Job(event, copy, plan.delay, False) for copy in range(plan.duplicate)]
        if plan.reorder >= 2:
            self._held.append(jobs)
            if len(self._held) >= plan.reorder:
                self.release()
            return
        for job in jobs:
            self._spawn(functools.partial(self._deliver, job))

    async def _deliver_reversed(self, batch: list[list[_Job]]) -> None:
        for jobs in reversed(batch):
            await asyncio.gather(*(self._deliver(job) for job in jobs))

    async def _deliver(self, job: _Job) -> None:
        settings = self.settings
        attempt = 0
        try:
            if job.delay > 0:
                await asyncio.sleep(job.delay)  # the injected fault itself
            backoff = settings.webhook_backoff_initial
            for attempt in range(1, self.attempts + 1):
                status, error = await self._post(job.event)
                self._record(job, attempt, status, error)
                if status is not None and 200 <= status < 300:
                    self.counters.delivered += 1
                    self._changed()
                    return
                self.counters.failed += 1
                if attempt < self.attempts:
                    await asyncio.sleep(backoff)  # the gateway's retry timer
                    backoff *= settings.webhook_backoff_factor
                    backoff = min(backoff, settings.webhook_backoff_max)
            self.counters.given_up += 1
            self._changed()
        except asyncio.CancelledError:
            self.counters.cancelled += 1
            self._record(job, attempt, None, "cancelled")
            raise

    async def _post(self, event: PixEvent) -> tuple[int | None, str | None]:
        assert event.url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: event.event_id,
            SIGNATURE_HEADER: sign(self.secret, event.body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        try:
            async with self._session.post(
                event.url, data=event.body, headers=headers, timeout=timeout
            ) as response:
                await response.read()
                return response.status, None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            logger.debug("pix webhook %s to %s failed: %r", event.event_id, event.url, exc)
            return None, type(exc).__name__

    def _record(self, job: _Job, attempt: int, status: int | None, error: str | None) -> None:
        event = job.event
        self.deliveries.append(
            Delivery(
                event.event_id,
                event.type,
                event.charge_id,
                event.url,
                attempt,
                job.copy,
                status,
                error,
                job.redelivery,
                datetime.now(UTC),
            )
        )
        self._changed()

    # -- tasks ------------------------------------------------------------------------------

    def _spawn(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._closed:
            return
        if not self._running:
            self._queued.append(make)  # sent once the server is back (start)
            return
        task = asyncio.get_running_loop().create_task(make(), name="pix:webhook")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("pix webhook task failed", exc_info=task.exception())

    def _ensure_clock(self) -> None:
        """The task that expires charges at their expiry, so their webhooks go on time."""
        if self._closed or not self._running:
            return
        if self._clock is not None and not self._clock.done():
            self._wake.set()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): expiry happens on the next read
        self._wake = asyncio.Event()  # bound to this loop on first use
        self._clock = loop.create_task(self._run_clock(), name="pix:expiry")

    async def _run_clock(self) -> None:
        while True:
            self._wake.clear()
            self.expire_due()
            until_next: float | None = None  # None: no pending charge, sleep until woken
            if self._expiries:
                left = (self._expiries[0][0] - datetime.now(UTC)).total_seconds()
                until_next = max(left, 0.0) + 0.001
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until_next):  # a timer: the next expiry is due then
                    await self._wake.wait()

    def start(self) -> None:
        """The server is up: queued deliveries go, the expiry clock runs."""
        if self._closed:
            return
        self._running = True
        queued, self._queued = self._queued, []
        for make in queued:
            self._spawn(make)
        if self._expiries:
            self._ensure_clock()

    async def stop(self) -> None:
        """The server goes down: deliveries under way are cancelled (recorded as such);
        events from now until :meth:`start` wait for it. State stays."""
        self._running = False
        tasks = list(self._tasks)
        if self._clock is not None:
            tasks.append(self._clock)
            self._clock = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop()
        self._closed = True
        self._queued.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- waiting ----------------------------------------------------------------------------

    def _changed(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        if self._on_change is not None:
            self._on_change()

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy (checked on every change of this gateway:
        charges, events, delivery attempts); TimeoutError at the deadline."""
        async with asyncio.timeout(within):
            while True:
                result = predicate()
                if result:
                    return result
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)


def _url(value: Any, name: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith(("http://", "https://"))
        or len(value) > 2000
        or any(c.isspace() for c in value)
    ):
        raise PixError(400, "invalid_request", f"{name} must be an http(s) URL")
    return value


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise PixError(400, "invalid_request", f"{name} must be a string of 1-{limit} characters")
    return value


def _charge_fields(body: dict[str, Any], now: datetime) -> dict[str, Any]:
    amount = body.get("amount_cents")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise PixError(400, "invalid_request", "amount_cents must be an integer")
    if not 1 <= amount <= MAX_AMOUNT_CENTS:
        raise PixError(400, "invalid_request", f"amount_cents must be within 1-{MAX_AMOUNT_CENTS}")
    if body.get("currency") != CURRENCY:
        raise PixError(400, "invalid_request", "currency must be BRL")
    raw_expiry = body.get("expires_at")
    try:
        expires_at = datetime.fromisoformat(raw_expiry) if isinstance(raw_expiry, str) else None
    except ValueError:
        expires_at = None
    if expires_at is None or expires_at.tzinfo is None:
        raise PixError(400, "invalid_request", "expires_at must be ISO-8601 with an offset")
    expires_at = expires_at.astimezone(UTC)
    if not now < expires_at <= now + MAX_EXPIRY:
        raise PixError(400, "invalid_request", "expires_at must be within the next 30 days")
    url = body.get("notification_url")
    return {
        "reference": _text(body, "reference", 200, required=True),
        "amount_cents": amount,
        "currency": CURRENCY,
        "description": _text(body, "description", 500, required=False) or "",
        "expires_at": expires_at,
        "notification_url": None if url is None else _url(url, "notification_url"),
        "payer_ref": _text(body, "payer_ref", 200, required=False),
    }


# -- PIX code and QR --------------------------------------------------------------------------


def _emv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def _crc16(data: bytes) -> int:
    """CRC16-CCITT (0x1021, initial 0xFFFF), as the BR Code's tag 63 wants."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def pix_code(charge_id: str, amount_cents: int) -> str:
    """A BR Code (EMV) "copia e cola" for a dynamic PIX of this amount, with a valid CRC."""
    account = _emv("00", "br.gov.bcb.pix") + _emv("25", f"pix.sandbox.invalid/v2/{charge_id}")
    payload = "".join(
        (
            _emv("00", "01"),
            _emv("01", "12"),
            _emv("26", account),
            _emv("52", "0000"),
            _emv("53", "986"),
            _emv("54", f"{amount_cents // 100}.{amount_cents % 100:02d}"),
            _emv("58", "BR"),
            _emv("59", "BOTFLEET SANDBOX"),
            _emv("60", "SAO PAULO"),
            _emv("62", _emv("05", "***")),
            "6304",
        )
    )
    return payload + f"{_crc16(payload.encode()):04X}"


def qr_png_base64(code: str, size: int = 29) -> str:
    """A small 1-bit PNG drawn from the code's hash: not scannable, but a real image."""
    bits = b"".join(hashlib.sha256(f"{code}:{i}".encode()).digest() for i in range(4))
    row_bytes = (size + 7) // 8
    rows = b"".join(b"\x00" + bits[y * row_bytes : (y + 1) * row_bytes] for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


# -- HTTP -------------------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def add_pix_routes(app: web.Application, pix: PixGateway) -> None:
    """``POST /pix/v1/charges`` and ``GET /pix/v1/charges/{id}`` (before any catch-all)."""

    async def serve(
        request: web.Request, call: Callable[[], Coroutine[Any, Any, web.Response]]
    ) -> web.StreamResponse:
        try:
            await pix.before_call()
            pix.authorize(request.headers.get("Authorization"))
            response = await call()
        except PixError as error:
            response = _json(error.status, error.to_json())
        except _Dropped:
            return _abort(request)
        except Exception:
            logger.exception("sandbox pix failed on %s %s", request.method, request.path)
            response = _json(500, {"error": "internal", "message": "Internal Server Error"})
        pix.counters.api_statuses[response.status] += 1
        if pix.drop_after():
            return _abort(request)
        return response

    async def create(request: web.Request) -> web.StreamResponse:
        async def call() -> web.Response:
            raw = await request.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise PixError(400, "invalid_request", "the body must be JSON") from None
            charge, replayed = pix.create_charge(body, request.headers.get(IDEMPOTENCY_HEADER))
            headers = {"Idempotent-Replayed": "true"} if replayed else None
            return _json(201, charge.created_view(), headers)

        return await serve(request, call)

    async def fetch(request: web.Request) -> web.StreamResponse:
        async def call() -> web.Response:
            return _json(200, pix.charge(request.match_info["id"]))

        return await serve(request, call)

    app.router.add_post(f"{API_PREFIX}/charges", create)
    app.router.add_get(f"{API_PREFIX}/charges/{{id}}", fetch)


def _abort(request: web.Request) -> NoReturn:
    """Close without an answer: the client cannot know whether the call ran."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError from None
