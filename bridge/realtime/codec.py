"""OpenAI Realtime over WebSocket as a sans-IO codec, hiding the GA/beta dialect differences.

`decode` maps one server message to a plain event (docs/protocols.md §R6); the builder methods return the
client events to send, shaped for the dialect (docs/protocols.md §R3, §R4, §R5). No socket here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from bridge.client_events import ClientEventEncoder, EncodedEvent, audio_append
from bridge.realtime import events as ev

Dialect = Literal["ga", "beta"]
# The audio the model hears and speaks (bridge.audio.AudioFormat is the carrier line's).
ModelAudio = Literal["pcm24k", "pcmu"]

_decoder = msgspec.json.Decoder()

# GA names first; beta names map onto the same meaning (docs/protocols.md §R6).
_AUDIO_DELTA = frozenset({"response.output_audio.delta", "response.audio.delta"})
_AUDIO_DONE = frozenset({"response.output_audio.done", "response.audio.done"})
_TRANSCRIPT_DELTA = frozenset({"response.output_audio_transcript.delta", "response.audio_transcript.delta"})
_TRANSCRIPT_DONE = frozenset({"response.output_audio_transcript.done", "response.audio_transcript.done"})
_TEXT_DONE = frozenset({"response.output_text.done", "response.text.done"})
_ITEM_ADDED = frozenset({"conversation.item.added", "conversation.item.created"})


class RealtimeProtocolError(ValueError):
    """A server message we cannot use."""


class _AudioDeltaMessage(msgspec.Struct):
    """The most frequent server event, read straight into its fields (msgspec reads the base64)."""

    type: str
    delta: bytes
    response_id: str = ""
    item_id: str = ""
    content_index: int = 0


_delta_decoder = msgspec.json.Decoder(_AudioDeltaMessage)


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What the bridge asks of a session; built once per call from the settings."""

    instructions: str
    voice: str
    audio_format: ModelAudio = "pcm24k"
    turn_detection: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    vad_eagerness: str = "auto"
    create_response: bool = True
    interrupt_response: bool = True
    transcription_model: str = ""
    noise_reduction: str = "near_field"
    prompt_id: str | None = None
    prompt_version: str | None = None
    prompt_variables: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] = ()


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _opt_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


