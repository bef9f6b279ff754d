"""OpenAI's Live API (GPT-Live) over its primary WebSocket, as a sans-IO codec (docs/protocols.md §L).

`decode` turns one server message into a plain event of `bridge.live.events`; the builder methods return
the client events to send. No socket here. The Live API differs from Realtime at the root: one
`session.start` fixes model, instructions, voice and audio format for good; the model decides its own
turns and stops itself when talked over (there is no response to create, cancel or truncate); tools run
on a delegated Responses backend whose function calls reach us wrapped in `response.event`.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from bridge.audio import L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat
from bridge.client_events import ClientEventEncoder, EncodedEvent, audio_append
from bridge.live import events as ev

Delegation = Literal["client", "responses"]
HistoryRole = Literal["user", "assistant", "developer"]

DEFAULT_MODEL = "gpt-live-1"
# Limits from the SDK's own field descriptions (docs/protocols.md §L2, §L6): startup history items,
# and the size of one instructions/thinking/commentary append.
MAX_HISTORY_ITEMS = 128
MAX_APPEND_TOKENS = 500

# The formats a primary WebSocket accepts, one for both directions.
LIVE_FORMATS: dict[AudioFormat, dict[str, Any]] = {
    PCMU_8K: {"type": "audio/pcmu", "rate": 8000},
    PCMA_8K: {"type": "audio/pcma", "rate": 8000},
    L16_16K: {"type": "audio/pcm", "rate": 16000},
    L16_24K: {"type": "audio/pcm", "rate": 24000},
}


def live_format_for(line: AudioFormat) -> AudioFormat:
    """The session format for a phone line: the line's own when Live takes it (no transcoding at all),
    else PCM16 24 kHz through the bridge's resampler."""
    return line if line in LIVE_FORMATS else L16_24K


class LiveProtocolError(ValueError):
    """A server message we cannot use."""


@dataclass(frozen=True, slots=True)
class LiveSessionOptions:
    """What the bridge asks of a Live session; everything here is fixed once the session has started,
    except the backend's tools (`LiveCodec.update_tools`)."""

    instructions: str
    voice: str = "marin"
    model: str = DEFAULT_MODEL
    audio_format: AudioFormat = PCMU_8K
    delegation: Delegation = "client"
    backend_model: str = ""  # the Responses model delegated work runs on; required for "responses"
    backend_instructions: str = ""
    tools: tuple[dict[str, Any], ...] = ()  # function tools, the same dicts the Realtime session takes
    tool_choice: str = "auto"
    reasoning_effort: str | None = None
    acknowledgement_delay_ms: int | None = None
    history: tuple[tuple[HistoryRole, str], ...] = ()  # earlier turns as text, oldest first
    safety_identifier: str | None = None

    def __post_init__(self) -> None:
        if self.audio_format not in LIVE_FORMATS:
            raise ValueError(
                f"Live sessions take audio/pcmu, audio/pcma (8 kHz) or audio/pcm at 16 or 24 kHz, "
                f"not {self.audio_format}"
            )
        if self.delegation == "responses" and not self.backend_model:
            raise ValueError("Responses delegation needs a backend model")
        if self.tools and self.delegation != "responses":
            raise ValueError(
                "tools run on the delegated Responses backend: set delegation='responses' and a backend model"
            )
        if len(self.history) > MAX_HISTORY_ITEMS:
            raise ValueError(f"a Live session starts with at most {MAX_HISTORY_ITEMS} history messages")


# -- server messages, read by msgspec straight into these shapes ------------------------------------


class _Event(msgspec.Struct, tag_field="type"):
    pass


class _Started(_Event, tag="session.started"):
    session: dict[str, Any]


class _Updated(_Event, tag="session.updated"):
    session: dict[str, Any]
    client_event_id: str | None = None


class _Audio(_Event, tag="session.output_audio.delta"):
    delta: bytes  # msgspec reads the base64 itself


class _InputTranscript(_Event, tag="session.input_transcript.delta"):
    delta: str
    start_ms: int = 0
    end_ms: int = 0


class _OutputTranscript(_Event, tag="session.output_transcript.delta"):
    delta: str
    start_ms: int = 0
    end_ms: int = 0


class _Appended(_Event):
    start_ms: int = 0
    end_ms: int = 0
    client_event_id: str | None = None


class _InstructionsAppended(_Appended, tag="session.instructions.appended"):
    pass


