"""A placed call on the call pages, in real headless Chromium: marked outbound with who answered, its
progress at the carrier and what the call did about the answer in its timeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.calllog import CallRecorder, CallStore, setup_calllog_routes
from bridge.calllog.auth import OperatorAuth
from bridge.calllog.placed_calls import PlacedCallStore
from tests.calllog.cdp import Page
from tests.calllog.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.browser


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[str]:
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    recorder = CallRecorder(store, linger_s=0)
    await recorder.start()
    placed = PlacedCallStore(store)
    row = {
        "call_id": "out_000000000000000000000001",
        "carrier": "twilio",
        "from_number": "+15550199",
        "to_number": "+15551230101",
        "model": "gpt-realtime-2.1",
        "voice": "marin",
        "metadata": {"booking": "B-17"},
        "outbound_request": {
            "machine_detection": "leave_message",
            "voicemail_message": "Your table is ready.",
        },
    }
    call_id = row["call_id"]
    await placed.admit(row, max_concurrent=5, per_minute=5)
    await placed.bind_answer(call_id, "CA1")
    await placed.progress(call_id, {"carrier_status": "ringing", "status": "ringing"}, status="ringing")
    await placed.progress(call_id, {"carrier_status": "in-progress", "status": "answered"}, status="answered")
    recorder.call_started(
        call_id=call_id,
        call_sid="CA1",
        stream_sid="MZ1",
        from_number=row["from_number"],
        to_number=row["to_number"],
        direction="outbound",
        model="gpt-realtime-2.1",
        voice="marin",
        placed=True,
    )
    await recorder.flush()
    verdict = {"carrier_status": "machine_end_beep", "answered_by": "machine", "message_end": "beep"}
    await placed.progress(call_id, verdict, answered_by="machine", message_end="beep")
    answering = {"action": "leave_message", "answered_by": "machine", "message_end": "beep", "after_ms": 4800}
    recorder.event(call_id, "answering", answering)
    said = {"item_id": "i1", "text": "Your table is ready.", "interrupted": False}
    recorder.event(call_id, "assistant_transcript", said)
    recorder.call_ended(call_id, "voicemail")
    await recorder.flush()
    await placed.progress(call_id, {"carrier_status": "completed", "status": "completed"}, status="completed")
    app = web.Application()
    setup_calllog_routes(app, store, OperatorAuth(ADMIN_TOKEN))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await recorder.stop()
        await store.close()


async def test_a_placed_call_shows_as_outbound_with_who_answered(site: str, page: Page) -> None:
    await page.goto(f"{site}/calls")
    await page.wait_for("document.querySelector('#token') !== null")
    await page.evaluate(f"document.querySelector('#token').value = {json.dumps(ADMIN_TOKEN)}")
    await page.evaluate("document.querySelector('.login-card form').submit()")
    await page.wait_for("document.querySelectorAll('#calls tbody.call').length === 1")
    row = await page.evaluate("document.querySelector('#calls tbody.call tr.main').innerText")
    assert "Left a voicemail" in row and "Outbound · machine" in row and "+*******0101" in row

    await page.evaluate("document.querySelector('#calls tbody.call tr.main td:nth-child(2)').click()")
    await page.wait_for("document.querySelector('#timeline .bubble') !== null")
    assert await page.evaluate("document.querySelector('#title').innerText") == "Call to +*******0101"
    badge = await page.evaluate("document.querySelector('#badge').innerText")
    assert "Left a voicemail" in badge and "Outbound · machine" in badge
    tech = await page.evaluate("document.querySelector('#tech').textContent")
    assert "completed · answered by machine (greeting ended: beep) · machine detection leave_message" in tech
    timeline = await page.evaluate("document.querySelector('#timeline').innerText")
    for line in (
        "Carrier: queued",
        "Carrier: ringing",
        "Carrier: answered by machine, greeting ended (beep)",
        "Answered by machine: the assistant leaves its message",
        "Your table is ready.",
        "Carrier: completed",
        "Call ended — Left a voicemail",
    ):
        assert line in timeline
