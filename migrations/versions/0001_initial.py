"""Initial schema: bots, bot_users, messages, dead_letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 15:50:26.599806
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column(
            "state",
            sa.Enum("unknown", "running", "stopped", "unauthorized", "disabled", name="bot_state"),
            server_default="unknown",
            nullable=False,
        ),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bots")),
    )
    op.create_index(op.f("ix_bots_telegram_id"), "bots", ["telegram_id"], unique=False)
    op.create_table(
        "bot_users",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("telegram_user_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=256), nullable=True),
        sa.Column("last_name", sa.String(length=256), nullable=True),
        sa.Column("language_code", sa.String(length=16), nullable=True),
        sa.Column(
            "first_interaction_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_interaction_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tracking_token", sa.String(length=64), nullable=True),
        sa.Column("utm_source", sa.String(length=256), nullable=True),
        sa.Column("utm_medium", sa.String(length=256), nullable=True),
        sa.Column("utm_campaign", sa.String(length=256), nullable=True),
        sa.Column("utm_content", sa.String(length=256), nullable=True),
        sa.Column("utm_term", sa.String(length=256), nullable=True),
        sa.Column("fbclid", sa.String(length=512), nullable=True),
        sa.Column("fbp", sa.String(length=256), nullable=True),
        sa.Column("fbc", sa.String(length=512), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("attributed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_bot_users_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_users")),
        sa.UniqueConstraint(
            "bot_id", "telegram_user_id", name=op.f("uq_bot_users_bot_id_telegram_user_id")
        ),
    )
    op.create_index(
        "ix_bot_users_bot_active",
        "bot_users",
        ["bot_id", "last_interaction_at", "id"],
        unique=False,
        postgresql_where=sa.text("NOT blocked"),
    )
    op.create_index(
        op.f("ix_bot_users_tracking_token"),
        "bot_users",
        ["tracking_token"],
        unique=False,
        postgresql_where=sa.text("tracking_token IS NOT NULL"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error_type", sa.String(length=256), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "first_failed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_failed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("attempts >= 1", name=op.f("ck_dead_letters_attempts_positive")),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_dead_letters_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("bot_id", "update_id", name=op.f("uq_dead_letters_bot_id_update_id")),
    )
    op.create_index(
        "ix_dead_letters_unresolved",
        "dead_letters",
        ["bot_id", "last_failed_at"],
        unique=False,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Enum("in", "out", name="message_direction"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("update_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=32), server_default="text", nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column(
            "sent_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_messages_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "bot_id",
            "chat_id",
            "message_id",
            "direction",
            name=op.f("uq_messages_bot_id_chat_id_message_id_direction"),
        ),
    )
    op.create_index(
        op.f("ix_messages_bot_id_chat_id_sent_at"),
        "messages",
        ["bot_id", "chat_id", "sent_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_bot_id_chat_id_sent_at"), table_name="messages")
    op.drop_table("messages")
    op.drop_index(
        "ix_dead_letters_unresolved",
        table_name="dead_letters",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_table("dead_letters")
    op.drop_index(
        op.f("ix_bot_users_tracking_token"),
        table_name="bot_users",
        postgresql_where=sa.text("tracking_token IS NOT NULL"),
    )
    op.drop_index(
        "ix_bot_users_bot_active", table_name="bot_users", postgresql_where=sa.text("NOT blocked")
    )
    op.drop_table("bot_users")
    op.drop_index(op.f("ix_bots_telegram_id"), table_name="bots")
    op.drop_table("bots")
    # drop_table leaves the enum types behind.
    sa.Enum(name="message_direction").drop(op.get_bind(), checkfirst=False)
    sa.Enum(name="bot_state").drop(op.get_bind(), checkfirst=False)
