"""Live calls end to end: the bridge on a loopback port, the emulator's Live dialect behind a network of
its own (delay, jitter), and a Twilio caller on a realistic mobile line (delay and jitter both ways, the
carrier's playout buffer). What the caller hears is what the carrier emulator played."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.config import load_settings
from bridge.dial import SAMPLE_WAV
from bridge.server import create_app
from bridge.sim.carrier_emulator import LineConditions, TwilioCallerEmulator
from bridge.sim.emulated_model import emulated_transcript
from bridge.sim.live_emulator import EmulatedLiveSession
from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator, ScriptedReply, greeting_pcm24k
from bridge.sim.twilio_voice import answer_call
from bridge.tools.toolbox import Toolbox
from tests.e2e import (
    ADMIN_TOKEN,
    RunningBridge,
    eventually,
    read_wav_mono_bytes_24k_to_8k,
    running_bridge,
    running_emulator,
    samples,
    serving,
    similarity,
    tone,
)
from tests.test_e2e_tools import SECRET, tool_server, write_tools

pytestmark = pytest.mark.e2e

REPLY_HZ, CALLER_HZ, GOODBYE_HZ = 500.0, 1200.0, 700.0
LEAD_MS = 100
# One round trip of the line below: the caller's speech to the service (40 ms uplink, the service's side
# of loopback) and the model's audio back (60 ms from the service, 40 ms downlink), jitter aside.
ROUND_TRIP_MS = 40 + 60 + 40


def mobile(seed: int) -> LineConditions:
    """A mobile line: 40 ms each way, +-30 ms of jitter, 60 ms of carrier playout buffering."""
    return LineConditions(
        uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=30, playout_delay_ms=60, seed=seed
    )


def network(**config: Any) -> EmulatorConfig:
    """The Live service 60 ms +- 30 ms away."""
    return EmulatorConfig(upstream_delay_ms=60, upstream_jitter_ms=30, upstream_seed=5, **config)


def live_env(emulator: RealtimeEmulator, **env: str) -> dict[str, str]:
    return {
        "UPSTREAM_API": "live",
        "LIVE_URL": emulator.live_url,
        "LIVE_BACKEND_MODEL": "gpt-5-mini",
        "LIVE_LEAD_MS": str(LEAD_MS),
        **env,
    }


def reply(seconds: float, hz: float = REPLY_HZ) -> ScriptedReply:
    return ScriptedReply(
        audio_pcm24k=tone(seconds * 1000, hz, rate=24000, dbfs=-12), transcript=words(seconds)
    )


def words(seconds: float) -> str:
    return " ".join(f"word{i}" for i in range(int(seconds * 4)))


def events(call: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in call["events"] if e["kind"] == kind]


def band_windows(pcm16: bytes, hz: float, rate: int = 8000, window: int = 80) -> np.ndarray:
    """Per 10 ms window: does a loud `hz` dominate it?"""
    x = samples(pcm16)
    n = len(x) // window
    frames = x[: n * window].reshape(n, window)
    t = np.arange(window) / rate
    power = (frames @ np.cos(2 * np.pi * hz * t)) ** 2 + (frames @ np.sin(2 * np.pi * hz * t)) ** 2
    total = (frames**2).sum(axis=1) * window / 2
    return (power > 0.5 * total) & (total > window * window / 2 * 100.0**2)


async def session_closed(call: dict[str, Any] | None) -> dict[str, Any]:
    assert call is not None
    (closed,) = events(call, "session_closed")
    return closed


async def test_a_greeting_and_a_turn_on_a_mobile_line_with_usage_and_cost_in_the_log() -> None:
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(url, **live_env(emulator, GREETING="Greet the caller.")) as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(1))
        async with caller:
            session = await emulator.wait_for_live_session()
            await caller.wait_heard(min_ms=1500, timeout_s=10)
            greeting = caller.playout.heard_pcm(include_silence=False)
            reference = read_wav_mono_bytes_24k_to_8k(greeting_pcm24k())
            assert similarity(greeting, reference[: len(greeting)]) > 0.9
            await caller.wait_quiet(quiet_ms=600, timeout_s=10)  # the whole greeting
            since = caller.clock()
            said = caller.say(tone(700, CALLER_HZ))
            await caller.wait_said(said, timeout_s=5)
            await caller.wait_heard(min_ms=600, timeout_s=10, since_ms=since)  # the model's echo of it
            await caller.wait_quiet(quiet_ms=600, timeout_s=10)
        call = await bridge.logged_call(caller.call_sid)

    assert session.rejected == [], "the emulator refused a client event"
    kinds = [e["type"] for e in session.client_events]
    # Nothing before session.started; then the greeting, as a commentary: the model does not speak first.
    assert kinds[:2] == ["session.start", "session.commentary.append"]
    assert session.context[0]["kind"] == "commentary" and session.context[0]["content"] == "Greet the caller."
    assert session.session is not None and session.session["audio"]["format"] == {
        "type": "audio/pcmu",
        "rate": 8000,
    }
    heard = caller.playout.heard_pcm(include_silence=False, from_ms=since)
    assert band_windows(heard, CALLER_HZ).sum() >= 50  # the echo: half a second of the caller's tone

    assert call is not None and call["upstream_api"] == "live" and call["model"] == "gpt-live-1"
    (started,) = events(call, "live_session")
    assert started["session_id"] == call["live_session_id"] == session.session["id"]
    assert events(call, "greeting_latency") and events(call, "turn_latency")
    assert [line["text"] for line in events(call, "caller_transcript")] == [emulated_transcript(0.7)]
    said_lines = [line["text"] for line in events(call, "assistant_transcript")]
    assert said_lines[-1] == "You said something for 0.7 seconds." and all(said_lines)
    closed = await session_closed(call)
    assert closed["reason"] == "close_requested" and closed["confirmed"] is True
    assert closed["seconds"] == session.usage_seconds == call["session_seconds"]
    assert call["cost_usd"] == pytest.approx(closed["seconds"] / 60 * 0.05, abs=1e-6)  # $0.05 a minute
    (summary,) = events(call, "summary_unavailable")
    assert summary == {"reason": "live_api"} and call["summary"] is None
    (audio,) = events(call, "live_audio")
    assert audio["lead_ms"] == LEAD_MS and audio["upstream_rtt_ms"] >= 30  # 60 ms +- 30 away


async def test_an_interruption_leaves_the_caller_at_most_the_lead_plus_a_round_trip_of_the_model() -> None:
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(url, **live_env(emulator, GREETING="Read the announcement.")) as bridge,
    ):
        emulator.script_reply(reply(8.0))
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(2))
        async with caller:
            session = await emulator.wait_for_live_session()
            await caller.wait_heard(min_ms=1500, timeout_s=10)
            said = caller.say(tone(800, CALLER_HZ))
            await caller.wait_said(said, timeout_s=5)
            await caller.wait_until(lambda: bool(caller.playout.clears), timeout_s=5)
            await asyncio.sleep(1.5)  # anything the bridge wrongly lets through would be heard now
        call = await bridge.logged_call(caller.call_sid)

    stopped = session.turns[0]
    assert stopped.interrupted and stopped.ended_at_ms is not None
    # The reply as the caller heard it around the stop: the loud run that goes on from there.
    heard = band_windows(caller.playout.heard_pcm(), REPLY_HZ)
    i = int((stopped.ended_at_ms - caller.playout.origin_ms) // 10)
    while i + 1 < len(heard) and heard[i + 1]:
        i += 1
    heard_after_stop = caller.playout.origin_ms + (i + 1) * 10 - stopped.ended_at_ms
    # Nothing of the reply after that (the model's next turn is the echo of the caller's tone).
    assert not heard[i + 1 :].any()

    assert heard_after_stop <= LEAD_MS + ROUND_TRIP_MS
    assert call is not None
    (barge_in,) = events(call, "barge_in")
    assert barge_in["item_id"] == "turn_1" and barge_in["model_stopped"] is True
    assert barge_in["stop_ms"] == pytest.approx(stopped.end_ms, abs=25)  # the gate saw where it stopped
    assert 0 < barge_in["heard_ms"] <= barge_in["sent_ms"]
    assert barge_in["heard_to_ms"] <= barge_in["stop_ms"]
    assert barge_in["heard_after_stop_ms"] is not None
    # The transcript is cut where the caller stopped hearing, by the fragments' session times.
    cut = next(line for line in events(call, "assistant_transcript") if line["item_id"] == "turn_1")
    assert cut["interrupted"] is True and cut["full_text"] == stopped.said.strip()
    assert (
        cut["text"] and len(cut["text"]) < len(cut["full_text"]) and cut["full_text"].startswith(cut["text"])
    )
    assert session.rejected == []


async def test_caller_audio_before_the_session_starts_is_dropped_and_leaves_no_standing_delay() -> None:
    async with (
        running_emulator(network(live_start_delay_ms=400)) as (emulator, url),
        running_bridge(url, **live_env(emulator, GREETING="Greet the caller.")) as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(3))
        async with caller:
            session = await emulator.wait_for_live_session()
            await caller.wait_heard(min_ms=3000, timeout_s=15)
            await caller.wait_quiet(quiet_ms=600, timeout_s=15)  # the greeting, heard whole
        call = await bridge.logged_call(caller.call_sid)

    assert session.rejected == []  # nothing was sent before session.started
    assert call is not None
    (started,) = events(call, "live_session")
    assert started["dropped_before_start_ms"] >= 300
    # The session heard the caller at the wall clock's pace from its start, never a backlog at once:
    # held and flushed, the dropped audio would have come back as as much model audio at once.
    started_at = next(at for at, kind in session.sent_log if kind == "session.started")
    closed_at = next(at for at, kind in session.sent_log if kind == "session.closed")
    appended_ms = len(session.appended_pcm) / 2 / 8
    assert appended_ms <= closed_at - started_at + 100
    (audio,) = events(call, "live_audio")
    assert audio["max_waiting_ms"] <= LEAD_MS + 100  # nothing piled up in the pacer either


async def test_a_caller_who_sends_nothing_while_silent_still_hears_the_whole_reply() -> None:
    """DTX: no frames at all while the caller is quiet. The model's output is clocked by its input, so
    without the bridge's silence in their place it would stop mid-reply."""
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(url, **live_env(emulator)) as bridge,
    ):
        emulator.script_reply(reply(2.0))
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(4), dtx=True)
        async with caller:
            session = await emulator.wait_for_live_session()
            said = caller.say(tone(500, CALLER_HZ), at_ms=500)
            await caller.wait_said(said, timeout_s=5)
            await caller.wait_heard(min_ms=1900, timeout_s=10)
            await caller.wait_quiet(quiet_ms=600, timeout_s=10)
        call = await bridge.logged_call(caller.call_sid)

    (turn,) = session.turns
    assert not turn.interrupted and turn.said_ms == pytest.approx(2000, abs=1)
    assert band_windows(caller.playout.heard_pcm(include_silence=False), REPLY_HZ).sum() >= 190
    assert call is not None
    (audio,) = events(call, "live_audio")
    assert audio["silence_filled_ms"] >= 2000


