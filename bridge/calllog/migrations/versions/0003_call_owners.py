"""call owners and replica leases: who carries each live call, and whether it is still alive

Revision ID: 0003_call_owners
Revises: 0002_recordings
Create Date: 2026-01-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_call_owners"
down_revision = "0002_recordings"
branch_labels = None
depends_on = None

# Frozen copy of the type in bridge.calllog.schema: a migration must not change when the schema does.
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable: calls recorded before this revision have no owner (the sweep treats them apart).
    op.add_column("calls", sa.Column("owner_id", sa.String(128)))
    op.add_column("calls", sa.Column("owner_incarnation", sa.String(32)))
    op.add_column("calls", sa.Column("owner_url", sa.String(256)))
    op.create_table(
        "replica_leases",
        sa.Column("replica_id", sa.String(128), nullable=False),
        sa.Column("incarnation", sa.String(32), nullable=False),
        sa.Column("internal_url", sa.String(256), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("renewed_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("replica_id", name="pk_replica_leases"),
    )


def downgrade() -> None:
    op.drop_table("replica_leases")
    with op.batch_alter_table("calls") as batch:  # SQLite drops columns by rebuilding the table
        batch.drop_column("owner_url")
        batch.drop_column("owner_incarnation")
        batch.drop_column("owner_id")
