"""Alembic environment of the call log.

The bridge runs it in-process (`bridge.calllog.migrate.upgrade_to_head`) on a connection it
passes in `config.attributes["connection"]`. Run by the alembic CLI instead
(`alembic -c bridge/calllog/migrations/alembic.ini revision -m "..."`), it connects to
`sqlalchemy.url` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.calllog.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can't ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (alembic -x is not used here) to run migrations from the CLI")
    asyncio.run(_run_from_url(url))


main()
