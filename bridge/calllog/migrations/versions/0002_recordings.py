"""calls: the call's recording (status, where it is stored, formats, duration, why it failed)

Revision ID: 0002_recordings
Revises: 0001
Create Date: 2025-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_recordings"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)  # frozen copy of bridge.calllog.schema.UTCDateTime's column type


def _columns() -> list[sa.Column]:
    return [
        sa.Column("recording_status", sa.String(16)),
        sa.Column("recording_started_at", TIMESTAMP),
        sa.Column("recording_duration_s", sa.Float),
        sa.Column("recording_location", sa.Text),
        sa.Column("recording_formats", sa.String(32)),
        sa.Column("recording_error", sa.Text),
    ]


def upgrade() -> None:
    # Nullable columns without defaults: both databases add them in place, without a table rebuild.
    for column in _columns():
        op.add_column("calls", column)


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