async def test_a_webhook_tool_through_responses_delegation(tmp_path: Path) -> None:
    async with (
        tool_server() as (tool_url, received),
        running_emulator(network()) as (emulator, _),
    ):
        env = {
            "OPENAI_API_KEY": "sk-test",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "CALL_LOG_URL": f"sqlite+aiosqlite:///{tmp_path}/calls.db",
            **live_env(emulator),
        }
        toolbox = Toolbox.from_file(
            write_tools(tmp_path / "tools.json", tool_url), {"CRM_TOKEN": "crm"}, SECRET
        )
        app = create_app(load_settings(env), toolbox=toolbox)
        async with serving(app) as base_url:
            bridge = RunningBridge(base_url, app)
            emulator.script_reply(ScriptedReply(tool_call=("lookup_order", {"id": "A-1042"})))
            emulator.script_reply(reply(1.0, GOODBYE_HZ))
            caller = TwilioCallerEmulator(bridge.media_url, line=mobile(5))
            async with caller:
                session = await emulator.wait_for_live_session()
                caller.say(tone(600, CALLER_HZ), at_ms=300)
                await eventually(lambda: bool(session.function_outputs), timeout_s=10)
                await caller.wait_heard(min_ms=900, timeout_s=10)  # the model speaks the result
            call = await bridge.logged_call(caller.call_sid)

    (output,) = session.function_outputs
    assert output["name"] == "lookup_order" and '"A-1042"' in output["output"]
    assert received[0]["body"]["arguments"] == {"id": "A-1042"} and received[0]["signed"]
    kinds = [e["type"] for e in session.client_events]
    assert kinds.index("response.create") > kinds.index("response.item.create")  # output first, then go on
    (delegation,) = session.delegations
    assert delegation["target"] == "responses"
    assert session.session is not None
    tools = session.session["delegation"]["responses"]["tools"]
    assert [t["name"] for t in tools] == ["end_call", "lookup_order"]
    assert call is not None
    assert [e["name"] for e in events(call, "tool_call")] == ["lookup_order"]
    (result,) = events(call, "tool_result")
    assert result["ok"] and "shipped" in result["result"]
    backend = events(call, "backend_response")
    assert backend and all(b["model"] == "gpt-5-mini" for b in backend)
    assert call["backend_model"] == "gpt-5-mini" and call["backend_output_tokens"] > 0
    assert session.rejected == []


