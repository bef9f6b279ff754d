"""create the call log: calls and call_events

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the types in bridge.calllog.schema: a migration must not change when the schema does.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite auto-increments only INTEGER keys


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False, server_default=""),
        sa.Column("stream_sid", sa.String(64), nullable=False, server_default=""),
        sa.Column("carrier", sa.String(32), nullable=False),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("to_number", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP),
        sa.Column("duration_s", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("end_reason", sa.String(32)),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("voice", sa.String(64), nullable=False),
        sa.Column("input_text_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("input_audio_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("input_cached_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_text_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_audio_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float),
        sa.Column("turn_latency_p50_ms", sa.Integer),
        sa.Column("turn_latency_max_ms", sa.Integer),
        sa.Column("barge_in_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("summary", sa.Text),
        sa.Column("disposition", sa.String(64)),
        sa.Column("metadata", JSON),
        sa.PrimaryKeyConstraint("call_id", name="pk_calls"),
    )
    op.create_index("ix_calls_started_at_call_id", "calls", ["started_at", "call_id"])
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_end_reason", "calls", ["end_reason"])

    op.create_table(
        "call_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("search_text", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_call_events"),
        sa.UniqueConstraint("call_id", "seq", name="uq_call_events_call_id_seq"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.call_id"], name="fk_call_events_call_id_calls", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_call_events_kind", "call_events", ["kind"])


def downgrade() -> None:
    op.drop_table("call_events")
    op.drop_table("calls")
