from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from bridge.calllog import CallRecorder, CallStore
from bridge.calllog.migrate import MIGRATIONS_DIR
from bridge.calllog.ops import CallEndedOp, CallStartedOp, CallTotalsOp, EventOp
from bridge.calllog.schema import call_events, metadata
from bridge.calllog.store import encode_cursor
from tests.calllog.helpers import record_simple_call

T0 = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def test_migrations_build_the_schema_on_an_empty_database(db_url: str) -> None:
    store = await CallStore.open(db_url)
    try:
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert {"calls", "call_events", "replica_leases", "alembic_version"} <= tables
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        await store.close()
    # Opening again (the next start-up) finds the schema at head and changes nothing.
    store = await CallStore.open(db_url)
    await store.close()


async def test_calls_and_events_round_trip(store: CallStore) -> None:
    start = CallStartedOp(
        call_id="CA1",
        call_sid="CA1",
        stream_sid="MZ1",
        carrier="twilio",
        from_number="+15551231234",
        to_number="+15557654321",
        direction="inbound",
        model="gpt-realtime",
        voice="marin",
        started_at=T0,
        metadata={"campaign": "winter"},
    )
    batch = [
        start,
        EventOp("CA1", 1, T0 + timedelta(seconds=1), "caller_transcript", {"item_id": "u1", "text": "Grüße"}),
        EventOp("CA1", 2, T0 + timedelta(seconds=2), "dtmf", {"digit": "#"}),
        CallTotalsOp("CA1", 10, 20, 5, 3, 4, 0.01, 500, 900, 1, 0),
        CallTotalsOp("CA1", 11, 22, 6, 4, 5, 0.02, 550, 950, 2, 1),
        CallEndedOp("CA1", T0 + timedelta(seconds=42.5), "caller_hangup"),
    ]
    await store.write_batch(batch)
    # A retried batch (its commit acknowledgement lost) must not duplicate anything.
    await store.write_batch(batch)

    call = await store.get_call("CA1")
    assert call is not None
    assert call["started_at"] == T0 and call["ended_at"] == T0 + timedelta(seconds=42.5)
    assert call["duration_s"] == 42.5
    assert call["status"] == "ended" and call["end_reason"] == "caller_hangup"
    assert call["metadata"] == {"campaign": "winter"}
    assert (call["input_text_tokens"], call["output_audio_tokens"], call["cost_usd"]) == (11, 5, 0.02)
    assert (call["turn_latency_p50_ms"], call["barge_in_count"], call["error_count"]) == (550, 2, 1)
    assert [(e["seq"], e["kind"]) for e in call["events"]] == [(1, "caller_transcript"), (2, "dtmf")]
    assert call["events"][0]["data"] == {"item_id": "u1", "text": "Grüße"}
    assert call["events"][0]["at"] == T0 + timedelta(seconds=1)
    assert await store.get_call("nope") is None


async def test_the_first_end_wins(store: CallStore) -> None:
    await store.write_batch(
        [
            CallStartedOp("CA1", "", "", "twilio", "+1", "+2", "inbound", "m", "v", T0, None),
            CallEndedOp("CA1", T0 + timedelta(seconds=5), "transferred"),
            CallEndedOp("CA1", T0 + timedelta(seconds=9), "shutdown"),
        ]
    )
    await store.write_batch([CallEndedOp("CA1", T0 + timedelta(seconds=20), "error")])
    call = await store.get_call("CA1")
    assert call is not None
    assert (call["end_reason"], call["duration_s"]) == ("transferred", 5.0)


async def seed_for_filters(recorder: CallRecorder) -> None:
    record_simple_call(recorder, "CA-a", T0, from_number="+15551231234", said="I want a REFUND please")
    record_simple_call(
        recorder,
        "CA-b",
        T0 + timedelta(hours=1),
        from_number="+15559999999",
        to_number="+15551234000",
        said="Where is my parcel?",
        reason="transferred",
    )
    record_simple_call(
        recorder,
        "CA-c",
        T0 + timedelta(hours=2),
        from_number="+442071838750",
        said="100% sure, use code a_b",
        reason="error",
    )
    record_simple_call(
        recorder,
        "CA-d",
        T0 + timedelta(days=1),
        from_number="+15550001234",
        said="Ich möchte eine Rückerstattung, ÄRGERLICH",
        reason=None,
    )
    recorder.event("CA-d", "tool_call", {"call_id": "t", "name": "refund", "arguments": "{}"})
    await recorder.flush()


