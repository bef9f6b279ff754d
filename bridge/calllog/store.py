"""CallStore: the call log in SQLite (embedded default) or PostgreSQL, through SQLAlchemy's async engine.

Writes arrive only through `write_batch`, from the CallRecorder's writer task; everything else here is
start-up housekeeping and the queries behind the API.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import statistics
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    and_,
    bindparam,
    delete,
    event,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from bridge.calllog.migrate import upgrade_to_head
from bridge.calllog.ops import (
    CallEndedOp,
    CallStartedOp,
    CallSummaryOp,
    CallTotalsOp,
    EventOp,
    LogOp,
    RecordingOp,
    UnconnectedCallOp,
)
from bridge.calllog.schema import RECORDING_COLUMNS, TOTAL_COLUMNS, UTCDateTime, call_events, calls
from bridge.calllog.search import CONTROL_CHARACTERS, finds, first_words, last_lines, searchable, where_found
from bridge.log_records import TRANSCRIPT_KINDS, RecordKind

END_REASONS = (
    "caller_hangup",
    "assistant_ended",
    "transferred",
    "error",
    "upstream_failure",
    "shutdown",
    "interrupted",
    "timeout",
    "operator_ended",
    "stream_never_connected",
    # Calls we placed (bridge.outbound): a message left on a machine, a machine hung up on, and the
    # calls that never connected, as the carrier reports them.
    "voicemail",
    "machine",
    "busy",
    "no_answer",
    "failed",
    "canceled",
)
NEVER_CONNECTED = "stream_never_connected"  # the webhook was answered; its media stream never came


_EXPORT_PAGE = 200
COMPARE_CALLS = 5000  # per API: the comparison's figures cover at most this many newest calls
MAX_LIVE_CALLS = 1000  # on the live board at once
# A recording still "recording" this long after its call ended has no process finishing it any more.
RECORDING_FINISH_LIMIT = timedelta(hours=1)


def database_unavailable(exc: BaseException) -> bool:
    """True when the database could not be reached or failed to answer, so trying again later can
    help; False when the request or its data is at fault (or the error is a bug of ours)."""
    if isinstance(exc, IntegrityError | DataError):
        return False
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return False  # failed inside SQLAlchemy (binding a value), before reaching the database
    return isinstance(exc, SQLAlchemyError | OSError | TimeoutError)


def _json_dumps(value: Any) -> str:
    # `default=str` so an odd value in event data (a datetime, a Decimal) is stored, not a poisoned batch.
    return json.dumps(value, ensure_ascii=False, default=str)


def _engine_options(
    database: str, memory_mode: bool, is_sqlite: bool, explicit_timeout: bool
) -> dict[str, Any]:
    options: dict[str, Any] = {"json_serializer": _json_dumps}
    if not is_sqlite:
        options["pool_pre_ping"] = True  # a restarted PostgreSQL leaves dead pooled connections
        # A query stuck on a half-dead network link fails after this many seconds instead of holding
        # the writer forever; the recorder then treats it like any outage and retries.
        options["connect_args"] = {"command_timeout": 60, "timeout": 5}  # a connect that hangs is an outage
    elif database in ("", ":memory:") or memory_mode:
        # One shared connection, or every pooled connection would see its own empty database.
        options["poolclass"] = StaticPool
    else:
        if not explicit_timeout:
            # Workers on one host share the file: a writer waits this long for another's transaction
            # (they last milliseconds) before the recorder counts the attempt as failed and retries.
            options["connect_args"] = {"timeout": 15}
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return options


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")  # readers (the API) never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class CallStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    @classmethod
    def connect(cls, url: str) -> CallStore:
        """A store for `url` (the SQLite file's directory is created); nothing is opened until used."""
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        options = _engine_options(
            parsed.database or "", parsed.query.get("mode") == "memory", is_sqlite, "timeout" in parsed.query
        )
        engine = create_async_engine(parsed, **options)
        if is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine)

    async def migrate(self) -> None:
        """Bring the schema to head (alembic)."""
        await upgrade_to_head(self.engine)

    @classmethod
    async def open(cls, url: str) -> CallStore:
        """Connect and migrate the schema to head."""
        store = cls.connect(url)
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    # ---- writes -------------------------------------------------------------------------------

    async def claim_call(self, op: CallStartedOp) -> bool:
        """Write the call's row now, naming its owner; False when the call has a row already (its
        stream was admitted before, here or by another process sharing this database). One upsert that
        does nothing on a conflict but with a row waiting for this stream (`_insert_start`): of two
        streams for one call, racing on two replicas, exactly one gets the row."""
        row = _call_row(op)
        async with self.engine.begin() as conn:
            result = await conn.execute(_insert_start(self._dialect, row.keys(), placed=op.placed), [row])
        return result.rowcount == 1

    async def write_batch(self, ops: Sequence[LogOp]) -> None:
        """Apply a batch in one transaction. Safe to retry whole (see `bridge.calllog.ops`)."""
        starts: dict[str, CallStartedOp] = {}
        unconnected: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        totals: dict[str, CallTotalsOp] = {}
        ends: dict[str, CallEndedOp] = {}
        summaries: dict[str, CallSummaryOp] = {}
        recordings: dict[str, RecordingOp] = {}
        for op in ops:
            if isinstance(op, EventOp):
                events.append(event_row(op))
            elif isinstance(op, CallTotalsOp):
                totals[op.call_id] = op  # the last one is the current state
            elif isinstance(op, CallStartedOp):
                starts.setdefault(op.call_id, op)  # one row each: an upsert takes no twins
            elif isinstance(op, CallEndedOp):
                ends.setdefault(op.call_id, op)  # the first end is the real one
            elif isinstance(op, CallSummaryOp):
                summaries[op.call_id] = op
            elif isinstance(op, RecordingOp):
                recordings[op.call_id] = op  # the last one is the current state
            elif isinstance(op, UnconnectedCallOp):
                unconnected.append(_unconnected_row(op))
        async with self.engine.begin() as conn:
            # Starts first: a batch may hold a call's start and everything after it.
            if starts:
                for placed in (False, True):
                    rows = [_call_row(op) for op in starts.values() if op.placed == placed]
                    if rows:
                        await conn.execute(_insert_start(self._dialect, rows[0].keys(), placed=placed), rows)
            if unconnected:  # after the starts: a call recorded by its stream keeps that record
                await conn.execute(insert_ignoring_duplicates(self._dialect, calls, ["call_id"]), unconnected)
            if events:
                insert_events = insert_ignoring_duplicates(self._dialect, call_events, ["call_id", "seq"])
                await conn.execute(insert_events, events)
            if totals:
                await conn.execute(
                    update(calls)
                    .where(calls.c.call_id == bindparam("b_call_id"))
                    .values({name: bindparam(f"b_{name}") for name in TOTAL_COLUMNS}),
                    [_totals_row(op) for op in totals.values()],
                )
            if ends:
                await self._end_calls(conn, list(ends.values()))
            if summaries:
                await conn.execute(
                    update(calls)
                    .where(calls.c.call_id == bindparam("b_call_id"))
                    .values(
                        summary=bindparam("b_summary"),
                        intent=bindparam("b_intent"),
                        disposition=bindparam("b_disposition"),
                        search_text=bindparam("b_search_text"),
                    ),
                    [
                        {
                            "b_call_id": op.call_id,
                            "b_summary": op.summary,
                            "b_intent": op.intent,
                            "b_disposition": op.disposition,
                            "b_search_text": searchable(op.summary, op.intent),
                        }
                        for op in summaries.values()
                    ],
                )
            if recordings:
                await conn.execute(
                    update(calls)
                    .where(calls.c.call_id == bindparam("b_call_id"))
                    .values(
                        {name: bindparam(f"b_{name}", type_=calls.c[name].type) for name in RECORDING_COLUMNS}
                    ),
                    [_recording_row(op) for op in recordings.values()],
                )

    async def _end_calls(self, conn: AsyncConnection, ends: list[CallEndedOp]) -> None:
        ids = [op.call_id for op in ends]
        query = select(calls.c.call_id, calls.c.started_at).where(calls.c.call_id.in_(ids))
        result = await conn.execute(query)
        started = {call_id: at for call_id, at in result.all()}
        rows = [
            {
                "b_call_id": op.call_id,
                "b_ended_at": op.ended_at,
                "b_reason": op.reason,
                "b_duration": duration_between(started[op.call_id], op.ended_at),
            }
            for op in ends
            if op.call_id in started
        ]
        if rows:
            await conn.execute(
                update(calls)
                .where(calls.c.call_id == bindparam("b_call_id"), calls.c.status == "in_progress")
                .values(
                    status="ended",
                    ended_at=bindparam("b_ended_at", type_=UTCDateTime()),
                    end_reason=bindparam("b_reason"),
                    duration_s=bindparam("b_duration"),
                ),
                rows,
            )

    # ---- housekeeping -------------------------------------------------------------------------

    async def purge_older_than(
        self, days: int, *, now: datetime | None = None, keep: Collection[str] = ()
    ) -> int:
        """Delete calls (and their events) that started more than `days` days before `now` (default:
        now), except those in `keep`; returns how many."""
        old = _older_than(days, now)
        if keep:
            old = and_(old, calls.c.call_id.not_in(list(keep)))
        async with self.engine.begin() as conn:
            # Explicit, not ON DELETE CASCADE: SQLite enforces that only with the foreign_keys pragma.
            doomed = select(calls.c.call_id).where(old)
            await conn.execute(delete(call_events).where(call_events.c.call_id.in_(doomed)))
            result = await conn.execute(delete(calls).where(old))
        return result.rowcount

    async def recordings_older_than(
        self, days: int, *, now: datetime | None = None
    ) -> list[tuple[str, str, tuple[str, ...]]]:
        """(call id, location, formats) of every stored recording `purge_older_than` would delete."""
        query = select(calls.c.call_id, calls.c.recording_location, calls.c.recording_formats).where(
            _older_than(days, now), calls.c.recording_location.is_not(None)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(call_id, location, tuple((formats or "").split(","))) for call_id, location, formats in rows]

    async def get_recording(self, call_id: str) -> dict[str, Any] | None:
        """The call's recording columns (all None when it was not recorded); None if there is no call."""
        query = select(*(calls.c[name] for name in RECORDING_COLUMNS)).where(calls.c.call_id == call_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row is not None else None

    # ---- queries ------------------------------------------------------------------------------

    async def compare_apis(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        number: str | None = None,
        end_reason: str | None = None,
        text: str | None = None,
        upstream_api: str | None = None,
    ) -> list[dict[str, Any]]:
        """The matching calls' figures per voice API, for comparing Realtime and Live on real traffic:
        calls, minutes, cost per minute, the median of the calls' median turn latency, barge-ins per
        call, and (Live) how long callers heard the model after it stopped for them (p95). Figures
        over at most the newest COMPARE_CALLS calls of each API."""
        where = _filters(since, until, number, end_reason, text, upstream_api)
        c = calls.c
        out = []
        async with self.engine.connect() as conn:
            apis = (await conn.execute(select(c.upstream_api).where(*where).distinct())).scalars().all()
            for api in sorted(apis):
                query = (
                    select(c.call_id, c.duration_s, c.cost_usd, c.turn_latency_p50_ms, c.barge_in_count)
                    .where(*where, c.upstream_api == api)
                    .order_by(c.started_at.desc())
                    .limit(COMPARE_CALLS)
                )
                rows = (await conn.execute(query)).all()
                heard: list[float] = []
                if api == "live":
                    ids = [row.call_id for row in rows]
                    barge_ins = select(call_events.c.data).where(
                        call_events.c.call_id.in_(ids), call_events.c.kind == RecordKind.BARGE_IN
                    )
                    for (data,) in (await conn.execute(barge_ins)).all():
                        value = data.get("heard_after_stop_ms") if isinstance(data, dict) else None
                        if isinstance(value, int | float):
                            heard.append(float(value))
                out.append(_api_figures(api, rows, heard))
        return out

    async def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        number: str | None = None,
        end_reason: str | None = None,
        text: str | None = None,
        upstream_api: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        annotate: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first. `number` matches the last digits of either number, `text` is what a search
        finds (`bridge.calllog.search`: either side's words, the summary, the SIDs, the numbers),
        `since` is inclusive and `until` exclusive. `annotate`: each call also gets what a list shows
        at a glance, `first_words` and (with `text`) `match`. Raises ValueError on a bad cursor or a
        number filter without digits."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            select(calls)
            .where(*_filters(since, until, number, end_reason, text, upstream_api))
            .order_by(calls.c.started_at.desc(), calls.c.call_id.desc())
            .limit(limit + 1)
        )
        if cursor:
            at, call_id = decode_cursor(cursor)
            query = query.where(
                or_(calls.c.started_at < at, and_(calls.c.started_at == at, calls.c.call_id < call_id))
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            page = [dict(row) for row in rows[:limit]]
            if annotate:
                await first_words(conn, page)
                if text:
                    await where_found(conn, page, text)
        if len(rows) <= limit:
            return page, None
        return page, encode_cursor(page[-1]["started_at"], page[-1]["call_id"])

    async def live_calls(
        self, *, ended_within: timedelta = timedelta(minutes=2), now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The floor: every call in progress, whichever replica carries it, and those that ended in the
        last `ended_within`, newest first, each with the last line said in it (`last_line`)."""
        now = now or datetime.now(UTC)
        recently = and_(
            calls.c.started_at >= now - timedelta(days=1),  # within the index; calls last an hour at most
            calls.c.ended_at >= now - ended_within,
        )
        query = (
            select(calls)
            .where(or_(calls.c.status == "in_progress", recently))
            .order_by(calls.c.started_at.desc(), calls.c.call_id.desc())
            .limit(MAX_LIVE_CALLS)
        )
        async with self.engine.connect() as conn:
            page = [dict(row) for row in (await conn.execute(query)).mappings().all()]
            await last_lines(conn, page)
        return page

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """The call with its events in the order they happened."""
        if CONTROL_CHARACTERS.search(call_id):
            return None  # no call id holds one (and PostgreSQL could not even be asked about NUL)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.call_id == call_id))).mappings().first()
            if row is None:
                return None
            events = (await conn.execute(_events_query([call_id]))).mappings().all()
        call = dict(row)
        call["events"] = [_event_dict(event) for event in events]
        return call

    async def export_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        number: str | None = None,
        end_reason: str | None = None,
        text: str | None = None,
        upstream_api: str | None = None,
        with_events: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching call, newest first, fetched a page at a time so exports stream."""
        cursor: str | None = None
        while True:
            page, cursor = await self.list_calls(
                since=since,
                until=until,
                number=number,
                end_reason=end_reason,
                text=text,
                upstream_api=upstream_api,
                limit=_EXPORT_PAGE,
                cursor=cursor,
            )
            if with_events and page:
                by_call: dict[str, list[dict[str, Any]]] = {call["call_id"]: [] for call in page}
                async with self.engine.connect() as conn:
                    rows = (await conn.execute(_events_query(list(by_call)))).mappings().all()
                for row in rows:
                    by_call[row["call_id"]].append(_event_dict(row))
                for call in page:
                    call["events"] = by_call[call["call_id"]]
            for call in page:
                yield call
            if cursor is None:
                return


def _filters(
    since: datetime | None,
    until: datetime | None,
    number: str | None,
    end_reason: str | None,
    text: str | None,
    upstream_api: str | None = None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if upstream_api:
        where.append(calls.c.upstream_api == upstream_api)
    if since is not None:
        where.append(calls.c.started_at >= since)
    if until is not None:
        where.append(calls.c.started_at < until)
    if number:
        digits = re.sub(r"\D", "", number)
        if not digits:
            raise ValueError("number filter needs digits")
        pattern = f"%{digits}"
        where.append(or_(calls.c.from_number.like(pattern), calls.c.to_number.like(pattern)))
    if end_reason:
        where.append(calls.c.end_reason == end_reason)
    if text:
        where.append(finds(text))
    return where


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _older_than(days: int, now: datetime | None) -> ColumnElement[bool]:
    if days < 1:
        raise ValueError("retention needs days >= 1")
    return calls.c.started_at < (now or datetime.now(UTC)) - timedelta(days=days)


def _events_query(call_ids: list[str]) -> Select[Any]:
    c = call_events.c
    return (
        select(c.call_id, c.seq, c.at, c.kind, c.data)
        .where(c.call_id.in_(call_ids))
        .order_by(c.call_id, c.at, c.seq)
    )


def encode_cursor(started_at: datetime, call_id: str) -> str:
    raw = json.dumps([started_at.isoformat(), call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def insert_ignoring_duplicates(dialect: str, table: Any, keys: list[str]) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    raise RuntimeError(f"call log supports SQLite and PostgreSQL, not {dialect}")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, call_id = json.loads(raw)
        started_at = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("invalid cursor") from None
    if started_at.tzinfo is None or not isinstance(call_id, str) or CONTROL_CHARACTERS.search(call_id):
        raise ValueError("invalid cursor")
    return started_at, call_id


def _api_figures(api: str, rows: Sequence[Any], heard_after_stop: list[float]) -> dict[str, Any]:
    priced = [(row.cost_usd, row.duration_s) for row in rows if row.cost_usd is not None and row.duration_s]
    priced_minutes = sum(duration for _, duration in priced) / 60
    latencies = [row.turn_latency_p50_ms for row in rows if row.turn_latency_p50_ms is not None]
    return {
        "upstream_api": api,
        "calls": len(rows),
        "minutes": round(sum(row.duration_s or 0.0 for row in rows) / 60, 2),
        "cost_per_minute_usd": round(sum(cost for cost, _ in priced) / priced_minutes, 4)
        if priced_minutes
        else None,
        "turn_latency_p50_ms": statistics.median_low(latencies) if latencies else None,
        "barge_ins_per_call": round(sum(row.barge_in_count for row in rows) / len(rows), 2) if rows else None,
        "heard_after_stop_p95_ms": _p95(heard_after_stop),
    }


def duration_between(started_at: datetime, ended_at: datetime) -> float:
    return round(max((ended_at - started_at).total_seconds(), 0.0), 3)


def _call_row(op: CallStartedOp) -> dict[str, Any]:
    return {
        "call_id": op.call_id,
        "call_sid": op.call_sid,
        "stream_sid": op.stream_sid,
        "carrier": op.carrier,
        "from_number": op.from_number,
        "to_number": op.to_number,
        "direction": op.direction,
        "model": op.model,
        "voice": op.voice,
        "started_at": op.started_at,
        "status": "in_progress",
        "metadata": op.metadata,
        "upstream_api": op.upstream_api,
        "owner_id": op.owner_id,
        "owner_incarnation": op.owner_incarnation,
        "owner_url": op.owner_url,
    }


def _insert_start(dialect: str, columns: Collection[str], *, placed: bool) -> Insert:
    """Insert calls as their streams start, over the rows waiting for them. A call we placed has its
    row since it was placed (bridge.calllog.placed_calls): its first stream takes the stream, the
    model and the owner. A call recorded as never connected (its stream came after the wait, or to a
    sibling that recorded it first) becomes the call that did connect. Any other row is left alone:
    the stream is a second one for the call."""
    if dialect not in ("postgresql", "sqlite"):
        raise RuntimeError(f"call log supports SQLite and PostgreSQL, not {dialect}")
    insert = postgresql.insert(calls) if dialect == "postgresql" else sqlite.insert(calls)
    if placed:
        taken = ("call_sid", "stream_sid", "model", "voice", "owner_id", "owner_incarnation", "owner_url")
        return insert.on_conflict_do_update(
            index_elements=["call_id"],
            set_={name: insert.excluded[name] for name in taken},
            where=(calls.c.stream_sid == "") & calls.c.end_reason.is_(None),
        )
    replaced = {name: insert.excluded[name] for name in columns if name != "call_id"}
    replaced.update(ended_at=None, end_reason=None, duration_s=None)
    return insert.on_conflict_do_update(
        index_elements=["call_id"], set_=replaced, where=calls.c.end_reason == NEVER_CONNECTED
    )


def _unconnected_row(op: UnconnectedCallOp) -> dict[str, Any]:
    return {**_call_row(op.call), "status": "ended", "end_reason": NEVER_CONNECTED, "ended_at": op.noticed_at}


def _recording_row(op: RecordingOp) -> dict[str, Any]:
    return {
        "b_call_id": op.call_id,
        "b_recording_status": op.status,
        "b_recording_started_at": op.started_at,
        "b_recording_duration_s": op.duration_s,
        "b_recording_location": op.location,
        "b_recording_formats": ",".join(op.formats) or None,
        "b_recording_error": op.error,
    }


def _totals_row(op: CallTotalsOp) -> dict[str, Any]:
    return {"b_call_id": op.call_id, **{f"b_{name}": getattr(op, name) for name in TOTAL_COLUMNS}}


def event_row(op: EventOp) -> dict[str, Any]:
    text = op.data.get("text") if op.kind in TRANSCRIPT_KINDS else None
    return {
        "call_id": op.call_id,
        "seq": op.seq,
        "at": op.at,
        "kind": op.kind,
        "data": op.data,
        "search_text": text.casefold() if isinstance(text, str) else None,
    }


def _event_dict(row: RowMapping) -> dict[str, Any]:
    return {"seq": row["seq"], "at": row["at"], "kind": row["kind"], "data": row["data"]}
