"""The emulator's Live API dialect over real loopback WebSockets (docs/protocols.md §L).

Its output is clocked by its input, so these tests send audio as fast as they like and still get exact,
repeatable timelines: every duration below is measured on the session clock (input audio consumed)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.audio import L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat
from bridge.live import events as ev
from bridge.live.codec import LiveCodec, LiveSessionOptions
from bridge.sim.emulator_audio import decode_g711, encode_output
from bridge.sim.live_emulator import EmulatedLiveSession
from bridge.sim.realtime_emulator import GREETING_TRANSCRIPT, EmulatorConfig, RealtimeEmulator, ScriptedReply
from bridge.sim.realtime_schema import LIVE_CLIENT_EVENT_TYPES
from bridge.sim.vad import dbfs_to_amplitude
from tests.realtime_types import LIVE_CLIENT, validate_backend_event, validate_server_event

FRAME_MS = 20
CANONICAL = {PCMU_8K: "g711_ulaw", PCMA_8K: "g711_alaw", L16_16K: "pcm16", L16_24K: "pcm16"}


class LiveClient:
    """A test-side Live client: sends through the bridge's own codec, records every server event."""

    def __init__(self, ws: websockets.ClientConnection, fmt: AudioFormat) -> None:
        self.ws = ws
        self.fmt = fmt
        self.codec = LiveCodec()
        self.events: list[dict] = []

    async def send(self, event: dict) -> None:
        await self.ws.send(self.codec.encode(event).decode())  # a text frame, as the service wants

    async def recv(self, wait: float = 5) -> dict:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        self.events.append(event)
        return event

    async def until(self, event_type: str, wait: float = 5) -> dict:
        while True:
            if (event := await self.recv(wait))["type"] == event_type:
                return event

    async def drain(self, seconds: float = 0.3) -> list[dict]:
        got: list[dict] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    got.append(await self.recv(seconds + 1))
        return got

    async def talk(self, pcm: np.ndarray) -> None:
        """Send PCM16 (at the session rate) as 20 ms appends, in the session's format."""
        step = self.fmt.rate * FRAME_MS // 1000
        for i in range(0, pcm.size, step):
            chunk = encode_output(pcm[i : i + step], self.fmt.rate, CANONICAL[self.fmt], self.fmt.rate)
            await self.send(self.codec.append_audio(chunk))

    def of_type(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e["type"] == event_type]

    def output_pcm(self) -> np.ndarray:
        audio = b"".join(base64.b64decode(e["delta"]) for e in self.of_type("session.output_audio.delta"))
        if self.fmt.encoding == "l16":
            return np.frombuffer(audio, dtype="<i2")
        return decode_g711(audio, CANONICAL[self.fmt])


@pytest.fixture
async def start():
    started: list[RealtimeEmulator] = []

    async def factory(**config: Any) -> RealtimeEmulator:
        emulator = RealtimeEmulator(EmulatorConfig(**config))
        started.append(emulator)
        await emulator.start()
        return emulator

    yield factory
    for emulator in started:
        await emulator.stop()


@contextlib.asynccontextmanager
async def connect(emulator: RealtimeEmulator) -> AsyncIterator[websockets.ClientConnection]:
    headers = {"Authorization": "Bearer sk-test-key"}
    async with websockets.connect(
        emulator.live_url, additional_headers=headers, proxy=None, max_size=None
    ) as ws:
        yield ws


@contextlib.asynccontextmanager
async def live(
    emulator: RealtimeEmulator, fmt: AudioFormat = L16_24K, **overrides: Any
) -> AsyncIterator[tuple[LiveClient, EmulatedLiveSession]]:
    async with connect(emulator) as ws:
        client = LiveClient(ws, fmt)
        opts = LiveSessionOptions(**({"instructions": "Be brief.", "audio_format": fmt} | overrides))
        await client.send(client.codec.session_start(opts))
        await client.until("session.started")
        yield client, emulator.live_sessions[-1]