async def ids(store: CallStore, **filters) -> list[str]:
    calls, _ = await store.list_calls(**filters)
    return [call["call_id"] for call in calls]


async def test_list_filters(store: CallStore, recorder: CallRecorder) -> None:
    await seed_for_filters(recorder)
    assert await ids(store) == ["CA-d", "CA-c", "CA-b", "CA-a"]
    # Time range: since inclusive, until exclusive.
    assert await ids(store, since=T0, until=T0 + timedelta(hours=2)) == ["CA-b", "CA-a"]
    assert await ids(store, since=T0 + timedelta(hours=2)) == ["CA-d", "CA-c"]
    # Number: the last digits of either number, however the searcher formats them.
    assert await ids(store, number="1234") == ["CA-d", "CA-a"]
    assert await ids(store, number="(555) 123-1234") == ["CA-a"]
    assert await ids(store, number="1234000") == ["CA-b"]
    with pytest.raises(ValueError, match="digits"):
        await ids(store, number="abc")
    assert await ids(store, end_reason="transferred") == ["CA-b"]
    # Text: case-insensitive substring of transcript lines only (not tool calls), beyond ASCII too.
    assert await ids(store, text="refund") == ["CA-a"]
    assert await ids(store, text="rückerstattung") == ["CA-d"]
    assert await ids(store, text="ärgerlich") == ["CA-d"]
    # LIKE wildcards in the search are literal characters.
    assert await ids(store, text="100%") == ["CA-c"]
    assert await ids(store, text="a_b") == ["CA-c"]
    assert await ids(store, text="a%b") == []
    assert await ids(store, text="refund", number="1234", end_reason="caller_hangup") == ["CA-a"]


async def test_a_search_finds_calls_by_either_side_the_summary_the_sids_and_numbers(
    store: CallStore, recorder: CallRecorder
) -> None:
    await seed_for_filters(recorder)
    recorder.event("CA-b", "assistant_transcript", {"item_id": "a1", "text": "Your PARCEL is in the depot."})
    recorder.event("CA-b", "caller_transcript", {"item_id": "u2", "text": "Which depot? My parcel is late."})
    recorder.summary("CA-c", "Asked which discount code applies.", "resolved", "a discount code")
    await recorder.flush()

    async def found(text: str) -> dict[str, dict | None]:
        calls, _ = await store.list_calls(text=text, annotate=True)
        return {call["call_id"]: call["match"] for call in calls}

    # Both sides' words: the first line that matched, and how many did.
    parcel = await found("parcel")
    assert list(parcel) == ["CA-b"]
    assert parcel["CA-b"] is not None
    assert parcel["CA-b"]["field"] == "caller" and parcel["CA-b"]["text"] == "Where is my parcel?"
    assert parcel["CA-b"]["lines"] == 3
    assert (await found("the depot"))["CA-b"]["field"] == "assistant"  # type: ignore[index]
    # The summary and the intent.
    assert await found("DISCOUNT CODE") == {
        "CA-c": {"field": "summary", "text": "Asked which discount code applies."}
    }
    # The call SID, the stream SID, whole and trimmed.
    assert await found(" CA-b ") == {"CA-b": {"field": "call_sid", "text": "CA-b"}}
    assert await found("MZ-c") == {"CA-c": {"field": "stream_sid", "text": "MZ-c"}}
    # The digits of either number, however they are written; too few digits find no number.
    assert await found("+1 (555) 999-9999") == {"CA-b": {"field": "from_number", "text": "+15559999999"}}
    assert list(await found("1234")) == ["CA-d", "CA-b", "CA-a"]
    assert (await found("1234000"))["CA-b"] == {"field": "to_number", "text": "+15551234000"}
    assert await found("12") == {}
    # A list without a search says where nothing was found, but what each caller said first.
    calls, _ = await store.list_calls(annotate=True)
    assert "match" not in calls[0]
    assert {c["call_id"]: (c["first_words"] or {}).get("text") for c in calls} == {
        "CA-d": "Ich möchte eine Rückerstattung, ÄRGERLICH",
        "CA-c": "100% sure, use code a_b",
        "CA-b": "Where is my parcel?",
        "CA-a": "I want a REFUND please",
    }
    # An export is the calls as stored, without what a list shows at a glance.
    exported = [call async for call in store.export_calls(text="parcel")]
    assert [c["call_id"] for c in exported] == ["CA-b"] and "match" not in exported[0]


