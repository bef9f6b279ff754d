"""An in-process emulator of the OpenAI Realtime API over WebSocket (GA and beta dialects).

The bridge connects to it exactly as to `wss://api.openai.com/v1/realtime?model=...`. It powers the
end-to-end tests, the no-API-key demo mode and the load benchmark, so it follows docs/protocols.md §R
in the behaviours a bridge depends on (event names and order, server VAD, barge-in, truncate/cancel
errors) and keeps per-session CPU low.

What the "model" says: a queued `ScriptedReply` if any, else the caller's last utterance played back
(echo), else a recorded greeting. With input transcription on, each caller turn is "transcribed" as
the next scripted caller words if any, else as a line saying the emulator heard no words (it has no
speech recognition). Audio is streamed `speed` times faster than real time, like the real
model, so responses are usually done long before the caller has heard them.

The same server also speaks the Live API (GPT-Live) at /v1/live/sessions: see `live_emulator`.

Layout: `EmulatedSession` holds one connection's state (the connection machinery it shares with the Live
dialect is `EmulatedConnection`); client events are handled synchronously and emit server events into an
outbox that a writer task sends; only response streaming (pacing) is async.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from aiohttp import web

from bridge.clock import now_ms
from bridge.sim import realtime_schema as schema
from bridge.sim.carrier_emulator import DelayLine
from bridge.sim.emulated_connection import EmulatedConnection, Reject
from bridge.sim.emulated_model import (
    GREETING_TRANSCRIPT,
    EmulatorConfig,
    ScriptedReply,
    emulated_summary,
    emulated_transcript,
    said_words,
    spoken_parts,
    upstream_line,
    words_to_say,
)
from bridge.sim.emulator_audio import bytes_per_ms, encode_output, greeting_pcm24k, murmur_pcm24k
from bridge.sim.live_emulator import EmulatedLiveSession
from bridge.sim.realtime_schema import ProtocolError
from bridge.sim.vad import EnergyVad, SpeechStarted, SpeechStopped, VadEvent

# The emulator's public surface, including what it re-exports from the modules it is built from.
__all__ = [
    "GREETING_TRANSCRIPT",
    "EmulatedLiveSession",
    "EmulatedSession",
    "EmulatorConfig",
    "RealtimeEmulator",
    "ScriptedReply",
    "emulated_transcript",
    "greeting_pcm24k",
]

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # a 15 MiB append plus base64 and JSON overhead
MIN_COMMIT_MS = 100


@dataclass
class EmulatedItem:
    """One output item of a response, as actually sent to the client."""

    item_id: str
    type: str = "message"  # "message" | "function_call"
    status: str = "in_progress"  # in_progress | completed | incomplete
    audio: bytearray = field(default_factory=bytearray)  # audio sent, in the response's output format
    bytes_per_ms: int = 48
    transcript: str = ""  # transcript (or text) sent so far
    name: str | None = None
    call_id: str | None = None
    arguments: str = ""

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // self.bytes_per_ms


@dataclass
class EmulatedResponse:
    id: str
    conversation: str  # "auto" or "none" (out of band)
    trigger: str  # "turn" (server VAD) or "client" (response.create)
    modality: str  # "audio" or "text"
    output_format: str  # pcm16 | g711_ulaw | g711_alaw
    instructions: str | None = None
    metadata: dict | None = None
    status: str = "in_progress"  # in_progress | completed | cancelled
    cancel_reason: str | None = None  # turn_detected | client_cancelled
    items: list[EmulatedItem] = field(default_factory=list)
    created_at: float = 0.0  # event loop time
    done_at: float | None = None


# ---------------------------------------------------------------------------------------------------
# Sessions


@dataclass
class _Plan:
    segments: list[tuple[bytes, str]] = field(default_factory=list)  # (audio in output format, transcript)
    tool_call: tuple[str, dict] | None = None


@dataclass(eq=False)
class _Run:
    response: EmulatedResponse
    plan: _Plan
    voice: str
    task: asyncio.Task | None = None
    started_at: float = 0.0  # loop time of the first delta, moved on by a stall
    sent_ms: float = 0.0  # audio sent so far, all items
    stalled: bool = False


@dataclass
class _Speech:
    item_id: str
    onset: int  # VAD sample of the first loud sample


class EmulatedSession(EmulatedConnection):
    """One Realtime WebSocket connection. Public attributes are for tests to inspect."""

    def __init__(
        self,
        config: EmulatorConfig,
        dialect: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        next_script: Callable[[], ScriptedReply | None],
        validate: bool,
        network: DelayLine | None = None,
        next_caller_words: Callable[[], str | None] = lambda: None,
    ) -> None:
        super().__init__(dialect, headers, query, validate, network)
        self._next_caller_words = next_caller_words
        self.appended_pcm = bytearray()
        self.truncations: list[dict] = []
        self.responses: list[EmulatedResponse] = []
        self.conversation: list[dict] = []  # items in conversation order, as the server holds them
        self.session_config = schema.default_session(dialect, self.query.get("model") or "gpt-realtime")
        self._config = config
        self._next_script = next_script
        self._view = schema.view(self.session_config, dialect)
        self.input_rate = schema.FORMAT_RATES[self._view.input_format]
        self._vad = self._new_vad()
        self._clock_base_ms = 0.0  # session audio before the current VAD clock (input format changes)
        self._buffer = bytearray()  # uncommitted input audio, PCM16 at input_rate
        self._buffer_start = 0  # VAD sample of _buffer[0]
        self._speech: _Speech | None = None
        self._last_utterance: tuple[np.ndarray, int] | None = None
        self._last_text: str | None = None  # what it was given last, when that was a text message
        self._committed_ms = 0.0
        self._conversation_id = schema.new_id("conv")
        self._active: _Run | None = None  # the response writing to the default conversation
        self._runs: set[_Run] = set()
        self._assistant_items: dict[str, EmulatedItem] = {}
        self._truncated_ms: dict[str, int] = {}  # audio the server still holds for truncated items
        self._audio_produced = False
        self._handlers = {
            "session.update": self._on_session_update,
            "transcription_session.update": self._on_transcription_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_item_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    # -- connection edge --------------------------------------------------------------------------

    async def _opened(self, ws: web.WebSocketResponse) -> bool:
        if self.dialect == "beta" and self._config.reject_beta:
            await self._reject_beta(ws)
            return False
        self._emit({"type": "session.created", "session": self.session_config})
        return True

    async def _reject_beta(self, ws: web.WebSocketResponse) -> None:
        self._reject(
            ProtocolError(
                "beta_api_shape_disabled",
                "The Realtime API beta interface is no longer available. Remove the "
                "'OpenAI-Beta: realtime=v1' header and use the GA event shapes.",
            )
        )
        await self._flush()
        await ws.close(code=4000, message=b"beta_api_shape_disabled")

    def _stop(self) -> None:
        super()._stop()
        self._runs.clear()
        self._active = None

    # -- session ----------------------------------------------------------------------------------

    def _on_session_update(self, event: dict) -> None:
        try:
            merged = schema.merge_session(
                self.session_config, event["session"], self.dialect, voice_locked=self._audio_produced
            )
        except schema.SessionUpdateError as exc:
            raise Reject(exc.error) from None
        old, self.session_config = self._view, merged
        self._view = schema.view(merged, self.dialect)
        self._apply_session_change(old)
        self._emit({"type": "session.updated", "session": self.session_config})

    def _on_transcription_session_update(self, event: dict) -> None:
        raise Reject(
            ProtocolError("invalid_value", "Transcription sessions are not supported by this emulator.")
        )

    def _apply_session_change(self, old: schema.SessionView) -> None:
        new = self._view
        if new.input_format != old.input_format:
            # A different rate starts a new VAD clock; pending input audio cannot be mixed with the old rate.
            self._clock_base_ms += self._vad.ms(self._vad.samples_fed)
            self.input_rate = schema.FORMAT_RATES[new.input_format]
            self._vad = self._new_vad()
            self._buffer.clear()
            self._buffer_start = 0
            self._carry = b""
            self._speech = None
            return
        threshold_dbfs, silence_ms = self._vad_params()
        self._vad.configure(threshold_dbfs=threshold_dbfs, silence_duration_ms=silence_ms)
        old_type = old.turn_detection and old.turn_detection.get("type")
        new_type = new.turn_detection and new.turn_detection.get("type")
        if old_type != new_type:
            self._vad.reset()
            self._speech = None

    def _vad_params(self) -> tuple[float, int]:
        td = self._view.turn_detection or {}
        # Map the API's 0..1 threshold onto +/-20 dB around the configured level (0.5 = configured).
        threshold = td.get("threshold")
        dbfs = self._config.vad_threshold_dbfs + ((threshold if threshold is not None else 0.5) - 0.5) * 40
        silence = td.get("silence_duration_ms")
        return dbfs, int(silence if silence is not None else 500)

    def _new_vad(self) -> EnergyVad:
        threshold_dbfs, silence_ms = self._vad_params()
        return EnergyVad(self.input_rate, threshold_dbfs=threshold_dbfs, silence_duration_ms=silence_ms)

    # -- input audio ------------------------------------------------------------------------------

    def _clock_ms(self, sample: int) -> float:
        return self._clock_base_ms + self._vad.ms(sample)

    def _on_append(self, event: dict) -> None:
        pcm = self._decode_append(event["audio"], self._view.input_format)
        chunk = pcm.tobytes()
        self.appended_pcm += chunk
        self._buffer += chunk
        vad_events = self._vad.feed(pcm)
        if self._view.turn_detection is not None:
            for vad_event in vad_events:
                self._on_vad(vad_event)
            if self._speech is None:
                self._trim_idle_buffer()

    def _trim_idle_buffer(self) -> None:
        # With server VAD only the prefix padding before speech can end up in an item; keep a margin for a
        # speech start the VAD has not confirmed yet, and do not let hours of silence pile up.
        td = self._view.turn_detection or {}
        keep = round(((td.get("prefix_padding_ms") or 0) + 1000) * self.input_rate / 1000)
        excess = len(self._buffer) // 2 - keep
        if excess > 0:
            del self._buffer[: excess * 2]
            self._buffer_start += excess

    def _on_vad(self, event: VadEvent) -> None:
        td = self._view.turn_detection or {}
        if isinstance(event, SpeechStarted):
            prefix = round((td.get("prefix_padding_ms") or 0) * self.input_rate / 1000)
            start = max(self._buffer_start, event.sample - prefix)
            # Audio before the prefix padding never becomes part of the user item.
            del self._buffer[: (start - self._buffer_start) * 2]
            self._buffer_start = start
            self._speech = _Speech(item_id=schema.new_id("item"), onset=event.sample)
            self._emit(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": int(self._clock_ms(start)),
                    "item_id": self._speech.item_id,
                }
            )
            if self._active is not None and td.get("interrupt_response", True):
                self._cancel(self._active, "turn_detected")
        elif isinstance(event, SpeechStopped) and self._speech is not None:
            speech, self._speech = self._speech, None
            self._emit(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": int(self._clock_ms(event.sample)),
                    "item_id": speech.item_id,
                }
            )
            cut = (event.sample - self._buffer_start) * 2
            committed = np.frombuffer(bytes(self._buffer[:cut]), dtype="<i2")
            del self._buffer[:cut]
            spoken = committed[speech.onset - self._buffer_start : event.speech_end - self._buffer_start]
            self._buffer_start = event.sample
            self._commit(speech.item_id, committed, spoken)
            if td.get("create_response", True) and self._active is None:
                self._start_response("turn", {})

    def _on_commit(self, event: dict) -> None:
        buffered_ms = len(self._buffer) / 2 * 1000 / self.input_rate
        if buffered_ms < MIN_COMMIT_MS:
            raise Reject(
                ProtocolError(
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small. Expected at least "
                    f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                )
            )
        item_id = self._speech.item_id if self._speech is not None else schema.new_id("item")
        committed = np.frombuffer(bytes(self._buffer), dtype="<i2")
        self._reset_buffer()
        self._commit(item_id, committed, committed)

    def _on_clear(self, event: dict) -> None:
        self._reset_buffer()
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_output_audio_buffer_clear(self, event: dict) -> None:
        raise Reject(
            ProtocolError(
                "invalid_value", "output_audio_buffer.clear is only supported for WebRTC and SIP connections."
            )
        )

    def _reset_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_start = self._vad.samples_fed
        self._vad.reset()
        self._speech = None

    def _commit(self, item_id: str, committed: np.ndarray, spoken: np.ndarray) -> None:
        previous = self.conversation[-1]["id"] if self.conversation else None
        self._emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._insert_item(item, previous)
        self._committed_ms += committed.size * 1000 / self.input_rate
        self._last_utterance = (spoken.copy(), self.input_rate)
        self._last_text = None
        if self._view.transcription:
            seconds = spoken.size / self.input_rate
            transcript = self._next_caller_words() or emulated_transcript(seconds)
            item["content"][0]["transcript"] = transcript
            audio_tokens = max(1, round(seconds * 10))
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": {
                        "type": "tokens",
                        "input_tokens": audio_tokens,
                        "output_tokens": 6,
                        "total_tokens": audio_tokens + 6,
                        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
                    },
                }
            )

    # -- conversation -----------------------------------------------------------------------------

    def _index(self, item_id: str) -> int | None:
        return next((i for i, item in enumerate(self.conversation) if item.get("id") == item_id), None)

    def _insert_item(self, item: dict, previous_item_id: str | None, done: bool = True) -> None:
        """Insert after `previous_item_id` (None: at the end, "root": at the start) and announce it."""
        if previous_item_id is None:
            index = len(self.conversation)
        elif previous_item_id == "root":
            index = 0
        else:
            found = self._index(previous_item_id)
            if found is None:
                raise Reject(
                    ProtocolError(
                        "invalid_value",
                        f"Previous item with item_id '{previous_item_id}' not found in the conversation.",
                        "previous_item_id",
                    )
                )
            index = found + 1
        previous = self.conversation[index - 1]["id"] if index > 0 else None
        self.conversation.insert(index, item)
        if self.dialect == "ga":
            self._emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
            if done:
                self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        else:
            self._emit({"type": "conversation.item.created", "previous_item_id": previous, "item": item})

    def _item_done(self, item: dict) -> None:
        index = self._index(item["id"])
        if self.dialect == "ga" and index is not None:
            previous = self.conversation[index - 1]["id"] if index > 0 else None
            self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    def _find(self, item_id: str) -> dict:
        index = self._index(item_id)
        if index is None:
            raise Reject(
                ProtocolError(
                    "invalid_value", f"Conversation item with item_id '{item_id}' not found.", "item_id"
                )
            )
        return self.conversation[index]

    def _on_item_create(self, event: dict) -> None:
        item = copy.deepcopy(event["item"])
        if item.get("id") is None:
            item["id"] = schema.new_id("item")
        elif self._index(item["id"]) is not None:
            raise Reject(
                ProtocolError("invalid_value", f"Item with item_id '{item['id']}' already exists.", "item.id")
            )
        item.setdefault("object", "realtime.item")
        item["status"] = "completed"
        self._insert_item(item, event.get("previous_item_id"))
        if item.get("type") == "message" and item.get("role") == "user":
            parts = [c.get("text") or "" for c in item.get("content") or [] if c.get("type") == "input_text"]
            self._last_text = " ".join(p.strip() for p in parts if p.strip()) or None

    def _on_item_retrieve(self, event: dict) -> None:
        self._emit({"type": "conversation.item.retrieved", "item": self._find(event["item_id"])})

    def _on_item_delete(self, event: dict) -> None:
        item = self._find(event["item_id"])
        self.conversation.remove(item)
        self._emit({"type": "conversation.item.deleted", "item_id": item["id"]})

    def _on_item_truncate(self, event: dict) -> None:
        item_id, content_index, audio_end_ms = event["item_id"], event["content_index"], event["audio_end_ms"]
        item = self._find(item_id)
        if item.get("type") != "message" or item.get("role") != "assistant":
            raise Reject(
                ProtocolError("invalid_value", "Only assistant messages can be truncated.", "item_id")
            )
        if content_index != 0:
            raise Reject(
                ProtocolError(
                    "invalid_value",
                    f"Invalid content_index: {content_index}. The item has one content part.",
                    "content_index",
                )
            )
        if audio_end_ms < 0:
            raise Reject(
                ProtocolError(
                    "invalid_value", "Invalid 'audio_end_ms': must be non-negative.", "audio_end_ms"
                )
            )
        sent = self._assistant_items.get(item_id)
        held = self._truncated_ms.get(item_id, sent.audio_ms if sent is not None else 0)
        if audio_end_ms > held:
            # docs/protocols.md §R8: exact text, no param, error.event_id null even when the client set one.
            raise Reject(
                ProtocolError(
                    "invalid_value", f"Audio content of {held}ms is already shorter than {audio_end_ms}ms"
                ),
                tie_event_id=False,
            )
        self.truncations.append(
            {
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
                "audio_sent_ms": held,
            }
        )
        part = item["content"][0] if item.get("content") else {}
        transcript = part.get("transcript") or ""
        if "transcript" in part:
            part["transcript"] = transcript[: round(len(transcript) * audio_end_ms / held)] if held else ""
        self._truncated_ms[item_id] = audio_end_ms
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    # -- responses --------------------------------------------------------------------------------

    def _on_response_create(self, event: dict) -> None:
        self._start_response("client", event.get("response") or {})

    def _on_response_cancel(self, event: dict) -> None:
        response_id = event.get("response_id")
        if response_id is None:
            run = self._active
        else:
            run = next((r for r in self._runs if r.response.id == response_id), None)
        if run is None:
            raise Reject(
                ProtocolError("response_cancel_not_active", "Cancellation failed: no active response found")
            )
        self._cancel(run, "client_cancelled")

    def _start_response(self, trigger: str, params: dict) -> None:
        conversation = "none" if params.get("conversation") == "none" else "auto"
        if conversation == "auto" and self._active is not None:
            active_id = self._active.response.id
            raise Reject(
                ProtocolError(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {active_id}. Wait until the "
                    "response is finished before creating a new one.",
                )
            )
        modality, output_format, voice = self._response_output(params)
        plan = self._plan(modality, output_format, conversation, params.get("instructions"))
        loop = asyncio.get_running_loop()
        response = EmulatedResponse(
            id=schema.new_id("resp"),
            conversation=conversation,
            trigger=trigger,
            modality=modality,
            output_format=output_format,
            instructions=params.get("instructions"),
            metadata=params.get("metadata"),
            created_at=loop.time(),
        )
        self.responses.append(response)
        run = _Run(response=response, plan=plan, voice=voice)
        self._runs.add(run)
        if conversation == "auto":
            self._active = run
        self._emit({"type": "response.created", "response": self._response_object(run)})
        self._emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 800000, "remaining": 795000, "reset_seconds": 0.375},
                ],
            }
        )
        self._open_item(run)
        run.task = self._spawn(self._stream(run))

    def _response_output(self, params: dict) -> tuple[str, str, str]:
        view = self._view
        if self.dialect == "ga":
            modalities = params.get("output_modalities")
            audio_out = (params.get("audio") or {}).get("output") or {}
            fmt = audio_out.get("format")
            output_format = schema.GA_FORMATS.get(fmt.get("type") or "audio/pcm") if fmt else None
            voice = audio_out.get("voice")
        else:
            modalities = params.get("modalities")
            output_format, voice = params.get("output_audio_format"), params.get("voice")
        modality = schema.response_modality(modalities) if modalities else view.modality
        return modality, output_format or view.output_format, str(voice or view.voice)

    def _plan(self, modality: str, output_format: str, conversation: str, instructions: str | None) -> _Plan:
        script = self._next_script()
        if script is not None and script.tool_call is not None:
            return _Plan(tool_call=script.tool_call)
        parts = spoken_parts(script, self._last_utterance)
        if script is None:
            words = words_to_say(instructions)
            if words is None and conversation == "auto" and self._last_text is not None:
                words, self._last_text = self._last_text, None  # said back once
            if words is not None:
                parts = said_words(words)
            elif conversation == "none" and (summary := self._summary(instructions)) is not None:
                parts = [(np.zeros(0, dtype="<i2"), 24000, summary)]
        return _Plan(
            segments=[
                (encode_output(pcm, rate, output_format) if modality == "audio" else b"", text)
                for pcm, rate, text in parts
            ]
        )

    def _summary(self, instructions: str | None) -> str | None:
        users = [i for i in self.conversation if i.get("role") == "user" and i.get("type") == "message"]
        spoke = sum(1 for i in users if any(c.get("type") == "input_audio" for c in i.get("content") or []))
        answers = sum(1 for i in self.conversation if i.get("role") == "assistant")
        return emulated_summary(instructions, spoke, answers)

    def _open_item(self, run: _Run) -> EmulatedItem:
        response = run.response
        item = EmulatedItem(item_id=schema.new_id("item"), bytes_per_ms=bytes_per_ms(response.output_format))
        if run.plan.tool_call is not None:
            item.type, item.name, item.call_id = "function_call", run.plan.tool_call[0], schema.new_id("call")
        response.items.append(item)
        self._assistant_items[item.item_id] = item
        obj = self._item_object(run, item)
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": self._output_index(run, item),
                "item": obj,
            }
        )
        if response.conversation == "auto":
            self._insert_item(obj, None, done=False)
        if item.type == "message":
            if response.modality == "audio":
                part = {"type": "audio", "transcript": ""}
            else:
                part = {"type": "text", "text": ""}
            self._emit({"type": "response.content_part.added", **self._part_ref(run, item), "part": part})
        return item

    def _output_index(self, run: _Run, item: EmulatedItem) -> int:
        return run.response.items.index(item)

    def _part_ref(self, run: _Run, item: EmulatedItem) -> dict:
        return {
            "response_id": run.response.id,
            "item_id": item.item_id,
            "output_index": self._output_index(run, item),
            "content_index": 0,
        }

    async def _stream(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self._config.first_delta_delay_ms / 1000)
        run.started_at = loop.time()
        if run.plan.tool_call is not None:
            await self._stream_arguments(run, run.response.items[0])
            self._finish_item(run, run.response.items[0])
        for index, (audio, transcript) in enumerate(run.plan.segments):
            item = run.response.items[0] if index == 0 else self._open_item(run)
            if run.response.modality == "text":
                await self._stream_text(run, item, transcript)
            else:
                await self._stream_audio(run, item, audio, transcript, loop)
            self._finish_item(run, item)
        self._end(run, "completed", None)

    async def _pace(self, run: _Run, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the next delta is due: `speed` times real time, plus the one configured stall."""
        cfg = self._config
        if not run.stalled and cfg.stall_after_ms is not None and run.sent_ms >= cfg.stall_after_ms:
            run.stalled = True
            await asyncio.sleep(cfg.stall_ms / 1000)
            run.started_at += cfg.stall_ms / 1000
        await asyncio.sleep(max(0.0, run.started_at + run.sent_ms / 1000 / cfg.speed - loop.time()))

    async def _stream_audio(
        self, run: _Run, item: EmulatedItem, audio: bytes, transcript: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        words = _split_words(transcript)
        chunk = max(1, self._config.delta_ms) * item.bytes_per_ms
        total, said = len(audio), 0
        for offset in range(0, total, chunk):
            if run.sent_ms:
                await self._pace(run, loop)
            piece = audio[offset : offset + chunk]
            item.audio += piece
            run.sent_ms += len(piece) / item.bytes_per_ms
            self._audio_produced = True
            self._emit(
                {
                    "type": schema.event_name("audio_delta", self.dialect),
                    **self._part_ref(run, item),
                    "delta": base64.b64encode(piece).decode("ascii"),
                }
            )
            # Transcript text runs alongside the audio, in proportion to the audio sent so far.
            due = math.ceil(len(words) * (offset + len(piece)) / total)
            if due > said:
                self._text_delta(run, item, "transcript_delta", "".join(words[said:due]))
                said = due
        if said < len(words):
            self._text_delta(run, item, "transcript_delta", "".join(words[said:]))

    def _text_delta(self, run: _Run, item: EmulatedItem, kind: str, text: str) -> None:
        item.transcript += text
        self._emit(
            {"type": schema.event_name(kind, self.dialect), **self._part_ref(run, item), "delta": text}
        )

    async def _stream_text(self, run: _Run, item: EmulatedItem, text: str) -> None:
        words = _split_words(text)
        pace = self._config.delta_ms / 1000 / self._config.speed
        for i in range(0, len(words), 3):
            if i:
                await asyncio.sleep(pace)
            self._text_delta(run, item, "text_delta", "".join(words[i : i + 3]))

    async def _stream_arguments(self, run: _Run, item: EmulatedItem) -> None:
        item.arguments = json.dumps(run.plan.tool_call[1] if run.plan.tool_call else {})
        for i in range(0, len(item.arguments), 32):
            if i:
                await asyncio.sleep(0)
            self._emit(
                {
                    "type": "response.function_call_arguments.delta",
                    "response_id": run.response.id,
                    "item_id": item.item_id,
                    "output_index": self._output_index(run, item),
                    "call_id": item.call_id,
                    "delta": item.arguments[i : i + 32],
                }
            )

    def _finish_item(self, run: _Run, item: EmulatedItem) -> None:
        ref = self._part_ref(run, item)
        if item.type == "function_call":
            done = {
                "type": "response.function_call_arguments.done",
                **{k: v for k, v in ref.items() if k != "content_index"},
                "call_id": item.call_id,
                "arguments": item.arguments,
            }
            if self.dialect == "ga":
                done["name"] = item.name
            self._emit(done)
        elif run.response.modality == "audio":
            self._emit({"type": schema.event_name("audio_done", self.dialect), **ref})
            self._emit(
                {
                    "type": schema.event_name("transcript_done", self.dialect),
                    **ref,
                    "transcript": item.transcript,
                }
            )
            self._emit(
                {
                    "type": "response.content_part.done",
                    **ref,
                    "part": {"type": "audio", "transcript": item.transcript},
                }
            )
        else:
            self._emit({"type": schema.event_name("text_done", self.dialect), **ref, "text": item.transcript})
            self._emit(
                {
                    "type": "response.content_part.done",
                    **ref,
                    "part": {"type": "text", "text": item.transcript},
                }
            )
        item.status = "completed"
        obj = self._store_item(run, item)
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": run.response.id,
                "output_index": ref["output_index"],
                "item": obj,
            }
        )
        if run.response.conversation == "auto":
            self._item_done(obj)

    def _cancel(self, run: _Run, reason: str) -> None:
        if run.task is not None:
            run.task.cancel()
        for item in run.response.items:
            if item.status == "in_progress":
                item.status = "incomplete"
                self._store_item(run, item)
        self._end(run, "cancelled", reason)

    def _item_object(self, run: _Run, item: EmulatedItem) -> dict:
        obj: dict[str, Any] = {
            "id": item.item_id,
            "object": "realtime.item",
            "type": item.type,
            "status": item.status,
        }
        if item.type == "function_call":
            return {**obj, "name": item.name, "call_id": item.call_id, "arguments": item.arguments}
        if item.status == "in_progress":
            return {**obj, "role": "assistant", "content": []}
        modality = run.response.modality
        key = "transcript" if modality == "audio" else "text"
        content = {"type": schema.assistant_content_type(modality, self.dialect), key: item.transcript}
        return {**obj, "role": "assistant", "content": [content]}

    def _store_item(self, run: _Run, item: EmulatedItem) -> dict:
        """The item in its current form; the conversation's copy is replaced by it."""
        obj = self._item_object(run, item)
        if run.response.conversation == "auto" and (index := self._index(item.item_id)) is not None:
            self.conversation[index] = obj
        return obj

    def _end(self, run: _Run, status: str, reason: str | None) -> None:
        response = run.response
        response.status, response.cancel_reason = status, reason
        response.done_at = asyncio.get_running_loop().time()
        self._runs.discard(run)
        if self._active is run:
            self._active = None
        self._emit({"type": "response.done", "response": self._response_object(run)})

    def _response_object(self, run: _Run) -> dict:
        response = run.response
        status = response.status
        details = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": response.cancel_reason}
        obj: dict[str, Any] = {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": details,
            "output": [self._item_object(run, item) for item in response.items]
            if status != "in_progress"
            else [],
            "conversation_id": self._conversation_id if response.conversation == "auto" else None,
            "max_output_tokens": "inf",
            "metadata": response.metadata,
            "usage": self._usage(run) if status != "in_progress" else None,
        }
        if self.dialect == "ga":
            obj["output_modalities"] = [response.modality]
            obj["audio"] = {
                "output": {"format": schema.ga_format(response.output_format), "voice": run.voice}
            }
        else:
            obj["modalities"] = ["audio", "text"] if response.modality == "audio" else ["text"]
            obj["output_audio_format"] = response.output_format
            obj["voice"] = run.voice
            obj["temperature"] = 0.8
        return obj

    def _usage(self, run: _Run) -> dict:
        # Roughly the real ratios: ~10 input audio tokens and ~20 output audio tokens per second.
        audio_in = round(self._committed_ms / 100)
        text_in = len(self._view.instructions) // 4 + len(run.response.instructions or "") // 4
        audio_out = round(run.sent_ms / 50)
        text_out = max(1, sum(len(i.transcript or i.arguments) for i in run.response.items) // 4)
        return {
            "total_tokens": audio_in + text_in + audio_out + text_out,
            "input_tokens": audio_in + text_in,
            "output_tokens": audio_out + text_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _split_words(text: str) -> list[str]:
    """Words with their trailing space, so that joining any prefix gives a prefix of the text."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if text else []


# ---------------------------------------------------------------------------------------------------
# Server


_REFUSALS = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
}


class RealtimeEmulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.sessions: list[EmulatedSession] = []
        self.live_sessions: list[EmulatedLiveSession] = []
        self.live_url = ""  # ws://.../v1/live/sessions once started
        self.refused = 0  # upgrades refused by `refuse_status`
        self._refusing_since: float | None = None  # the first refusal, for `refuse_for_s`
        self._scripts: deque[ScriptedReply] = deque()
        self._caller_words: deque[str] = deque()
        self._changed = asyncio.Condition()
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._validate = self.config.strict and schema.sdk_available()
        self._validate_live = self.config.strict and schema.sdk_available("live")
        if self.config.strict and not (self._validate and self._validate_live):
            log.warning("realtime_emulator.strict_unavailable", reason="openai package without these types")

    def app(self) -> web.Application:
        if self._app is None:
            self._preload()
            app = web.Application()
            for path in ("/v1/realtime", "/openai/v1/realtime", "/openai/realtime"):
                app.router.add_get(path, self._handle)
            for path in ("/v1/live/sessions", "/openai/v1/live/sessions"):
                app.router.add_get(path, self._handle_live)
            app.on_shutdown.append(self._on_shutdown)
            self._app = app
        return self._app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        base = f"ws://{host}:{self._runner.addresses[0][1]}"
        url, self.live_url = f"{base}/v1/realtime", f"{base}/v1/live/sessions"
        log.info("realtime_emulator.started", url=url, live_url=self.live_url)
        return url

    async def stop(self) -> None:
        await self._close_sessions()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def script_reply(self, reply: ScriptedReply) -> None:
        self._scripts.append(reply)

    def script_caller_words(self, *texts: str) -> None:
        """What the caller's next turns said, in order: the transcripts of those turns (when the
        session transcribes its input) instead of the emulator's confession that it heard no words."""
        self._caller_words.extend(texts)

    async def wait_for_session(self, n: int = 1, timeout: float = 5) -> EmulatedSession:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.sessions) >= n)
        return self.sessions[n - 1]

    async def wait_for_live_session(self, n: int = 1, timeout: float = 5) -> EmulatedLiveSession:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.live_sessions) >= n)
        return self.live_sessions[n - 1]

    def _next_script(self) -> ScriptedReply | None:
        return self._scripts.popleft() if self._scripts else None

    def _preload(self) -> None:
        # Importing the SDK types and decoding the greeting take a while: do it before the first call.
        if self._validate:
            for dialect in ("ga", "beta"):
                schema.client_types(dialect)
        if self._validate_live:
            schema.client_types("live")
        greeting_pcm24k()
        murmur_pcm24k("Warm up every syllable. Once and again, a b c d e f.")

    async def _close_sessions(self) -> None:
        sessions = [*self.sessions, *self.live_sessions]
        await asyncio.gather(*(s.close(1001) for s in sessions if not s.closed), return_exceptions=True)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self._close_sessions()

    def _refusal(self) -> web.Response | None:
        config = self.config
        refusing = config.refuse_times is None or self.refused < config.refuse_times
        if (status := config.refuse_status) is None or not refusing:
            return None
        if config.refuse_for_s is not None:
            now = now_ms()
            if self._refusing_since is None:
                self._refusing_since = now
            elif now - self._refusing_since >= config.refuse_for_s * 1000:
                return None
        self.refused += 1
        kind, code, message = _REFUSALS.get(status, ("server_error", None, "The server had an error."))
        body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if (refusal := self._refusal()) is not None:
            return refusal
        dialect = "beta" if "realtime=v1" in request.headers.get("OpenAI-Beta", "") else "ga"
        ws = web.WebSocketResponse(
            protocols=("realtime",), compress=False, max_msg_size=MAX_MESSAGE_BYTES, timeout=2.0
        )
        await ws.prepare(request)
        session = EmulatedSession(
            self.config,
            dialect,
            request.headers,
            request.query,
            self._next_script,
            self._validate,
            upstream_line(self.config, len(self.sessions)),
            lambda: self._caller_words.popleft() if self._caller_words else None,
        )
        log.debug("realtime_emulator.session_opened", dialect=dialect, model=request.query.get("model"))
        await self._serve(ws, session, self.sessions)
        return ws

    async def _handle_live(self, request: web.Request) -> web.StreamResponse:
        if (refusal := self._refusal()) is not None:
            return refusal
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_MESSAGE_BYTES, timeout=2.0)
        await ws.prepare(request)
        session = EmulatedLiveSession(
            self.config,
            request.headers,
            request.query,
            self._next_script,
            self._validate_live,
            upstream_line(self.config, len(self.live_sessions)),
        )
        log.debug("realtime_emulator.live_session_opened")
        await self._serve(ws, session, self.live_sessions)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, session: Any, sessions: list[Any]) -> None:
        async with self._changed:
            sessions.append(session)
            self._changed.notify_all()
        await session.serve(ws)


async def _serve_forever(args: argparse.Namespace) -> None:
    config = EmulatorConfig(speed=args.speed, reject_beta=args.reject_beta, strict=not args.no_strict)
    emulator = RealtimeEmulator(config)
    url = await emulator.start(args.host, args.port)
    print(f"Realtime emulator listening on {url}", flush=True)
    print(f"Live API emulator listening on {emulator.live_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulate the OpenAI Realtime and Live APIs over WebSocket.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--speed", type=float, default=EmulatorConfig.speed)
    parser.add_argument(
        "--reject-beta", action="store_true", help="refuse the beta dialect like api.openai.com"
    )
    parser.add_argument("--no-strict", action="store_true", help="do not validate client events")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
