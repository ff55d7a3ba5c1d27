"""The sales funnel: first and last touch, /start counts, the access a payment delivered.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bot_users", sa.Column("campaign_code", sa.String(length=64), nullable=True))
    op.add_column("bot_users", sa.Column("last_campaign_code", sa.String(length=64), nullable=True))
    op.add_column(
        "bot_users", sa.Column("last_tracking_token", sa.String(length=64), nullable=True)
    )
    op.add_column(
        "bot_users", sa.Column("last_touched_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "bot_users",
        sa.Column("starts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "bot_users", sa.Column("last_start_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("payments", sa.Column("access_link", sa.Text(), nullable=True))
    op.create_index(
        "ix_payments_paid", "payments", ["bot_id", "paid_at"],
        postgresql_where=sa.text("paid_at IS NOT NULL"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_payments_paid", table_name="payments")
    op.drop_column("payments", "access_link")
    for column in (
        "last_start_at", "starts", "last_touched_at", "last_tracking_token",
        "last_campaign_code", "campaign_code",
    ):  # fmt: skip
        op.drop_column("bot_users", column)
