"""One phone call's state and rules, with no I/O.

The socket pumps feed it carrier events and Realtime events, each with the time it arrived, and
send whatever it leaves in its outboxes: commands for the carrier, client events for the model,
and records for the call log. Relay, greeting, barge-in and truncation are decided here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.audio import L16_24K, PCMU_8K, Transcoder
from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierCommand,
    CarrierEvent,
    ClearPlayback,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.ledger import ItemPlayback, PlaybackLedger
from bridge.log_records import LogRecord, RecordKind
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec, SessionOptions

FRAME_MS = 20  # the carriers' frame: 160 bytes of µ-law at 8 kHz
MARK_EVERY_FRAMES = 5  # a mark per 100 ms bounds how stale our view of playback can be
PROBE_INTERVAL_MS = 2000.0  # while idle: keeps the round-trip window fresh at no audible cost
DTMF_QUIET_MS = 1500.0  # digits typed within this of each other are one entry (an account number)

# Errors after which the session is of no further use (PROTOCOLS.md B5.4, B7).
FATAL_ERROR_CODES = frozenset(
    {
        "beta_api_shape_disabled",
        "invalid_api_key",
        "insufficient_quota",
        "model_not_found",
    }
)
# The session is over but the call need not be: a new session takes the conversation on.
RENEW_ERROR_CODES = frozenset({"session_expired"})
# The normal outcome of a late barge-in (PROTOCOLS.md fact 9): not worth more than a debug line.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active", "input_audio_buffer_commit_empty"})


@dataclass(frozen=True, slots=True)
class CallConfig:
    session: SessionOptions
    greeting: str = ""
    audio_passthrough: bool = False
    review_turns: bool = False  # RESPONSE_MODE=manual (the session's create_response is off)
    transcribed: bool = False  # input transcription is on: a turn's review waits for its words

    def opening_events(
        self, codec: RealtimeCodec, *, configured: bool = False, greeted: bool = False
    ) -> list[dict[str, Any]]:
        """What a new upstream session is sent first: its configuration, then the greeting."""
        events = [] if configured else [codec.session_update(self.session)]
        if self.greeting and not greeted:
            events.append(codec.create_response(self.greeting))
        return events


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """The model asked for a tool; the pump runs it off the audio path and reports back."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class TurnReview:
    """RESPONSE_MODE=manual: the caller finished a turn; the pump asks the hook before we answer."""

    item_id: str
    transcript: str


@dataclass(slots=True)
class _Response:
    response_id: str
    audio_items: list[str] = field(default_factory=list)
    out_of_band: bool = False


@dataclass(slots=True)
class _PendingBargeIn:
    detected_at: float
    record: dict[str, Any]


