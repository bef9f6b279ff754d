"""What "search the calls" means, for the store's queries: which calls a search text finds, where in
each it was found, and the lines a list of calls shows at a glance (the first, the latest).

One search box finds a call by what either side said, by its summary or the caller's intent, by its
call SID (or the call id, or the stream SID), and by the digits of either phone number. Every text
comparison is one LIKE over text casefolded when it was stored, so it is case-insensitive beyond
ASCII and behaves the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.calllog.schema import call_events, calls
from bridge.log_records import TRANSCRIPT_KINDS, RecordKind

# C0 and C1 control characters but tab, newline and carriage return, which a line of text may hold.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A search that reads as a phone number, whole or in part: "+1 (555) 123-1234", "1234".
_PHONE_QUERY = re.compile(r"\+?[\d\s().\-]+")
MIN_NUMBER_DIGITS = 3  # fewer digits would match nearly every call


def check_search_text(text: str) -> None:
    """Raise ValueError for a search holding control characters. None is typed by a person, and NUL
    cannot be searched for at all: SQLite's LIKE reads the pattern only up to it (so it matched every
    line) and PostgreSQL text cannot hold it (the query failed)."""
    if CONTROL_CHARACTERS.search(text):
        raise ValueError("q must not contain control characters")


def searchable(*parts: str | None) -> str | None:
    """Text as it is stored for search: the parts on lines of their own, casefolded."""
    text = "\n".join(part.strip() for part in parts if part and part.strip())
    return text.casefold() or None


def contains(text: str) -> str:
    """A LIKE pattern (escape `\\`) matching stored search text that contains `text`."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", text.casefold()) + "%"


def number_digits(text: str) -> str | None:
    """The digits of a search that reads as (part of) a phone number, else None."""
    if not _PHONE_QUERY.fullmatch(text.strip()):
        return None
    digits = re.sub(r"\D", "", text)
    return digits if len(digits) >= MIN_NUMBER_DIGITS else None


def finds(text: str) -> ColumnElement[bool]:
    """The calls a search for `text` finds."""
    check_search_text(text)
    pattern = contains(text)
    found: list[ColumnElement[bool]] = [
        exists().where(
            call_events.c.call_id == calls.c.call_id,
            call_events.c.kind.in_(TRANSCRIPT_KINDS),
            call_events.c.search_text.like(pattern, escape="\\"),
        ),
        calls.c.search_text.like(pattern, escape="\\"),
    ]
    sid = text.strip()
    if sid:
        found += [calls.c.call_sid == sid, calls.c.call_id == sid, calls.c.stream_sid == sid]
    if (digits := number_digits(text)) is not None:
        found += [calls.c.from_number.like(f"%{digits}%"), calls.c.to_number.like(f"%{digits}%")]
    return or_(*found)


async def where_found(conn: AsyncConnection, page: Sequence[dict[str, Any]], text: str) -> None:
    """Set each call's `match`: where the search found it, for the list to show. A line either side
    said comes first (the earliest, with how many lines matched), then the summary, the SIDs, the
    numbers: {"field", "text", "at", "lines"}."""
    if not page:
        return
    lines = await _first_lines(conn, [call["call_id"] for call in page], contains(text))
    needle, sid, digits = text.casefold(), text.strip(), number_digits(text)
    for call in page:
        match = lines.get(call["call_id"])
        if match is None and needle in (call.get("search_text") or ""):
            match = {"field": "summary", "text": _summary_line(call, needle)}
        for field in ("call_sid", "call_id", "stream_sid"):
            if match is None and sid and call.get(field) == sid:
                match = {"field": field, "text": sid}
        for field in ("from_number", "to_number"):
            if match is None and digits and digits in re.sub(r"\D", "", call.get(field) or ""):
                match = {"field": field, "text": call[field]}
        call["match"] = match


def _summary_line(call: dict[str, Any], needle: str) -> str:
    for part in (call.get("summary"), call.get("intent")):
        if part and needle in part.casefold():
            return part
    return call.get("summary") or ""


async def _first_lines(conn: AsyncConnection, ids: list[str], pattern: str) -> dict[str, dict[str, Any]]:
    e = call_events.c
    matching = (e.call_id.in_(ids), e.kind.in_(TRANSCRIPT_KINDS), e.search_text.like(pattern, escape="\\"))
    rows = await _one_per_call(conn, matching, latest=False, count=True)
    return {
        call_id: {
            "field": "caller" if row["kind"] == RecordKind.CALLER_TRANSCRIPT else "assistant",
            "text": _text(row),
            "at": row["at"],
            "lines": row["lines"],
        }
        for call_id, row in rows.items()
    }


# What a call's latest line can be: either side's words, or that the caller spoke (no words).
SAID_KINDS = (*TRANSCRIPT_KINDS, RecordKind.CALLER_SPOKE)


async def last_lines(conn: AsyncConnection, page: Sequence[dict[str, Any]]) -> None:
    """Set each call's `last_line`: the latest thing said in it ({"kind", "data", "at"}), or None."""
    if not page:
        return
    e = call_events.c
    said = (e.call_id.in_([call["call_id"] for call in page]), e.kind.in_(SAID_KINDS))
    rows = await _one_per_call(conn, said, latest=True)
    for call in page:
        row = rows.get(call["call_id"])
        call["last_line"] = {"kind": row["kind"], "data": row["data"], "at": row["at"]} if row else None


async def first_words(conn: AsyncConnection, page: Sequence[dict[str, Any]]) -> None:
    """Set each call's `first_words`: the caller's first transcribed line ({"text", "at"}), or None.
    What a call without a summary (live, or unsummarised) was about, at a glance."""
    if not page:
        return
    e = call_events.c
    spoken = (e.call_id.in_([call["call_id"] for call in page]), e.kind == RecordKind.CALLER_TRANSCRIPT)
    rows = await _one_per_call(conn, spoken, latest=False)
    for call in page:
        row = rows.get(call["call_id"])
        call["first_words"] = {"text": _text(row), "at": row["at"]} if row else None


async def _one_per_call(
    conn: AsyncConnection, where: Sequence[ColumnElement[bool]], *, latest: bool, count: bool = False
) -> dict[str, RowMapping]:
    """Of the events `where` picks, each call's first (or `latest`) one in the order they happened;
    with `count`, how many it had (`lines`)."""
    e = call_events.c
    order = (e.at.desc(), e.seq.desc()) if latest else (e.at, e.seq)
    columns = [
        e.call_id,
        e.at,
        e.kind,
        e.data,
        func.row_number().over(partition_by=e.call_id, order_by=order).label("rank"),
    ]
    if count:
        columns.append(func.count().over(partition_by=e.call_id).label("lines"))
    ranked = select(*columns).where(*where).subquery()
    rows = (await conn.execute(select(ranked).where(ranked.c.rank == 1))).mappings().all()
    return {row["call_id"]: row for row in rows}


def _text(row: RowMapping) -> str:
    return str((row["data"] or {}).get("text") or "")