def silence(rate: int, seconds: float) -> np.ndarray:
    return np.zeros(round(rate * seconds), np.int16)


def tone(rate: int, seconds: float, dbfs: float = -10.0, hz: float = 300.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (dbfs_to_amplitude(dbfs) * np.sqrt(2) * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def ms(rate: int, samples: int) -> float:
    return samples * 1000 / rate


# -- start --------------------------------------------------------------------------------------------


async def test_session_started_is_the_resolved_configuration(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K, voice="cedar", model="gpt-live-1.1") as (client, session):
        started = client.of_type("session.started")[0]
        validate_server_event(started, "live")
        decoded = client.codec.decode(json.dumps(started))
        assert isinstance(decoded, ev.SessionStarted)
        assert decoded.session_id.startswith("live_") and decoded.model == "gpt-live-1.1"
        assert decoded.audio_format == {"type": "audio/pcmu", "rate": 8000} and decoded.voice == "cedar"
        assert decoded.delegation == "client"
        assert started["session"]["delegation"]["acknowledgement_delay_ms"] == 0
        assert started["client_event_id"] == "bridge_1"
        assert session.state == "started" and session.rate == 8000


async def test_defaults_when_audio_is_omitted(start) -> None:
    emulator = await start()
    async with connect(emulator) as ws:
        client = LiveClient(ws, L16_24K)
        await client.send({"type": "session.start", "session": {"model": "gpt-live-1"}})
        started = await client.until("session.started")
    assert started["session"]["audio"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "output": {"voice": "marin"},
    }


async def test_nothing_before_session_start_and_start_only_once(start) -> None:
    emulator = await start()
    async with connect(emulator) as ws:
        client = LiveClient(ws, PCMU_8K)
        await client.send(client.codec.append_audio(b"\xff" * 160))
        error = await client.until("error")
        validate_server_event(error, "live")
        assert error["error"]["code"] == "session_not_started"
        await client.send(client.codec.session_start(LiveSessionOptions(instructions="x")))
        await client.until("session.started")
        await client.send(client.codec.session_start(LiveSessionOptions(instructions="x")))
        assert (await client.until("error"))["error"]["code"] == "session_already_started"


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"model": "gpt-live-1", "voice": "marin"}, "unknown_parameter", "session.voice"),
        (
            {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 16000}}},
            "invalid_value",
            "session.audio.format.rate",
        ),
        (
            {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 8000}}},
            "invalid_value",
            "session.audio.format.rate",
        ),
        ({"instructions": "x"}, "missing_required_parameter", "session.model"),
        ({"model": "gpt-live-1", "client": {"data_channel": {}}}, "invalid_value", "session.client"),
        (
            {"model": "gpt-live-1", "input": [{"role": "user", "content": []}]},
            "invalid_value",
            "session.input[0].content",
        ),
    ],
)
async def test_strict_configuration_is_refused_and_the_session_never_starts(
    start, session: dict, code: str, param: str
) -> None:
    emulator = await start()
    async with connect(emulator) as ws:
        client = LiveClient(ws, L16_24K)
        await client.send({"type": "session.start", "event_id": "start_1", "session": session})
        error = await client.until("error")
        assert (error["error"]["code"], error["error"]["param"]) == (code, param)
        assert error["error"]["client_event_id"] == "start_1"
        assert not client.of_type("session.started") and not await client.drain(0.1)


async def test_audio_sent_before_a_slow_start_is_refused(start) -> None:
    emulator = await start(live_start_delay_ms=150)
    async with connect(emulator) as ws:
        client = LiveClient(ws, PCMU_8K)
        await client.send(client.codec.session_start(LiveSessionOptions(instructions="x")))
        await client.send(client.codec.append_audio(b"\xff" * 160))
        assert (await client.until("error"))["error"]["code"] == "session_not_started"
        await client.until("session.started")


