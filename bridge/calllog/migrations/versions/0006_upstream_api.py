"""calls: which voice API answered (realtime | live), and a Live call's session and backend usage

Revision ID: 0006_upstream_api
Revises: 0005_outbound
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_upstream_api"
down_revision = "0005_outbound"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [
        # Every call recorded before this revision was a Realtime call.
        sa.Column("upstream_api", sa.String(16), nullable=False, server_default="realtime"),
        sa.Column("live_session_id", sa.String(64)),
        sa.Column("session_seconds", sa.Float),  # billed session seconds (Live); NULL for Realtime
        sa.Column("backend_model", sa.String(64)),  # the Responses model a Live call delegated to
        sa.Column("backend_input_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("backend_cached_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("backend_output_tokens", sa.BigInteger, nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    # Added in place on both databases (a NOT NULL column with a server default needs no rebuild).
    for column in _columns():
        op.add_column("calls", column)
    op.create_index("ix_calls_upstream_api", "calls", ["upstream_api"])


def downgrade() -> None:
    op.drop_index("ix_calls_upstream_api", table_name="calls")
    with op.batch_alter_table("calls") as batch:  # SQLite drops columns by rebuilding the table
        for column in reversed(_columns()):
            batch.drop_column(column.name)