async def test_end_call_through_delegation_hangs_up_once_the_goodbye_was_heard() -> None:
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(url, **live_env(emulator)) as bridge,
    ):
        emulator.script_reply(ScriptedReply(tool_call=("end_call", {})))
        emulator.script_reply(reply(1.2, GOODBYE_HZ))  # what the model says once the tool answered
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(6))
        async with caller:
            session = await emulator.wait_for_live_session()
            caller.say(tone(500, CALLER_HZ), at_ms=300)
            await caller.wait_closed(timeout_s=15)
        call = await bridge.logged_call(caller.call_sid)

    assert caller.closed_by_server and caller.close_reason == "assistant_ended"
    goodbye = band_windows(caller.playout.heard_pcm(include_silence=False), GOODBYE_HZ)
    assert goodbye.sum() >= 110  # all of it (1.2 s) was heard before the line closed
    (output,) = session.function_outputs
    assert output["name"] == "end_call" and output["output"] == '{"ok": true}'
    assert call is not None and call["end_reason"] == "assistant_ended"
    assert (await session_closed(call))["reason"] == "close_requested"


async def test_an_expired_session_is_replaced_with_the_conversation_so_far() -> None:
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(url, **live_env(emulator, GREETING="Greet the caller.")) as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(7))
        async with caller:
            first = await emulator.wait_for_live_session()
            await caller.wait_heard(min_ms=3000, timeout_s=15)
            await caller.wait_quiet(quiet_ms=600, timeout_s=15)  # the greeting was heard whole
            await first.end("expired")
            second = await emulator.wait_for_live_session(2, timeout=10)
            await eventually(lambda: second.state == "started", timeout_s=5)
            since = caller.clock()
            caller.say(tone(500, CALLER_HZ))
            await caller.wait_heard(min_ms=400, timeout_s=10, since_ms=since)  # the new session answers
        call = await bridge.logged_call(caller.call_sid)

    assert second.session is not None
    history = second.session["input"]
    assert [item["role"] for item in history] == ["assistant"] * len(history) and history
    assert call is not None and call["end_reason"] == "caller_hangup"
    closed = events(call, "session_closed")
    assert [c["reason"] for c in closed] == ["expired", "close_requested"]
    assert call["session_seconds"] == sum(c["seconds"] for c in closed)
    assert events(call, "session_restored")


