"""Applies the call-log migrations to head, in-process, when the store opens."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Several bridge processes may start against one PostgreSQL database at once; this
# transaction-scoped advisory lock makes the second wait instead of racing the first.
_PG_MIGRATION_LOCK = 0x63616C6C6C6F67  # "calllog"


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextlib.asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Workers on one host open the same SQLite file at once: the same wait, with a lock file beside it
    (SQLite has no advisory locks, and two processes creating the tables would collide)."""
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        yield
        return
    fd = await asyncio.to_thread(_locked, f"{database}.migrate-lock")
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _locked(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with _sqlite_file_lock(engine), engine.begin() as connection:
        await connection.run_sync(_upgrade)
