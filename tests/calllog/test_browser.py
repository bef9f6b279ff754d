"""The call pages in real headless Chromium, the way a support person uses them.

Needs Debian's `chromium` (`bash .ci/chromium.sh` installs it); BRIDGE_SKIP_BROWSER=1 skips.
Writes docs/screenshots/calls-list.png, calls-list-phone.png, call-detail.png and live-board.png as it
goes (with BRIDGE_UPDATE_SCREENSHOTS=1; else into the temporary directory).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.calllog import CallRecorder, CallStore, setup_calllog_routes
from bridge.calllog.auth import OperatorAuth
from bridge.calllog.leases import ReplicaIdentity
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.softphone import setup_softphone_routes
from tests.calllog.cdp import VIEWPORT, Page, browser_page
from tests.calllog.conftest import ADMIN_TOKEN, REPO
from tests.calllog.sample_calls import REFUND_SUMMARY, record_day_of_calls, start
from tests.e2e import eventually, running_bridge, running_emulator

pytestmark = pytest.mark.browser

# The docs' copies are rewritten only on request, so a test run leaves the working tree clean.
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("BRIDGE_UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "bridge-screenshots"
)
ALICE = "alice-token-0123456789"
AUTH = OperatorAuth(ADMIN_TOKEN, {"alice": ALICE})


@dataclass
class Site:
    base: str
    recorder: CallRecorder  # this replica's ("bridge-a")
    store: CallStore


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    recorder = CallRecorder(store, owner=ReplicaIdentity("bridge-a", "http://10.0.0.7:8080"))
    await recorder.start()
    record_day_of_calls(recorder)
    await recorder.flush()
    app = web.Application()
    setup_calllog_routes(app, store, AUTH)

    async def no_media(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    setup_softphone_routes(app, media_handler=no_media, is_authorized=AUTH.authenticated)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(str(server.make_url("")).rstrip("/"), recorder, store)
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


async def sign_in(page: Page, url: str, token: str = ADMIN_TOKEN) -> None:
    await page.goto(url)
    await page.wait_for("document.querySelector('#token') !== null")
    await page.evaluate(f"document.querySelector('#token').value = {js(token)}")
    await page.evaluate("document.querySelector('.login-card form').submit()")


async def search(page: Page, text: str, rows: int) -> list[str]:
    """Search the list for `text`; the gist line of each of the `rows` calls it finds."""
    await page.evaluate(
        # The old results go first, so that only the new ones can satisfy the wait below.
        "document.querySelectorAll('#calls tbody.call').forEach(b => b.remove());"
        f"(() => {{ const f = document.querySelector('#filters'); f.elements.q.value = {js(text)};"
        " f.requestSubmit(); })()"
    )
    await page.wait_for(
        f"document.querySelectorAll('#calls tbody.call').length === {rows} && "
        "[...document.querySelectorAll('#calls .gist-line')].every(g => g.innerText.includes('Found in'))"
    )
    gists = await page.evaluate("[...document.querySelectorAll('#calls .gist-line')].map(g => g.innerText)")
    return [" ".join(gist.split()) for gist in gists]


async def test_the_list_says_what_each_call_was_about_and_finds_calls_by_words_sid_and_number(
    site: Site, page: Page
) -> None:
    base = site.base
    # A wrong token first: the form says so and lets nobody in.
    await page.goto(f"{base}/calls")
    await page.evaluate("document.querySelector('#token').value = 'guess'")
    await page.evaluate("document.querySelector('.login-card form').submit()")
    await page.wait_for("document.querySelector('.login-error') !== null")

    await sign_in(page, f"{base}/calls", ALICE)
    await page.wait_for("document.querySelectorAll('#calls tbody.call').length === 8")
    assert await page.evaluate("document.querySelector('.signed-in .operator').innerText") == "alice"
    rows = await page.evaluate(
        "[...document.querySelectorAll('#calls tbody.call')].map(b => ({id: b.dataset.callId,"
        " main: b.querySelector('tr.main').innerText,"
        " gist: b.querySelector('.gist-line').innerText.split(/\\s+/).join(' ')}))"
    )
    by_id = {row["id"]: row for row in rows}
    assert "Live" in rows[0]["main"] and rows[0]["id"] == "CA0009live"
    # What each call was about, from the list alone: the disposition and intent, else the caller's words.
    refund = by_id["CA0001refund"]["gist"]
    assert refund.startswith("Resolved a refund for last week's order — The caller asked for a refund")
    assert "1 barge-in" in refund
    assert by_id["CA0003transfer"]["gist"].startswith("Escalated to speak to a person — Outbound delivery")
    assert by_id["CA0002failed"]["gist"].startswith("Caller: Is my appointment still on?")
    assert "1 error" in by_id["CA0002failed"]["gist"]
    assert "never reached the bridge" in by_id["CA0004never"]["gist"]
    assert "Never connected" in by_id["CA0004never"]["main"]
    assert by_id["CA0009live"]["gist"].startswith("Caller: Hi, I'm calling about a delivery.")
    for short in ("CA010short", "CA011short", "CA012short"):
        assert by_id[short]["gist"].startswith("Resolved opening hours — Asked for the opening hours")
    # Masked numbers, times with their zone, costs alike, no empty cell.
    assert (
        "+*******1234" in by_id["CA0001refund"]["main"] and "Caller hung up" in by_id["CA0001refund"]["main"]
    )
    assert not any("5551231234" in row["main"] for row in rows)
    assert "UTC" in by_id["CA0001refund"]["main"] and "$0.117" in by_id["CA0001refund"]["main"]
    assert "$0.039" in by_id["CA0002failed"]["main"]
    cells = await page.evaluate(
        "[...document.querySelectorAll('#calls tr.main td')].map(td => td.innerText.trim())"
    )
    assert all(cells), cells
    # The date filters are about when calls started, apart from the caller column; no placeholder is cut.
    assert (
        await page.evaluate("document.querySelector('fieldset.started legend').innerText") == "Call started"
    )
    headers = await page.evaluate("[...document.querySelectorAll('#calls th')].map(th => th.innerText)")
    assert [h.lower() for h in headers[:3]] == ["started", "caller", "called"]
    assert await page.evaluate(PLACEHOLDERS_CUT) == []
    assert await page.evaluate("document.querySelector('#status').innerText") == "8 calls, newest first"
    await page.screenshot(SCREENSHOTS / "calls-list.png")

    # By a caller's phrase: the call, with the line it was found in.
    [gist] = await search(page, "appointment still", rows=1)
    assert gist.startswith("Found in what the caller said: “Is my appointment still on?”")
    assert await page.evaluate("document.querySelector('#calls mark').innerText") == "appointment still"
    assert (
        await page.evaluate("document.querySelector('#status').innerText") == "1 call matches, newest first"
    )
    assert "q=appointment+still" in await page.evaluate("location.search")
    # A word both sides said, several times: the first line, how many, and what the call was about.
    [gist] = await search(page, "refund", rows=1)
    assert gist.startswith("Found in what the caller said (3 lines): “Hi, I'd like a refund for my order")
    assert "Resolved a refund for last week's order" in gist
    for gist in await search(page, "nine to five", rows=3):
        assert gist.startswith("Found in what the assistant said: “We are open nine to five")
    # By call SID, and by number however it is written.
    [gist] = await search(page, "CA0003transfer", rows=1)
    assert gist.startswith("Found in the call SID: “CA0003transfer”")
    [gist] = await search(page, "(415) 555-0187", rows=1)
    assert gist.startswith("Found in the caller's number: “+*******0187”")
    assert "Caller: Is my appointment still on?" not in gist and "1 error" in gist
    opening = await search(page, "opening hours", rows=3)
    assert all(g.startswith("Found in") for g in opening)

    await page.evaluate("document.querySelector('#calls tbody.call td:nth-child(2)').click()")
    await page.wait_for("location.pathname.startsWith('/calls/CA01')")
    await page.wait_for("document.querySelector('mark') !== null")
    assert (await page.evaluate("document.querySelector('mark').innerText")).lower() == "opening hours"

    # On a phone the list is a column of cards: nothing scrolls sideways.
    await page.set_viewport(390, 844, mobile=True)
    await page.goto(f"{base}/calls")
    await page.wait_for("document.querySelectorAll('#calls tbody.call').length === 8")
    width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    assert await page.evaluate(PLACEHOLDERS_CUT) == []
    await page.screenshot(SCREENSHOTS / "calls-list-phone.png", width=390)
    await page.set_viewport(*VIEWPORT)


# Inputs whose placeholder is wider than the room it has (the cut-off placeholders of issue #17).
PLACEHOLDERS_CUT = """
[...document.querySelectorAll('input[placeholder]')].filter(input => {
  const style = getComputedStyle(input);
  const context = document.createElement('canvas').getContext('2d');
  context.font = `${style.fontSize} ${style.fontFamily}`;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return context.measureText(input.placeholder).width > room;
}).map(input => input.name)
"""


async def test_the_call_page_puts_the_gist_first_then_both_sides_in_order_with_operators_labelled(
    site: Site, page: Page
) -> None:
    base = site.base
    await sign_in(page, f"{base}/calls/CA0001refund?q=refund")
    await page.wait_for("document.querySelectorAll('.bubble').length === 7")
    # The gist, at the top and open: what the caller wanted, what happened, how it ended.
    assert (
        await page.evaluate("document.querySelector('#intent').innerText") == "a refund for last week's order"
    )
    assert await page.evaluate("document.querySelector('#summary').innerText") == REFUND_SUMMARY
    assert await page.evaluate("document.querySelector('#disposition').innerText") == "Resolved"
    assert await page.evaluate("document.querySelector('details.tech').open") is False
    overview = "document.querySelector('#overview')"
    gist_top = await page.evaluate("document.querySelector('#gist').getBoundingClientRect().top")
    facts_top = await page.evaluate("document.querySelector('.facts').getBoundingClientRect().top")
    assert gist_top < facts_top

    # Both sides, in the order they spoke.
    said = await page.evaluate(
        "[...document.querySelectorAll('.bubble')].map(b => [b.querySelector('.who').innerText.toLowerCase(),"
        " b.querySelector('.said').innerText])"
    )
    assert [who for who, _ in said] == [
        "assistant", "caller", "assistant", "caller", "assistant", "assistant", "caller",
    ]  # fmt: skip
    assert said[1][1] == "Hi, I'd like a refund for my order from last week."
    assert said[-1][1] == "No, that's all. Thank you!"
    # The interrupted reply: what was heard, then the rest, greyed and marked as never heard.
    assert said[2][1].startswith("I found order A-1042 for 49 dollars 90. Refunds usually take five")
    unheard = await page.evaluate("document.querySelector('.bubble.cut .unheard').innerText")
    assert unheard.startswith(" to seven business days") and unheard.endswith("processed.")
    label = await page.evaluate("document.querySelector('.bubble.cut .unheard-label').textContent")
    assert label.strip() == "not heard"
    cut = await page.evaluate("document.querySelector('.bubble.cut').innerText")
    assert "the caller heard 2.30 s of 4.10 s sent" in cut and "180 ms" in cut
    # The operator's note: labelled as theirs, between the lines it came between.
    operator = await page.evaluate("document.querySelector('.note.operator').innerText")
    assert "OPERATOR" in operator.upper() and "alice" in operator
    assert "added the note “Premium customer since 2019: refund without questions.”" in operator
    order = await page.evaluate(
        "[...document.querySelectorAll('#timeline > *')].map(n => n.classList.contains('cut') ? 'cut'"
        " : n.dataset.kind)"
    )
    # At 7.0 s: after the reply the caller cut off (6.4 s), before the caller's next words (9.3 s).
    assert order[order.index("cut") + 1] == "operator_action"
    assert order[order.index("operator_action") + 1] == "caller_transcript"
    timeline = await page.evaluate("document.querySelector('#timeline').innerText")
    assert "Tool: lookup_order" in timeline and "returned in 140 ms" in timeline
    assert "Caller pressed" in timeline and "Call ended — Caller hung up" in timeline
    assert await page.evaluate("document.querySelector('mark').innerText") == "refund"
    assert await page.evaluate("document.querySelector('#from').innerText") == "+*******1234"
    assert await page.evaluate("document.querySelector('#duration').innerText") == "1:04"
    assert await page.evaluate("document.querySelector('#cost').innerText") == "$0.117"
    assert "UTC" in await page.evaluate("document.querySelector('#started').innerText")

    # Technical details open below, at the card's full width: nothing squeezes or moves sideways.
    width_before = await page.evaluate(f"{overview}.getBoundingClientRect().width")
    await page.evaluate("document.querySelector('details.tech summary').click()")
    await page.wait_for("document.querySelector('details.tech').open")
    tech = await page.evaluate("document.querySelector('#tech').getBoundingClientRect().width")
    assert await page.evaluate(f"{overview}.getBoundingClientRect().width") == width_before
    assert tech > 0.85 * width_before
    assert "alice" not in await page.evaluate("document.querySelector('#tech').innerText")
    await page.evaluate("document.querySelector('details.tech').open = false")
    await page.screenshot(SCREENSHOTS / "call-detail.png")

    await page.evaluate("document.querySelector('#reveal').click()")
    await page.wait_for("document.querySelector('#from').innerText === '+15551231234'")

    # A caller turn without words still reads as a turn; a call that never connected says so.
    await page.goto(f"{base}/calls/CA012short")
    await page.wait_for("document.querySelectorAll('.bubble').length === 2")
    first = await page.evaluate("document.querySelector('.bubble.caller').innerText")
    assert "Caller spoke (2.1 s) — not transcribed" in first
    await page.goto(f"{base}/calls/CA0004never")
    await page.wait_for("document.querySelector('#summary').innerText.includes('never reached')")
    assert await page.evaluate("document.querySelector('#title').innerText") == "Call from +*******0199"
    assert "Never connected" in await page.evaluate("document.querySelector('#badge').innerText")


async def test_a_live_call_updates_while_its_page_is_open(site: Site, page: Page) -> None:
    base, recorder = site.base, site.recorder
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


async def test_the_softphones_sign_in_returns_to_the_softphone(site: Site, page: Page) -> None:
    base = site.base
    await page.goto(f"{base}/phone")
    await page.wait_for("document.querySelector('a.sign-in') !== null")
    await page.evaluate("document.querySelector('a.sign-in').click()")
    await page.wait_for("document.querySelector('#token') !== null")
    await page.evaluate(f"document.querySelector('#token').value = {js(ALICE)}")
    await page.evaluate("document.querySelector('.login-card form').submit()")
    await page.wait_for("location.pathname === '/phone' && document.querySelector('#call') !== null")


async def test_the_live_board_shows_calls_appear_update_and_end(site: Site, page: Page) -> None:
    """Fed straight into the call log, as a sibling replica's calls would be: the board reads the
    shared database, not the memory of the process it is served by."""
    base = site.base
    await sign_in(page, f"{base}/calls/live")
    await page.wait_for("document.querySelectorAll('.live-card').length === 1")
    assert await page.evaluate("document.querySelector('#status').innerText") == "1 call in progress"

    # A call on another replica sharing the call log.
    sibling = CallRecorder(site.store, owner=ReplicaIdentity("bridge-b", "http://10.0.0.8:8080"))
    await sibling.start()
    try:
        await board_on_two_replicas(page, sibling)
    finally:
        await sibling.stop()


async def board_on_two_replicas(page: Page, recorder: CallRecorder) -> None:
    started = datetime.now(UTC) - timedelta(seconds=12)
    start(recorder, "CA0010new", started, from_number="+14155550142")
    await recorder.flush()
    await page.wait_for("document.querySelectorAll('.live-card').length === 2", within=6)
    card = "document.querySelector('.live-card[data-call-id=\"CA0010new\"]')"
    assert await page.evaluate(f"{card}.querySelector('.who').innerText") == "+*******0142"
    assert await page.evaluate(f"{card}.querySelector('.where').innerText") == "to +*******4321 · on bridge-b"
    first = "document.querySelector('.live-card[data-call-id=\"CA0009live\"] .where')"
    assert (await page.evaluate(f"{first}.innerText")).endswith("on bridge-a")
    assert await page.evaluate(f"{card}.querySelector('.last-line').innerText") == "Nothing said yet."

    said = {"item_id": "u1", "text": "My parcel never arrived."}
    recorder.event("CA0010new", "caller_transcript", said, started + timedelta(seconds=2))
    answer = {"item_id": "a1", "text": "Let me look that up for you.", "interrupted": True}
    recorder.event("CA0010new", "assistant_transcript", answer, started + timedelta(seconds=4))
    recorder.event("CA0010new", "barge_in", {"item_id": "a1", "heard_ms": 900, "sent_ms": 2000})
    recorder.event("CA0010new", "turn_latency", {"ms": 640})
    await recorder.flush()
    await page.wait_for(
        f"{card}.querySelector('.last-line').innerText.startsWith('Assistant: Let me look')", within=6
    )
    assert await page.evaluate(f"{card}.querySelector('[data-role=\"barge-ins\"]').innerText") == "1"
    latency = await page.evaluate(f"{card}.querySelector('[data-role=\"latency\"]').innerText")
    assert latency == "640 ms (slowest 640 ms)"
    assert await page.evaluate("document.querySelector('#status').innerText") == "2 calls in progress"
    await page.screenshot(SCREENSHOTS / "live-board.png")

    recorder.call_ended("CA0010new", "caller_hangup")
    await recorder.flush()
    await page.wait_for(f"{card}.classList.contains('ended')", within=6)
    assert "Caller hung up" in await page.evaluate(f"{card}.innerText")
    assert await page.evaluate(f"{card}.querySelector('.hangup').hidden") is True
    assert (
        await page.evaluate("document.querySelector('#status').innerText")
        == "1 call in progress · 1 just ended"
    )


async def test_the_live_boards_hang_up_ends_a_real_call(page: Page) -> None:
    tokens = f"alice:{ALICE}"
    async with (
        running_emulator() as (_, url),
        running_bridge(url, OPERATOR_TOKENS=tokens) as bridge,
        TwilioCallerEmulator(bridge.media_url, custom_parameters={"from": "+14155550177"}) as caller,
    ):
        calls = bridge.bridge.active_calls
        await eventually(lambda: getattr(calls.get(caller.call_sid), "call", None) is not None)
        await sign_in(page, f"{bridge.base_url}/calls/live", ALICE)
        card = f"document.querySelector('.live-card[data-call-id=\"{caller.call_sid}\"]')"
        await page.wait_for(f"{card} !== null")
        await page.evaluate(f"{card}.querySelector('.hangup').click()")
        assert await page.evaluate(f"{card}.querySelector('.hangup').innerText") == "Really hang up?"
        assert not caller.ended  # one click only arms it
        await page.evaluate(f"{card}.querySelector('.hangup').click()")
        await caller.wait_closed(timeout_s=5)
        await page.wait_for(f"{card}.innerText.includes('An operator hung up')", within=8)
        logged = await bridge.logged_call(caller.call_sid)
    assert logged is not None and logged["end_reason"] == "operator_ended"
    [action] = [e["data"] for e in logged["events"] if e["kind"] == "operator_action"]
    assert (action["operator"], action["action"], action["outcome"]) == ("alice", "hangup", "done")
