"""Deletes calls older than the retention period: once at start-up, then every `interval_s`.

A recorded call goes with its recording: the files are deleted first, then the call's row. A recording
that cannot be deleted now (its bucket unreachable) keeps its call until a later cycle deletes both, so
no recording outlives its call in the log unnoticed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from bridge.calllog.store import CallStore
from bridge.recording.archive import ArchiveError, RecordingArchive

log = structlog.get_logger(__name__)


async def run_retention(
    store: CallStore, days: int, interval_s: float = 86400, recordings: RecordingArchive | None = None
) -> None:
    """Run until cancelled. `days <= 0` keeps calls forever (returns at once)."""
    if days <= 0:
        log.info("calllog.retention_disabled")
        return
    while True:
        try:
            purged, kept = await purge_once(store, days, recordings)
        except Exception as exc:
            # A database outage must not end the loop: the next cycle tries again.
            log.warning("calllog.retention_failed", error=repr(exc))
        else:
            if purged:
                log.info("calllog.retention_purged", calls=purged, older_than_days=days)
            if kept:
                log.warning("calllog.retention_recordings_kept", calls=kept, older_than_days=days)
        await asyncio.sleep(interval_s)


async def purge_once(store: CallStore, days: int, recordings: RecordingArchive | None) -> tuple[int, int]:
    """One cycle: (calls deleted, calls kept because their recording could not be deleted)."""
    now = datetime.now(UTC)
    kept: set[str] = set()
    if recordings is not None:
        for call_id, location, formats in await store.recordings_older_than(days, now=now):
            try:
                await asyncio.to_thread(recordings.delete, location, formats)
            except ArchiveError as exc:
                kept.add(call_id)
                log.warning("calllog.recording_not_deleted", call_id=call_id, error=str(exc))
    return await store.purge_older_than(days, now=now, keep=kept), len(kept)