# -- duplex audio -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K, L16_16K, L16_24K])
async def test_output_is_clocked_by_input_silence_included(start, fmt: AudioFormat) -> None:
    emulator = await start()
    async with live(emulator, fmt) as (client, session):
        await client.talk(silence(fmt.rate, 1.0))
        await client.drain()
        deltas = client.of_type("session.output_audio.delta")
        assert len(deltas) == 1000 // FRAME_MS  # one frame out for each frame in, nothing on its own
        out = client.output_pcm()
        assert out.size == fmt.rate
        assert np.abs(out).max() <= 8  # digital silence while the model is quiet (A-law's is +/-8)
        assert len(session.appended_pcm) == fmt.rate * 2


async def test_odd_pcm_byte_splits_keep_the_clock(start) -> None:
    emulator = await start()
    async with live(emulator, L16_16K) as (client, session):
        raw = silence(16000, 0.5).tobytes()
        for i in range(0, len(raw), 321):  # odd-sized appends: samples split across messages
            await client.send(client.codec.append_audio(raw[i : i + 321]))
        await client.drain()
    assert len(session.output_audio) == len(raw)


async def test_held_back_audio_comes_back_as_an_equal_burst(start) -> None:
    """Four seconds of caller audio sent at once are answered by four seconds of output at once, not
    paced out: a client that flushes a backlog into the session gets the same backlog back."""
    emulator = await start()
    async with live(emulator, PCMU_8K) as (client, session):
        await client.talk(silence(8000, 4.0))
        got = 0
        while got < 200:
            got += (await client.recv())["type"] == "session.output_audio.delta"
    sent = [at for at, kind in session.sent_log if kind == "session.output_audio.delta"]
    assert len(sent) == 200
    assert sent[-1] - sent[0] < 2000  # however loaded the machine, nowhere near the 4 s it lasts


async def test_the_upstream_network_delays_and_jitters_events_in_order(start) -> None:
    emulator = await start(upstream_delay_ms=80, upstream_jitter_ms=40, upstream_seed=3)
    async with live(emulator, PCMU_8K) as (client, session):
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        await client.talk(np.concatenate([silence(8000, 0.3), tone(8000, 0.7)]))
        await client.until("session.output_audio.delta")
        assert loop.time() - sent_at >= 0.040  # never earlier than the delay less the jitter
        await client.drain(0.5)
    assert len(client.of_type("session.output_audio.delta")) == 50
    received = b"".join(base64.b64decode(e["delta"]) for e in client.of_type("session.output_audio.delta"))
    assert received == bytes(session.output_audio)  # late, never reordered


async def test_the_model_replies_when_the_caller_stops(start) -> None:
    emulator = await start()
    rate = 24000
    async with live(emulator, L16_24K) as (client, session):
        caller = np.concatenate([silence(rate, 0.4), tone(rate, 0.8), silence(rate, 2.0)])
        await client.talk(caller)
        await client.drain()
    (turn,) = session.turns
    speech_end = 0.4 + 0.8
    # Turn end after 500 ms of silence, then the reply delay, all on the session clock.
    assert turn.start_ms == pytest.approx((speech_end + 0.5 + 0.3) * 1000, abs=1)
    assert (turn.source, turn.interrupted) == ("reply", False)
    # The echo of what the caller said: from their first to their last sample above the VAD's threshold.
    loud = np.flatnonzero(np.abs(caller) > dbfs_to_amplitude(EmulatorConfig.vad_threshold_dbfs))
    heard = caller[loud[0] : loud[-1] + 1]
    assert turn.planned_ms == pytest.approx(ms(rate, heard.size))
    out = client.output_pcm()
    start_sample = round(turn.start_ms * rate / 1000)
    assert np.array_equal(out[start_sample : start_sample + heard.size], heard)
    assert not out[:start_sample].any()  # silence until the model speaks
    (said_in,) = client.of_type("session.input_transcript.delta")
    assert (said_in["start_ms"], said_in["end_ms"]) == (400, 1200)
    fragments = client.of_type("session.output_transcript.delta")
    assert "".join(f["delta"] for f in fragments) == turn.transcript == turn.said
    assert fragments[0]["start_ms"] == int(turn.start_ms)
    assert all(a["end_ms"] == b["start_ms"] for a, b in itertools.pairwise(fragments))


