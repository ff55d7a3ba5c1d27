"""SQLAlchemy 2 models: what must not be lost.

Telegram ids are BIGINT everywhere; unique constraints back every
idempotency rule so that a repeated write is a no-op, not a second row.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names: alembic can then drop and compare them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class BotState(enum.StrEnum):
    """What the fleet last knew about a bot; `running` etc. are set by its runner."""

    UNKNOWN = "unknown"
    RUNNING = "running"
    STOPPED = "stopped"
    UNAUTHORIZED = "unauthorized"  # Telegram answered 401: token revoked or wrong
    DISABLED = "disabled"  # enabled: false in the config


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class Bot(Base):
    __tablename__ = "bots"

    # The operator's id from config.yaml (a slug): stable across token rotations.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    username: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[BotState] = mapped_column(
        Enum(BotState, name="bot_state", values_callable=lambda e: [m.value for m in e]),
        nullable=False,
        server_default=BotState.UNKNOWN.value,
    )
    state_reason: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (Index(None, "telegram_id"),)


class BotUser(Base):
    """A Telegram user as seen by one bot, with how they arrived (attribution)."""

    __tablename__ = "bot_users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    username: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(256))
    last_name: Mapped[str | None] = mapped_column(String(256))
    language_code: Mapped[str | None] = mapped_column(String(16))
    first_interaction_at: Mapped[datetime] = _now()
    last_interaction_at: Mapped[datetime] = _now()
    blocked: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    blocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Attribution from the ad click (/go/{slug} -> /start {token}).
    tracking_token: Mapped[str | None] = mapped_column(String(64))
    utm_source: Mapped[str | None] = mapped_column(String(256))
    utm_medium: Mapped[str | None] = mapped_column(String(256))
    utm_campaign: Mapped[str | None] = mapped_column(String(256))
    utm_content: Mapped[str | None] = mapped_column(String(256))
    utm_term: Mapped[str | None] = mapped_column(String(256))
    fbclid: Mapped[str | None] = mapped_column(String(512))
    fbp: Mapped[str | None] = mapped_column(String(256))
    fbc: Mapped[str | None] = mapped_column(String(512))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    attributed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # First touch above (tracking_token, campaign_code); the latest /start with a payload here.
    campaign_code: Mapped[str | None] = mapped_column(String(64))
    last_campaign_code: Mapped[str | None] = mapped_column(String(64))
    last_tracking_token: Mapped[str | None] = mapped_column(String(64))
    last_touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    starts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("bot_id", "telegram_user_id"),
        # Audiences for campaigns walk one bot's users who have not blocked it.
        Index(
            "ix_bot_users_bot_active",
            "bot_id",
            "last_interaction_at",
            "id",
            postgresql_where=text("NOT blocked"),
        ),
        Index(None, "tracking_token", postgresql_where=text("tracking_token IS NOT NULL")),
    )


class Message(Base):
    """Inbound and outbound message log."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    message_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    direction: Mapped[Direction] = mapped_column(
        Enum(Direction, name="message_direction", values_callable=lambda e: [m.value for m in e]),
        nullable=False,
    )
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    update_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, server_default="text")
    text: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("bot_id", "chat_id", "message_id", "direction"),
        Index(None, "bot_id", "chat_id", "sent_at"),
    )


