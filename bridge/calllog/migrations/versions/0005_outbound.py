"""calls we placed: their progress at the carrier, who answered, and what was asked of them

Revision ID: 0005_outbound
Revises: 0004_calllog_search
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_outbound"
down_revision = "0004_calllog_search"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")  # frozen copy of schema.json_type()


def _columns() -> list[sa.Column]:
    return [
        sa.Column("outbound_status", sa.String(16)),
        sa.Column("answered_by", sa.String(16)),
        sa.Column("message_end", sa.String(16)),
        sa.Column("outbound_request", JSON),
    ]


def upgrade() -> None:
    # Nullable, no defaults: added in place on both databases; inbound calls leave them NULL.
    for column in _columns():
        op.add_column("calls", column)


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