async def test_the_model_stops_itself_when_talked_over_then_answers(start) -> None:
    emulator = await start()
    rate = 8000
    emulator.script_reply(
        ScriptedReply(audio_pcm24k=tone(24000, 4.0, hz=500).tobytes(), transcript="a " * 20)
    )
    async with live(emulator, PCMU_8K) as (client, session):
        await client.send(client.codec.append_context("commentary", "Tell the caller about the offer."))
        await client.talk(silence(rate, 1.3))  # the model starts at 0.3 s
        await client.talk(np.concatenate([tone(rate, 1.0), silence(rate, 2.0)]))  # barge in at 1.3 s
        await client.drain()
    first, second = session.turns
    assert first.interrupted and first.source == "commentary"
    assert first.end_ms == pytest.approx(1300 + 240, abs=2)  # onset + live_yield_ms
    assert first.said_ms == pytest.approx(1240, abs=2)
    assert first.transcript.startswith(first.said) and len(first.said) < len(first.transcript)
    out = client.output_pcm()
    stopped = round(first.end_ms * rate / 1000)
    assert np.abs(out[stopped - 160 : stopped].astype(int)).max() > 1000  # speech right up to the stop
    assert not out[stopped : round(second.start_ms * rate / 1000)].any()  # then silence
    assert second.source == "reply" and not second.interrupted  # it answers the caller afterwards
    assert second.start_ms == pytest.approx((2.3 + 0.5 + 0.3) * 1000, abs=2)


async def test_a_short_backchannel_does_not_stop_the_model(start) -> None:
    emulator = await start()
    rate = 8000
    emulator.script_reply(ScriptedReply(audio_pcm24k=tone(24000, 2.0, hz=500).tobytes(), transcript="Long."))
    async with live(emulator, PCMU_8K) as (client, session):
        await client.send(client.codec.append_context("commentary", "Speak."))
        await client.talk(silence(rate, 0.8))
        await client.talk(np.concatenate([tone(rate, 0.1), silence(rate, 3.0)]))  # "mm-hm"
        await client.drain()
    (turn,) = session.turns  # no reply to the "mm-hm" either
    assert not turn.interrupted and turn.said_ms == turn.planned_ms


# -- context, mute, fixtures -------------------------------------------------------------------------


async def test_context_appends_are_acknowledged_on_the_timeline_and_only_commentary_speaks(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K) as (client, session):
        await client.talk(silence(8000, 0.5))
        for kind in ("instructions", "thinking"):
            await client.send(client.codec.append_context(kind, f"{kind} text"))  # type: ignore[arg-type]
        await client.talk(silence(8000, 1.0))
        await client.drain()
        assert not session.turns
        acks = [e for e in client.events if e["type"].endswith(".appended")]
        assert [(a["type"], a["start_ms"], a["client_event_id"]) for a in acks] == [
            ("session.instructions.appended", 500, "bridge_2"),
            ("session.thinking.appended", 500, "bridge_3"),
        ]
        await client.send(client.codec.append_context("commentary", "Greet the caller now."))
        await client.talk(silence(8000, 6.0))
        await client.drain()
    (greeting,) = session.turns
    assert (greeting.source, greeting.transcript) == ("commentary", GREETING_TRANSCRIPT)
    assert greeting.start_ms == pytest.approx(1500 + 300, abs=1)
    assert [c["kind"] for c in session.context] == ["instructions", "thinking", "commentary"]


