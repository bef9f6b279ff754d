"""The call pages in real headless Chromium, the way a support person uses them.

Needs Debian's `chromium` (`bash .ci/chromium.sh` installs it); BRIDGE_SKIP_BROWSER=1 skips.
Writes docs/screenshots/calls-list.png and call-detail.png as it goes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.calllog import CallRecorder, CallStore, setup_calllog_routes
from tests.calllog.cdp import Page, browser_page
from tests.calllog.conftest import ADMIN_TOKEN, REPO
from tests.calllog.sample_calls import record_day_of_calls

pytestmark = pytest.mark.browser

# The docs' copies are rewritten only on request, so a test run leaves the working tree clean.
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("BRIDGE_UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "bridge-screenshots"
)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[str, CallRecorder]]:
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    recorder = CallRecorder(store)
    await recorder.start()
    record_day_of_calls(recorder)
    await recorder.flush()
    app = web.Application()
    setup_calllog_routes(app, store, ADMIN_TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), recorder
    finally:
        await server.close()
        await recorder.stop()
        await store.close()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with browser_page(tmp_path / "chromium") as page:
        yield page


def js(value: str) -> str:
    return json.dumps(value)


async def sign_in(page: Page, url: str) -> None:
    await page.goto(url)
    await page.wait_for("document.querySelector('#token') !== null")
    await page.evaluate(f"document.querySelector('#token').value = {js(ADMIN_TOKEN)}")
    await page.evaluate("document.querySelector('.login-card form').submit()")


async def test_search_finds_the_call_and_its_page_shows_the_conversation(
    site: tuple[str, CallRecorder], page: Page
) -> None:
    base, _ = site
    # A wrong token first: the form says so and lets nobody in.
    await page.goto(f"{base}/calls")
    await page.evaluate("document.querySelector('#token').value = 'guess'")
    await page.evaluate("document.querySelector('.login-card form').submit()")
    await page.wait_for("document.querySelector('.login-error') !== null")

    await sign_in(page, f"{base}/calls")
    await page.wait_for("document.querySelectorAll('#calls tbody tr').length === 7")
    rows = await page.evaluate("[...document.querySelectorAll('#calls tbody tr')].map(r => r.innerText)")
    assert "Live" in rows[0]
    assert any("+*******1234" in row and "Caller hung up" in row for row in rows)
    assert not any("5551231234" in row for row in rows)  # masked in the list
    await page.screenshot(SCREENSHOTS / "calls-list.png")

    await page.evaluate(
        "(() => { const f = document.querySelector('#filters');"
        " f.elements.q.value = 'refund'; f.requestSubmit(); })()"
    )
    await page.wait_for(
        "document.querySelectorAll('#calls tbody tr').length === 1 && "
        "document.querySelector('#calls tbody tr').innerText.includes('+*******1234')"
    )
    assert "q=refund" in await page.evaluate("location.search")

    await page.evaluate("document.querySelector('#calls tbody tr td:nth-child(2)').click()")
    await page.wait_for("location.pathname === '/calls/CA0001refund'")
    # 4 assistant lines and 3 caller lines.
    await page.wait_for("document.querySelectorAll('.bubble').length === 7")
    said = await page.evaluate("[...document.querySelectorAll('.bubble .said')].map(b => b.innerText)")
    assert "Hi, I'd like a refund for my order from last week." in said
    assert await page.evaluate("document.querySelector('mark').innerText") == "refund"
    cut = await page.evaluate("document.querySelector('.bubble.cut').innerText")
    assert "I found order A-1042" in cut
    assert "the caller heard 2.30 s of 4.10 s sent" in cut and "180 ms" in cut
    timeline = await page.evaluate("document.querySelector('#timeline').innerText")
    assert "Tool: lookup_order" in timeline and "returned in 140 ms" in timeline
    assert "Caller pressed" in timeline and "Call ended — Caller hung up" in timeline
    assert await page.evaluate("document.querySelector('#from').innerText") == "+*******1234"
    assert await page.evaluate("document.querySelector('#duration').innerText") == "1:04"
    await page.screenshot(SCREENSHOTS / "call-detail.png")

    await page.evaluate("document.querySelector('#reveal').click()")
    await page.wait_for("document.querySelector('#from').innerText === '+15551231234'")


async def test_a_live_call_updates_while_its_page_is_open(site: tuple[str, CallRecorder], page: Page) -> None:
    base, recorder = site
    await sign_in(page, f"{base}/calls/CA0009live")
    await page.wait_for("document.querySelectorAll('.bubble').length === 1")
    assert "Live" in await page.evaluate("document.querySelector('#badge').innerText")

    recorder.event(
        "CA0009live",
        "assistant_transcript",
        {"item_id": "a1", "text": "Sure, let me check your delivery.", "interrupted": False},
    )
    problem = {"source": "tool", "code": "timeout", "message": "tracking API slow"}
    recorder.event("CA0009live", "error", problem)
    await recorder.flush()
    await page.wait_for("document.querySelectorAll('.bubble').length === 2", within=6)
    await page.wait_for("document.querySelector('.note.problem') !== null", within=6)

    recorder.call_ended("CA0009live", "caller_hangup", at=datetime.now(UTC))
    await recorder.flush()
    await page.wait_for("document.querySelector('#badge').innerText.includes('Caller hung up')", within=6)
