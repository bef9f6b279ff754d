"""Fixtures of the call-log suite: every store/recorder/API test runs against SQLite and PostgreSQL.

PostgreSQL comes from BRIDGE_TEST_POSTGRES_URL (see .ci/postgres.sh); when that is unset the suite
starts one itself with .ci/postgres.sh, and only BRIDGE_SKIP_POSTGRES=1 turns those tests into skips.
Each PostgreSQL test gets a database of its own, created and dropped around it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import URL, make_url

from bridge.calllog import CallRecorder, CallStore, setup_calllog_routes
from bridge.calllog.auth import OperatorAuth

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get("BRIDGE_TEST_POSTGRES_URL", "").strip()
    if url:
        return url
    if os.environ.get("BRIDGE_SKIP_POSTGRES") == "1":
        pytest.skip("BRIDGE_SKIP_POSTGRES=1")
    script = 'source .ci/postgres.sh >/dev/null && printf %s "$BRIDGE_TEST_POSTGRES_URL"'
    try:
        done = subprocess.run(
            ["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess([], 1, "", str(exc))
    if done.returncode != 0 or not done.stdout.strip():
        pytest.fail(
            "The call-log tests need a PostgreSQL server and could not start one.\n"
            "Run `source .ci/postgres.sh` (installs Debian's postgresql if missing and starts a throwaway\n"
            "server on 127.0.0.1), or set BRIDGE_TEST_POSTGRES_URL=postgresql+asyncpg://user:pw@host:port/db\n"
            "(the user needs CREATEDB), or set BRIDGE_SKIP_POSTGRES=1 to skip them.\n"
            f".ci/postgres.sh said:\n{done.stderr.strip()}",
            pytrace=False,
        )
    return done.stdout.strip()


def asyncpg_dsn(url: URL, database: str) -> str:
    return url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)


class PostgresDatabase:
    """A throwaway database on the test server, plus the admin handle the outage tests need."""

    def __init__(self, server_url: str) -> None:
        self.server = make_url(server_url)
        self.name = f"calllog_test_{uuid.uuid4().hex[:12]}"
        self.url = self.server.set(database=self.name).render_as_string(hide_password=False)

    async def admin(self) -> asyncpg.Connection:
        # The maintenance database, so this connection survives what the tests do to the test one.
        return await asyncpg.connect(asyncpg_dsn(self.server, "postgres"))

    async def create(self) -> None:
        conn = await self.admin()
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await self.admin()
        try:
            # FORCE cannot end a superuser's backend (an autovacuum worker that just started on the
            # new database): such a worker finishes in moments, so try again briefly.
            for attempt in range(50):
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                    return
                except asyncpg.InsufficientPrivilegeError:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        # A directory that does not exist yet: CallStore.open must create it.
        yield f"sqlite+aiosqlite:///{tmp_path}/data/calls.db"
        return
    database = PostgresDatabase(request.getfixturevalue("postgres_server_url"))
    await database.create()
    request.node.postgres_database = database
    try:
        yield database.url
    finally:
        await database.drop()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[CallStore]:
    store = await CallStore.open(db_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def recorder(store: CallStore) -> AsyncIterator[CallRecorder]:
    recorder = CallRecorder(store, retry_initial_s=0.05, retry_max_s=0.2)
    await recorder.start()
    try:
        yield recorder
    finally:
        await recorder.stop()


@pytest.fixture
async def client(store: CallStore) -> AsyncIterator[TestClient]:
    app = web.Application()
    setup_calllog_routes(app, store, OperatorAuth(ADMIN_TOKEN))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