async def test_context_limits_and_delegation_ids_are_checked(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K) as (client, _):
        await client.send(client.codec.append_context("thinking", "word " * 600))
        assert (await client.until("error"))["error"]["param"] == "content"
        await client.send(client.codec.append_context("commentary", "done", delegation_id="dlg_unknown"))
        assert (await client.until("error"))["error"]["param"] == "delegation_id"
        await client.send(
            {"type": "session.thinking.append", "content": "x", "delegation_id": None, "typo": 1}
        )
        assert (await client.until("error"))["error"]["code"] == "unknown_parameter"
        await client.send({"type": "decision.item.delete", "item_id": "x"})
        assert "not supported" in (await client.until("error"))["error"]["message"]
        await client.talk(silence(8000, 0.1))  # the session carries on
        await client.until("session.output_audio.delta")


async def test_muted_input_is_not_heard(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K) as (client, session):
        await client.send(client.codec.mute_input(True))
        assert (await client.until("session.input_audio.muted"))["client_event_id"] == "bridge_2"
        await client.talk(np.concatenate([tone(8000, 1.0), silence(8000, 1.5)]))
        await client.send(client.codec.mute_input(False))
        await client.until("session.input_audio.unmuted")
        await client.drain()
    assert not session.turns and not client.of_type("session.input_transcript.delta")


async def test_a_fixture_plays_over_the_model_and_drops_the_callers_audio(start) -> None:
    emulator = await start()
    rate = 16000
    emulator.script_reply(ScriptedReply(audio_pcm24k=tone(24000, 3.0).tobytes(), transcript="Long reply."))
    fixture = tone(24000, 0.5, hz=700)
    async with live(emulator, L16_16K) as (client, session):
        await client.send(client.codec.append_context("commentary", "Speak."))
        await client.talk(silence(rate, 0.5))  # the model speaks from 0.3 s
        await client.send(client.codec.play_fixture(fixture.tobytes()))
        assert (await client.until("session.output_audio.fixture.playing"))["client_event_id"] == "bridge_3"
        await client.send(client.codec.append_context("thinking", "x"))
        assert "fixture" in (await client.until("error"))["error"]["message"]
        await client.talk(tone(rate, 0.4))  # the caller talks during the fixture: dropped
        await client.talk(silence(rate, 0.2))  # the fixture plays out on the input clock too
        assert (await client.until("session.output_audio.fixture.played"))["client_event_id"] == "bridge_3"
        await client.talk(silence(rate, 1.0))
        await client.drain()
    model, played = session.turns
    assert model.interrupted and model.end_ms == pytest.approx(500, abs=1)
    assert played.source == "fixture" and played.planned_ms == pytest.approx(500, abs=1)
    assert len(session.turns) == 2  # no answer to audio the model never heard
    out = client.output_pcm()
    assert np.abs(out[round(0.5 * rate) : round(1.0 * rate)].astype(int)).max() > 1000


# -- delegation --------------------------------------------------------------------------------------

BACKEND = {"delegation": "responses", "backend_model": "gpt-5.5"}


