"""Shapes of OpenAI's voice protocols per dialect, for the emulators and the tests: the Realtime API ("ga" /
"beta") and the Live API ("live"; contract validation only, its sessions live in `live_schema`).

Three things live here, all plain synchronous code:
- contract validation of events against the `openai` SDK's pydantic types (docs/protocols.md §R12), turned
  into the error payloads the real service sends (`unknown_parameter`, `missing_required_parameter`, ...);
- the dialect-specific event names and content-part types (docs/protocols.md §R4, §R6);
- session objects: the server defaults, `session.update` merge semantics, and a dialect-neutral view.

The `openai` package is only needed for validation and is imported on first use, so the emulator can run
in demo mode without it (with validation off).
"""

from __future__ import annotations

import copy
import functools
import secrets
import time
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Dialect = str  # "ga" | "beta"

# The client event types of each dialect; equal to the SDK unions (a test checks it), spelled out so the
# emulator knows them without importing the SDK.
GA_CLIENT_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)
BETA_CLIENT_EVENT_TYPES = (*GA_CLIENT_EVENT_TYPES, "transcription_session.update")
LIVE_CLIENT_EVENT_TYPES = (
    "session.start",
    "session.update",
    "session.input_audio.append",
    "session.input_audio.mute",
    "session.input_audio.unmute",
    "session.output_audio.fixture.play",
    "session.instructions.append",
    "session.thinking.append",
    "session.commentary.append",
    "decision.create",
    "decision.item.create",
    "decision.item.delete",
    "response.item.create",
    "response.create",
    "session.close",
)
_CLIENT_EVENT_TYPES = {
    "ga": GA_CLIENT_EVENT_TYPES,
    "beta": BETA_CLIENT_EVENT_TYPES,
    "live": LIVE_CLIENT_EVENT_TYPES,
}


def client_event_types(dialect: Dialect) -> tuple[str, ...]:
    return _CLIENT_EVENT_TYPES[dialect]


# ---------------------------------------------------------------------------------------------------
# SDK type maps and validation


def _members(alias: Any) -> tuple[Any, ...]:
    args = get_args(alias)  # Annotated[Union[...], PropertyInfo]
    union = args[0] if args and get_origin(args[0]) is Union else alias
    return get_args(union)


def type_map(alias: Any) -> dict[str, type[BaseModel]]:
    return {value: cls for cls in _members(alias) for value in get_args(cls.model_fields["type"].annotation)}


def sdk_available(dialect: Dialect = "ga") -> bool:
    try:
        if dialect == "live":
            import openai.types.live
        else:
            import openai.types.realtime  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def client_types(dialect: Dialect) -> dict[str, type[BaseModel]]:
    if dialect == "live":
        from openai.types.live import ClientEvent as LiveClientEvent

        return type_map(LiveClientEvent)
    if dialect == "ga":
        from openai.types.realtime import RealtimeClientEvent

        return type_map(RealtimeClientEvent)
    from openai.types.beta.realtime import RealtimeClientEvent as BetaRealtimeClientEvent

    return type_map(BetaRealtimeClientEvent)


@functools.cache
def server_types(dialect: Dialect) -> dict[str, type[BaseModel]]:
    if dialect == "live":
        from openai.types.live import ServerEvent as LiveServerEvent

        return type_map(LiveServerEvent)
    if dialect == "ga":
        from openai.types.realtime import RealtimeServerEvent

        return type_map(RealtimeServerEvent)
    from openai.types.beta.realtime import RealtimeServerEvent as BetaRealtimeServerEvent

    return type_map(BetaRealtimeServerEvent)


def unknown_keys(model: Any, path: str = "$") -> list[str]:
    """Paths of keys the SDK model does not declare (its models accept and keep extra keys)."""
    bad: list[str] = []
    if isinstance(model, BaseModel):
        bad += [f"{path}.{key}" for key in (model.model_extra or {})]
        for name in type(model).model_fields:
            bad += unknown_keys(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list | tuple):
        for i, value in enumerate(model):
            bad += unknown_keys(value, f"{path}[{i}]")
    return bad


class UnknownKeysError(ValueError):
    def __init__(self, event_type: str, paths: list[str]) -> None:
        super().__init__(f"unknown keys for {event_type}: {paths}")
        self.paths = paths


def validate_client_event(event: dict, dialect: Dialect = "ga") -> BaseModel:
    """KeyError: not an event of that dialect; ValidationError: missing/mistyped; UnknownKeysError: typo."""
    cls = client_types(dialect)[event["type"]]
    model = cls.model_validate(event)
    if extra := unknown_keys(model):
        raise UnknownKeysError(event["type"], extra)
    return model