class Call:
    def __init__(
        self,
        config: CallConfig,
        codec: RealtimeCodec,
        started: CallStarted,
        now: float,
        *,
        configured: bool = False,
        greeted: bool = False,
        play_chunk_ms: int = FRAME_MS,
    ) -> None:
        """`configured`/`greeted`: a pre-opened session was already sent its configuration/greeting.
        `play_chunk_ms`: the most audio the carrier takes in one message (`CarrierLeg.play_chunk_ms`)."""
        self.config = config
        self.codec = codec
        self.started = started
        self.started_at = now
        self.to_carrier: list[CarrierCommand] = []
        self.to_upstream: list[dict[str, Any]] = []
        self.records: list[LogRecord] = []
        self.end_reason: str | None = None

        line = started.line
        model = PCMU_8K if config.audio_passthrough else L16_24K
        self.ledger = PlaybackLedger(bytes_per_ms=line.bytes_per_ms)
        self._inbound = Transcoder(line, model)
        self._outbound = Transcoder(model, line)
        self._frame_bytes = line.frame_bytes(FRAME_MS)
        self._mark_bytes = MARK_EVERY_FRAMES * self._frame_bytes
        # Audio ready at once goes in as few messages as the marks allow, not one per frame: a 100 ms
        # delta is two `media` at most, not five. Never more than a mark covers.
        self._piece_bytes = max(1, min(play_chunk_ms // FRAME_MS, MARK_EVERY_FRAMES)) * self._frame_bytes
        self._out_item: str | None = None
        self._out_content = 0
        self._out_pending = bytearray()  # line audio not yet a whole frame
        self._bytes_since_mark = 0
        self._responses: dict[str, _Response] = {}
        self._active: str | None = None  # the response writing to the conversation
        self._interrupted: set[str] = set()  # response ids whose audio must never reach the caller
        self._audio_done: set[str] = set()
        self._received_ms: dict[str, float] = {}  # model audio per item: what the service holds
        # Our output lags the model's audio by the resampler's delay; the truncate speaks model time.
        self._output_lag_ms = self._outbound.delay_ms
        self._model_bytes_per_ms = model.bytes_per_ms
        self._transcripts: dict[str, str] = {}
        self._speech_stopped_at: float | None = None
        self._speech_started_at: dict[str, float] = {}  # caller item -> when the caller began speaking
        self._awaiting_first_audio = bool(config.greeting)
        self._greeting_pending = bool(config.greeting)
        self._pending_barge_in: _PendingBargeIn | None = None
        self._last_probe = float("-inf")
        self._goodbye: str | None = None  # end reason once the goodbye has been heard
        self._goodbye_instructions = ""
        self._goodbye_response: str | None = None  # "" = asked for, id once created
        self._goodbye_spoken = False
        self.tool_requests: list[ToolRequest] = []
        self.turn_reviews: list[TurnReview] = []
        self._last_caller_item: str | None = None  # the newest caller audio item the service has added
        self._deferred: list[str | None] = []  # responses (their instructions) waiting for an idle moment
        self._requested: dict[str, str | None] = {}  # our response.create events not yet answered
        self._dtmf: list[str] = []
        self._dtmf_at = 0.0
        self.history: list[tuple[Literal["user", "assistant"], str]] = []  # for a replacement session
        self.needs_new_session = False
        self.sessions_restored = 0
        self.barge_ins = 0
        self.frames_in = 0
        self.frames_out = 0

        self.to_upstream.extend(config.opening_events(codec, configured=configured, greeted=greeted))
        self._probe(now)

    # -- carrier side -----------------------------------------------------------------------------

    def carrier_event(self, event: CarrierEvent, now: float) -> None:
        if isinstance(event, CallerAudio):
            if event.payload and self.end_reason is None:
                self.frames_in += 1
                self._relay_caller_audio(event.payload)
        elif isinstance(event, PlaybackMark):
            self.ledger.acked(event.name, now)
            self._hang_up_after_goodbye()
        elif isinstance(event, Dtmf):
            self._record(RecordKind.DTMF, digit=event.digit)
            self._dtmf.append(event.digit)
            self._dtmf_at = now
            if event.digit == "#":
                self._send_dtmf()
        elif isinstance(event, CallEnded):
            self._end(event.reason, hang_up=False)
        elif isinstance(event, CallStarted):
            self._record(
                RecordKind.ERROR, source="carrier", code="duplicate_start", message="second start ignored"
            )

    def _relay_caller_audio(self, audio: bytes) -> None:
        converted = self._inbound.process(audio)
        if converted:
            self.to_upstream.append(self.codec.append_audio(converted))

    def tick(self, now: float) -> None:
        """Called periodically by the pump: keeps the round-trip estimate fresh while idle."""
        if now - self._last_probe >= PROBE_INTERVAL_MS:
            self._probe(now)
        if self._dtmf and now - self._dtmf_at >= DTMF_QUIET_MS:
            self._send_dtmf()
        self._hang_up_after_goodbye()

    def _probe(self, now: float) -> None:
        name = self.ledger.probe(now)
        if name is not None:
            self._last_probe = now
            self.to_carrier.append(Mark(name))

    # -- model side -------------------------------------------------------------------------------

    def realtime_event(self, event: rt.RealtimeEvent, now: float) -> None:
        if isinstance(event, rt.AudioDelta):
            self._assistant_audio(event, now)
        elif isinstance(event, rt.SpeechStarted):
            self._speech_started_at[event.item_id] = now
            self._speech_started(now)
        elif isinstance(event, rt.SpeechStopped):
            self._speech_stopped_at = now
            self._awaiting_first_audio = True
        elif isinstance(event, rt.OutputTranscriptDelta):
            if event.response_id not in self._interrupted:
                self._transcripts[event.item_id] = self._transcripts.get(event.item_id, "") + event.delta
        elif isinstance(event, rt.AudioDone):
            self._audio_finished(event.item_id, now)
        elif isinstance(event, rt.OutputTranscriptDone):
            if event.response_id not in self._interrupted and event.item_id in self._transcripts:
                self._transcripts.pop(event.item_id)
                self._record(
                    RecordKind.ASSISTANT_TRANSCRIPT,
                    item_id=event.item_id,
                    text=event.transcript,
                    interrupted=False,
                )
                self.history.append(("assistant", event.transcript))
        elif isinstance(event, rt.ResponseCreated):
            out_of_band = event.conversation is None and bool(event.metadata)
            self._responses[event.response_id] = _Response(event.response_id, out_of_band=out_of_band)
            if not out_of_band:
                self._active = event.response_id
                if self._goodbye_response == "":
                    self._goodbye_response = event.response_id
        elif isinstance(event, rt.ResponseDone):
            self._response_done(event)
        elif isinstance(event, rt.InputCommitted):
            if self.config.review_turns and not self.config.transcribed:
                self.turn_reviews.append(TurnReview(event.item_id, ""))
        elif isinstance(event, rt.InputTranscript):
            if self.config.review_turns and self.config.transcribed:
                self.turn_reviews.append(TurnReview(event.item_id, event.transcript.strip()))
            if event.transcript.strip():
                # Transcripts arrive late; the line belongs where the caller began to speak.
                at = self._speech_started_at.pop(event.item_id, None)
                text = event.transcript.strip()
                self.records.append(
                    LogRecord(RecordKind.CALLER_TRANSCRIPT, {"item_id": event.item_id, "text": text}, at)
                )
                self.history.append(("user", text))
        elif isinstance(event, rt.InputTranscriptFailed):
            if self.config.review_turns and self.config.transcribed:
                self.turn_reviews.append(TurnReview(event.item_id, ""))  # unheard words still get an answer
        elif isinstance(event, rt.ServerError):
            self._server_error(event)
        elif isinstance(event, rt.ItemAdded):
            if event.role == "user" and event.item_type == "message":
                self._last_caller_item = event.item_id
        elif isinstance(event, rt.FunctionCall):
            self._record(
                RecordKind.TOOL_CALL, call_id=event.call_id, name=event.name, arguments=event.arguments
            )
            self.tool_requests.append(ToolRequest(event.call_id, event.name, event.arguments))
        elif isinstance(event, rt.ItemTruncated):
            pass  # Confirms our truncate; nothing left to do.

    def _assistant_audio(self, event: rt.AudioDelta, now: float) -> None:
        if event.response_id in self._interrupted or self.end_reason is not None:
            return
        response = self._responses.get(event.response_id)
        if response is not None and event.item_id not in response.audio_items:
            response.audio_items.append(event.item_id)
        if event.item_id != self._out_item:
            self._finish_out_item(now)
            self._out_item, self._out_content = event.item_id, event.content_index
        self._received_ms[event.item_id] = (
            self._received_ms.get(event.item_id, 0.0) + len(event.audio) / self._model_bytes_per_ms
        )
        self._out_pending += self._outbound.process(event.audio)
        self._send_frames(now, final=False)

    def _send_frames(self, now: float, *, final: bool) -> None:
        item = self._out_item
        if item is None:
            return
        pending = self._out_pending
        frame_bytes = self._frame_bytes
        end = len(pending) if final else len(pending) - len(pending) % frame_bytes
        offset = 0
        while offset < end:
            idle = not self.ledger.pending()
            # The first frame after silence goes alone with its own mark: its echo is the earliest
            # evidence of when the carrier really started playing (its buffering is unknown until then).
            # Later pieces end where a mark is due, so marks fall every 100 ms of audio after it.
            due = self._mark_bytes - self._bytes_since_mark
            size = min(end - offset, frame_bytes if idle else min(self._piece_bytes, due))
            piece = bytes(pending[offset : offset + size])
            offset += size
            self.to_carrier.append(PlayAudio(piece))
            self.ledger.sent(item, self._out_content, size, now)
            self.frames_out += -(-size // frame_bytes)
            self._bytes_since_mark += size
            if idle or self._bytes_since_mark >= self._mark_bytes:
                self._mark()
        del pending[:offset]
        if final:
            self._mark()
        if offset and self._awaiting_first_audio:
            self._awaiting_first_audio = False
            if self._greeting_pending:
                self._greeting_pending = False
                self._record(RecordKind.GREETING_LATENCY, ms=round(now - self.started_at, 1))
            elif self._speech_stopped_at is not None:
                self._record(RecordKind.TURN_LATENCY, ms=round(now - self._speech_stopped_at, 1))

    def _mark(self) -> None:
        name = self.ledger.mark()
        if name is not None:
            self.to_carrier.append(Mark(name))
        self._bytes_since_mark = 0

    def _finish_out_item(self, now: float) -> None:
        """Send the rest of the current item's audio, including the resampler's tail."""
        if self._out_item is None:
            return
        self._out_pending += self._outbound.flush()  # flush() also resets it
        self._send_frames(now, final=True)
        self._out_item = None

    def _audio_finished(self, item_id: str, now: float) -> None:
        self._audio_done.add(item_id)
        if item_id == self._out_item:
            self._finish_out_item(now)

    def _response_done(self, event: rt.ResponseDone) -> None:
        response = self._responses.pop(event.response_id, None)
        if self._active == event.response_id:
            self._active = None
        if self._requested and response is not None and not response.out_of_band:
            # Responses answer requests in order; a refused one already left (see _server_error).
            del self._requested[next(iter(self._requested))]
        if self._deferred and self._active is None and self._goodbye is None:
            self._create_response(self._deferred.pop(0))
        if self._goodbye is not None:
            if event.response_id == self._goodbye_response:
                self._goodbye_spoken = True
                self._hang_up_after_goodbye()
            elif self._goodbye_response is None and self._active is None:
                self._ask_for_goodbye()
        if event.usage:
            self.records.append(LogRecord(RecordKind.USAGE, dict(event.usage)))
        if event.status == "failed":
            self._record(
                RecordKind.ERROR, source="upstream", code="response_failed", message=str(event.reason)
            )
        if response is not None:
            for item_id in response.audio_items:
                if item_id not in self._interrupted:
                    self.ledger.forget(item_id)

    def _server_error(self, event: rt.ServerError) -> None:
        code = event.code or ""
        if code == "conversation_already_has_active_response" and event.client_event_id in self._requested:
            # The service started a response of its own at the same moment: ours goes next.
            self._deferred.insert(0, self._requested.pop(event.client_event_id))
            return
        if code in BENIGN_ERROR_CODES:
            return
        self._record(RecordKind.ERROR, source="upstream", code=code or event.type, message=event.message)
        if code in FATAL_ERROR_CODES:
            self.upstream_lost()
        elif code in RENEW_ERROR_CODES:
            self.needs_new_session = True

    # -- tools and keypad -------------------------------------------------------------------------

    def tool_result(self, request: ToolRequest, ok: bool, output: str, duration_ms: float) -> None:
        """The pump ran a tool: hand the model its output and let it go on speaking."""
        if self.end_reason is not None:
            return
        self._record(
            RecordKind.TOOL_RESULT,
            call_id=request.call_id,
            name=request.name,
            ok=ok,
            duration_ms=round(duration_ms, 1),
            **({"result": output} if ok else {"error": output}),
        )
        self.to_upstream.append(self.codec.function_output(request.call_id, output))
        self._respond()

    def inject(self, text: str, image_url: str | None = None, *, respond: bool = False) -> None:
        """Context from outside (an operator, a CRM): placed right after the caller's latest words."""
        self.to_upstream.append(self.codec.user_text(text, self._last_caller_item, image_url))
        self._record(RecordKind.NOTE, text=text or "(image)", injected=True, image=bool(image_url))
        if respond:
            self._respond()

    def say(self, text: str) -> None:
        """Speak this word for word (an operator's announcement), as soon as nothing else is said."""
        self._respond(f"Say exactly this to the caller, nothing else: {text}")

    def turn_reviewed(self, review: TurnReview, context: str) -> None:
        """The hook has seen the caller's turn: add what it returned right after it, then answer."""
        if self.end_reason is not None:
            return
        if context:
            self.to_upstream.append(self.codec.user_text(context, review.item_id))
            self._record(RecordKind.NOTE, text=context, injected=True, source="before_response")
        self._respond()

    def take_turn_reviews(self) -> list[TurnReview]:
        reviews, self.turn_reviews = self.turn_reviews, []
        return reviews

    def end_after_goodbye(self, request: ToolRequest) -> None:
        """The model chose to end the call: it says goodbye, and the line closes once that was heard."""
        self._record(
            RecordKind.TOOL_RESULT,
            call_id=request.call_id,
            name=request.name,
            ok=True,
            duration_ms=0.0,
            result="the call ends after the goodbye",
        )
        self.to_upstream.append(self.codec.function_output(request.call_id, '{"ok": true}'))
        self.say_goodbye("assistant_ended", "Say goodbye to the caller in one short sentence.")

    def transferred(self) -> None:
        """The carrier now runs a <Dial>: this stream is over."""
        self._end("transferred", hang_up=False)

    @property
    def speaking(self) -> bool:
        """The assistant is generating, or the caller has not heard all of it yet."""
        return self._active is not None or self.ledger.pending()

    def _send_dtmf(self) -> None:
        digits, self._dtmf = "".join(self._dtmf), []
        self.to_upstream.append(self.codec.user_text(f"[The caller typed on the keypad: {digits}]"))
        self.history.append(("user", f"[keypad: {digits}]"))
        self._respond()

    def _respond(self, instructions: str | None = None) -> None:
        """Ask for a response now, or as soon as the one in progress ends (only one may be active)."""
        idle = self._active is None and not self._requested and self._goodbye is None
        if idle and not self._deferred:
            self._create_response(instructions)
        elif instructions is not None or None not in self._deferred:
            self._deferred.append(instructions)

    def _create_response(self, instructions: str | None) -> None:
        event = self.codec.create_response(instructions)
        self._requested[event["event_id"]] = instructions
        self.to_upstream.append(event)

    # -- barge-in ---------------------------------------------------------------------------------

    def _speech_started(self, now: float) -> None:
        generating = self._active is not None and self._active not in self._interrupted
        if not self.ledger.pending() and not generating:
            return  # An ordinary turn: nothing of ours is playing.
        self.to_carrier.append(ClearPlayback())  # First, before any bookkeeping: the caller hears this.
        playbacks = {p.item_id: p for p in self.ledger.clear(now)}
        self._out_pending.clear()
        self._outbound.reset()
        interrupted_item = self._out_item
        self._out_item = None

        active = self._responses.get(self._active) if self._active else None
        if active is not None:
            self._interrupted.add(active.response_id)
            for item_id in active.audio_items:
                if item_id not in playbacks and item_id not in self._audio_done:
                    # Everything sent was confirmed played, but the model had more to say.
                    sent = self.ledger.sent_ms(item_id)
                    playbacks[item_id] = ItemPlayback(item_id, 0, sent, sent, sent > 0)
        truncates = []
        for p in playbacks.values():
            whole = p.heard_ms >= p.sent_ms and p.item_id in self._audio_done
            if whole:
                continue  # The caller heard it all; truncating would make the model repeat itself.
            self.to_upstream.append(self.codec.truncate(p.item_id, self._model_ms(p), p.content_index))
            truncates.append(p)
            self._log_cut_transcript(p)
        if active is not None and not self.config.session.interrupt_response:
            self.to_upstream.append(self.codec.cancel_response(active.response_id))
        self._greeting_pending = False
        self.barge_ins += 1
        main = next(
            (p for p in truncates if p.item_id == interrupted_item), truncates[0] if truncates else None
        )
        record = {
            "item_id": main.item_id if main else interrupted_item,
            "sent_ms": main.sent_ms if main else 0,
            "heard_ms": main.heard_ms if main else 0,
            "items_truncated": len(truncates),
            "rtt_ms": round(self.ledger.rtt_ms or 0.0, 1),
        }
        self._pending_barge_in = _PendingBargeIn(now, record)

    def _model_ms(self, p: ItemPlayback) -> int:
        """What the caller heard, on the model's clock, never beyond what the service holds."""
        if not p.started:
            return 0
        heard = max(0, round(p.heard_ms - self._output_lag_ms))
        return min(heard, int(self._received_ms.get(p.item_id, 0.0)))

    def clear_written(self, now: float) -> None:
        """The pump wrote our clear to the carrier: the barge-in's reaction time is known."""
        pending, self._pending_barge_in = self._pending_barge_in, None
        if pending is not None:
            self._record(
                RecordKind.BARGE_IN, reaction_ms=round(now - pending.detected_at, 2), **pending.record
            )

    def _log_cut_transcript(self, p: ItemPlayback) -> None:
        text = self._transcripts.pop(p.item_id, "")
        if not text:
            return
        # The transcript runs ahead of playback; cut it in proportion to what was heard.
        total = max(p.sent_ms, 1)
        heard_text = text[: round(len(text) * min(p.heard_ms / total, 1.0))]
        self._record(
            RecordKind.ASSISTANT_TRANSCRIPT,
            item_id=p.item_id,
            text=heard_text.rstrip(),
            full_text=text,
            interrupted=True,
            heard_ms=p.heard_ms,
        )
        if heard_text.strip():
            self.history.append(("assistant", heard_text.rstrip()))

    # -- endings ----------------------------------------------------------------------------------

    def say_goodbye(self, reason: str, instructions: str) -> None:
        """Let the model say a last word; the call ends with `reason` once the caller has heard it."""
        if self.end_reason is not None or self._goodbye is not None:
            return
        self._goodbye, self._goodbye_instructions = reason, instructions
        if self._active is None:
            self._ask_for_goodbye()
        # Otherwise the goodbye follows the response in progress (only one may be active).

    @property
    def goodbye_reason(self) -> str | None:
        return self._goodbye

    def _ask_for_goodbye(self) -> None:
        self._goodbye_response = ""
        self.to_upstream.append(self.codec.create_response(self._goodbye_instructions))

    def _hang_up_after_goodbye(self) -> None:
        if self._goodbye is not None and self._goodbye_spoken and not self.ledger.pending():
            self._end(self._goodbye)

    def hang_up(self, reason: str) -> None:
        self._end(reason, hang_up=True)

    def resume(self, codec: RealtimeCodec, now: float) -> None:
        """A new session replaces a lost one: configure it and give it the conversation so far.

        Whatever the old session was saying is gone (its items do not exist in the new one), so the
        caller's playback is cleared: a short gap, then the conversation goes on."""
        self.codec = codec
        self.needs_new_session = False
        if self.ledger.pending():
            self.to_carrier.append(ClearPlayback())
            self.ledger.clear(now)
        self._responses.clear()
        self._active = None
        self._interrupted.clear()
        self._transcripts.clear()
        self._out_item = None
        self._out_pending.clear()
        self._outbound.reset()
        self.to_upstream.extend(self.config.opening_events(codec, greeted=True))
        self.to_upstream.extend(codec.history_item(role, text) for role, text in self.history)
        if self._goodbye is not None and not self._goodbye_spoken:
            self._ask_for_goodbye()
        self.sessions_restored += 1
        self._record(RecordKind.SESSION_RESTORED, items=len(self.history))

    def upstream_lost(self) -> None:
        """The model's session is gone; the pump apologises to the caller and closes the line."""
        self._end("upstream_failure", hang_up=False)

    def _end(self, reason: str, *, hang_up: bool = True) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        if hang_up:
            self.to_carrier.append(Hangup(reason))

    def _record(self, kind: RecordKind, **data: Any) -> None:
        self.records.append(LogRecord(kind, data))

    def take_tool_requests(self) -> list[ToolRequest]:
        requests, self.tool_requests = self.tool_requests, []
        return requests

    def drain(self) -> tuple[list[CarrierCommand], list[dict[str, Any]], list[LogRecord]]:
        """Take everything the pumps must act on, in order."""
        out = (self.to_carrier, self.to_upstream, self.records)
        self.to_carrier, self.to_upstream, self.records = [], [], []
        return out