class _ThinkingAppended(_Appended, tag="session.thinking.appended"):
    pass


class _CommentaryAppended(_Appended, tag="session.commentary.appended"):
    pass


class _Muted(_Event, tag="session.input_audio.muted"):
    client_event_id: str | None = None


class _Unmuted(_Event, tag="session.input_audio.unmuted"):
    client_event_id: str | None = None


class _Delegation(msgspec.Struct):
    id: str
    target: str = "client"
    response_id: str | None = None


class _DelegationCreated(_Event, tag="session.delegation.created"):
    delegation: _Delegation
    offset_ms: int = 0


class _ResponseEvent(_Event, tag="response.event"):
    event: dict[str, Any]
    delegation_id: str | None = None


class _Usage(msgspec.Struct):
    seconds: float
    active_seconds: int | None = None
    paused_seconds: int | None = None


class _ContextWindow(msgspec.Struct):
    usage_ratio: float


class _UsageUpdated(_Event, tag="session.usage.updated"):
    usage: _Usage
    context_window: _ContextWindow | None = None


class _Closed(_Event, tag="session.closed"):
    reason: str
    usage: _Usage | None = None
    session: dict[str, Any] = msgspec.field(default_factory=dict)


class _FixturePlaying(_Event, tag="session.output_audio.fixture.playing"):
    client_event_id: str | None = None


class _FixturePlayed(_Event, tag="session.output_audio.fixture.played"):
    client_event_id: str | None = None


class _ErrorBody(msgspec.Struct):
    message: str = ""
    type: str = "error"
    code: str | None = None
    param: str | None = None
    client_event_id: str | None = None


class _Error(_Event, tag="error"):
    error: _ErrorBody
    client_event_id: str | None = None


class _Info(_Event, tag="info"):
    code: str = ""
    message: str = ""


