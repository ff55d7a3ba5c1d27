"""Dead letter replay: request, claim (owner, start) and count replays.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUE = sa.text("replay_requested_at IS NOT NULL AND resolved_at IS NULL")


def upgrade() -> None:
    # Nullable columns and a constant default: no table rewrite, a brief lock only.
    op.add_column(
        "dead_letters", sa.Column("replay_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "dead_letters", sa.Column("replay_started_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("dead_letters", sa.Column("replay_owner", sa.Text(), nullable=True))
    op.add_column(
        "dead_letters",
        sa.Column("replays", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_index(
        "ix_dead_letters_replay_queue",
        "dead_letters",
        ["bot_id", "replay_requested_at"],
        unique=False,
        postgresql_where=_QUEUE,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_dead_letters_replay_queue", table_name="dead_letters", postgresql_where=_QUEUE
    )
    op.drop_column("dead_letters", "replays")
    op.drop_column("dead_letters", "replay_owner")
    op.drop_column("dead_letters", "replay_started_at")
    op.drop_column("dead_letters", "replay_requested_at")