async def test_a_session_closed_for_content_ends_the_call_with_the_apology() -> None:
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(url, **live_env(emulator, GREETING="Greet the caller.")) as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url, line=mobile(8))
        async with caller:
            first: EmulatedLiveSession = await emulator.wait_for_live_session()
            await caller.wait_heard(min_ms=500, timeout_s=10)
            await first.end("content")
            await caller.wait_closed(timeout_s=15)
        call = await bridge.logged_call(caller.call_sid)

    assert call is not None and call["end_reason"] == "upstream_failure"
    assert [e["code"] for e in events(call, "error")] == ["content"]
    assert len(emulator.live_sessions) == 1  # not replaced


async def test_the_webhook_chooses_the_api_and_the_stream_token_holds_it_to_that() -> None:
    token = "twilio-auth-token"
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(
            url,
            TWILIO_AUTH_TOKEN=token,
            GREETING="Greet the caller.",
            LIVE_URL=emulator.live_url,
            LIVE_BACKEND_MODEL="gpt-5-mini",
            UPSTREAM_API_BY_NUMBER='{"+18005550199": "live"}',
        ) as bridge,
    ):
        voice = bridge.base_url + "/twilio/voice"
        numbers = itertools.count(1)

        async def placed(to: str, query: str = "") -> tuple[str, dict[str, str], str]:
            sid = f"CA{next(numbers):032d}"
            form = {"CallSid": sid, "From": "+14155550123", "To": to}
            async with aiohttp.ClientSession() as http:
                stream, params = await answer_call(http, voice + query, form, token)
            return stream, params, sid

        # By number, then the webhook's parameter over it, then the default.
        _, by_number, _ = await placed("+18005550199")
        _, by_parameter, _ = await placed("+18005550100", "?upstream=live")
        _, default, _ = await placed("+18005550100")
        assert (by_number["upstream"], by_parameter["upstream"], default["upstream"]) == (
            "live",
            "live",
            "realtime",
        )
        await eventually(
            lambda: len(emulator.live_sessions) == 2 and len(emulator.sessions) == 1, timeout_s=5
        )

        # A stream that claims Realtime with a token given for a Live call is refused...
        stream, params, sid = await placed("+18005550199")
        tampered = {**params, "upstream": "realtime"}
        headers = {"X-Twilio-Signature": signature(token, stream)}
        async with TwilioCallerEmulator(
            stream, call_sid=sid, custom_parameters=tampered, headers=headers
        ) as c:
            await c.wait_closed(timeout_s=5)
        assert c.close_code == 1008
        # ... and the one the webhook answered gets its Live call.
        stream, params, sid = await placed("+18005550199")
        headers = {"X-Twilio-Signature": signature(token, stream)}
        async with TwilioCallerEmulator(stream, call_sid=sid, custom_parameters=params, headers=headers) as c:
            await c.wait_heard(min_ms=500, timeout_s=10)  # its greeting
        call = await bridge.logged_call(sid)
    assert call is not None and call["upstream_api"] == "live"