async def test_text_search_is_literal_and_refuses_control_characters(
    store: CallStore, recorder: CallRecorder
) -> None:
    """Issue #16: a search for NUL matched every call with a transcript on SQLite (LIKE reads its
    pattern only up to NUL) and failed the query on PostgreSQL (text cannot hold NUL)."""
    record_simple_call(recorder, "CA-odd", T0, said="Saved in C:\\temp, 100%_done\nNext line\tend")
    record_simple_call(recorder, "CA-plain", T0 + timedelta(hours=1), said="nothing special here")
    await recorder.flush()
    for literal in ("\\", "%", "_", "%_", "c:\\temp", "done\nnext", "line\tend"):
        assert await ids(store, text=literal) == ["CA-odd"], literal
    for absent in ("\\\\", "%%", "__", "\\%", "done next"):
        assert await ids(store, text=absent) == [], absent
    for control in ("\x00", "refund\x00", "\x01", "\x1b[2J", "\x7f", "\x85"):
        with pytest.raises(ValueError, match="control characters"):
            await ids(store, text=control)
    # Nor can a cursor or a call id hold them (they would reach PostgreSQL as NUL too).
    assert await store.get_call("CA-odd\x00") is None
    with pytest.raises(ValueError, match="invalid cursor"):
        await store.list_calls(cursor=encode_cursor(T0, "CA\x00"))


