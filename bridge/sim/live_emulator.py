"""The Live API (GPT-Live) dialect of the emulator: one primary WebSocket session at /v1/live/sessions.

Follows docs/protocols.md §L in what a bridge depends on:

- `session.start` first, validated like the service's strict configuration; nothing else before
  `session.started`, and start, model, voice and audio format are fixed from then on.
- Duplex audio clocked by the input: every input frame the session consumes yields an output frame of
  the same duration, silence included, in the session's one audio format. Caller audio held back and
  then sent at once therefore comes back as an equal burst of output, as the public clients describe.
  All the model's timing (turn ends, reply delay, yielding) runs on that input clock, so what it does
  depends on the audio sent, never on how fast it arrives.
- Model-decided turns: the project's energy VAD hears the caller; when they fall silent the model
  replies (a queued `ScriptedReply`, else an echo of what they said, else the greeting); commentary asks
  it to speak. When the caller talks over it for `live_yield_ms` it stops on its own, and nothing can
  stop it from the client side. Transcript fragments for both sides carry session-timeline times.
- Delegation: a scripted tool call becomes `session.delegation.created`; under Responses delegation a
  function call arrives in `response.event` and is answered with `response.item.create` then
  `response.create` (every open call first), after which the model speaks again. Under client delegation
  a commentary append with the delegation's id answers it.
- Usage by duration (whole seconds, wall clock) in `session.usage.updated` and in `session.closed` with
  each documented reason: `close_requested` (session.close), `expired` (duration limit), and `content`,
  `remote_hangup` or `connection_lost` through `end(reason)`; a client that just disconnects leaves
  `connection_lost` on the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.clock import now_ms
from bridge.sim import realtime_schema as schema
from bridge.sim.carrier_emulator import DelayLine
from bridge.sim.emulated_connection import EmulatedConnection, Reject
from bridge.sim.emulated_model import (
    EmulatorConfig,
    ScriptedReply,
    Utterance,
    emulated_transcript,
    spoken_parts,
)
from bridge.sim.emulator_audio import encode_output, resample
from bridge.sim.realtime_schema import ProtocolError
from bridge.sim.vad import EnergyVad, SpeechStarted, SpeechStopped, VadEvent

# Limits the SDK's field descriptions give (docs/protocols.md §L2, §L6).
MAX_APPEND_TOKENS = 500
MAX_INSTRUCTIONS_TOKENS = 16_384
MAX_INPUT_ITEMS = 128
MAX_FIXTURE_S = 30
DEFAULT_FORMAT = {"type": "audio/pcm", "rate": 24000}
_LIVE_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
CLOSE_REASONS = ("close_requested", "expired", "content", "remote_hangup", "connection_lost")
_NOT_STARTED = ProtocolError(
    "session_not_started", "Send session.start first and wait for session.started before other commands."
)


def service_tokens(text: str) -> int:
    """Roughly what the service's tokenizer counts for English text: four characters a token."""
    return math.ceil(len(text) / 4)


@dataclass
class LiveTurn:
    """One stretch of the model's speech as the emulator produced it (session-timeline milliseconds)."""

    source: str  # reply | commentary | delegation | continuation | fixture
    start_ms: float
    planned_ms: float  # all it meant to say
    transcript: str  # all it meant to say, as text
    said_ms: float = 0.0  # what went out as output audio
    said: str = ""  # transcript fragments sent
    end_ms: float | None = None
    interrupted: bool = False  # it stopped itself: talked over, or a fixture took the output
    # now_ms() when the emulator produced the audio of its end (it did so while consuming the input
    # that reached end_ms): when it stopped, on the wall clock a carrier emulator's records share.
    ended_at_ms: float | None = None


@dataclass
class _Speaking:
    turn: LiveTurn
    samples: np.ndarray  # at the session's rate
    words: list[str]
    pos: int = 0
    said_words: int = 0
    words_from: int = 0  # session sample where the next transcript fragment starts
    fixture_event_id: str | None = None
    is_fixture: bool = False


@dataclass
class _Call:
    delegation_id: str
    name: str
    arguments: str
    output: str | None = None


