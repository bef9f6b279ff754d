"""POST /api/calls end to end: what it refuses and why, its limits, the carrier's callbacks (forged ones
refused, any replica's accepted), and the status events posted on to the request's callback_url."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from bridge.carrier.outbound import PLACED_CALL_QUERY
from bridge.sim.callee import Unanswered
from bridge.sim.realtime_emulator import ScriptedReply
from bridge.tools.toolbox import Toolbox
from bridge.tools.webhook import verify_signature
from tests.e2e import ADMIN_TOKEN, eventually, free_port, running_bridge, running_emulator, serving, tone
from tests.outbound.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALLER_ID,
    outbound_bridge,
    quick_person,
)

pytestmark = pytest.mark.e2e

PERSON = "+15550100"
NEVER = "+15550109"  # rings until the ring timeout
SECRET = "status-event-secret"


def never_answers(ring_ms: float = float("inf")) -> Unanswered:
    return Unanswered("no-answer", ring_ms=ring_ms)


async def error_of(response: aiohttp.ClientResponse) -> str:
    assert response.content_type == "application/json"
    return str((await response.json())["error"])


# -- what is refused --------------------------------------------------------------------------------


async def test_bad_numbers_and_bad_requests_are_refused_with_400() -> None:
    async with (
        running_emulator() as (_, url),
        outbound_bridge(url, {}, OUTBOUND_ALLOWED_PREFIXES="+1555,+44") as outbound,
    ):
        cases = {
            "to: must be an E.164 number like +14155550123": {"to": "5550100"},
            "to: is required": {"from": CALLER_ID},
            "from: must be an E.164 number": {"to": PERSON, "from": "+0123"},
            "to: calls may only go to numbers starting +1555, +44": {"to": "+4930123456"},
            "machine_detection: must be 'off', 'hang_up' or 'leave_message'": {
                "to": PERSON,
                "machine_detection": "x",
            },
            "callback_url: needs TOOLS_SECRET": {"to": PERSON, "callback_url": "https://example.com/events"},
            "colour: is not a field of this request": {"to": PERSON, "colour": "red"},
        }
        for expected, body in cases.items():
            response = await outbound.place(**body)
            assert response.status == 400, body
            assert expected in await error_of(response)
        async with aiohttp.ClientSession() as http:
            not_json = http.post(outbound.bridge.base_url + "/api/calls", data=b"{", headers=_auth())
            async with not_json as response:
                assert response.status == 400 and await error_of(response) == "the body must be JSON"
            async with http.post(outbound.bridge.base_url + "/api/calls", json={"to": PERSON}) as response:
                assert response.status == 401
        assert outbound.twilio.calls == {}  # nothing reached the carrier


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_concurrency_and_rate_limits_answer_429() -> None:
    async with (
        running_emulator() as (_, url),
        outbound_bridge(
            url,
            {NEVER: never_answers(1500), "+15550108": never_answers(300)},
            OUTBOUND_MAX_CONCURRENT="1",
            OUTBOUND_CALLS_PER_MINUTE="2",
        ) as outbound,
    ):
        await outbound.placed(to=NEVER)
        busy = await outbound.place(to=NEVER)
        assert busy.status == 429 and busy.headers["Retry-After"]
        body = await busy.json()
        assert body["limit"] == "concurrent" and "OUTBOUND_MAX_CONCURRENT is 1" in body["error"]
        # The first call ends unanswered: room again under the concurrency limit...
        await asyncio.wait_for(outbound.simulated(NEVER).done.wait(), 15)
        await outbound.placed(to="+15550108")
        await asyncio.wait_for(outbound.simulated("+15550108").done.wait(), 15)
        # ... but two were placed within the minute.
        rated = await outbound.place(to=PERSON)
        body = await rated.json()
        assert rated.status == 429 and body["limit"] == "per_minute"
        assert 1 <= int(rated.headers["Retry-After"]) <= 60
        assert len(outbound.twilio.calls) == 2


async def test_placed_calls_count_toward_max_calls() -> None:
    async with (
        running_emulator() as (_, url),
        outbound_bridge(url, {NEVER: never_answers()}, MAX_CALLS="1") as outbound,
    ):
        await outbound.placed(to=NEVER)
        refused = await outbound.place(to=PERSON)
        assert refused.status == 429 and (await refused.json())["limit"] == "max_calls"
        # An inbound call is turned away too while the placed call holds the only place.
        form = {"CallSid": "CA" + "1" * 32, "From": "+15550001111", "To": CALLER_ID}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            outbound.bridge.bridge.settings.public_url + "/twilio/voice", form
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                outbound.bridge.base_url + "/twilio/voice",
                data=form,
                headers={"X-Twilio-Signature": signature},
            ) as response,
        ):
            assert "lines are busy" in await response.text()


async def test_a_carrier_that_refuses_the_call_is_a_502_and_the_call_is_logged_failed() -> None:
    async with running_emulator() as (_, url), outbound_bridge(url, {}) as outbound:
        outbound.twilio.fail_status = 500
        response = await outbound.place(to=PERSON)
        assert response.status == 502
        assert "the carrier did not place the call: twilio call failed: HTTP 500" in await error_of(response)
        store = outbound.bridge.bridge.store
        assert store is not None
        [call], _ = await store.list_calls()
        assert (call["status"], call["end_reason"], call["outbound_status"]) == ("ended", "failed", "failed")


async def test_without_an_account_in_production_calls_cannot_be_placed() -> None:
    async with (
        running_emulator() as (_, url),
        running_bridge(url, BRIDGE_ENV="production", TWILIO_AUTH_TOKEN=AUTH_TOKEN) as bridge,
        aiohttp.ClientSession() as http,
        http.post(bridge.base_url + "/api/calls", json={"to": PERSON}, headers=_auth()) as response,
    ):
        assert response.status == 503
        assert (
            await error_of(response)
            == "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to place calls through Twilio"
        )


# -- the carrier's callbacks -------------------------------------------------------------------------


async def test_forged_status_callbacks_are_refused_and_change_nothing() -> None:
    async with (
        running_emulator() as (_, url),
        outbound_bridge(url, {NEVER: never_answers()}, OUTBOUND_RING_TIMEOUT="30") as outbound,
    ):
        call_id = await outbound.placed(to=NEVER)
        twilio_call = outbound.simulated(NEVER)
        status_url = twilio_call.params["StatusCallback"]
        amd_url = twilio_call.params["AsyncAmdStatusCallback"]
        busy = {"CallSid": twilio_call.sid, "AccountSid": ACCOUNT_SID, "CallStatus": "busy"}
        machine = {"CallSid": twilio_call.sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_end_beep"}
        other_call = status_url.replace(call_id, "out_" + "0" * 24)

        def signed(target: str, form: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, str]:
            return {"X-Twilio-Signature": RequestValidator(token).compute_signature(target, form)}

        forgeries = [
            (status_url, busy, {}),  # unsigned
            (status_url, busy, signed(status_url, busy, "not-the-auth-token")),
            (amd_url, machine, signed(amd_url, {**machine, "AnsweredBy": "human"})),  # altered after signing
            (other_call, busy, signed(other_call, busy)),  # signed, but the token names no call of ours
        ]
        async with aiohttp.ClientSession() as http:
            for target, form, headers in forgeries:
                async with http.post(target, data=form, headers=headers) as response:
                    assert response.status == 403, (target, headers)
            store = outbound.bridge.bridge.store
            assert store is not None
            call = await store.get_call(call_id)
            assert call is not None and (call["status"], call["answered_by"]) == ("in_progress", None)
            # The real thing, signed with the account's Auth Token, is taken.
            async with http.post(status_url, data=busy, headers=signed(status_url, busy)) as response:
                assert response.status == 204
        call = await store.get_call(call_id)
        assert call is not None and (call["end_reason"], call["outbound_status"]) == ("busy", "busy")


async def test_a_verdict_landing_on_another_replica_reaches_the_call_through_the_call_log(
    tmp_path: Path,
) -> None:
    """Twilio's callbacks go wherever the load balancer sends them: here all to replica B, while the
    call's answer and media stream are on replica A, which learns who answered from the call log."""
    person = quick_person()
    async with running_emulator() as (emulator, url):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(600, 600, rate=24000), transcript="Hello."))
        async with outbound_bridge(
            url, {PERSON: person}, CALL_LOG_URL=f"sqlite+aiosqlite:///{tmp_path}/calls.db"
        ) as replica_a:
            port_b = free_port()
            env_b = {
                "CALL_LOG_URL": f"sqlite+aiosqlite:///{tmp_path}/calls.db",
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_API_BASE": str(replica_a.twilio.base_url),
                "PUBLIC_URL": f"http://127.0.0.1:{port_b}",
                "REPLICA_ID": "replica-b",
                "GREETING": "Greet them.",
            }
            async with running_bridge(url, port=port_b, **env_b) as replica_b:
                base_a = replica_a.bridge.bridge.settings.public_url
                replica_a.twilio.callbacks_via = lambda target: target.replace(base_a, replica_b.base_url)
                call_id = await replica_a.placed(to=PERSON)
                call = await replica_a.finished(call_id, PERSON)
                twilio_call = replica_a.simulated(PERSON)
    assert twilio_call.callbacks and all(c.url.startswith(replica_b.base_url) for c in twilio_call.callbacks)
    assert all(c.status == 204 for c in twilio_call.callbacks)
    assert twilio_call.caller is not None and twilio_call.caller.playout.played_ms_total > 0
    assert call["owner_url"] and call["answered_by"] == "human"
    answering = [e["data"] for e in call["events"] if e["kind"] == "answering"]
    assert (
        answering == [answering[0]] and answering[0]["action"] == "converse" and "assumed" not in answering[0]
    )