async def test_cursor_pagination_walks_every_call_once(store: CallStore, recorder: CallRecorder) -> None:
    expected = []
    for i in range(7):
        # Pairs share a start time, so the cursor's call_id tie-break matters.
        started = T0 + timedelta(minutes=i // 2)
        record_simple_call(recorder, f"CA-{i}", started)
        expected.append((started, f"CA-{i}"))
    await recorder.flush()
    expected.sort(reverse=True)

    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = await store.list_calls(limit=3, cursor=cursor)
        pages += 1
        seen.extend((call["started_at"], call["call_id"]) for call in page)
        if cursor is None:
            break
    assert pages == 3
    assert seen == expected
    with pytest.raises(ValueError, match="cursor"):
        await store.list_calls(cursor="not-a-cursor")
    assert (await store.list_calls(limit=7))[1] is None


async def test_purge_deletes_old_calls_and_their_events(store: CallStore, recorder: CallRecorder) -> None:
    now = datetime.now(UTC)
    record_simple_call(recorder, "CA-old", now - timedelta(days=40))
    record_simple_call(recorder, "CA-new", now - timedelta(days=2))
    await recorder.flush()

    assert await store.purge_older_than(30) == 1
    assert await store.get_call("CA-old") is None
    assert await store.get_call("CA-new") is not None
    async with store.engine.connect() as conn:
        orphans = await conn.execute(select(func.count()).where(call_events.c.call_id == "CA-old"))
        assert orphans.scalar_one() == 0
    assert await store.purge_older_than(30) == 0
    with pytest.raises(ValueError):
        await store.purge_older_than(0)


async def test_export_pages_through_everything_with_events(store: CallStore, recorder: CallRecorder) -> None:
    for i in range(205):  # more than one internal export page
        record_simple_call(recorder, f"CA-{i:03d}", T0 + timedelta(seconds=i), said=f"line {i}")
    await recorder.flush()
    exported = [call async for call in store.export_calls(with_events=True)]
    assert [c["call_id"] for c in exported] == [f"CA-{i:03d}" for i in reversed(range(205))]
    assert exported[0]["events"][0]["data"]["text"] == "line 204"
    plain = [call async for call in store.export_calls(text="line 7")]
    assert {c["call_id"] for c in plain} == {"CA-007"} | {f"CA-{i:03d}" for i in range(70, 80)}


async def test_the_migrations_build_exactly_the_declared_schema(store: CallStore) -> None:
    def compare(sync_conn) -> list:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with store.engine.connect() as conn:
        assert await conn.run_sync(compare) == []


async def test_summaries_stored_before_the_intent_had_a_column_are_split_and_searchable(db_url: str) -> None:
    store = CallStore.connect(db_url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(migrate_to, "0003_call_owners")
            started = T0.replace(tzinfo=None) if db_url.startswith("sqlite") else T0
            for call_id, summary in [
                ("CA-old", "Wanted a refund for a late parcel.\nCaller's intent: Rückerstattung"),
                ("CA-plain", "Asked about the opening hours."),
            ]:
                await conn.execute(
                    text(
                        "INSERT INTO calls (call_id, carrier, from_number, to_number, direction, "
                        "started_at, status, model, voice, summary) VALUES (:id, 'twilio', '+1', '+2', "
                        "'inbound', :at, 'ended', 'gpt-realtime', 'marin', :summary)"
                    ),
                    {"id": call_id, "at": started, "summary": summary},
                )
        await store.migrate()
        old, plain = await store.get_call("CA-old"), await store.get_call("CA-plain")
        assert old is not None and plain is not None
        assert (old["summary"], old["intent"]) == ("Wanted a refund for a late parcel.", "Rückerstattung")
        assert (plain["summary"], plain["intent"]) == ("Asked about the opening hours.", None)
        assert await ids(store, text="RÜCKERSTATTUNG") == ["CA-old"]
        assert await ids(store, text="opening hours") == ["CA-plain"]
        # And back: the intent is the summary's last line again.
        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade_to, "0003_call_owners")
            summary = (
                await conn.execute(text("SELECT summary FROM calls WHERE call_id = 'CA-old'"))
            ).scalar_one()
        assert summary == "Wanted a refund for a late parcel.\nCaller's intent: Rückerstattung"
    finally:
        await store.close()


def migrate_to(connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def downgrade_to(connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def test_a_call_that_never_connected_is_recorded_once_and_a_stream_that_comes_after_all_wins(
    store: CallStore, recorder: CallRecorder
) -> None:
    def never_connected(call_id: str, noticed: datetime) -> None:
        recorder.call_never_connected(
            call_id=call_id,
            carrier="twilio",
            from_number="+15551231234",
            to_number="+15557654321",
            direction="inbound",
            model="gpt-realtime-2.1",
            voice="marin",
            answered_at=T0,
            noticed_at=noticed,
        )

    never_connected("CA-lost", T0 + timedelta(seconds=30))
    never_connected("CA-lost", T0 + timedelta(seconds=31))  # the after-stream request too: no second row
    await recorder.flush()
    lost = await store.get_call("CA-lost")
    assert lost is not None
    assert (lost["status"], lost["end_reason"], lost["started_at"], lost["ended_at"]) == (
        "ended",
        "stream_never_connected",
        T0,
        T0 + timedelta(seconds=30),
    )
    assert lost["from_number"] == "+15551231234" and lost["events"] == []
    assert await ids(store, end_reason="stream_never_connected") == ["CA-lost"]

    # Its stream came after all (late, or to a sibling that had not written yet): the call it became.
    record_simple_call(recorder, "CA-lost", T0 + timedelta(seconds=40), said="Hello?", reason=None)
    await recorder.flush()
    late = await store.get_call("CA-lost")
    assert late is not None
    assert (late["status"], late["end_reason"], late["ended_at"]) == ("in_progress", None, None)
    assert late["started_at"] == T0 + timedelta(seconds=40)
    recorder.call_ended("CA-lost", "caller_hangup", at=T0 + timedelta(seconds=90))
    await recorder.flush()
    done = await store.get_call("CA-lost")
    assert done is not None and (done["end_reason"], done["duration_s"]) == ("caller_hangup", 50.0)

    # A call recorded by its stream is never overwritten by a replica that waited for it in vain.
    record_simple_call(recorder, "CA-here", T0, reason=None)
    await recorder.flush()
    never_connected("CA-here", T0 + timedelta(seconds=30))
    await recorder.flush()
    here = await store.get_call("CA-here")
    assert here is not None and (here["status"], here["end_reason"]) == ("in_progress", None)
    assert [e["kind"] for e in here["events"]] == ["caller_transcript"]
