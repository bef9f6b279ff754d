"""Serving a stored recording over HTTP with byte ranges, so a browser's audio element can seek.

One path for both archives (a directory or S3): the file's size and validators first, then only the
bytes asked for, streamed in chunks from worker threads (a ranged GET against S3, never the whole
object in memory). RFC 9110: a single `Range: bytes=...` is answered 206 with `Content-Range`; an
`If-Range` that no longer matches (the ETag, or a date older than the file) gets the whole file; a range
that starts past the end gets 416 with `Content-Range: bytes */size`; a Range this server does not
serve (several ranges, another unit, bad syntax) is ignored and the whole file sent, as the RFC allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web

from bridge.recording.archive import CONTENT_TYPES, RecordingArchive, StoredFile


async def recording_response(
    request: web.Request, archive: RecordingArchive, location: str, fmt: str, filename: str
) -> web.StreamResponse:
    """The file of `fmt` at `location`; raises web.HTTPNotFound when it is not there."""
    stored = await asyncio.to_thread(archive.stat, location, fmt)
    if stored is None:
        raise web.HTTPNotFound(text="the recording's file is missing\n")
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": stored.etag,
        "Last-Modified": format_datetime(stored.last_modified, usegmt=True),
        "Content-Disposition": f'inline; filename="{filename}.{fmt}"',
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    span = requested_range(request, stored)
    if span == "unsatisfiable":
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{stored.size}"})
    start, length = span if span is not None else (0, stored.size)
    response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    response.content_type = CONTENT_TYPES[fmt]
    response.content_length = length
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{stored.size}"
    if request.method == "HEAD" or not length:
        await response.prepare(request)
        await response.write_eof()
        return response
    chunks = archive.read(location, fmt, start, length)
    try:
        # The first chunk before the headers: a storage that fails to answer is an error status, not
        # a response cut short.
        chunk = await asyncio.to_thread(next, chunks, None)
        await response.prepare(request)
        while chunk is not None:
            await response.write(chunk)
            chunk = await asyncio.to_thread(next, chunks, None)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(chunks.close)
    await response.write_eof()
    return response


def requested_range(request: web.Request, stored: StoredFile) -> tuple[int, int] | str | None:
    """(start, length) of the range to send, "unsatisfiable", or None for the whole file."""
    if "Range" not in request.headers or not _if_range_holds(request.headers.get("If-Range"), stored):
        return None
    try:
        span = request.http_range  # one "bytes=a-b", "bytes=a-" or "bytes=-n"
    except ValueError:
        return None
    size = stored.size
    if span.start is None or span.start < 0:  # the last n bytes
        suffix = -span.start if span.start is not None else 0
        if suffix == 0:
            return "unsatisfiable"
        return (max(size - suffix, 0), min(suffix, size)) if size else "unsatisfiable"
    if span.start >= size:
        return "unsatisfiable"
    stop = size if span.stop is None else min(span.stop, size)
    return span.start, stop - span.start


def _if_range_holds(value: str | None, stored: StoredFile) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == stored.etag  # a strong comparison: a weak tag never matches
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return stored.last_modified.replace(microsecond=0) <= date