async def test_no_verdict_in_time_means_speaking_as_to_a_person() -> None:
    class SilentPerson:
        """Picks up and listens without a word: detection cannot tell (until its own 30 s timeout)."""

        ring_ms = 200.0
        outcome = "answer"

        async def on_line(self, line: object) -> None:
            caller = line.caller  # type: ignore[attr-defined]
            await caller.wait_heard(500, 10)
            line.note("heard the greeting")  # type: ignore[attr-defined]

    async with (
        running_emulator() as (emulator, url),
        outbound_bridge(
            url, {PERSON: SilentPerson()}, OUTBOUND_ANSWER_WAIT="1", GREETING="Greet them."
        ) as outbound,  # type: ignore[dict-item]
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(800, 600, rate=24000), transcript="Hello?"))
        call_id = await outbound.placed(to=PERSON)
        call = await outbound.finished(call_id, PERSON)
        twilio_call = outbound.simulated(PERSON)
    connected, greeted = twilio_call.when("connected"), twilio_call.when("heard the greeting")
    assert connected is not None and greeted is not None and greeted - connected >= 1000
    [answering] = [e["data"] for e in call["events"] if e["kind"] == "answering"]
    assert (
        answering["assumed"] is True and answering["action"] == "converse" and answering["after_ms"] >= 1000
    )
    assert twilio_call.answered_by is None and call["answered_by"] is None