class DeadLetter(Base):
    """An update whose handling failed: kept with its payload so nothing is lost."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    update_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    error_type: Mapped[str] = mapped_column(String(256), nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    first_failed_at: Mapped[datetime] = _now()
    last_failed_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Replay: an operator asks (requested_at), one instance claims it (started_at,
    # owner) and reports back; a claim older than the staleness limit is taken again.
    replay_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replay_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replay_owner: Mapped[str | None] = mapped_column(Text)
    replays: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))

    __table_args__ = (
        # A redelivered update that fails again bumps `attempts`, not a new row.
        UniqueConstraint("bot_id", "update_id"),
        CheckConstraint("attempts >= 1", name="attempts_positive"),
        Index(
            "ix_dead_letters_unresolved",
            "bot_id",
            "last_failed_at",
            postgresql_where=text("resolved_at IS NULL"),
        ),
        # The replay queue: each instance polls it for the bots it owns.
        Index(
            "ix_dead_letters_replay_queue",
            "bot_id",
            "replay_requested_at",
            postgresql_where=text("replay_requested_at IS NOT NULL AND resolved_at IS NULL"),
        ),
    )


class PaymentStatus(enum.StrEnum):
    """``pending`` moves to any other; ``expired``, ``failed`` and ``cancelled`` only to
    ``paid`` (the gateway says money came in after all); ``paid`` only to ``refunded`` or
    ``chargeback``, which are final. Never backwards (see :func:`may_move`)."""

    PENDING = "pending"
    PAID = "paid"
    REFUNDED = "refunded"
    CHARGEBACK = "chargeback"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


_RANK = {
    PaymentStatus.PENDING: 0,
    PaymentStatus.EXPIRED: 1,
    PaymentStatus.FAILED: 1,
    PaymentStatus.CANCELLED: 1,
    PaymentStatus.PAID: 2,
    PaymentStatus.REFUNDED: 3,
    PaymentStatus.CHARGEBACK: 3,
}


def may_move(current: PaymentStatus, new: PaymentStatus) -> bool:
    """Forward only: a late ``pending`` never undoes ``paid``; a refund or chargeback needs a
    payment first (one reported for a charge never paid here changes nothing)."""
    if new in (PaymentStatus.REFUNDED, PaymentStatus.CHARGEBACK):
        return current == PaymentStatus.PAID
    return _RANK[new] > _RANK[current]


class Payment(Base):
    """A PIX charge and its life: amount in integer cents, status moved forward only."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    offer_ref: Mapped[str] = mapped_column(String(256), nullable=False)  # e.g. plan:mensal
    description: Mapped[str] = mapped_column(String(256), nullable=False)
    amount_cents: Mapped[int] = mapped_column(Integer, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    gateway_id: Mapped[str] = mapped_column(String(32), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    transaction_id: Mapped[str | None] = mapped_column(String(128))  # the gateway's
    pix_code: Mapped[str | None] = mapped_column(Text)
    qr_png_base64: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=text("'pending'")
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the funnel did with it (delivery of the product): its own flag, never the status.
    delivery_state: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=text("'none'")
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    access_link: Mapped[str | None] = mapped_column(Text)  # the invite made for this payment
    attribution: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("gateway_id", "transaction_id"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint(
            "status IN ('pending', 'paid', 'refunded', 'chargeback', 'expired', 'failed',"
            " 'cancelled')",
            name="status_known",
        ),
        # One charge in the making per user and offer: a double click finds the first.
        Index(
            "ix_payments_creating",
            "bot_id",
            "telegram_user_id",
            "offer_ref",
            "amount_cents",
            unique=True,
            postgresql_where=text("status = 'pending' AND transaction_id IS NULL"),
        ),
        Index(None, "bot_id", "telegram_user_id", "created_at"),
        # Expiry and reconciliation walk the pending charges only.
        Index("ix_payments_pending", "expires_at", postgresql_where=text("status = 'pending'")),
        Index(
            "ix_payments_paid", "bot_id", "paid_at", postgresql_where=text("paid_at IS NOT NULL")
        ),
    )


class PaymentEvent(Base):
    """The inbox: every authenticated payment webhook as received, stored before the 2xx."""

    __tablename__ = "payment_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(32), nullable=False)
    event_id: Mapped[str] = mapped_column(String(256), nullable=False)
    transaction_id: Mapped[str] = mapped_column(String(128), nullable=False)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[datetime] = _now()
    verification: Mapped[str] = mapped_column(String(32), nullable=False)  # how it was proven
    claimed_status: Mapped[str | None] = mapped_column(String(16))
    trusted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    claimed_amount_cents: Mapped[int | None] = mapped_column(Integer)
    claimed_currency: Mapped[str | None] = mapped_column(String(3))
    claimed_paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = _now()
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(String(256))

    __table_args__ = (
        UniqueConstraint("gateway_id", "event_id"),
        Index(
            "ix_payment_events_todo",
            "next_attempt_at",
            postgresql_where=text("processed_at IS NULL"),
        ),
    )


class OutboxEvent(Base):
    """A domain event (``payment.paid``...), delivered at least once to every subscriber."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(64), nullable=False)
    key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)  # one per transition
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = _now()
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_subscribers: Mapped[list[str]] = mapped_column(
        ARRAY(String(64)), nullable=False, server_default=text("'{}'")
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_outbox_todo", "next_attempt_at", postgresql_where=text("delivered_at IS NULL")),
    )


class TimerState(enum.StrEnum):
    SCHEDULED = "scheduled"
    DONE = "done"  # fired (or found moot by its handler: e.g. the user bought meanwhile)
    CANCELLED = "cancelled"
    FAILED = "failed"  # its handler failed every attempt


class Timer(Base):
    """A durable timer (a downsell, an upsell...): fires once across all instances, after
    restarts and hand-offs; ``key`` makes scheduling it twice a no-op."""

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    state: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=text("'scheduled'")
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_timers_due", "due_at", postgresql_where=text("state = 'scheduled'")),
        Index("ix_timers_user", "bot_id", "telegram_user_id", "kind"),
    )