def validate_server_event(event: dict, dialect: Dialect = "ga") -> BaseModel:
    """Server events may carry fields newer than the SDK, so unknown keys are fine here."""
    return server_types(dialect)[event["type"]].model_validate(event)


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The `error` object of an `error` server event, minus the client event_id."""

    code: str | None
    message: str
    param: str | None = None
    type: str = "invalid_request_error"

    def payload(self, event_id: str | None = None) -> dict:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": event_id,
        }


def client_event_error(event: Any, dialect: Dialect, check_schema: bool = True) -> ProtocolError | None:
    """What the service would say about this client event before acting on it, or None if it is fine."""
    if not isinstance(event, dict):
        return ProtocolError("invalid_json", "Expected a JSON object.")
    event_type = event.get("type")
    if not isinstance(event_type, str):
        return ProtocolError("missing_required_parameter", "Missing required parameter: 'type'.", "type")
    supported = client_event_types(dialect)
    if event_type not in supported:
        listed = ", ".join(f"'{name}'" for name in supported)
        return ProtocolError(
            "invalid_value", f"Invalid value: '{event_type}'. Supported values are: {listed}.", "type"
        )
    if not check_schema or _plain_append(event):
        return None
    try:
        validate_client_event(event, dialect)
    except UnknownKeysError as exc:
        param = exc.paths[0].removeprefix("$.")
        return ProtocolError("unknown_parameter", f"Unknown parameter: '{param}'.", param)
    except ValidationError as exc:
        return _validation_error(event, exc)
    return None


_APPEND_KEYS = frozenset({"type", "audio", "event_id"})
_APPEND_TYPES = frozenset({"input_audio_buffer.append", "session.input_audio.append"})


def _plain_append(event: dict) -> bool:
    """The SDK check for the one event sent 50 times a second per call, without pydantic's cost."""
    return (
        event["type"] in _APPEND_TYPES
        and event.keys() <= _APPEND_KEYS
        and isinstance(event.get("audio"), str)
        and isinstance(event.get("event_id", ""), str)
    )


def _validation_error(event: dict, exc: ValidationError) -> ProtocolError:
    # Union members each report their own failure; the first one names the offending field well enough.
    err = exc.errors()[0]
    missing = err["type"] == "missing"
    param = _param_path(event, err["loc"], missing)
    if missing:
        return ProtocolError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)
    if err["type"].startswith("literal_error") or err["type"] == "enum":
        return ProtocolError("invalid_value", f"Invalid value for '{param}': {err['msg']}.", param)
    return ProtocolError("invalid_type", f"Invalid type for '{param}': {err['msg']}.", param)


def _param_path(data: Any, loc: tuple, missing: bool) -> str:
    """The dotted path of a pydantic error location, keeping only steps that exist in the data.

    Pydantic inserts union member names into `loc`; those are not keys of the event and are dropped.
    """
    parts: list[str] = []
    node = data
    for i, key in enumerate(loc):
        if isinstance(node, dict) and isinstance(key, str) and key in node:
            parts.append(key)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node) and parts:
            parts[-1] += f"[{key}]"
            node = node[key]
        elif missing and i == len(loc) - 1 and isinstance(key, str):
            parts.append(key)
    return ".".join(parts)


# ---------------------------------------------------------------------------------------------------
# Dialect-specific names (docs/protocols.md §R4, §R6)

_EVENT_NAMES = {
    "audio_delta": ("response.output_audio.delta", "response.audio.delta"),
    "audio_done": ("response.output_audio.done", "response.audio.done"),
    "transcript_delta": ("response.output_audio_transcript.delta", "response.audio_transcript.delta"),
    "transcript_done": ("response.output_audio_transcript.done", "response.audio_transcript.done"),
    "text_delta": ("response.output_text.delta", "response.text.delta"),
    "text_done": ("response.output_text.done", "response.text.done"),
}
_CONTENT_TYPES = {"audio": ("output_audio", "audio"), "text": ("output_text", "text")}


def event_name(key: str, dialect: Dialect) -> str:
    return _EVENT_NAMES[key][0 if dialect == "ga" else 1]


def assistant_content_type(modality: str, dialect: Dialect) -> str:
    return _CONTENT_TYPES[modality][0 if dialect == "ga" else 1]


# ---------------------------------------------------------------------------------------------------
# Audio formats: canonical names are the beta ones

GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
FORMAT_RATES = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}


def ga_format(canonical: str) -> dict:
    ga_type = next(k for k, v in GA_FORMATS.items() if v == canonical)
    return {"type": ga_type, "rate": 24000} if canonical == "pcm16" else {"type": ga_type}


def _canonical_ga_format(fmt: Any) -> str:
    if isinstance(fmt, dict):
        return GA_FORMATS.get(fmt.get("type") or "audio/pcm", "pcm16")
    return "pcm16"


# ---------------------------------------------------------------------------------------------------
# Sessions

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. Act like a human, but "
    "remember that you aren't a human and that you can't do human things in the real world."
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'y')}"


def server_vad_defaults(dialect: Dialect) -> dict:
    vad = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }
    if dialect != "ga":
        del vad["idle_timeout_ms"]  # server_vad idle timeout is GA-only
    return vad