_ServerMessage = (
    _Started
    | _Updated
    | _Audio
    | _InputTranscript
    | _OutputTranscript
    | _InstructionsAppended
    | _ThinkingAppended
    | _CommentaryAppended
    | _Muted
    | _Unmuted
    | _DelegationCreated
    | _ResponseEvent
    | _UsageUpdated
    | _Closed
    | _FixturePlaying
    | _FixturePlayed
    | _Error
    | _Info
)
_KNOWN = frozenset(cls.__struct_config__.tag for cls in _ServerMessage.__args__)  # type: ignore[attr-defined]
_server_decoder = msgspec.json.Decoder(_ServerMessage)
_any_decoder = msgspec.json.Decoder()
_APPENDED_KIND: dict[type[_Appended], ev.ContextKind] = {
    _InstructionsAppended: "instructions",
    _ThinkingAppended: "thinking",
    _CommentaryAppended: "commentary",
}


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class LiveCodec(ClientEventEncoder):
    # -- server -> bridge -------------------------------------------------------------------------

    def decode(self, text: str | bytes) -> ev.LiveEvent:
        try:
            message = _server_decoder.decode(text)
        except msgspec.ValidationError as exc:
            return self._unknown_or_malformed(text, exc)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise LiveProtocolError("server message is not JSON") from None
        match message:
            case _Audio(delta=audio):
                return ev.OutputAudio(audio)
            case _OutputTranscript():
                return ev.OutputTranscript(message.delta, message.start_ms, message.end_ms)
            case _InputTranscript():
                return ev.InputTranscript(message.delta, message.start_ms, message.end_ms)
            case _Started(session=session):
                return self._started(session)
            case _Updated():
                return ev.SessionUpdated(message.session, message.client_event_id)
            case _Appended():
                kind = _APPENDED_KIND[type(message)]
                return ev.ContextAppended(kind, message.client_event_id, message.start_ms, message.end_ms)
            case _Muted() | _Unmuted():
                return ev.InputMuted(isinstance(message, _Muted), message.client_event_id)
            case _DelegationCreated(delegation=d):
                return ev.DelegationCreated(d.id, d.target, message.offset_ms, d.response_id)
            case _ResponseEvent():
                return self._backend(message.event, message.delegation_id)
            case _UsageUpdated(usage=usage):
                ratio = message.context_window.usage_ratio if message.context_window else None
                return ev.UsageUpdated(usage.seconds, usage.active_seconds, usage.paused_seconds, ratio)
            case _Closed():
                seconds = message.usage.seconds if message.usage is not None else None
                return ev.SessionClosed(message.reason, seconds, message.session)
            case _FixturePlaying():
                return ev.FixturePlaying(message.client_event_id)
            case _FixturePlayed():
                return ev.FixturePlayed(message.client_event_id)
            case _Error(error=e):
                client_event_id = e.client_event_id or message.client_event_id
                return ev.ServerError(e.type, e.code, e.message, e.param, client_event_id)
            case _Info():
                return ev.Info(message.code, message.message)
        raise AssertionError(f"unhandled {type(message).__name__}")  # pragma: no cover

    def _unknown_or_malformed(self, text: str | bytes, exc: msgspec.ValidationError) -> ev.LiveEvent:
        """A type we do not read is Ignored (the service may add events); a type we read but whose fields
        are wrong is an error, since acting on half of it would be worse."""
        try:
            message = _any_decoder.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise LiveProtocolError("server message is not JSON") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            raise LiveProtocolError("server message has no 'type'")
        if kind in _KNOWN:
            raise LiveProtocolError(f"{kind}: {exc}")
        return ev.Ignored(kind)

    def _started(self, session: dict[str, Any]) -> ev.SessionStarted:
        session_id = session.get("id")
        if not isinstance(session_id, str) or not session_id:
            raise LiveProtocolError("session.started: session has no id")
        audio = _dict(session.get("audio"))
        voice = _dict(audio.get("output")).get("voice")
        if isinstance(voice, dict):  # a custom voice is {"id": ...}
            voice = voice.get("id")
        expires = session.get("expires_at")
        return ev.SessionStarted(
            session_id=session_id,
            model=_str(session.get("model")),
            expires_at=expires if isinstance(expires, int) and not isinstance(expires, bool) else 0,
            audio_format=audio.get("format") if isinstance(audio.get("format"), dict) else None,
            voice=_opt_str(voice),
            delegation=_str(_dict(session.get("delegation")).get("type"), "client"),
            session=session,
        )

    def _backend(self, inner: dict[str, Any], delegation_id: str | None) -> ev.LiveEvent:
        """One Responses streaming event of the delegated backend."""
        kind = _str(inner.get("type"))
        if kind == "response.output_item.done":
            item = _dict(inner.get("item"))
            # Only a completed call carries name, call id and arguments together; a call cut short by the
            # service is never answered.
            if item.get("type") != "function_call" or item.get("status") != "completed":
                return ev.Ignored(f"response.event/{kind}")
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
                raise LiveProtocolError("response.event: function call without call_id or name")
            return ev.FunctionCall(
                delegation_id, call_id, name, _str(item.get("arguments"), "{}"), _opt_str(item.get("id"))
            )
        response = _dict(inner.get("response"))
        if kind == "response.created":
            return ev.BackendResponseCreated(delegation_id, _str(response.get("id")))
        if kind == "response.output_text.done":
            return ev.BackendText(delegation_id, _str(inner.get("text")))
        if kind in ("response.completed", "response.failed", "response.incomplete"):
            if kind == "response.failed":
                error = _opt_str(_dict(response.get("error")).get("message"))
            elif kind == "response.incomplete":
                error = _opt_str(_dict(response.get("incomplete_details")).get("reason"))
            else:
                error = None
            usage = response.get("usage")
            return ev.BackendResponseDone(
                delegation_id,
                _str(response.get("id")),
                kind.removeprefix("response."),
                usage if isinstance(usage, dict) else None,
                error,
            )
        return ev.Ignored(f"response.event/{kind}")

    # -- bridge -> server -------------------------------------------------------------------------

    def session_start(self, options: LiveSessionOptions) -> dict[str, Any]:
        o = options
        # A custom voice is an object with its id; a built-in one its name (docs/protocols.md §L2).
        voice: str | dict[str, str] = {"id": o.voice} if o.voice.startswith("voice_") else o.voice
        session: dict[str, Any] = {
            "model": o.model,
            "audio": {"format": dict(LIVE_FORMATS[o.audio_format]), "output": {"voice": voice}},
            "delegation": self._delegation(o),
        }
        if o.instructions.strip():  # blank would mean the service's defaults anyway
            session["instructions"] = o.instructions
        if o.history:
            session["input"] = [_history_item(role, text) for role, text in o.history]
        if o.safety_identifier:
            session["safety_identifier"] = o.safety_identifier
        return {"type": "session.start", "event_id": self._event_id(), "session": session}

    def _delegation(self, o: LiveSessionOptions) -> dict[str, Any]:
        delegation: dict[str, Any] = {"type": o.delegation}
        if o.acknowledgement_delay_ms is not None:
            delegation["acknowledgement_delay_ms"] = o.acknowledgement_delay_ms
        if o.delegation == "responses":
            responses: dict[str, Any] = {"model": o.backend_model}
            if o.backend_instructions:
                responses["instructions"] = o.backend_instructions
            if o.reasoning_effort:
                responses["reasoning"] = {"effort": o.reasoning_effort}
            if o.tools:
                responses["tools"] = [function_tool(tool) for tool in o.tools]
                responses["tool_choice"] = o.tool_choice
            delegation["responses"] = responses
        return delegation

    def update_tools(self, tools: tuple[dict[str, Any], ...], tool_choice: str = "auto") -> dict[str, Any]:
        """The backend's tools are the one thing a running session lets us change (Responses delegation)."""
        return {
            "type": "session.update",
            "event_id": self._event_id(),
            "session": {
                "delegation": {
                    "type": "responses",
                    "responses": {"tools": [function_tool(t) for t in tools], "tool_choice": tool_choice},
                }
            },
        }

    def append_audio(self, audio: bytes) -> EncodedEvent:
        return audio_append("session.input_audio.append", audio)

    def append_context(
        self, kind: ev.ContextKind, text: str, delegation_id: str | None = None
    ) -> dict[str, Any]:
        """Instructions (a standing rule), thinking (silent context) or commentary (something the model
        should say, in its own words). `delegation_id` answers a client delegation; it is required on the
        wire even when null. At most 500 tokens each: see `context_chunks`."""
        return {
            "type": f"session.{kind}.append",
            "event_id": self._event_id(),
            "content": text,
            "delegation_id": delegation_id,
        }

    def function_output(self, call_id: str, output: str) -> dict[str, Any]:
        return {
            "type": "response.item.create",
            "event_id": self._event_id(),
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }

    def continue_backend(self) -> dict[str, Any]:
        """`response.create`: run the backend on once every open function call has its output."""
        return {"type": "response.create", "event_id": self._event_id()}

    def mute_input(self, muted: bool = True) -> dict[str, Any]:
        kind = "session.input_audio.mute" if muted else "session.input_audio.unmute"
        return {"type": kind, "event_id": self._event_id()}

    def play_fixture(self, pcm24k: bytes) -> dict[str, Any]:
        """Fixed audio (PCM16 24 kHz whatever the session format, at most 30 s) played through the session's
        output; the model is interrupted and the caller's audio dropped until it has played."""
        audio = base64.b64encode(pcm24k).decode("ascii")
        return {"type": "session.output_audio.fixture.play", "event_id": self._event_id(), "audio": audio}

    def session_close(self) -> dict[str, Any]:
        return {"type": "session.close", "event_id": self._event_id()}