@dataclass
class _Backend:
    """The emulated Responses backend of one session."""

    model: str
    calls: dict[str, _Call] = field(default_factory=dict)  # open function calls by call_id


class EmulatedLiveSession(EmulatedConnection):
    """One Live WebSocket connection. Public attributes are for tests to inspect."""

    def __init__(
        self,
        config: EmulatorConfig,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        next_script: Callable[[], ScriptedReply | None],
        validate: bool,
        network: DelayLine | None = None,
    ) -> None:
        super().__init__("live", headers, query, validate, network)
        self.state = "connected"  # connected | starting | started | closed
        self.session: dict[str, Any] | None = None  # the resolved configuration, as session.started said
        self.appended_pcm = bytearray()  # every input sample received, PCM16 at the session rate
        self.output_audio = bytearray()  # every output byte sent, in the session format
        self.turns: list[LiveTurn] = []
        self.context: list[dict] = []  # instructions/thinking/commentary appends: kind, content, ...
        self.delegations: list[dict] = []
        self.function_outputs: list[dict] = []
        self.close_reason: str | None = None
        self.usage_seconds: float | None = None  # final billable seconds, once the session ended
        self.muted = False
        self._config = config
        self._next_script = next_script
        self._fmt = "pcm16"
        self.rate = 24000
        self._vad: EnergyVad | None = None
        self._t = 0  # input samples consumed since session.started: the session clock
        self._out = np.zeros(0, np.int16)  # output samples not yet sent (under one frame)
        self._speaking: _Speaking | None = None
        self._reply_at: int | None = None
        self._reply_source = "reply"
        self._pending_ask: str | None = None
        self._yield_at: int | None = None
        self._caller_onset: int | None = None
        self._onset_while_speaking = False
        self._last_utterance: Utterance | None = None
        self._delegation_type = "client"
        self._backend: _Backend | None = None
        self._client_delegations: set[str] = set()  # ids a commentary append may answer
        self._started_wall: float | None = None
        self._last_usage_wall = 0.0
        self._handlers = {
            "session.start": self._on_start,
            "session.update": self._on_update,
            "session.input_audio.append": self._on_append,
            "session.input_audio.mute": self._on_mute,
            "session.input_audio.unmute": self._on_mute,
            "session.output_audio.fixture.play": self._on_fixture,
            "session.instructions.append": self._on_context,
            "session.thinking.append": self._on_context,
            "session.commentary.append": self._on_context,
            "decision.create": self._on_decision,
            "decision.item.create": self._on_decision,
            "decision.item.delete": self._on_decision,
            "response.item.create": self._on_backend_item,
            "response.create": self._on_backend_continue,
            "session.close": self._on_close,
        }

    # -- connection -------------------------------------------------------------------------------

    def _error_payload(self, error: ProtocolError, client_event_id: str | None) -> dict:
        return {
            "type": error.type,
            "code": error.code or "invalid_request",
            "message": error.message,
            "param": error.param,
            "client_event_id": client_event_id,
        }

    def _disconnected(self) -> None:
        if self.state == "started":  # gone without session.close: the service finalises it as lost
            self.close_reason = "connection_lost"
            self.usage_seconds = self._usage_seconds()
        self.state = "closed"

    async def end(self, reason: str) -> None:
        """End the session from the service's side with `session.closed` and that reason, then close."""
        self._finish(reason)
        await self._flush()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close(code=1000)

    def _finish(self, reason: str, client_event_id: str | None = None) -> None:
        if self.state != "started":
            return
        if self._speaking is not None:
            self._end_turn(self._t, interrupted=True)
        self.state = "closed"
        self.close_reason = reason
        self.usage_seconds = self._usage_seconds()
        self._emit(
            {
                "type": "session.closed",
                "reason": reason,
                "session": self.session,
                "usage": {"seconds": self.usage_seconds},
                "client_event_id": client_event_id,
            }
        )
        for task in self._tasks - {asyncio.current_task()}:  # the expiry timer may be what ends it
            task.cancel()

    def _usage_seconds(self) -> float:
        if self._started_wall is None:
            return 0.0
        return float(math.floor(time.monotonic() - self._started_wall))

    def _require_started(self) -> None:
        if self.state != "started":
            raise Reject(_NOT_STARTED)

    # -- start ------------------------------------------------------------------------------------

    def _on_start(self, event: dict) -> None:
        if self.state != "connected":
            raise Reject(ProtocolError("session_already_started", "session.start was already sent."))
        config = event["session"]
        self._check_start(config)
        fmt = (config.get("audio") or {}).get("format") or DEFAULT_FORMAT
        self._fmt, self.rate = _LIVE_FORMATS[fmt["type"]], int(fmt["rate"])
        delegation = copy.deepcopy(config.get("delegation") or {"type": "client"})
        delegation.setdefault("acknowledgement_delay_ms", 0)
        self._delegation_type = delegation["type"]
        if self._delegation_type == "responses":
            self._backend = _Backend(model=delegation["responses"]["model"])
        self.session = {
            "id": schema.new_id("live"),
            "expires_at": int(time.time() + self._config.live_max_session_s),
            "model": config["model"],
            "status": "active",
            "audio": {
                "format": dict(fmt),
                "output": {
                    "voice": ((config.get("audio") or {}).get("output") or {}).get("voice") or "marin"
                },
            },
            "delegation": delegation,
            "input": copy.deepcopy(config.get("input") or []),
            "store": bool(config.get("store", False)),
            "triggers": copy.deepcopy(config.get("triggers") or []),
        }
        for key in ("instructions", "safety_identifier"):
            if config.get(key):
                self.session[key] = config[key]
        self._vad = EnergyVad(
            self.rate,
            threshold_dbfs=self._config.vad_threshold_dbfs,
            silence_duration_ms=self._config.live_silence_ms,
        )
        self.state = "starting"
        client_event_id = event.get("event_id")
        if self._config.live_start_delay_ms > 0:
            self._spawn(self._start_later(client_event_id))
        else:
            self._started(client_event_id)

    def _check_start(self, config: dict) -> None:
        """What the service refuses beyond the SDK's types (docs/protocols.md §L1, §L2, §L3)."""

        def refuse(message: str, param: str) -> Reject:
            return Reject(ProtocolError("invalid_value", message, param))

        if not config.get("model"):
            raise refuse("session.model is required.", "session.model")
        if config.get("client") is not None:
            raise refuse("client is only accepted when creating a WebRTC session.", "session.client")
        delegation = config.get("delegation") or {}
        if delegation.get("type") == "decisions":
            raise refuse("Decisions delegation is not supported by this emulator.", "session.delegation.type")
        fmt = (config.get("audio") or {}).get("format")
        if fmt is not None and fmt["type"] in ("audio/pcmu", "audio/pcma") and fmt["rate"] != 8000:
            raise refuse("G.711 audio is 8000 Hz.", "session.audio.format.rate")
        if service_tokens(config.get("instructions") or "") > MAX_INSTRUCTIONS_TOKENS:
            raise refuse(
                f"instructions are limited to {MAX_INSTRUCTIONS_TOKENS} tokens.", "session.instructions"
            )
        items = config.get("input") or []
        if len(items) > MAX_INPUT_ITEMS:
            raise refuse(f"At most {MAX_INPUT_ITEMS} startup messages.", "session.input")
        for i, item in enumerate(items):
            if len(item.get("content") or []) != 1:
                raise refuse("Each startup message has exactly one text part.", f"session.input[{i}].content")

    async def _start_later(self, client_event_id: str | None) -> None:
        await asyncio.sleep(self._config.live_start_delay_ms / 1000)
        self._started(client_event_id)

    def _started(self, client_event_id: str | None) -> None:
        if self.state != "starting":
            return
        self.state = "started"
        self._started_wall = self._last_usage_wall = time.monotonic()
        self._emit({"type": "session.started", "session": self.session, "client_event_id": client_event_id})
        self._spawn(self._expire())

    async def _expire(self) -> None:
        await asyncio.sleep(self._config.live_max_session_s)
        await self.end("expired")

    def _on_update(self, event: dict) -> None:
        self._require_started()
        assert self.session is not None
        patch = event["session"]
        delegation = patch.get("delegation")
        if delegation is not None:
            if delegation["type"] != self._delegation_type:
                raise Reject(
                    ProtocolError(
                        "invalid_value", "The delegation type cannot change.", "session.delegation.type"
                    )
                )
            current = self.session["delegation"]
            for key, value in delegation.items():
                if key == "responses" and value is not None:
                    current["responses"] = {**current.get("responses", {}), **copy.deepcopy(value)}
                elif value is not None:
                    current[key] = value
            if self._backend is not None:
                self._backend.model = current["responses"]["model"]
        if patch.get("triggers") is not None:
            self.session["triggers"] = copy.deepcopy(patch["triggers"])
        self._emit(
            {"type": "session.updated", "session": self.session, "client_event_id": event.get("event_id")}
        )

    # -- audio in, audio out ----------------------------------------------------------------------

    def _on_append(self, event: dict) -> None:
        self._require_started()
        pcm = self._decode_append(event["audio"], self._fmt)
        if pcm.size:
            self.consume(pcm)

    def consume(self, pcm: np.ndarray) -> None:
        """The model hears `pcm` (PCM16 at the session rate) and says as much audio back."""
        assert self._vad is not None
        self.appended_pcm += pcm.tobytes()
        fixture = self._speaking is not None and self._speaking.is_fixture
        heard = np.zeros_like(pcm) if self.muted or fixture else pcm
        t0 = self._t
        for vad_event in self._vad.feed(heard):
            self._on_vad(vad_event)
        out = self._produce(t0, pcm.size)
        self._t = t0 + pcm.size
        self._send_audio(out)
        now = time.monotonic()
        if now - self._last_usage_wall >= self._config.live_usage_interval_s:
            self._last_usage_wall = now
            self._emit({"type": "session.usage.updated", "usage": {"seconds": self._usage_seconds()}})

    def _samples(self, ms: float) -> int:
        return round(ms * self.rate / 1000)

    def _ms(self, sample: int) -> float:
        return sample * 1000 / self.rate

    def _on_vad(self, event: VadEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._caller_onset = event.sample
            self._reply_at = None  # the caller is talking again: wait for them
            self._onset_while_speaking = self._speaking is not None
            if self._speaking is not None and not self._speaking.is_fixture:
                self._yield_at = event.sample + self._samples(self._config.live_yield_ms)
            return
        if not isinstance(event, SpeechStopped) or self._caller_onset is None:
            return
        onset, self._caller_onset = self._caller_onset, None
        spoken = np.frombuffer(self.appended_pcm, dtype="<i2")[onset : event.speech_end].copy()
        seconds = spoken.size / self.rate
        self._emit(
            {
                "type": "session.input_transcript.delta",
                "delta": emulated_transcript(seconds) + " ",
                "start_ms": int(self._ms(onset)),
                "end_ms": int(self._ms(event.speech_end)),
            }
        )
        if self._onset_while_speaking and spoken.size < self._samples(self._config.live_yield_ms):
            self._yield_at = None  # a backchannel ("mm-hm"): the model talks on, nothing to answer
            return
        self._last_utterance = (spoken, self.rate)
        self._schedule(event.sample, self._pending_ask or "reply")
        self._pending_ask = None

    def _schedule(self, at: int, source: str) -> None:
        self._reply_at = at + self._samples(self._config.live_reply_delay_ms)
        self._reply_source = source

    def _produce(self, t0: int, n: int) -> np.ndarray:
        """Output samples t0 .. t0+n: the model's speech where it speaks, digital silence elsewhere."""
        out = np.zeros(n, np.int16)
        t, end = t0, t0 + n
        while t < end:
            sp = self._speaking
            if sp is not None:
                limit = end if self._yield_at is None or self._yield_at >= end else max(t, self._yield_at)
                k = min(limit - t, sp.samples.size - sp.pos)
                out[t - t0 : t - t0 + k] = sp.samples[sp.pos : sp.pos + k]
                sp.pos += k
                t += k
                self._say(sp, t)
                if sp.pos >= sp.samples.size:
                    self._end_turn(t, interrupted=False)
                elif self._yield_at is not None and t >= self._yield_at:
                    self._yield_at = None
                    if self._caller_still_talking(t):
                        self._end_turn(t, interrupted=True)
                continue
            if self._reply_at is not None and self._reply_at < end:
                t = max(t, self._reply_at)
                self._reply_at = None
                self._begin(t, self._reply_source)
                continue
            break
        return out

    def _caller_still_talking(self, t: int) -> bool:
        assert self._vad is not None
        return self._vad.speaking and self._vad.last_loud_sample >= t - self._samples(100)

    def _send_audio(self, out: np.ndarray) -> None:
        frame = self._samples(self._config.live_frame_ms)
        pending = np.concatenate((self._out, out)) if self._out.size else out
        whole = pending.size - pending.size % frame
        for i in range(0, whole, frame):
            chunk = encode_output(pending[i : i + frame], self.rate, self._fmt, self.rate)
            self.output_audio += chunk
            self._emit(
                {"type": "session.output_audio.delta", "delta": base64.b64encode(chunk).decode("ascii")}
            )
        self._out = pending[whole:].copy()

    # -- the model's turns ------------------------------------------------------------------------

    def _ask(self, source: str) -> None:
        """Speak when the floor is free: now (after the reply delay), or once the caller or model is done."""
        assert self._vad is not None
        if self._speaking is not None or self._vad.speaking:
            self._pending_ask = source
        else:
            self._schedule(self._t, source)

    def _begin(self, t: int, source: str) -> None:
        if self._speaking is not None:
            return  # already talking
        script = self._next_script()
        if script is not None and script.tool_call is not None:
            self._delegate(*script.tool_call, t)
            return
        parts = spoken_parts(script, self._last_utterance)
        samples = np.concatenate([resample(pcm, rate, self.rate) for pcm, rate, _ in parts])
        text = " ".join(text for _, _, text in parts if text)
        self._speak(t, source, samples, text)

    def _speak(
        self, t: int, source: str, samples: np.ndarray, text: str, fixture_event: str | None = None
    ) -> None:
        turn = LiveTurn(
            source=source, start_ms=self._ms(t), planned_ms=self._ms(samples.size), transcript=text
        )
        self.turns.append(turn)
        words = [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]] if text else []
        self._speaking = _Speaking(
            turn=turn,
            samples=samples.astype(np.int16, copy=False),
            words=words,
            words_from=t,
            fixture_event_id=fixture_event,
            is_fixture=source == "fixture",
        )

    def _say(self, sp: _Speaking, t: int) -> None:
        """Transcript fragments keep pace with the audio produced."""
        if not sp.words or not sp.samples.size:
            return
        due = math.ceil(len(sp.words) * sp.pos / sp.samples.size)
        if due <= sp.said_words:
            return
        text = "".join(sp.words[sp.said_words : due])
        sp.said_words = due
        sp.turn.said += text
        self._emit(
            {
                "type": "session.output_transcript.delta",
                "delta": text,
                "start_ms": int(self._ms(sp.words_from)),
                "end_ms": int(self._ms(t)),
            }
        )
        sp.words_from = t

    def _end_turn(self, t: int, interrupted: bool) -> None:
        sp = self._speaking
        assert sp is not None
        self._speaking = None
        self._yield_at = None
        sp.turn.end_ms = self._ms(t)
        sp.turn.ended_at_ms = now_ms()
        sp.turn.said_ms = self._ms(sp.pos)
        sp.turn.interrupted = interrupted
        if sp.is_fixture:
            if not interrupted:
                self._emit(
                    {"type": "session.output_audio.fixture.played", "client_event_id": sp.fixture_event_id}
                )
            return
        if not interrupted and self._pending_ask is not None:
            source, self._pending_ask = self._pending_ask, None
            self._schedule(t, source)

    # -- context ----------------------------------------------------------------------------------

    def _on_context(self, event: dict) -> None:
        self._require_started()
        kind = event["type"].split(".")[1]  # instructions | thinking | commentary
        if self._speaking is not None and self._speaking.is_fixture:
            raise Reject(
                ProtocolError("invalid_value", f"{event['type']} is rejected while a fixture plays.")
            )
        if service_tokens(event["content"]) > MAX_APPEND_TOKENS:
            raise Reject(
                ProtocolError(
                    "invalid_value", f"content is limited to {MAX_APPEND_TOKENS} tokens.", "content"
                )
            )
        delegation_id = event["delegation_id"]
        if delegation_id is not None:
            if self._delegation_type == "responses":
                raise Reject(
                    ProtocolError(
                        "invalid_value",
                        "Non-null delegation IDs are not accepted with Responses delegation.",
                        "delegation_id",
                    )
                )
            if delegation_id not in self._client_delegations:
                raise Reject(
                    ProtocolError("invalid_value", f"Unknown delegation '{delegation_id}'.", "delegation_id")
                )
        now = int(self._ms(self._t))
        self.context.append(
            {"kind": kind, "content": event["content"], "delegation_id": delegation_id, "at_ms": now}
        )
        self._emit(
            {
                "type": f"session.{kind}.appended",
                "start_ms": now,
                "end_ms": now,
                "client_event_id": event.get("event_id"),
            }
        )
        if kind != "commentary":
            return  # a rule or silent context: heard, not answered
        self._ask("delegation" if delegation_id is not None else "commentary")

    def _on_mute(self, event: dict) -> None:
        self._require_started()
        self.muted = event["type"] == "session.input_audio.mute"
        kind = "session.input_audio.muted" if self.muted else "session.input_audio.unmuted"
        self._emit({"type": kind, "client_event_id": event.get("event_id")})

    def _on_fixture(self, event: dict) -> None:
        self._require_started()
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise Reject(ProtocolError("invalid_value", "Invalid 'audio': not base64.", "audio")) from None
        if len(raw) % 2 or len(raw) > MAX_FIXTURE_S * 24000 * 2:
            raise Reject(
                ProtocolError(
                    "invalid_value", f"A fixture is PCM16 24 kHz mono, at most {MAX_FIXTURE_S} s.", "audio"
                )
            )
        if self._speaking is not None and self._speaking.is_fixture:
            raise Reject(ProtocolError("invalid_value", "Only one fixture can be active."))
        if self._speaking is not None:
            self._end_turn(self._t, interrupted=True)
        self._reply_at, self._pending_ask, self._yield_at = None, None, None
        samples = resample(np.frombuffer(raw, dtype="<i2"), 24000, self.rate)
        self._emit({"type": "session.output_audio.fixture.playing", "client_event_id": event.get("event_id")})
        self._speak(self._t, "fixture", samples, "", fixture_event=event.get("event_id"))

    def _on_decision(self, event: dict) -> None:
        self._require_started()
        raise Reject(ProtocolError("invalid_value", "Decisions are not supported by this emulator."))

    # -- delegation -------------------------------------------------------------------------------

    def _delegate(self, name: str, arguments: dict, t: int) -> None:
        delegation_id = schema.new_id("dlg")
        delegation: dict[str, Any] = {
            "id": delegation_id,
            "target": self._delegation_type,
            "type": "delegation",
        }
        record = {
            "delegation_id": delegation_id,
            "target": self._delegation_type,
            "name": name,
            "arguments": arguments,
        }
        self.delegations.append(record)
        if self._backend is None:
            self._client_delegations.add(delegation_id)
            self._emit(
                {
                    "type": "session.delegation.created",
                    "delegation": delegation,
                    "offset_ms": int(self._ms(t)),
                }
            )
            return
        stream = _BackendStream(self, delegation_id, self._backend.model)
        delegation["response_id"] = stream.response_id
        self._emit(
            {"type": "session.delegation.created", "delegation": delegation, "offset_ms": int(self._ms(t))}
        )
        call_id, item_id = schema.new_id("call"), schema.new_id("fc")
        args = json.dumps(arguments)
        call_item = {
            "id": item_id,
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": args,
        }
        stream.send({"type": "response.created", "response": stream.response("in_progress")})
        stream.send(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": call_item | {"status": "in_progress", "arguments": ""},
            }
        )
        stream.send(
            {
                "type": "response.function_call_arguments.done",
                "item_id": item_id,
                "output_index": 0,
                "arguments": args,
            }
        )
        stream.send(
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": call_item | {"status": "completed"},
            }
        )
        stream.send({"type": "response.completed", "response": stream.response("completed", usage=len(args))})
        self._backend.calls[call_id] = _Call(delegation_id, name, args)

    def _on_backend_item(self, event: dict) -> None:
        self._require_started()
        backend = self._require_backend()
        item = event["item"]
        if item.get("type") == "function_call_output":
            call = backend.calls.get(item["call_id"])
            if call is None or call.output is not None:
                raise Reject(
                    ProtocolError(
                        "invalid_value",
                        f"No open function call with call_id '{item['call_id']}'.",
                        "item.call_id",
                    )
                )
            call.output = item["output"] if isinstance(item["output"], str) else str(item["output"])
            self.function_outputs.append(
                {"call_id": item["call_id"], "name": call.name, "output": call.output}
            )

    def _on_backend_continue(self, event: dict) -> None:
        self._require_started()
        backend = self._require_backend()
        waiting = [call_id for call_id, call in backend.calls.items() if call.output is None]
        if waiting:
            raise Reject(
                ProtocolError(
                    "invalid_value",
                    "Every open function call needs its output before response.create: " + ", ".join(waiting),
                )
            )
        answered = list(backend.calls.values())
        backend.calls.clear()
        delegation_id = answered[-1].delegation_id if answered else None
        text = "; ".join(f"{call.name} returned {call.output[:200]}" for call in answered) or "Done."
        stream = _BackendStream(self, delegation_id, backend.model)
        message_id = schema.new_id("msg")
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        stream.send({"type": "response.created", "response": stream.response("in_progress")})
        stream.send({"type": "response.output_item.added", "output_index": 0, "item": message})
        ref = {"item_id": message_id, "output_index": 0, "content_index": 0, "logprobs": []}
        stream.send({"type": "response.output_text.delta", **ref, "delta": text})
        stream.send({"type": "response.output_text.done", **ref, "text": text})
        done = message | {
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        stream.send({"type": "response.output_item.done", "output_index": 0, "item": done})
        stream.send({"type": "response.completed", "response": stream.response("completed", usage=len(text))})
        self._ask("continuation")  # the voice model speaks the result in its own words

    def _require_backend(self) -> _Backend:
        if self._backend is None:
            raise Reject(ProtocolError("invalid_value", "This command requires Responses delegation."))
        return self._backend

    # -- close ------------------------------------------------------------------------------------

    def _on_close(self, event: dict) -> None:
        self._require_started()
        self._finish("close_requested", event.get("event_id"))
        self._spawn_close()

    def _spawn_close(self) -> None:
        async def close_after_flush() -> None:
            await self._flush()
            if self._ws is not None and not self._ws.closed:
                await self._ws.close(code=1000)

        # Not through _spawn: _finish cancelled the session's tasks, this one must outlive that.
        asyncio.get_running_loop().create_task(close_after_flush())


class _BackendStream:
    """The Responses streaming events of one backend response, each wrapped in `response.event`."""

    def __init__(self, session: EmulatedLiveSession, delegation_id: str | None, model: str) -> None:
        self.session = session
        self.delegation_id = delegation_id
        self.model = model
        self.response_id = schema.new_id("resp")
        self.created_at = int(time.time())
        self._sequence = 0

    def response(self, status: str, usage: int = 0) -> dict:
        # Lifecycle snapshots carry no input, instructions, tools or output (docs/protocols.md §L7).
        obj: dict[str, Any] = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.model,
            "status": status,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if status == "completed":
            output_tokens = max(1, usage // 4)
            obj["usage"] = {
                "input_tokens": 200,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 200 + output_tokens,
            }
        return obj

    def send(self, inner: dict) -> None:
        inner["sequence_number"] = self._sequence
        self._sequence += 1
        self.session._emit({"type": "response.event", "event": inner, "delegation_id": self.delegation_id})