async def test_responses_delegation_function_call_round_trip(start) -> None:
    emulator = await start()
    emulator.script_reply(ScriptedReply(tool_call=("end_call", {"reason": "bye"})))
    emulator.script_reply(ScriptedReply(audio_pcm24k=tone(24000, 0.4).tobytes(), transcript="Goodbye!"))
    async with live(emulator, PCMU_8K, tools=({"type": "function", "name": "end_call"},), **BACKEND) as (
        client,
        session,
    ):
        await client.talk(np.concatenate([tone(8000, 0.5), silence(8000, 1.0)]))
        created = await client.until("session.delegation.created")
        decoded = [client.codec.decode(json.dumps(e)) for e in await client.drain()]
        (call,) = [d for d in decoded if isinstance(d, ev.FunctionCall)]
        assert (call.name, json.loads(call.arguments), call.delegation_id) == (
            "end_call",
            {"reason": "bye"},
            created["delegation"]["id"],
        )
        assert created["delegation"]["target"] == "responses" and created["offset_ms"] == 1300
        await client.send(client.codec.continue_backend())  # the call has no output yet
        assert "call_" in (await client.until("error"))["error"]["message"]
        await client.send(client.codec.function_output("call_nope", "{}"))
        assert (await client.until("error"))["error"]["param"] == "item.call_id"
        await client.send(client.codec.function_output(call.call_id, '{"ok": true}'))
        await client.send(client.codec.continue_backend())
        await client.talk(silence(8000, 1.0))
        backend = [client.codec.decode(json.dumps(e)) for e in await client.drain()]
    assert ev.BackendText(call.delegation_id, 'end_call returned {"ok": true}') in backend
    assert session.function_outputs == [
        {"call_id": call.call_id, "name": "end_call", "output": '{"ok": true}'}
    ]
    (goodbye,) = session.turns
    assert (goodbye.source, goodbye.transcript) == ("continuation", "Goodbye!")
    for event in client.of_type("response.event"):
        validate_server_event(event, "live")
        validate_backend_event(event["event"])


async def test_client_delegation_is_answered_with_commentary(start) -> None:
    emulator = await start()
    emulator.script_reply(ScriptedReply(tool_call=("lookup_order", {})))
    async with live(emulator, PCMU_8K) as (client, session):
        await client.talk(np.concatenate([tone(8000, 0.5), silence(8000, 1.0)]))
        created = await client.until("session.delegation.created")
        assert created["delegation"]["target"] == "client" and "response_id" not in created["delegation"]
        await client.send(client.codec.continue_backend())
        assert "Responses delegation" in (await client.until("error"))["error"]["message"]
        await client.send(
            client.codec.append_context("commentary", "It shipped.", created["delegation"]["id"])
        )
        await client.talk(silence(8000, 3.0))
        await client.drain()
    (answer,) = session.turns
    assert answer.source == "delegation"
    assert session.delegations[0]["name"] == "lookup_order"


async def test_responses_delegation_refuses_delegation_ids_in_context(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K, **BACKEND) as (client, _):
        await client.send(client.codec.append_context("commentary", "x", delegation_id="dlg_1"))
        assert "Responses delegation" in (await client.until("error"))["error"]["message"]


async def test_backend_tools_can_be_updated_but_not_the_delegation_type(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K, **BACKEND) as (client, _):
        await client.send(client.codec.update_tools(({"type": "function", "name": "end_call"},)))
        updated = await client.until("session.updated")
        validate_server_event(updated, "live")
        assert updated["session"]["delegation"]["responses"]["tools"][0]["name"] == "end_call"
        assert updated["session"]["delegation"]["responses"]["model"] == "gpt-5.5"
        await client.send({"type": "session.update", "session": {"delegation": {"type": "client"}}})
        assert (await client.until("error"))["error"]["param"] == "session.delegation.type"


# -- usage and closing --------------------------------------------------------------------------------


async def test_close_requested_reports_whole_seconds_and_closes_the_socket(start) -> None:
    emulator = await start(live_usage_interval_s=0.3)
    begun = time.monotonic()
    async with live(emulator, PCMU_8K) as (client, session):
        await asyncio.sleep(1.1)
        await client.talk(silence(8000, 0.1))
        usage = (await client.until("session.usage.updated"))["usage"]["seconds"]
        await client.send(client.codec.session_close())
        closed = await client.until("session.closed")
        at_most = math.floor(time.monotonic() - begun)
        validate_server_event(closed, "live")
        assert (closed["reason"], closed["client_event_id"]) == ("close_requested", "bridge_2")
        seconds = closed["usage"]["seconds"]
        # Billed by whole seconds of the session's life: at least the 1.1 s slept, never more than passed.
        assert 1 <= usage <= seconds <= at_most and usage.is_integer() and seconds.is_integer()
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.ws.close_code == 1000
    assert (session.close_reason, session.usage_seconds) == ("close_requested", seconds)