def function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A Realtime-style function tool as the Responses backend takes it (the same fields, no others)."""
    out: dict[str, Any] = {"type": "function", "name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if key in tool:
            out[key] = tool[key]
    return out


def _history_item(role: HistoryRole, text: str) -> dict[str, Any]:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


# -- context appends ---------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def estimated_tokens(text: str) -> int:
    """An upper estimate without a tokenizer: four ASCII characters a token, any other character one."""
    ascii_chars = sum(1 for c in text if c.isascii())
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def context_chunks(text: str, max_tokens: int = MAX_APPEND_TOKENS - 50) -> list[str]:
    """`text` cut into pieces that each fit one append: at sentence ends where possible, else at spaces,
    else anywhere. The margin under the service's limit covers the estimate being an estimate."""
    pieces: list[str] = []
    current = ""
    for sentence in (s.strip() for s in _SENTENCE_END.split(text.strip())):
        for part in _split_long(sentence, max_tokens):
            joined = f"{current} {part}" if current else part
            if estimated_tokens(joined) <= max_tokens:
                current = joined
            else:
                pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def _split_long(sentence: str, max_tokens: int) -> list[str]:
    out: list[str] = []
    rest = sentence
    while rest and estimated_tokens(rest) > max_tokens:
        cut = _fit(rest, max_tokens)
        space = rest.rfind(" ", 0, cut + 1)
        cut = space if space > 0 else cut
        out.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        out.append(rest)
    return out


def _fit(text: str, max_tokens: int) -> int:
    """The longest prefix length of `text` within `max_tokens` (at least one character)."""
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimated_tokens(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo
