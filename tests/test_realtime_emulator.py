"""The Realtime emulator over real loopback WebSockets, in both dialects (docs/protocols.md §R)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from importlib import resources

import numpy as np
import pytest
import websockets
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.sim.emulator_audio import decode_g711, encode_output, murmur_pcm24k, resample
from bridge.sim.realtime_emulator import (
    GREETING_TRANSCRIPT,
    EmulatorConfig,
    RealtimeEmulator,
    ScriptedReply,
    emulated_transcript,
)
from bridge.sim.realtime_schema import BETA_CLIENT_EVENT_TYPES, GA_CLIENT_EVENT_TYPES, merge_session
from bridge.sim.vad import dbfs_to_amplitude
from tests.realtime_types import (
    BETA_CLIENT,
    BETA_SERVER,
    GA_CLIENT,
    GA_SERVER,
    UnknownKeysError,
    unknown_keys,
    validate_client_event,
    validate_server_event,
)

FAST = {"speed": 50.0, "first_delta_delay_ms": 5}
AUDIO_DELTA = {"ga": "response.output_audio.delta", "beta": "response.audio.delta"}
TRANSCRIPT_DELTA = {"ga": "response.output_audio_transcript.delta", "beta": "response.audio_transcript.delta"}
STREAMING = {
    *AUDIO_DELTA.values(),
    *TRANSCRIPT_DELTA.values(),
    "response.output_text.delta",
    "response.text.delta",
}


# ---------------------------------------------------------------------------------------------------
# helpers


class Client:
    """A test-side Realtime client that records every server event with its arrival time."""

    def __init__(self, ws: websockets.ClientConnection, dialect: str) -> None:
        self.ws = ws
        self.dialect = dialect
        self.events: list[dict] = []
        self.times: list[float] = []

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, wait: float = 5) -> dict:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        self.events.append(event)
        self.times.append(asyncio.get_running_loop().time())
        return event

    async def until(self, event_type: str, wait: float = 5) -> dict:
        while True:
            event = await self.recv(wait)
            if event["type"] == event_type:
                return event

    async def collect(self, seconds: float) -> list[dict]:
        """Everything that arrives within `seconds` (used to show that nothing more comes)."""
        got: list[dict] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    got.append(await self.recv(seconds + 1))
        return got

    async def append(self, pcm: bytes, chunk: int) -> None:
        for i in range(0, len(pcm), chunk):
            audio = base64.b64encode(pcm[i : i + chunk]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})

    def of_type(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e["type"] == event_type]


@pytest.fixture
async def start():
    started: list[RealtimeEmulator] = []

    async def factory(**config) -> tuple[RealtimeEmulator, str]:
        emulator = RealtimeEmulator(EmulatorConfig(**config))
        started.append(emulator)
        return emulator, await emulator.start()

    yield factory
    for emulator in started:
        await emulator.stop()


@contextlib.asynccontextmanager
async def connect(url: str, dialect: str = "ga", model: str = "gpt-realtime") -> AsyncIterator[Client]:
    headers = {"Authorization": "Bearer sk-test-key"}
    if dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    async with websockets.connect(
        f"{url}?model={model}", additional_headers=headers, proxy=None, max_size=None
    ) as ws:
        client = Client(ws, dialect)
        created = await client.recv()
        assert created["type"] == "session.created"
        yield client


def tone(rate: int, seconds: float, dbfs: float = -10.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (dbfs_to_amplitude(dbfs) * np.sqrt(2) * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


def utterance(rate: int, lead: float = 0.8, speech: float = 1.0, tail: float = 1.0) -> np.ndarray:
    """A 300 Hz tone at -10 dBFS surrounded by silence."""
    return np.concatenate(
        [np.zeros(round(rate * lead), np.int16), tone(rate, speech), np.zeros(round(rate * tail), np.int16)]
    )


def wire(pcm: np.ndarray, fmt: str, rate: int) -> bytes:
    return encode_output(pcm, rate, fmt)


def update_event(dialect: str, fmt: str = "pcm16", **turn_detection) -> dict:
    td = {"type": "server_vad", "prefix_padding_ms": 300, "silence_duration_ms": 500, **turn_detection}
    if dialect == "ga":
        ga_fmt = {"type": "audio/pcm", "rate": 24000} if fmt == "pcm16" else {"type": "audio/pcmu"}
        session = {
            "type": "realtime",
            "audio": {
                "input": {"format": ga_fmt, "turn_detection": td},
                "output": {"format": ga_fmt, "voice": "marin"},
            },
        }
    else:
        session = {"input_audio_format": fmt, "output_audio_format": fmt, "turn_detection": td}
    return {"type": "session.update", "session": session}


def audio_ms(events: list[dict], dialect: str, fmt: str = "pcm16") -> float:
    total = sum(len(base64.b64decode(e["delta"])) for e in events if e["type"] == AUDIO_DELTA[dialect])
    return total / (48 if fmt == "pcm16" else 8)


async def transcribed_without_vad(client: Client) -> None:
    """The session transcribes its input, and turns are committed by hand."""
    patch = {
        "type": "realtime",
        "audio": {"input": {"turn_detection": None, "transcription": {"model": "gpt-4o-mini-transcribe"}}},
    }
    await client.send({"type": "session.update", "session": patch})
    await client.until("session.updated")


async def greeting_done(client: Client) -> dict:
    await client.send({"type": "response.create"})
    return await client.until("response.done")


# ---------------------------------------------------------------------------------------------------
# session shapes


async def test_session_created_ga_shape_and_upgrade_request_recorded(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "ga", model="gpt-realtime-2.1") as client:
        session = client.events[0]["session"]
        assert session["type"] == "realtime"
        assert session["model"] == "gpt-realtime-2.1"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["output"]["voice"] == "marin"
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert session["output_modalities"] == ["audio"]
        validate_server_event(client.events[0], "ga")
        emulated = await emulator.wait_for_session()
        assert emulated.dialect == "ga"
        assert emulated.headers["Authorization"] == "Bearer sk-test-key"
        assert emulated.query == {"model": "gpt-realtime-2.1"}
        assert emulated.input_rate == 24000


async def test_session_created_beta_shape(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "beta", model="gpt-4o-realtime-preview") as client:
        session = client.events[0]["session"]
        assert "audio" not in session and "type" not in session
        assert session["input_audio_format"] == session["output_audio_format"] == "pcm16"
        assert session["turn_detection"]["type"] == "server_vad"
        assert session["modalities"] == ["audio", "text"]
        validate_server_event(client.events[0], "beta")
        assert (await emulator.wait_for_session()).dialect == "beta"


async def test_session_update_ga_merges_and_answers_with_full_session(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "ga") as client:
        await client.send({**update_event("ga", "g711_ulaw", silence_duration_ms=300), "event_id": "evt_1"})
        updated = await client.until("session.updated")
        session = updated["session"]
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        td = session["audio"]["input"]["turn_detection"]
        assert td["silence_duration_ms"] == 300
        assert td["threshold"] == 0.5 and td["create_response"] and td["interrupt_response"]
        assert session["instructions"]  # untouched fields stay
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
        )
        session = (await client.until("session.updated"))["session"]
        assert session["instructions"] == "Be brief."
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        await client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
        )
        session = (await client.until("session.updated"))["session"]
        assert session["audio"]["input"]["turn_detection"] is None
        validate_server_event(updated, "ga")


async def test_session_update_beta(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "beta") as client:
        await client.send(update_event("beta", "g711_ulaw", type="semantic_vad", eagerness="high"))
        session = (await client.until("session.updated"))["session"]
        assert session["input_audio_format"] == session["output_audio_format"] == "g711_ulaw"
        assert session["turn_detection"]["type"] == "semantic_vad"
        assert "threshold" not in session["turn_detection"]
        assert (await emulator.wait_for_session()).input_rate == 8000


def test_merge_session_refuses_text_and_audio_together_and_model_change() -> None:
    from bridge.sim.realtime_schema import SessionUpdateError, default_session

    current = default_session("ga", "gpt-realtime")
    with pytest.raises(SessionUpdateError, match="modalities"):
        merge_session(current, {"type": "realtime", "output_modalities": ["audio", "text"]}, "ga")
    with pytest.raises(SessionUpdateError, match="model"):
        merge_session(current, {"type": "realtime", "model": "gpt-realtime-mini"}, "ga")


async def test_voice_cannot_change_after_audio(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "ga") as client:
        await greeting_done(client)
        patch = {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
        await client.send({"type": "session.update", "session": patch})
        error = await client.until("error")
        assert error["error"]["code"] == "cannot_update_voice"


# ---------------------------------------------------------------------------------------------------
# server VAD turn and echo


@pytest.mark.parametrize(
    ("dialect", "fmt"), [("ga", "pcm16"), ("beta", "pcm16"), ("ga", "g711_ulaw"), ("beta", "g711_ulaw")]
)
async def test_vad_turn_commits_and_echoes_the_utterance(start, dialect: str, fmt: str) -> None:
    emulator, url = await start(**FAST)
    rate = 24000 if fmt == "pcm16" else 8000
    lead, speech = 0.8, 1.0
    async with connect(url, dialect) as client:
        await client.send(update_event(dialect, fmt))
        await client.until("session.updated")
        pcm = utterance(rate, lead, speech)
        await client.append(wire(pcm, fmt, rate), chunk=(rate // 50) * (2 if fmt == "pcm16" else 1))
        started = await client.until("input_audio_buffer.speech_started")
        assert abs(started["audio_start_ms"] - (lead * 1000 - 300)) <= 30  # the prefix padding is included
        stopped = await client.until("input_audio_buffer.speech_stopped")
        assert abs(stopped["audio_end_ms"] - ((lead + speech) * 1000 + 500)) <= 30
        committed = await client.until("input_audio_buffer.committed")
        assert committed["item_id"] == started["item_id"] == stopped["item_id"]
        done = await client.until("response.done")
        assert done["response"]["status"] == "completed"

    echoed = audio_ms(client.events, dialect, fmt)
    assert abs(echoed - speech * 1000) <= 30
    transcript = "".join(e["delta"] for e in client.of_type(TRANSCRIPT_DELTA[dialect]))
    assert transcript == "You said something for 1.0 seconds."
    user_item = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
    user = next(e["item"] for e in client.of_type(user_item) if e["item"]["id"] == committed["item_id"])
    assert user["role"] == "user" and user["content"][0]["type"] == "input_audio"

    session = emulator.sessions[0]
    assert session.input_rate == rate
    assert len(session.appended_pcm) == pcm.size * 2
    assert session.responses[0].trigger == "turn"
    assert session.responses[0].items[0].audio_ms == pytest.approx(speech * 1000, abs=30)


async def test_echo_of_8k_caller_audio_is_upsampled_for_pcm_output(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "ga") as client:
        update = update_event("ga", "g711_ulaw")
        update["session"]["audio"]["output"]["format"] = {"type": "audio/pcm", "rate": 24000}
        await client.send(update)
        await client.until("session.updated")
        await client.append(wire(utterance(8000), "g711_ulaw", 8000), chunk=160)
        done = await client.until("response.done")
    assert done["response"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert abs(audio_ms(client.events, "ga", "pcm16") - 1000) <= 30


async def test_ga_turn_event_sequence_follows_b8(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "ga") as client:
        await client.send(update_event("ga"))
        await client.until("session.updated")
        await client.append(utterance(24000).tobytes(), chunk=4800)
        await client.until("response.done")
    types = [e["type"] for e in client.events[2:] if e["type"] not in STREAMING]
    assert types == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    deltas = [e["type"] for e in client.events if e["type"] in STREAMING]
    assert deltas[0] == "response.output_audio.delta"
    assert "response.output_audio_transcript.delta" in deltas
    usage = client.events[-1]["response"]["usage"]
    assert (
        usage["input_token_details"]["audio_tokens"] > 0 and usage["output_token_details"]["audio_tokens"] > 0
    )


async def test_manual_commit_transcription_and_clear(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "ga") as client:
        await transcribed_without_vad(client)
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
        error = await client.until("error")
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "evt_c"

        await client.append(tone(24000, 0.5).tobytes(), chunk=4800)
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.until("input_audio_buffer.committed")
        transcribed = await client.until("conversation.item.input_audio_transcription.completed")
        assert transcribed["item_id"] == committed["item_id"]
        # No words were scripted: it says it heard none, and how long the caller spoke.
        assert transcribed["transcript"] == emulated_transcript(0.5)
        assert "no speech recognition" in transcribed["transcript"] and "0.5 s" in transcribed["transcript"]
        assert transcribed["usage"]["type"] == "tokens"
        assert not client.of_type("input_audio_buffer.speech_started")
        assert not [e for e in await client.collect(0.2) if e["type"] == "response.created"]

        await client.send({"type": "response.create"})
        await client.until("response.done")
        assert abs(audio_ms(client.events, "ga") - 500) <= 5

        await client.append(tone(24000, 0.5).tobytes(), chunk=4800)
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.send({"type": "input_audio_buffer.commit"})
        assert (await client.until("error"))["error"]["code"] == "input_audio_buffer_commit_empty"
    assert len(emulator.sessions[0].appended_pcm) == 2 * 2 * 12000


async def test_scripted_caller_words_are_the_transcripts_of_the_next_turns(start) -> None:
    emulator, url = await start(**FAST)
    emulator.script_caller_words("I'd like a refund, please.")
    async with connect(url, "ga") as client:
        await transcribed_without_vad(client)
        words = []
        for _ in range(2):
            await client.append(tone(24000, 0.4).tobytes(), chunk=4800)
            await client.send({"type": "input_audio_buffer.commit"})
            words.append(
                (await client.until("conversation.item.input_audio_transcription.completed"))["transcript"]
            )
        assert words == ["I'd like a refund, please.", emulated_transcript(0.4)]
        user_items = [i for i in emulator.sessions[0].conversation if i.get("role") == "user"]
        assert user_items[0]["content"][0]["transcript"] == "I'd like a refund, please."


async def test_greeting_when_no_caller_audio_yet(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "ga") as client:
        done = await greeting_done(client)
    transcript = client.of_type("response.output_audio_transcript.done")[0]["transcript"]
    assert transcript == GREETING_TRANSCRIPT
    with wave.open(str(resources.files("bridge.sim") / "assets" / "greeting.wav")) as w:
        assert audio_ms(client.events, "ga") == pytest.approx(w.getnframes() / 24, abs=1)
    assert done["response"]["output"][0]["content"][0] == {
        "type": "output_audio",
        "transcript": GREETING_TRANSCRIPT,
    }


def test_greeting_asset_is_small_pcm16_24k_mono() -> None:
    path = resources.files("bridge.sim") / "assets" / "greeting.wav"
    assert path.stat().st_size < 300_000  # type: ignore[attr-defined]
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        assert 2 < w.getnframes() / 24000 < 8


# ---------------------------------------------------------------------------------------------------
# truncate, cancel, barge-in


async def test_truncate_validates_against_audio_sent(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "ga") as client:
        done = await greeting_done(client)
        item_id = done["response"]["output"][0]["id"]
        sent = int(audio_ms(client.events, "ga"))
        await client.send(
            {
                "type": "conversation.item.truncate",
                "event_id": "evt_t1",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": sent + 85,
            }
        )
        error = await client.until("error")
        assert error["error"] == {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": f"Audio content of {sent}ms is already shorter than {sent + 85}ms",
            "param": None,
            "event_id": None,
        }
        await client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1500,
            }
        )
        truncated = await client.until("conversation.item.truncated")
        assert truncated["item_id"] == item_id and truncated["audio_end_ms"] == 1500
        assert truncated["content_index"] == 0
        # The server now holds only 1500 ms, so a second, longer truncate is refused.
        await client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1600,
            }
        )
        assert "Audio content of 1500ms" in (await client.until("error"))["error"]["message"]

        await client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 1,
            }
        )
        assert (await client.until("error"))["error"]["code"] == "invalid_value"

    session = emulator.sessions[0]
    assert session.truncations == [
        {"item_id": item_id, "content_index": 0, "audio_end_ms": 1500, "audio_sent_ms": sent}
    ]
    held = next(i for i in session.conversation if i["id"] == item_id)["content"][0]["transcript"]
    assert GREETING_TRANSCRIPT.startswith(held)
    assert abs(len(held) - len(GREETING_TRANSCRIPT) * 1500 / sent) <= 1
    assert len(session.rejected) == 3
    assert session.rejected[0]["client_event"]["event_id"] == "evt_t1"


async def test_truncate_refuses_user_items(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "beta") as client:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        await client.send({"type": "conversation.item.create", "item": item})
        created = await client.until("conversation.item.created")
        await client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": created["item"]["id"],
                "content_index": 0,
                "audio_end_ms": 0,
            }
        )
        assert "assistant" in (await client.until("error"))["error"]["message"]


async def test_cancel_without_active_response(start) -> None:
    _, url = await start(**FAST)
    async with connect(url, "ga") as client:
        await client.send({"type": "response.cancel", "event_id": "evt_x"})
        error = await client.until("error")
        assert error["error"]["code"] == "response_cancel_not_active"
        assert error["error"]["message"] == "Cancellation failed: no active response found"
        assert error["error"]["event_id"] == "evt_x"
        assert (await greeting_done(client))["response"]["status"] == "completed"  # session unaffected


async def test_client_cancel_stops_deltas(start) -> None:
    emulator, url = await start(speed=1.0, first_delta_delay_ms=5)
    async with connect(url, "beta") as client:
        await client.send({"type": "response.create"})
        delta = await client.until("response.audio.delta")
        await client.send({"type": "response.cancel"})
        done = await client.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["response"]["output"][0]["status"] == "incomplete"
        later = await client.collect(0.3)
        assert not [e for e in later if e.get("response_id") == delta["response_id"]]
    response = emulator.sessions[0].responses[0]
    assert (response.status, response.cancel_reason) == ("cancelled", "client_cancelled")
    assert 0 < response.items[0].audio_ms < 5000


async def test_barge_in_cancels_with_turn_detected(start) -> None:
    emulator, url = await start(speed=1.0, first_delta_delay_ms=5)
    emulator.script_reply(
        ScriptedReply(audio_pcm24k=np.zeros(24000 * 8, np.int16).tobytes(), transcript="A long answer.")
    )
    async with connect(url, "ga") as client:
        await client.send({"type": "response.create"})
        first = await client.until("response.output_audio.delta")
        await client.append(utterance(24000, lead=0.3, speech=0.6, tail=0.0).tobytes(), chunk=4800)
        await client.until("input_audio_buffer.speech_started")
        done = await client.recv()
        assert done["type"] == "response.done"
        assert done["response"]["id"] == first["response_id"]
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        await client.append(np.zeros(24000, np.int16).tobytes(), chunk=4800)
        await client.until("input_audio_buffer.committed")
        echo = await client.until("response.created")
        await client.until("response.done")
        stale = [e for e in client.events if e.get("response_id") == first["response_id"]]
        assert client.events.index(done) > client.events.index(stale[-1])
    responses = emulator.sessions[0].responses
    assert [r.status for r in responses] == ["cancelled", "completed"]
    assert responses[1].id == echo["response"]["id"] and responses[1].trigger == "turn"


async def test_no_barge_in_when_interrupt_response_is_false(start) -> None:
    emulator, url = await start(speed=4.0, first_delta_delay_ms=5)
    emulator.script_reply(
        ScriptedReply(audio_pcm24k=np.zeros(24000 * 2, np.int16).tobytes(), transcript="Hold on.")
    )
    async with connect(url, "ga") as client:
        await client.send(update_event("ga", interrupt_response=False))
        await client.until("session.updated")
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.append(utterance(24000, lead=0.1, speech=0.3, tail=0.0).tobytes(), chunk=4800)
        await client.until("input_audio_buffer.speech_started")
        done = await client.until("response.done")
        assert done["response"]["status"] == "completed"
    assert audio_ms(client.events, "ga") == pytest.approx(2000, abs=1)


async def test_second_response_is_refused_but_out_of_band_runs(start) -> None:
    emulator, url = await start(speed=2.0, first_delta_delay_ms=5)
    async with connect(url, "ga") as client:
        await client.send({"type": "response.create"})
        first = await client.until("response.created")
        await client.send({"type": "response.create"})
        error = await client.until("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert first["response"]["id"] in error["error"]["message"]
        oob = {
            "conversation": "none",
            "output_modalities": ["text"],
            "metadata": {"purpose": "summary"},
            "instructions": "Summarise the call.",
        }
        await client.send({"type": "response.create", "response": oob})
        created = await client.until("response.created")
        assert created["response"]["metadata"] == {"purpose": "summary"}
        assert created["response"]["conversation_id"] is None
        oob_id = created["response"]["id"]
        text_done = await client.until("response.output_text.done")
        assert text_done["response_id"] == oob_id and text_done["text"] == GREETING_TRANSCRIPT
        await client.send({"type": "response.cancel"})
        cancelled = await client.until("response.done")
        while cancelled["response"]["id"] != first["response"]["id"]:
            cancelled = await client.until("response.done")
        assert cancelled["response"]["status"] == "cancelled"
    for event in client.events:
        validate_server_event(event, "ga")
    added = {e["item"]["id"] for e in client.of_type("conversation.item.added")}
    session = emulator.sessions[0]
    oob_response = next(r for r in session.responses if r.id == oob_id)
    assert oob_response.items[0].item_id not in added
    assert oob_response.instructions == "Summarise the call." and oob_response.modality == "text"
    assert [i["id"] for i in session.conversation] == [session.responses[0].items[0].item_id]


# ---------------------------------------------------------------------------------------------------
# scripted replies and tools


async def test_scripted_audio_reply(start) -> None:
    emulator, url = await start(**FAST)
    audio = tone(24000, 0.75).tobytes()
    emulator.script_reply(ScriptedReply(audio_pcm24k=audio, transcript="Scripted words here."))
    async with connect(url, "ga") as client:
        await client.send(update_event("ga", "g711_ulaw"))
        await client.until("session.updated")
        await greeting_done(client)
        await greeting_done(client)  # the queue is empty again: the greeting
    first, second = (
        [e for e in client.of_type("response.output_audio_transcript.done") if e["response_id"] == r.id]
        for r in emulator.sessions[0].responses
    )
    assert first[0]["transcript"] == "Scripted words here."
    assert second[0]["transcript"] == GREETING_TRANSCRIPT
    sent = bytes(emulator.sessions[0].responses[0].items[0].audio)
    assert sent == encode_output(np.frombuffer(audio, np.int16), 24000, "g711_ulaw")


async def test_given_words_are_said_once_and_a_summary_request_answered_as_the_emulators(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "ga") as client:
        await client.send(update_event("ga"))
        await client.until("session.updated")

        async def reply(response: dict) -> str:
            await client.send({"type": "response.create", "response": response})
            done = await client.until("response.done")
            output = done["response"]["output"][0]["content"][0]
            return output.get("transcript") or output.get("text")

        say = "Say exactly this to the caller, nothing else: Please hold, an agent is coming."
        assert await reply({"instructions": say}) == "Please hold, an agent is coming."
        sent = emulator.sessions[0].responses[0].items[0].audio
        assert len(sent) == murmur_pcm24k("Please hold, an agent is coming.").size * 2  # pcm16 at 24 kHz
        # An operator's note, then an answer: the note is said back, once.
        note = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "A VIP caller."}],
        }
        await client.send({"type": "conversation.item.create", "item": note})
        assert await reply({}) == "A VIP caller."
        assert await reply({}) == GREETING_TRANSCRIPT  # nothing new to say back
        summary = json.loads(
            await reply(
                {
                    "conversation": "none",
                    "output_modalities": ["text"],
                    "instructions": 'JSON: {"summary": "...", "intent": "...", "disposition": one of '
                    '["follow_up_needed", "resolved"]}',
                }
            )
        )
        assert summary["disposition"] == "resolved" and summary["intent"] == "trying the bridge demo"
        assert "summarised by the emulator" in summary["summary"] and "answered 3 times" in summary["summary"]


async def test_scripted_reply_with_several_audio_items(start) -> None:
    emulator, url = await start(**FAST)
    first, second = tone(24000, 0.4).tobytes(), tone(24000, 0.6).tobytes()
    emulator.script_reply(ScriptedReply(audio_pcm24k=first, transcript="one", more_audio=(second,)))
    async with connect(url, "ga") as client:
        done = await greeting_done(client)
    items = emulator.sessions[0].responses[0].items
    assert [i.audio_ms for i in items] == [400, 600]
    assert [o["id"] for o in done["response"]["output"]] == [i.item_id for i in items]
    added = client.of_type("response.output_item.added")
    assert [(e["output_index"], e["item"]["id"]) for e in added] == [
        (0, items[0].item_id),
        (1, items[1].item_id),
    ]
    for index, item in enumerate(items):
        deltas = [e for e in client.of_type(AUDIO_DELTA["ga"]) if e["item_id"] == item.item_id]
        assert {e["output_index"] for e in deltas} == {index}
    # The second item starts only after the first is done, as the real service streams them.
    types = [(e["type"], e.get("item_id") or e.get("item", {}).get("id")) for e in client.events]
    assert types.index(("response.output_item.done", items[0].item_id)) < types.index(
        ("response.output_item.added", items[1].item_id)
    )
    assert [i["id"] for i in emulator.sessions[0].conversation] == [items[0].item_id, items[1].item_id]


async def test_sent_log_records_when_events_left(start) -> None:
    import time

    emulator, url = await start(**FAST)
    before = time.monotonic() * 1000
    async with connect(url, "ga") as client:
        await greeting_done(client)
    log = emulator.sessions[0].sent_log
    assert [event_type for _, event_type in log] == [e["type"] for e in client.events]
    stamps = [at for at, _ in log]
    assert stamps == sorted(stamps) and before <= stamps[0] <= time.monotonic() * 1000


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_scripted_tool_call_then_function_output(start, dialect: str) -> None:
    emulator, url = await start(**FAST)
    emulator.script_reply(ScriptedReply(tool_call=("transfer_call", {"reason": "caller asked for a human"})))
    async with connect(url, dialect) as client:
        await client.send({"type": "response.create"})
        added = await client.until("response.output_item.added")
        assert added["item"]["type"] == "function_call" and added["item"]["name"] == "transfer_call"
        args_done = await client.until("response.function_call_arguments.done")
        assert json.loads(args_done["arguments"]) == {"reason": "caller asked for a human"}
        assert ("name" in args_done) == (dialect == "ga")
        deltas = "".join(e["delta"] for e in client.of_type("response.function_call_arguments.delta"))
        assert deltas == args_done["arguments"]
        done = await client.until("response.done")
        assert done["response"]["output"][0]["call_id"] == args_done["call_id"]
        assert not client.of_type(AUDIO_DELTA[dialect])
        output = {"type": "function_call_output", "call_id": args_done["call_id"], "output": '{"ok": true}'}
        await client.send({"type": "conversation.item.create", "item": output})
        await client.until("conversation.item.done" if dialect == "ga" else "conversation.item.created")
        await greeting_done(client)
    kinds = [i["type"] for i in emulator.sessions[0].conversation]
    assert kinds == ["function_call", "function_call_output", "message"]


# ---------------------------------------------------------------------------------------------------
# conversation items


async def test_item_create_honours_previous_item_id_and_delete(start) -> None:
    emulator, url = await start(**FAST)

    def text(item_id: str) -> dict:
        return {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": item_id}],
        }

    async with connect(url, "ga") as client:
        for item_id in ("item_a", "item_b"):
            await client.send({"type": "conversation.item.create", "item": text(item_id)})
            await client.until("conversation.item.done")
        await client.send(
            {"type": "conversation.item.create", "previous_item_id": "item_a", "item": text("item_c")}
        )
        added = await client.until("conversation.item.added")
        assert added["previous_item_id"] == "item_a"
        await client.send(
            {"type": "conversation.item.create", "previous_item_id": "root", "item": text("item_0")}
        )
        assert (await client.until("conversation.item.added"))["previous_item_id"] is None
        await client.send(
            {"type": "conversation.item.create", "previous_item_id": "item_zz", "item": text("item_d")}
        )
        assert (await client.until("error"))["error"]["param"] == "previous_item_id"
        system = {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Be kind."}],
        }
        await client.send({"type": "conversation.item.create", "item": system})
        await client.until("conversation.item.done")
        await client.send({"type": "conversation.item.delete", "item_id": "item_b"})
        assert (await client.until("conversation.item.deleted"))["item_id"] == "item_b"
        await client.send({"type": "conversation.item.retrieve", "item_id": "item_c"})
        assert (await client.until("conversation.item.retrieved"))["item"]["content"][0]["text"] == "item_c"
        await client.send({"type": "conversation.item.delete", "item_id": "item_b"})
        assert (await client.until("error"))["error"]["code"] == "invalid_value"
    ids = [i["id"] for i in emulator.sessions[0].conversation]
    assert ids[:3] == ["item_0", "item_a", "item_c"]
    assert emulator.sessions[0].conversation[3]["role"] == "system"


# ---------------------------------------------------------------------------------------------------
# invalid input


async def test_strict_mode_rejects_typo_and_keeps_session(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "ga") as client:
        bad = update_event("ga")
        bad["session"]["audio"]["input"]["turn_detecton"] = bad["session"]["audio"]["input"].pop(
            "turn_detection"
        )
        await client.send({**bad, "event_id": "evt_typo"})
        error = await client.until("error")
        assert error["error"]["code"] == "unknown_parameter"
        assert error["error"]["param"] == "session.audio.input.turn_detecton"
        assert error["error"]["event_id"] == "evt_typo"
        await client.send(
            {"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}
        )  # beta shape
        error = await client.until("error")
        assert error["error"]["code"] == "missing_required_parameter"
        assert error["error"]["param"] == "session.type"
        await client.send({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0})
        assert (await client.until("error"))["error"]["param"] == "audio_end_ms"
        assert (await greeting_done(client))["response"]["status"] == "completed"
    session = emulator.sessions[0]
    assert [r["error"]["code"] for r in session.rejected] == [
        "unknown_parameter",
        "missing_required_parameter",
        "missing_required_parameter",
    ]
    assert session.rejected[0]["client_event"]["event_id"] == "evt_typo"
    assert "turn_detecton" not in json.dumps(session.session_config)


async def test_non_strict_mode_accepts_unknown_keys(start) -> None:
    emulator, url = await start(strict=False, **FAST)
    async with connect(url, "ga") as client:
        await client.send({"type": "session.update", "session": {"type": "realtime", "temperature": 0.7}})
        assert (await client.until("session.updated"))["session"]["temperature"] == 0.7
        await client.send({"type": "conversation.item.truncate"})
        assert (await client.until("error"))["error"]["code"] == "invalid_value"
    assert len(emulator.sessions[0].rejected) == 1


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_unknown_event_non_json_and_bad_base64(start, dialect: str) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, dialect) as client:
        await client.send({"type": "response.audio.delta" if dialect == "ga" else "session.updatee"})
        error = await client.until("error")
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["param"] == "type"
        assert ("response.audio.delta" if dialect == "ga" else "session.updatee") in error["error"]["message"]
        await client.ws.send("this is not json")
        assert (await client.until("error"))["error"]["code"] == "invalid_json"
        await client.send({"type": "input_audio_buffer.append", "audio": "%%%not base64%%%"})
        error = await client.until("error")
        assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "audio")
        assert (await greeting_done(client))["response"]["status"] == "completed"
    assert len(emulator.sessions[0].rejected) == 3
    if dialect == "ga":  # a GA-only session must not accept beta-only events
        async with connect(url, "ga") as client:
            await client.send({"type": "transcription_session.update", "session": {}})
            assert (await client.until("error"))["error"]["param"] == "type"


# ---------------------------------------------------------------------------------------------------
# handshake and connection


async def test_reject_beta_closes_with_4000(start) -> None:
    emulator, url = await start(reject_beta=True, **FAST)
    headers = {"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(f"{url}?model=gpt-realtime", additional_headers=headers, proxy=None) as ws:
        event = json.loads(await ws.recv())
        assert event["type"] == "error"
        assert event["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4000
    session = await emulator.wait_for_session()
    assert session.dialect == "beta" and session.rejected
    async with connect(url, "ga") as client:  # GA is unaffected
        assert client.events[0]["session"]["type"] == "realtime"


@pytest.mark.parametrize("status", [401, 429, 500])
async def test_refuse_status_on_upgrade(start, status: int) -> None:
    emulator, url = await start(refuse_status=status)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, proxy=None):
            pass
    assert info.value.response.status_code == status
    assert "error" in json.loads(info.value.response.body)
    assert emulator.sessions == []


async def test_server_side_close_and_injected_event(start) -> None:
    emulator, url = await start(**FAST)
    async with connect(url, "ga") as client:
        session = await emulator.wait_for_session()
        session.send_server_event(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "session_expired",
                    "message": "Your session hit the maximum duration of 60 minutes.",
                },
            }
        )
        assert (await client.until("error"))["error"]["code"] == "session_expired"
        await session.close(1011)
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.ws.close_code == 1011
    assert session.closed


async def test_client_disconnect_mid_response_is_clean(start, caplog: pytest.LogCaptureFixture) -> None:
    emulator, url = await start(speed=1.0, first_delta_delay_ms=5)
    async with connect(url, "ga") as client:
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
    session = emulator.sessions[0]
    async with asyncio.timeout(3):
        while not session.closed:  # noqa: ASYNC110 -- a plain flag is the API tests get
            await asyncio.sleep(0.01)
    assert not session._tasks and session._writer is not None and session._writer.done()
    assert session.responses[0].status == "in_progress"  # nobody was told: the client is gone
    emulator.script_reply(ScriptedReply(audio_pcm24k=tone(24000, 0.2).tobytes()))
    async with connect(url, "ga") as client:  # the emulator carries on
        await greeting_done(client)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_wait_for_session_and_concurrent_sessions(start) -> None:
    emulator, url = await start(**FAST)
    waiter = asyncio.create_task(emulator.wait_for_session(2, timeout=5))
    async with connect(url, "ga") as one, connect(url, "beta") as two:
        second = await waiter
        assert second is emulator.sessions[1] and second.dialect == "beta"
        await asyncio.gather(greeting_done(one), greeting_done(two))
    with pytest.raises(TimeoutError):
        await emulator.wait_for_session(3, timeout=0.05)


async def test_stall_pauses_deltas(start) -> None:
    _, url = await start(speed=20.0, first_delta_delay_ms=5, stall_after_ms=1000, stall_ms=600)
    async with connect(url, "ga") as client:
        await greeting_done(client)
    times = [t for t, e in zip(client.times, client.events, strict=True) if e["type"] == AUDIO_DELTA["ga"]]
    gaps = np.diff(times)
    stall_at = int(np.argmax(gaps))
    assert gaps[stall_at] >= 0.5
    assert stall_at == 9  # after 10 deltas of 100 ms
    assert np.delete(gaps, stall_at).max() < 0.45


async def test_deltas_are_paced_by_speed(start) -> None:
    _, url = await start(speed=10.0, first_delta_delay_ms=5)
    async with connect(url, "ga") as client:
        await greeting_done(client)
    times = [t for t, e in zip(client.times, client.events, strict=True) if e["type"] == AUDIO_DELTA["ga"]]
    spoken = audio_ms(client.events, "ga") / 1000
    assert times[-1] - times[0] >= 0.5 * spoken / 10
    assert times[-1] - times[0] < 3 * spoken / 10 + 0.5


# ---------------------------------------------------------------------------------------------------
# contract: everything the emulator sends validates against the SDK server types


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_every_sent_event_validates_against_sdk_types(start, dialect: str) -> None:
    emulator, url = await start(**FAST)
    emulator.script_reply(ScriptedReply(tool_call=("lookup", {"q": "x"})))
    model = "gpt-realtime" if dialect == "ga" else "gpt-4o-realtime-preview"
    async with connect(url, dialect, model=model) as client:
        update = update_event(dialect, "g711_ulaw")
        if dialect == "ga":
            update["session"]["audio"]["input"]["transcription"] = {"model": "gpt-4o-mini-transcribe"}
        else:
            update["session"]["input_audio_transcription"] = {"model": "whisper-1"}
        await client.send(update)
        await client.until("session.updated")
        await greeting_done(client)  # the scripted tool call
        call_id = client.of_type("response.function_call_arguments.done")[0]["call_id"]
        output = {"type": "function_call_output", "call_id": call_id, "output": "{}"}
        await client.send({"type": "conversation.item.create", "item": output})
        done = await greeting_done(client)
        item_id = done["response"]["output"][0]["id"]
        await client.append(wire(utterance(8000), "g711_ulaw", 8000), chunk=160)
        await client.until("conversation.item.input_audio_transcription.completed")
        await client.until("response.done")
        await client.send(
            {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 10}
        )
        await client.until("conversation.item.truncated")
        await client.send({"type": "response.cancel"})
        await client.until("error")
        await client.send(
            {"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "v"}}}
        )
        await client.until("response.done")
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        await client.until("conversation.item.retrieved")
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.send({"type": "conversation.item.delete", "item_id": item_id})
        await client.until("conversation.item.deleted")

    server_types = GA_SERVER if dialect == "ga" else BETA_SERVER
    for event in client.events:
        assert event["type"] in server_types, event["type"]
        validate_server_event(event, dialect)
    seen = {e["type"] for e in client.events}
    assert {
        "response.function_call_arguments.done",
        "conversation.item.input_audio_transcription.completed",
    } <= seen
    assert AUDIO_DELTA[dialect] in seen and TRANSCRIPT_DELTA[dialect] in seen
    ids = [e["event_id"] for e in client.events]
    assert len(set(ids)) == len(ids) and all(i.startswith("event_") for i in ids)
    responses = [e["response"]["id"] for e in client.of_type("response.created")]
    assert len(set(responses)) == len(responses) and all(r.startswith("resp_") for r in responses)
    items = [e["item"]["id"] for e in client.of_type("response.output_item.added")]
    assert len(set(items)) == len(items) and all(i.startswith("item_") for i in items)
    assert not emulator.sessions[0].rejected[:-1]  # only the deliberate response.cancel


# ---------------------------------------------------------------------------------------------------
# schema helper (docs/protocols.md §R12) and audio helpers


def test_type_maps_match_the_sdk_and_the_emulator() -> None:
    assert (len(GA_CLIENT), len(GA_SERVER), len(BETA_CLIENT), len(BETA_SERVER)) == (11, 46, 12, 34)
    assert set(GA_CLIENT) == set(GA_CLIENT_EVENT_TYPES)
    assert set(BETA_CLIENT) == set(BETA_CLIENT_EVENT_TYPES)


def test_validate_client_event_behaves_as_part_c_says() -> None:
    truncate = {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 5,
    }
    validate_client_event(truncate, "ga")
    with pytest.raises(ValidationError):
        validate_client_event({k: v for k, v in truncate.items() if k != "audio_end_ms"}, "ga")
    beta_update = {"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}
    with pytest.raises(ValidationError):
        validate_client_event(beta_update, "ga")
    validate_client_event(beta_update, "beta")
    typo = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"turn_detecton": None}}},
    }
    with pytest.raises(UnknownKeysError) as info:
        validate_client_event(typo, "ga")
    assert info.value.paths == ["$.session.audio.input.turn_detecton"]
    with pytest.raises(KeyError):
        validate_client_event({"type": "transcription_session.update", "session": {}}, "ga")
    assert unknown_keys(GA_CLIENT["response.cancel"].model_validate({"type": "response.cancel", "x": 1})) == [
        "$.x"
    ]


def test_g711_tables_match_audioop() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    everything = np.arange(-32768, 32768, dtype=np.int16)
    for fmt, to_law, from_law in (
        ("g711_ulaw", audioop.lin2ulaw, audioop.ulaw2lin),
        ("g711_alaw", audioop.lin2alaw, audioop.alaw2lin),
    ):
        encoded = encode_output(everything, 8000, fmt)
        assert encoded == to_law(everything.tobytes(), 2)
        codes = bytes(range(256))
        assert decode_g711(codes, fmt).tobytes() == from_law(codes, 2)


def test_resample_keeps_duration() -> None:
    pcm = tone(8000, 1.0)
    assert resample(pcm, 8000, 24000).size == 24000
    assert resample(resample(pcm, 8000, 24000), 24000, 8000).size == 8000


def test_runs_standalone() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.sim.realtime_emulator", "--port", "0", "--no-strict"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and "listening on" not in line:  # structlog prints to stdout too
            line = proc.stdout.readline()
        assert "ws://127.0.0.1:" in line and line.strip().endswith("/v1/realtime")

        async def probe(url: str) -> str:
            async with websockets.connect(url, proxy=None) as ws:
                return json.loads(await ws.recv())["type"]

        assert asyncio.run(probe(line.split()[-1])) == "session.created"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