class RealtimeCodec(ClientEventEncoder):
    def __init__(self, dialect: Dialect = "ga") -> None:
        super().__init__()
        self.dialect = dialect

    # -- server -> bridge -------------------------------------------------------------------------

    def decode(self, text: str | bytes) -> ev.RealtimeEvent:
        # The socket hands over bytes (`UpstreamSocket`), a test may hand over text.
        if ("audio.delta" if type(text) is str else b"audio.delta") in text[:64]:
            delta = self._fast_audio_delta(text)
            if delta is not None:
                return delta
        try:
            message = _decoder.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise RealtimeProtocolError("server message is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise RealtimeProtocolError("server message has no 'type'")
        kind: str = message["type"]

        if kind in _AUDIO_DELTA:
            try:
                audio = base64.b64decode(_str(message.get("delta")), validate=True)
            except (binascii.Error, ValueError):
                raise RealtimeProtocolError(f"{kind}: delta is not valid base64") from None
            return ev.AudioDelta(
                response_id=_str(message.get("response_id")),
                item_id=_str(message.get("item_id")),
                content_index=_int(message.get("content_index")),
                audio=audio,
            )
        if kind in _TRANSCRIPT_DELTA:
            return ev.OutputTranscriptDelta(
                _str(message.get("response_id")), _str(message.get("item_id")), _str(message.get("delta"))
            )
        if kind == "input_audio_buffer.speech_started":
            return ev.SpeechStarted(_str(message.get("item_id")), _int(message.get("audio_start_ms")))
        if kind == "input_audio_buffer.speech_stopped":
            return ev.SpeechStopped(_str(message.get("item_id")), _int(message.get("audio_end_ms")))
        if kind == "input_audio_buffer.committed":
            return ev.InputCommitted(_str(message.get("item_id")), _opt_str(message.get("previous_item_id")))
        if kind in _ITEM_ADDED:
            item = _dict(message.get("item"))
            return ev.ItemAdded(
                item_id=_str(item.get("id")),
                item_type=_str(item.get("type")),
                role=_opt_str(item.get("role")),
                previous_item_id=_opt_str(message.get("previous_item_id")),
            )
        if kind == "response.created":
            response = _dict(message.get("response"))
            return ev.ResponseCreated(
                _str(response.get("id")),
                _opt_str(response.get("conversation_id")),
                _opt_dict(response.get("metadata")),
            )
        if kind == "response.output_item.added":
            item = _dict(message.get("item"))
            return ev.OutputItemAdded(
                _str(message.get("response_id")),
                _str(item.get("id")),
                _str(item.get("type")),
                _opt_str(item.get("role")),
            )
        if kind in _AUDIO_DONE:
            return ev.AudioDone(_str(message.get("response_id")), _str(message.get("item_id")))
        if kind in _TRANSCRIPT_DONE:
            return ev.OutputTranscriptDone(
                _str(message.get("response_id")),
                _str(message.get("item_id")),
                _str(message.get("transcript")),
            )
        if kind in _TEXT_DONE:
            return ev.OutputTextDone(
                _str(message.get("response_id")), _str(message.get("item_id")), _str(message.get("text"))
            )
        if kind == "response.function_call_arguments.done":
            return ev.FunctionCall(
                response_id=_str(message.get("response_id")),
                item_id=_str(message.get("item_id")),
                call_id=_str(message.get("call_id")),
                name=_str(message.get("name")),
                arguments=_str(message.get("arguments"), "{}"),
            )
        if kind == "response.done":
            response = _dict(message.get("response"))
            output = response.get("output")
            return ev.ResponseDone(
                response_id=_str(response.get("id")),
                status=_str(response.get("status"), "completed"),
                reason=_opt_str(_dict(response.get("status_details")).get("reason")),
                usage=_opt_dict(response.get("usage")),
                output=[o for o in output if isinstance(o, dict)] if isinstance(output, list) else [],
                metadata=_opt_dict(response.get("metadata")),
                conversation=_opt_str(response.get("conversation_id")),
            )
        if kind == "conversation.item.input_audio_transcription.completed":
            return ev.InputTranscript(_str(message.get("item_id")), _str(message.get("transcript")))
        if kind == "conversation.item.input_audio_transcription.failed":
            error = _dict(message.get("error"))
            return ev.InputTranscriptFailed(_str(message.get("item_id")), _str(error.get("message")))
        if kind == "conversation.item.truncated":
            return ev.ItemTruncated(
                _str(message.get("item_id")),
                _int(message.get("content_index")),
                _int(message.get("audio_end_ms")),
            )
        if kind in ("session.created", "session.updated", "transcription_session.updated"):
            return ev.SessionReady(updated=kind != "session.created", session=_dict(message.get("session")))
        if kind == "error":
            error = _dict(message.get("error"))
            return ev.ServerError(
                type=_str(error.get("type"), "error"),
                code=_opt_str(error.get("code")),
                message=_str(error.get("message")),
                client_event_id=_opt_str(error.get("event_id")),
            )
        return ev.Ignored(kind)

    def _fast_audio_delta(self, text: str | bytes) -> ev.AudioDelta | None:
        """A well-formed audio delta read by type; None sends anything else (bad input included) down
        the general path, so results and errors are the same either way."""
        try:
            message = _delta_decoder.decode(text)
        # DecodeError is also a wrong type or bad base64 (ValidationError); the general path decides
        # what a message too deep or not UTF-8 is.
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        if message.type not in _AUDIO_DELTA:
            return None
        return ev.AudioDelta(message.response_id, message.item_id, message.content_index, message.delta)

    # -- bridge -> server -------------------------------------------------------------------------

    def session_update(self, options: SessionOptions) -> dict[str, Any]:
        build = self._ga_session if self.dialect == "ga" else self._beta_session
        return {"type": "session.update", "event_id": self._event_id(), "session": build(options)}

    def _turn_detection(self, o: SessionOptions) -> dict[str, Any] | None:
        if o.turn_detection == "none":
            return None
        td: dict[str, Any] = {
            "type": o.turn_detection,
            "create_response": o.create_response,
            "interrupt_response": o.interrupt_response,
        }
        if o.turn_detection == "server_vad":
            td |= {
                "threshold": o.vad_threshold,
                "prefix_padding_ms": o.vad_prefix_padding_ms,
                "silence_duration_ms": o.vad_silence_duration_ms,
            }
        else:
            td["eagerness"] = o.vad_eagerness
        return td

    def _ga_session(self, o: SessionOptions) -> dict[str, Any]:
        fmt: dict[str, Any] = (
            {"type": "audio/pcm", "rate": 24000} if o.audio_format == "pcm24k" else {"type": "audio/pcmu"}
        )
        audio_in: dict[str, Any] = {
            "format": fmt,
            "turn_detection": self._turn_detection(o),
            "noise_reduction": None if o.noise_reduction == "off" else {"type": o.noise_reduction},
            "transcription": {"model": o.transcription_model} if o.transcription_model else None,
        }
        session: dict[str, Any] = {
            "type": "realtime",
            "instructions": o.instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": {"format": fmt, "voice": o.voice}},
        }
        if o.prompt_id:
            prompt: dict[str, Any] = {"id": o.prompt_id}
            if o.prompt_version:
                prompt["version"] = o.prompt_version
            if o.prompt_variables:
                prompt["variables"] = o.prompt_variables
            session["prompt"] = prompt
        if o.tools:
            session["tools"] = list(o.tools)
            session["tool_choice"] = "auto"
        return session

    def _beta_session(self, o: SessionOptions) -> dict[str, Any]:
        fmt = "pcm16" if o.audio_format == "pcm24k" else "g711_ulaw"
        session: dict[str, Any] = {
            "modalities": ["audio", "text"],
            "instructions": o.instructions,
            "voice": o.voice,
            "input_audio_format": fmt,
            "output_audio_format": fmt,
            "turn_detection": self._turn_detection(o),
            "input_audio_noise_reduction": None
            if o.noise_reduction == "off"
            else {"type": o.noise_reduction},
            "input_audio_transcription": {"model": o.transcription_model} if o.transcription_model else None,
        }
        if o.tools:
            session["tools"] = list(o.tools)
            session["tool_choice"] = "auto"
        return session

    def append_audio(self, audio: bytes) -> EncodedEvent:
        return audio_append("input_audio_buffer.append", audio)

    def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> dict[str, Any]:
        return {
            "type": "conversation.item.truncate",
            "event_id": self._event_id(),
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }

    def cancel_response(self, response_id: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "response.cancel", "event_id": self._event_id()}
        if response_id:
            event["response_id"] = response_id
        return event

    def create_response(
        self,
        instructions: str | None = None,
        *,
        out_of_band: bool = False,
        text_only: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response: dict[str, Any] = {}
        if instructions:
            response["instructions"] = instructions
        if out_of_band:
            response["conversation"] = "none"
        if metadata:
            response["metadata"] = metadata
        if text_only:
            response["output_modalities" if self.dialect == "ga" else "modalities"] = ["text"]
        event: dict[str, Any] = {"type": "response.create", "event_id": self._event_id()}
        if response:
            event["response"] = response
        return event

    def user_text(
        self, text: str, previous_item_id: str | None = None, image_url: str | None = None
    ) -> dict[str, Any]:
        """A user message; `image_url` (a PNG/JPEG data URI) is GA only."""
        content: list[dict[str, Any]] = [{"type": "input_text", "text": text}] if text else []
        if image_url:
            content.append({"type": "input_image", "image_url": image_url})
        event: dict[str, Any] = {
            "type": "conversation.item.create",
            "event_id": self._event_id(),
            "item": {"type": "message", "role": "user", "content": content},
        }
        if previous_item_id:
            event["previous_item_id"] = previous_item_id
        return event

    def history_item(self, role: Literal["user", "assistant"], text: str) -> dict[str, Any]:
        """A past turn as text, to give a new session the conversation a lost one had."""
        assistant_part = "output_text" if self.dialect == "ga" else "text"
        part = "input_text" if role == "user" else assistant_part
        return {
            "type": "conversation.item.create",
            "event_id": self._event_id(),
            "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]},
        }

    def function_output(self, call_id: str, output: str) -> dict[str, Any]:
        return {
            "type": "conversation.item.create",
            "event_id": self._event_id(),
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