def signature(token: str, url: str) -> str:
    from twilio.request_validator import RequestValidator

    return RequestValidator(token).compute_signature(url, {})


async def test_demo_mode_answers_live_calls_with_the_emulator(tmp_path: Path) -> None:
    """`UPSTREAM_API=live make run` then `bridge dial`: no key, the in-process emulator's Live dialect."""
    from bridge.dial import dial
    from tests.test_e2e_dial import speech_wav

    settings = load_settings(
        {
            "UPSTREAM_API": "live",
            "CALL_LOG_URL": f"sqlite+aiosqlite:///{tmp_path}/calls.db",
            "ADMIN_TOKEN": "x",
        }
    )
    assert settings.demo_mode
    app = create_app(settings)
    async with serving(app) as base_url:
        report = await dial(
            base_url + "/twilio/voice",
            speech_wav(tmp_path / "hi.wav", 500),
            tmp_path / "heard.wav",
            greeting_wait=1.5,
            quiet=0.5,
            time_limit=25,
        )
        bridge = RunningBridge(base_url, app)
        call = await bridge.logged_call(report.call_sid)
    assert report.greeting_ms is not None and report.outcome == "reply heard" and report.protocol_errors == []
    assert call is not None and call["upstream_api"] == "live" and events(call, "session_closed")


