"""Deletes calls older than the retention period: once at start-up, then every `interval_s`."""

from __future__ import annotations

import asyncio

import structlog

from bridge.calllog.store import CallStore

log = structlog.get_logger(__name__)


async def run_retention(store: CallStore, days: int, interval_s: float = 86400) -> None:
    """Run until cancelled. `days <= 0` keeps calls forever (returns at once)."""
    if days <= 0:
        log.info("calllog.retention_disabled")
        return
    while True:
        try:
            purged = await store.purge_older_than(days)
        except Exception as exc:
            # A database outage must not end the loop: the next cycle tries again.
            log.warning("calllog.retention_failed", error=repr(exc))
        else:
            if purged:
                log.info("calllog.retention_purged", calls=purged, older_than_days=days)
        await asyncio.sleep(interval_s)
