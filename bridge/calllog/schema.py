"""Tables of the call log (SQLAlchemy Core). The migrations in `migrations/versions` create them.

Times are stored in UTC. PostgreSQL keeps them as `timestamptz`; SQLite has no time type, so
`UTCDateTime` stores naive UTC text there (which sorts and compares correctly) and gives back
aware datetimes on both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the call log; pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


def big_id() -> Any:
    # SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
    return BigInteger().with_variant(Integer(), "sqlite")


calls = Table(
    "calls",
    metadata,
    Column("call_id", String(64), primary_key=True),
    Column("call_sid", String(64), nullable=False, server_default=""),
    Column("stream_sid", String(64), nullable=False, server_default=""),
    Column("carrier", String(32), nullable=False),
    Column("from_number", String(64), nullable=False),
    Column("to_number", String(64), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime()),
    Column("duration_s", Float),
    Column("status", String(16), nullable=False),  # in_progress | ended
    Column("end_reason", String(32)),
    Column("model", String(64), nullable=False),
    Column("voice", String(64), nullable=False),
    Column("input_text_tokens", BigInteger, nullable=False, server_default="0"),
    Column("input_audio_tokens", BigInteger, nullable=False, server_default="0"),
    Column("input_cached_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_text_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_audio_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_usd", Float),  # estimate, see bridge.calllog.pricing
    Column("turn_latency_p50_ms", Integer),
    Column("turn_latency_max_ms", Integer),
    Column("barge_in_count", Integer, nullable=False, server_default="0"),
    Column("error_count", Integer, nullable=False, server_default="0"),
    Column("summary", Text),
    Column("intent", Text),  # what the caller wanted, in a few words (from the post-call summary)
    Column("disposition", String(64)),
    # The summary and intent, casefolded: text search is one plain LIKE, as for events' search_text.
    Column("search_text", Text),
    Column("metadata", json_type()),
    # The call's recording (bridge.recording), if it was recorded: recording | ready | failed.
    Column("recording_status", String(16)),
    Column("recording_started_at", UTCDateTime()),  # wall-clock time of the recording's first sample
    Column("recording_duration_s", Float),
    Column("recording_location", Text),  # file:// or s3:// URI of the files, without the extension
    Column("recording_formats", String(32)),  # comma-separated extensions stored there: "wav,flac,peaks"
    Column("recording_error", Text),  # why it failed
    # The process that carries (or carried) the call: a replica id, which run of it, and the
    # address its siblings reach it at. Written with the call's start; see bridge.calllog.leases.
    Column("owner_id", String(128)),
    Column("owner_incarnation", String(32)),
    Column("owner_url", String(256)),
    # A call we placed (bridge.outbound): its progress at the carrier (queued | ringing | answered |
    # completed | busy | no_answer | failed | canceled), who answered (human | machine | fax |
    # unknown), how a machine's greeting ended (beep | silence | other), and what was asked of it.
    # All NULL for calls that reached us.
    Column("outbound_status", String(16)),
    Column("answered_by", String(16)),
    Column("message_end", String(16)),
    Column("outbound_request", json_type()),
    # Which voice API answered: realtime (tokens) or live (billed by session duration, tools on a
    # delegated Responses backend whose tokens are billed apart).
    Column("upstream_api", String(16), nullable=False, server_default="realtime"),
    Column("live_session_id", String(64)),
    Column("session_seconds", Float),
    Column("backend_model", String(64)),
    Column("backend_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("backend_cached_tokens", BigInteger, nullable=False, server_default="0"),
    Column("backend_output_tokens", BigInteger, nullable=False, server_default="0"),
    Index(None, "started_at", "call_id"),
    Index(None, "call_sid"),
    Index(None, "status"),
    Index(None, "end_reason"),
    Index(None, "upstream_api"),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("call_id", String(64), ForeignKey("calls.call_id", ondelete="CASCADE"), nullable=False),
    # 1, 2, 3... as the call's owner records them. Events recorded elsewhere (a carrier's callback
    # about a call we placed may reach any process) take -1, -2, ..., so the two never collide.
    Column("seq", Integer, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("data", json_type(), nullable=False),
    # A transcript event's utterance, casefolded: text search is then one plain LIKE that is
    # case-insensitive beyond ASCII on both databases (SQLite's lower() only folds A-Z).
    Column("search_text", Text),
    UniqueConstraint("call_id", "seq"),
    Index(None, "kind"),
)

# One row per live bridge process: its lease on the calls it owns. A row whose `expires_at` has
# passed, or a call whose owner's row names another incarnation, means the owner is gone.
replica_leases = Table(
    "replica_leases",
    metadata,
    Column("replica_id", String(128), primary_key=True),
    Column("incarnation", String(32), nullable=False),
    Column("internal_url", String(256), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("renewed_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

RECORDING_COLUMNS = (
    "recording_status",
    "recording_started_at",
    "recording_duration_s",
    "recording_location",
    "recording_formats",
    "recording_error",
)

# The per-call totals the recorder keeps current while a call runs.
TOTAL_COLUMNS = (
    "input_text_tokens",
    "input_audio_tokens",
    "input_cached_tokens",
    "output_text_tokens",
    "output_audio_tokens",
    "cost_usd",
    "turn_latency_p50_ms",
    "turn_latency_max_ms",
    "barge_in_count",
    "error_count",
    "live_session_id",
    "session_seconds",
    "backend_model",
    "backend_input_tokens",
    "backend_cached_tokens",
    "backend_output_tokens",
)