# -- what the bridge tells others ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def event_receiver() -> AsyncIterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        signed = verify_signature(
            SECRET, headers["X-Bridge-Timestamp"], body, headers.get("X-Bridge-Signature", ""), time.time()
        )
        received.append({"signed": signed, **json.loads(body)})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/events", events)
    async with serving(app) as base_url:
        yield f"{base_url}/events", received


async def test_the_callback_url_receives_every_status_signed() -> None:
    async with (
        running_emulator() as (emulator, url),
        event_receiver() as (events_url, received),
        outbound_bridge(url, {PERSON: quick_person()}, TOOLS_SECRET=SECRET) as outbound,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(600, 600, rate=24000), transcript="Hello."))
        call_id = await outbound.placed(to=PERSON, callback_url=events_url, metadata={"crm": 7})
        await outbound.finished(call_id, PERSON)
        await eventually(lambda: any(e["status"] == "completed" for e in received), timeout_s=10)
    assert all(e["signed"] for e in received)
    assert all(
        e["call_id"] == call_id and e["metadata"] == {"crm": 7} and e["to"] == PERSON for e in received
    )
    statuses = [e["status"] for e in received]
    assert statuses[:3] == ["queued", "ringing", "answered"] and statuses[-1] == "completed"
    verdicts = [e for e in received if e.get("carrier_status") == "human"]
    assert len(verdicts) == 1 and verdicts[0]["answered_by"] == "human"
    completed = received[-1]
    assert completed["end_reason"] == "caller_hangup" and completed["answered_by"] == "human"


async def test_tools_are_given_the_calls_metadata(tmp_path: Path) -> None:
    received: list[dict] = []

    async def lookup(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.json_response({"appointment": "3 pm"})

    tools = tmp_path / "tools.json"
    app = web.Application()
    app.router.add_post("/lookup", lookup)
    async with serving(app) as tools_url:
        definition = {
            "name": "lookup",
            "description": "Look up the booking.",
            "parameters": {"type": "object", "properties": {}},
            "url": f"{tools_url}/lookup",
        }
        tools.write_text(json.dumps([definition]))
        toolbox = Toolbox.from_file(tools, {})
        async with (
            running_emulator() as (emulator, url),
            outbound_bridge(
                url, {PERSON: quick_person()}, toolbox=toolbox, GREETING="Greet them."
            ) as outbound,
        ):
            emulator.script_reply(ScriptedReply(tool_call=("lookup", {})))
            emulator.script_reply(
                ScriptedReply(audio_pcm24k=tone(600, 600, rate=24000), transcript="At 3 pm.")
            )
            call_id = await outbound.placed(to=PERSON, metadata={"booking": "B-17"})
            await outbound.finished(call_id, PERSON)
    assert [r["call"] for r in received] == [{"call_id": call_id, "metadata": {"booking": "B-17"}}]


def test_the_placed_call_query_is_what_the_urls_carry() -> None:
    assert PLACED_CALL_QUERY == "placed"  # documented in README "Place a call"