@pytest.mark.parametrize("reason", ["content", "remote_hangup", "connection_lost"])
async def test_the_service_ends_a_session_with_each_documented_reason(start, reason: str) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K) as (client, session):
        await session.end(reason)
        closed = await client.until("session.closed")
        validate_server_event(closed, "live")
        assert closed["reason"] == reason and closed["usage"] == {"seconds": 0.0}
        with pytest.raises(ConnectionClosed):
            await client.recv()


async def test_the_session_expires_at_its_duration_limit(start) -> None:
    emulator = await start(live_max_session_s=0.2)
    async with live(emulator, PCMU_8K) as (client, session):
        assert (await client.until("session.closed", wait=3))["reason"] == "expired"
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.ws.close_code == 1000
    assert session.close_reason == "expired"


async def test_a_client_that_vanishes_leaves_connection_lost(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K) as (_, session):
        pass
    async with asyncio.timeout(3):
        while not session.closed:  # noqa: ASYNC110 -- a plain flag is the API tests get
            await asyncio.sleep(0.01)
    assert session.close_reason == "connection_lost" and not session._tasks


async def test_a_dropped_upstream_is_a_close_without_session_closed(start) -> None:
    emulator = await start()
    async with live(emulator, PCMU_8K) as (client, session):
        await session.close(1011)
        with pytest.raises(ConnectionClosed):
            await client.until("session.closed")
        assert client.ws.close_code == 1011


async def test_upgrade_refusals_apply_to_live_too(start) -> None:
    emulator = await start(refuse_status=401)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(emulator):
            pass
    assert refused.value.response.status_code == 401


# -- contracts ---------------------------------------------------------------------------------------


def test_live_event_types_match_the_sdk() -> None:
    assert set(LIVE_CLIENT_EVENT_TYPES) == set(LIVE_CLIENT)


async def test_every_event_sent_validates_against_the_sdk(start) -> None:
    emulator = await start(live_usage_interval_s=0.0)
    emulator.script_reply(ScriptedReply(tool_call=("end_call", {})))
    async with live(emulator, PCMU_8K, **BACKEND) as (client, _):
        await client.send(client.codec.append_context("instructions", "Be kind."))
        await client.talk(np.concatenate([tone(8000, 0.5), silence(8000, 1.0)]))
        call = next(
            d
            for d in (client.codec.decode(json.dumps(e)) for e in await client.drain())
            if isinstance(d, ev.FunctionCall)
        )
        await client.send(client.codec.function_output(call.call_id, "{}"))
        await client.send(client.codec.continue_backend())
        await client.send(client.codec.mute_input(True))
        await client.send(client.codec.mute_input(False))
        await client.talk(silence(8000, 5.0))
        await client.send(client.codec.play_fixture(tone(24000, 0.1).tobytes()))
        await client.talk(silence(8000, 0.5))
        await client.send({"type": "bogus"})
        await client.send(client.codec.session_close())
        await client.until("session.closed")
    kinds = {e["type"] for e in client.events}
    assert kinds >= {
        "session.started", "session.output_audio.delta", "session.output_transcript.delta",
        "session.input_transcript.delta", "session.instructions.appended", "session.delegation.created",
        "response.event", "session.input_audio.muted", "session.input_audio.unmuted",
        "session.output_audio.fixture.playing", "session.output_audio.fixture.played",
        "session.usage.updated", "error", "session.closed",
    }  # fmt: skip
    for event in client.events:
        validate_server_event(event, "live")
        decoded = client.codec.decode(json.dumps(event))
        if event["type"] == "response.event":
            validate_backend_event(event["event"])
        else:  # the codec reads every kind of event the emulator sends
            assert not isinstance(decoded, ev.Ignored)
