"""What every call of this server is configured with, made from the settings in one place.

`CallConfig.from_settings` is the one path from `Settings` to a call: the session the model is asked
for, the greeting, and the rules the `Call` applies (tools, transfers, the time limit, the summary).
Nothing else copies a setting for a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from bridge.answer_detection import DetectionPlan
from bridge.audio import AudioFormat
from bridge.live.codec import Delegation, HistoryRole, LiveSessionOptions, live_format_for
from bridge.realtime.codec import RealtimeCodec, SessionOptions
from bridge.tools.builtin import end_call_definition, transfer_call_definition
from bridge.wavfile import read_wav_mono

if TYPE_CHECKING:
    from bridge.config import Settings

UpstreamApi = Literal["realtime", "live"]
UPSTREAM_APIS: tuple[UpstreamApi, ...] = ("realtime", "live")
# The least lead that never underran on a realistic mobile line (60 ms, the service 60 +-30 ms away),
# plus a frame (bench/live_lead.py; README, "Realtime or Live").
LIVE_LEAD_MS = 80

# Demo mode (no OPENAI_API_KEY) greets even with no GREETING set: the first call a new user places
# should sound like a phone agent picking up, not silence.
DEMO_GREETING = "Greet the caller in one short sentence and ask how you can help."


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """A Live call's session (all of it but the audio format, which is the line's) and its pacing."""

    instructions: str
    voice: str = "marin"
    model: str = "gpt-live-1"
    delegation: Delegation = "client"
    backend_model: str = ""
    backend_instructions: str = ""
    reasoning_effort: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    lead_ms: int = LIVE_LEAD_MS  # the pacer's lead (bridge.live.output_pacer)

    def session(
        self, line: AudioFormat, history: tuple[tuple[HistoryRole, str], ...] = ()
    ) -> LiveSessionOptions:
        """The session.start for a call on `line`: its own G.711 untouched where Live takes it."""
        return LiveSessionOptions(
            instructions=self.instructions,
            voice=self.voice,
            model=self.model,
            audio_format=live_format_for(line),
            delegation=self.delegation,
            backend_model=self.backend_model,
            backend_instructions=self.backend_instructions,
            tools=self.tools,
            reasoning_effort=self.reasoning_effort,
            history=history,
        )


@dataclass(frozen=True, slots=True)
class CallConfig:
    session: SessionOptions
    model: str = ""  # REALTIME_MODEL, as the call log names it
    greeting: str = ""
    audio_passthrough: bool = False
    review_turns: bool = False  # RESPONSE_MODE=manual (the session's create_response is off)
    before_response_url: str = ""  # the hook that reviews each turn (RESPONSE_MODE=manual)
    transcribed: bool = False  # input transcription is on: a turn's review waits for its words
    end_call_tool: bool = False  # the model may end the call (after its goodbye was heard)
    transfer_numbers: tuple[str, ...] = ()  # where transfer_call may send the caller, the default first
    max_call_seconds: int = 0  # 0: no limit
    dispositions: tuple[str, ...] = ()  # the post-call summary's choices; empty: no summary
    upstream_api: UpstreamApi = "realtime"  # UPSTREAM_API: the API a call uses unless routed otherwise
    upstream_by_number: Mapping[str, UpstreamApi] = field(default_factory=dict)  # called number -> API
    live: LiveConfig | None = None  # None: Live calls cannot run with these settings (`live_unavailable`)
    live_unavailable: str = ""
    # A call we placed with machine detection: the model waits for the carrier's verdict. None: it
    # speaks at once (every inbound call, and outbound calls without detection).
    detection: DetectionPlan | None = None
    recording_notice: bytes = b""  # PCM16 24 kHz played first on a recorded call (RECORDING_NOTICE)

    @classmethod
    def from_settings(cls, settings: Settings, tools: tuple[dict[str, Any], ...] = ()) -> CallConfig:
        """`tools`: the webhook tools' definitions; the bridge's own (end_call, transfer_call) are
        added as the settings enable them."""
        builtins = []
        if settings.end_call_tool:
            builtins.append(end_call_definition())
        if settings.transfer_numbers:
            builtins.append(transfer_call_definition(settings.transfer_numbers))
        session = SessionOptions(
            tools=(*builtins, *tools),
            instructions=settings.realtime_instructions,
            voice=settings.realtime_voice,
            audio_format="pcmu" if settings.audio_passthrough else "pcm24k",
            turn_detection=settings.turn_detection,
            vad_threshold=settings.vad_threshold,
            vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
            vad_silence_duration_ms=settings.vad_silence_duration_ms,
            vad_eagerness=settings.vad_eagerness,
            interrupt_response=settings.vad_interrupt_response,
            create_response=settings.response_mode == "auto",
            transcription_model=settings.transcription_model,
            noise_reduction=settings.noise_reduction,
            prompt_id=settings.realtime_prompt_id,
            prompt_version=settings.realtime_prompt_version,
            prompt_variables=settings.realtime_prompt_variables,
        )
        return cls(
            session=session,
            model=settings.realtime_model,
            greeting=settings.greeting or (DEMO_GREETING if settings.demo_mode else ""),
            audio_passthrough=settings.audio_passthrough,
            review_turns=settings.response_mode == "manual",
            before_response_url=settings.before_response_url,
            transcribed=bool(settings.transcription_model),
            end_call_tool=settings.end_call_tool,
            transfer_numbers=settings.transfer_numbers,
            max_call_seconds=settings.max_call_seconds,
            dispositions=settings.disposition_list if settings.post_call_summary else (),
            upstream_api=settings.upstream_api,
            upstream_by_number=dict(settings.upstream_api_by_number or {}),
            live=None if settings.live_unavailable else _live_config(settings, session.tools),
            live_unavailable=settings.live_unavailable,
            recording_notice=read_wav_mono(notice, 24000) if (notice := settings.recording_notice) else b"",
        )

    def model_for(self, api: UpstreamApi) -> str:
        """The model a call on `api` talks to, as the call log names it."""
        return self.live.model if api == "live" and self.live is not None else self.model

    def upstream_for(
        self, callee: str, requested: str = "", *, recorded: bool = False
    ) -> tuple[UpstreamApi, str]:
        """The API a call to `callee` uses, and why not the one `requested` (a webhook's `upstream`
        parameter) when it is not that one ("" when it is, or none was requested). Requested first,
        then UPSTREAM_API_BY_NUMBER, then UPSTREAM_API; Live only where it can run, and not for a
        `recorded` call that must hear the recording notice (only a Realtime call plays it)."""
        problem = ""
        if requested and requested not in ("realtime", "live"):
            problem, requested = f"unknown upstream {requested[:20]!r} (realtime or live)", ""
        choice = requested or self.upstream_by_number.get(callee) or self.upstream_api
        api: UpstreamApi = "live" if choice == "live" else "realtime"
        if api == "live" and self.live is None:
            problem = problem or f"Live cannot answer: {self.live_unavailable}"
            api = "realtime"
        if api == "live" and recorded and self.recording_notice:
            problem = problem or "a recorded call hears the recording notice, which only Realtime calls play"
            api = "realtime"
        return api, problem

    def for_placed_call(
        self, *, instructions: str = "", greeting: str | None = None, detection: DetectionPlan | None = None
    ) -> CallConfig:
        """This configuration for one call we place: its own instructions and greeting (each
        replacing the server's when given; an empty greeting means the model waits for the callee)
        and how it waits for the carrier's answering-machine verdict. It is answered by Realtime,
        whose calls wait for that verdict, whatever UPSTREAM_API and UPSTREAM_API_BY_NUMBER say."""
        session = replace(self.session, instructions=instructions) if instructions else self.session
        return replace(
            self,
            session=session,
            greeting=self.greeting if greeting is None else greeting,
            detection=detection,
            upstream_api="realtime",
            upstream_by_number={},
        )

    @property
    def greets_at_once(self) -> bool:
        """Is the greeting asked for as soon as the call connects (not after a verdict)?"""
        return bool(self.greeting) and self.detection is None

    def opening_events(self, codec: RealtimeCodec, *, greet: bool) -> list[dict[str, Any]]:
        """What a session opened before its call's stream starts is sent: its configuration, then
        (`greet`) the greeting, so that its first audio is waiting when the caller arrives. A session
        the `Call` opens itself is configured and greeted by the call."""
        events = [codec.session_update(self.session)]
        if self.greets_at_once and greet:
            events.append(codec.create_response(self.greeting))
        return events


def _live_config(settings: Settings, tools: tuple[dict[str, Any], ...]) -> LiveConfig:
    delegation = settings.live_delegation_mode
    return LiveConfig(
        instructions=settings.live_instructions or settings.realtime_instructions,
        voice=settings.live_voice,
        model=settings.live_model,
        delegation=delegation,
        backend_model=settings.live_backend if delegation == "responses" else "",
        backend_instructions=settings.live_backend_instructions,
        reasoning_effort=settings.live_reasoning_effort,
        tools=tools if delegation == "responses" else (),
        lead_ms=settings.live_lead_ms,
    )