def _semantic_vad_defaults() -> dict:
    return {"type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True}


def default_session(dialect: Dialect, model: str) -> dict:
    """The full session object the service announces in `session.created`."""
    common = {
        "id": new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "expires_at": int(time.time()) + 3600,
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "tracing": None,
    }
    if dialect == "ga":
        return {
            "type": "realtime",
            **common,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": ga_format("pcm16"),
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": server_vad_defaults(dialect),
                },
                "output": {"format": ga_format("pcm16"), "voice": "marin", "speed": 1.0},
            },
            "max_output_tokens": "inf",
            "truncation": "auto",
            "prompt": None,
            "include": None,
        }
    return {
        **common,
        "modalities": ["audio", "text"],
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": server_vad_defaults(dialect),
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
    }


class SessionUpdateError(ValueError):
    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.error = error


# Nested objects a `session.update` patches key by key; every other value is replaced whole.
_MERGED = {"audio", "input", "output", "noise_reduction", "input_audio_noise_reduction"}


def merge_session(current: dict, patch: dict, dialect: Dialect, voice_locked: bool = False) -> dict:
    """The effective session after `session.update`: only present fields change.

    Raises SessionUpdateError for updates the service refuses.
    """
    if dialect == "ga":
        if patch.get("type", "realtime") != "realtime":
            raise SessionUpdateError(
                ProtocolError(
                    "invalid_value",
                    "This emulator only supports sessions of type 'realtime'.",
                    "session.type",
                )
            )
        modalities = patch.get("output_modalities")
        if modalities is not None and len(set(modalities)) > 1:
            raise SessionUpdateError(
                ProtocolError(
                    "invalid_value",
                    "Invalid modalities: ['audio', 'text']. Supported combinations are: "
                    "['text'] and ['audio'].",
                    "session.output_modalities",
                )
            )
    if "model" in patch and patch["model"] != current.get("model"):
        raise SessionUpdateError(
            ProtocolError("invalid_value", "Cannot update a session's model.", "session.model")
        )
    merged = _merge(current, patch)
    if voice_locked and view(merged, dialect).voice != view(current, dialect).voice:
        raise SessionUpdateError(
            ProtocolError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.voice" if dialect != "ga" else "session.audio.output.voice",
            )
        )
    _normalise(merged, dialect)
    return merged


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        if key == "turn_detection" and isinstance(value, dict) and isinstance(old, dict):
            same_type = value.get("type", old.get("type")) == old.get("type")
            out[key] = _merge(old, value) if same_type else copy.deepcopy(value)
        elif key in _MERGED and isinstance(value, dict) and isinstance(old, dict):
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _normalise(session: dict, dialect: Dialect) -> None:
    if dialect == "ga":
        audio = session.setdefault("audio", {})
        for side in ("input", "output"):
            part = audio.setdefault(side, {})
            part["format"] = ga_format(_canonical_ga_format(part.get("format")))
        audio["input"]["turn_detection"] = _full_turn_detection(audio["input"].get("turn_detection"), dialect)
    else:
        session["turn_detection"] = _full_turn_detection(session.get("turn_detection"), dialect)


def _full_turn_detection(td: Any, dialect: Dialect) -> dict | None:
    if not isinstance(td, dict):
        return None
    defaults = _semantic_vad_defaults() if td.get("type") == "semantic_vad" else server_vad_defaults(dialect)
    return {**defaults, **{k: v for k, v in td.items() if v is not None or k == "idle_timeout_ms"}}


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the emulator needs from a session, whatever its dialect."""

    input_format: str  # canonical: pcm16 | g711_ulaw | g711_alaw
    output_format: str
    voice: str
    modality: str  # "audio" (with transcript) or "text"
    turn_detection: dict | None
    transcription: dict | None
    instructions: str


def view(session: dict, dialect: Dialect) -> SessionView:
    if dialect == "ga":
        audio = session.get("audio") or {}
        inp, out = audio.get("input") or {}, audio.get("output") or {}
        return SessionView(
            input_format=_canonical_ga_format(inp.get("format")),
            output_format=_canonical_ga_format(out.get("format")),
            voice=str(out.get("voice") or ""),
            modality=response_modality(session.get("output_modalities")),
            turn_detection=inp.get("turn_detection"),
            transcription=inp.get("transcription"),
            instructions=session.get("instructions") or "",
        )
    return SessionView(
        input_format=session.get("input_audio_format") or "pcm16",
        output_format=session.get("output_audio_format") or "pcm16",
        voice=str(session.get("voice") or ""),
        modality=response_modality(session.get("modalities")),
        turn_detection=session.get("turn_detection"),
        transcription=session.get("input_audio_transcription"),
        instructions=session.get("instructions") or "",
    )


def response_modality(modalities: Any) -> str:
    """GA allows ["audio"] or ["text"]; beta's ["audio", "text"] means audio with a transcript."""
    return "audio" if not modalities or "audio" in modalities else "text"