async def test_a_sip_call_on_live_paces_its_rtp_and_stops_it_when_the_model_stops() -> None:
    """SIP: the leg plays RTP on its own clock; the pacer keeps its queue to the lead, and the clear
    empties it when the model stops for the caller."""
    from tests.sip.rtp_peer import rtp_peer
    from tests.sip.sipp import free_udp_port, hang_up, require_sipp, run_sipp, sip_bridge

    require_sipp()
    env = {"UPSTREAM_API": "live", "LIVE_BACKEND_MODEL": "gpt-5-mini", "LIVE_LEAD_MS": str(LEAD_MS)}
    async with (
        sip_bridge(network(), GREETING="Read the announcement.", **env) as (emulator, bridge, port, workdir),
        rtp_peer(True) as peer,
    ):
        emulator.script_reply(reply(8.0))
        args = ("-key", "rtp_port", str(peer.port), "-mp", str(free_udp_port(True, 3)))
        sipp = asyncio.create_task(run_sipp("call_rtp_peer.xml", port, Path(workdir), *args, timeout_s=40))
        session = await emulator.wait_for_live_session(timeout=15)
        await eventually(lambda: len(peer.packets_matching(REPLY_HZ)) >= 75, timeout_s=20)  # 1.5 s of it
        said = peer.say(tone(800, CALLER_HZ))
        await eventually(
            lambda: bool(session.turns) and session.turns[0].ended_at_ms is not None, timeout_s=10
        )
        await said.wait()
        await asyncio.sleep(1.0)
        (call_id,) = list(bridge.bridge.active_calls)
        await hang_up(bridge, call_id)
        result = await sipp
        call = await bridge.logged_call(call_id)

    assert result.returncode == 0, result.output[-2000:] + result.errors
    stopped = session.turns[0]
    assert stopped.interrupted and stopped.ended_at_ms is not None
    late = [a for a in peer.packets_matching(REPLY_HZ) if a.at_ms > stopped.ended_at_ms]
    assert call is not None
    assert events(call, "barge_in")
    # The leg owns the caller's ear (no network beyond loopback): what still went out after the stop is
    # what was on its way from the service (60 ms), and never more than the lead it held.
    assert len(late) * 20 <= LEAD_MS + 60 + 2 * 20
    assert call["upstream_api"] == "live" and session.session is not None
    assert session.session["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}


async def test_a_vonage_call_on_live_keeps_its_wideband_audio_untouched() -> None:
    """Vonage streams 16 kHz L16: the Live session takes audio/pcm at 16 kHz, so nothing is resampled."""
    from tests.carriers.test_vonage_e2e import CALLER, OUR_NUMBER, SECRET, caller_from_ncco, vonage_jwt

    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(
            url, CARRIERS="vonage", VONAGE_SIGNATURE_SECRET=SECRET, **live_env(emulator, GREETING="Hello.")
        ) as bridge,
    ):
        uuid = "aaaaaaaa-bbbb-cccc-dddd-000000000001"
        query = {"uuid": uuid, "conversation_uuid": "CON-1", "from": CALLER, "to": OUR_NUMBER}
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                bridge.base_url + "/vonage/answer", params=query, headers={"Authorization": vonage_jwt()}
            ) as response,
        ):
            assert response.status == 200
            ncco = await response.json()
        caller = caller_from_ncco(ncco, uuid, line=mobile(9))
        async with caller:
            session = await emulator.wait_for_live_session()
            await caller.wait_heard(min_ms=1000, timeout_s=10)
        call = await bridge.logged_call(uuid)
    assert session.session is not None
    assert session.session["audio"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert call is not None and call["upstream_api"] == "live" and call["carrier"] == "vonage"


async def test_a_recorded_call_with_a_notice_to_hear_is_answered_by_realtime(tmp_path: Path) -> None:
    """The recording notice is played by Realtime calls alone: a call that asks for Live and for its
    recording, with a notice configured, gets Realtime (its session opened on Realtime); one that asks
    for Live without the recording gets Live."""
    token = "twilio-auth-token"
    async with (
        running_emulator(network()) as (emulator, url),
        running_bridge(
            url,
            TWILIO_AUTH_TOKEN=token,
            LIVE_URL=emulator.live_url,
            LIVE_BACKEND_MODEL="gpt-5-mini",
            RECORDING="requested",
            RECORDING_DIR=str(tmp_path / "recordings"),
            RECORDING_NOTICE=str(SAMPLE_WAV),
        ) as bridge,
    ):
        voice = bridge.base_url + "/twilio/voice"
        answered = []
        for n, query in enumerate(("?upstream=live&record=1", "?upstream=live")):
            form = {"CallSid": f"CA{n:032d}", "From": "+14155550123", "To": "+18005550100"}
            async with aiohttp.ClientSession() as http:
                answered.append(await answer_call(http, voice + query, form, token))
        (_, recorded), (_, unrecorded) = answered
        assert (recorded["upstream"], recorded.get("record")) == ("realtime", "1")
        assert unrecorded["upstream"] == "live"
        await eventually(
            lambda: len(emulator.sessions) == 1 and len(emulator.live_sessions) == 1, timeout_s=5
        )
