"""A phone call answered by a Realtime session: its rules, with no I/O (`PhoneCall` has the rest).

We own the turn structure here: every response is asked for through the `ResponseQueue` (one at a
time), the service streams a response's audio faster than real time, and a barge-in clears the
carrier and truncates the model's item at exactly what the caller heard (the `PlaybackLedger`).
Relay, greeting, barge-in and truncation, tool outputs, keypad entries, operators' notes, the session
replaced after a loss, and the post-call summary are decided here.
"""

from __future__ import annotations

from bridge.audio import L16_24K, PCMU_8K, Transcoder
from bridge.call_config import CallConfig
from bridge.call_jobs import ToolRequest, TurnReview
from bridge.carrier.events import CallStarted, ClearPlayback
from bridge.log_records import LogRecord, RecordKind
from bridge.outbound_audio import FRAME_MS
from bridge.phone_call import PendingBargeIn, PhoneCall
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec
from bridge.response_queue import Request, ResponseQueue
from bridge.summary import PostCallSummary

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
# End reasons after which no summary is asked for: the session is gone, or the process is going.
NO_SUMMARY_REASONS = frozenset({"upstream_failure", "shutdown", "error"})


class Call(PhoneCall):
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
        model = PCMU_8K if config.audio_passthrough else L16_24K
        super().__init__(config, started, now, model, play_chunk_ms)
        self.codec = codec
        self._inbound = Transcoder(started.line, model)
        self.responses = ResponseQueue()
        self._audio_done: set[str] = set()
        self._transcripts: dict[str, str] = {}
        self._speech_started_at: dict[str, float] = {}  # caller item -> when the caller began speaking
        self._last_caller_item: str | None = None  # the newest caller audio item the service has added

        if not configured:
            self.to_upstream.append(codec.session_update(config.session))
        if config.greeting:
            self.outbound.await_greeting(now)
            if not greeted:
                self._ask(config.greeting)
        self._probe(now)

    def _caller_audio(self, audio: bytes, now: float) -> None:
        converted = self._inbound.process(audio)
        if converted:
            self.to_upstream.append(self.codec.append_audio(converted))

    # -- model side -------------------------------------------------------------------------------

    def model_event(self, event: rt.RealtimeEvent, now: float) -> None:
        if isinstance(event, rt.AudioDelta):
            self._assistant_audio(event, now)
        elif isinstance(event, rt.SpeechStarted):
            self._speech_started_at[event.item_id] = now
            self._speech_started(now)
        elif isinstance(event, rt.SpeechStopped):
            self.outbound.await_reply(now)
        elif isinstance(event, rt.OutputTranscriptDelta):
            if event.response_id not in self.responses.interrupted:
                self._transcripts[event.item_id] = self._transcripts.get(event.item_id, "") + event.delta
        elif isinstance(event, rt.AudioDone):
            self._audio_done.add(event.item_id)
            self._latency(self.outbound.item_done(event.item_id, now, self.to_carrier))
        elif isinstance(event, rt.OutputTranscriptDone):
            if event.response_id not in self.responses.interrupted and event.item_id in self._transcripts:
                self._transcripts.pop(event.item_id)
                self._record(
                    RecordKind.ASSISTANT_TRANSCRIPT,
                    item_id=event.item_id,
                    text=event.transcript,
                    interrupted=False,
                )
                self.history.append(("assistant", event.transcript))
        elif isinstance(event, rt.ResponseCreated):
            self.responses.created(event)
        elif isinstance(event, rt.ResponseDone):
            self._response_done(event, now)
        elif isinstance(event, rt.InputCommitted):
            if self.config.review_turns and not self.config.transcribed:
                self.jobs.append(TurnReview(event.item_id, ""))
        elif isinstance(event, rt.InputTranscript):
            if self.config.review_turns and self.config.transcribed:
                self.jobs.append(TurnReview(event.item_id, event.transcript.strip()))
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
                self.jobs.append(TurnReview(event.item_id, ""))  # unheard words still get an answer
        elif isinstance(event, rt.ServerError):
            self._server_error(event)
        elif isinstance(event, rt.ItemAdded):
            if event.role == "user" and event.item_type == "message":
                self._last_caller_item = event.item_id
        elif isinstance(event, rt.FunctionCall):
            self._function_call(ToolRequest(event.call_id, event.name, event.arguments), now)
        elif isinstance(event, rt.ItemTruncated):
            pass  # Confirms our truncate; nothing left to do.

    def _assistant_audio(self, event: rt.AudioDelta, now: float) -> None:
        responses = self.responses
        if event.response_id in responses.interrupted or self.end_reason is not None:
            return
        responses.audio(event.response_id, event.item_id)
        record = self.outbound.play(event.item_id, event.content_index, event.audio, now, self.to_carrier)
        if record is not None:
            self.records.append(record)

    def _latency(self, record: LogRecord | None) -> None:
        if record is not None:
            self.records.append(record)

    def _response_done(self, event: rt.ResponseDone, now: float) -> None:
        response, ask = self.responses.done(event)
        if ask is not None:
            self._create(ask)
        if response is not None and response.answers is not None and response.answers.last:
            self.goodbye.spoken()
            self._line_went_quiet(now)
        elif self._waiting_transfer is not None:
            self._line_went_quiet(now)
        if event.usage:
            self.records.append(LogRecord(RecordKind.USAGE, dict(event.usage)))
        if event.status == "failed":
            self._record(
                RecordKind.ERROR, source="upstream", code="response_failed", message=str(event.reason)
            )
        if response is not None:
            for item_id in response.audio_items:
                self.ledger.forget(item_id)

    def _server_error(self, event: rt.ServerError) -> None:
        code = event.code or ""
        if code == "conversation_already_has_active_response" and self.responses.refused(
            event.client_event_id
        ):
            return  # The service started a response of its own at the same moment: ours goes next.
        if (request := self.responses.unanswered(event.client_event_id)) is not None:
            self._create(request)  # ours was refused for good (it is logged below): the next one goes
        if code in BENIGN_ERROR_CODES:
            return
        self._record(RecordKind.ERROR, source="upstream", code=code or event.type, message=event.message)
        if code in FATAL_ERROR_CODES:
            self.upstream_lost()
        elif code in RENEW_ERROR_CODES:
            self.needs_new_session = True

    # -- responses --------------------------------------------------------------------------------

    def _ask(self, instructions: str | None = None, *, last: bool = False) -> None:
        """A response, now or as soon as the line is free (only one may be active)."""
        request = self.responses.ask(instructions, last=last)
        if request is not None:
            self._create(request)

    def _create(self, request: Request) -> None:
        event = self.codec.create_response(request.instructions)
        self.responses.asked(request, event["event_id"])
        self.to_upstream.append(event)

    # -- tools and keypad -------------------------------------------------------------------------

    def _send_tool_output(self, call_id: str, output: str) -> None:
        self.to_upstream.append(self.codec.function_output(call_id, output))

    def _continue_after_tool(self) -> None:
        self._ask()

    def inject(self, text: str, image_url: str | None = None, *, respond: bool = False) -> None:
        """Context from outside (an operator, a CRM): placed right after the caller's latest words."""
        self.to_upstream.append(self.codec.user_text(text, self._last_caller_item, image_url))
        self._record(RecordKind.NOTE, text=text or "(image)", injected=True, image=bool(image_url))
        if respond:
            self._ask()

    def say(self, text: str) -> None:
        """Speak this word for word (an operator's announcement), as soon as nothing else is said."""
        self._ask(f"Say exactly this to the caller, nothing else: {text}")

    def turn_reviewed(self, review: TurnReview, context: str) -> None:
        """The hook has seen the caller's turn: add what it returned right after it, then answer."""
        if self.end_reason is not None:
            return
        if context:
            self.to_upstream.append(self.codec.user_text(context, review.item_id))
            self._record(RecordKind.NOTE, text=context, injected=True, source="before_response")
        self._ask()

    def image_problem(self) -> str | None:
        return None if self.codec.dialect == "ga" else "images need the GA Realtime dialect"

    def _keyed(self, digits: str) -> None:
        self.to_upstream.append(self.codec.user_text(f"[The caller typed on the keypad: {digits}]"))
        self.history.append(("user", f"[keypad: {digits}]"))
        self._ask()

    def _model_quiet(self) -> bool:
        return self.responses.active is None

    # -- barge-in ---------------------------------------------------------------------------------

    def _speech_started(self, now: float) -> None:
        responses = self.responses
        if not self.ledger.pending() and not responses.generating:
            return  # An ordinary turn: nothing of ours is playing.
        self.to_carrier.append(ClearPlayback())  # First, before any bookkeeping: the caller hears this.
        interrupted_item = self.outbound.drop()
        active = responses.interrupt()
        unfinished = [i for i in active.audio_items if i not in self._audio_done] if active else []
        truncates = []
        for p in self.ledger.clear(now, unfinished):
            if p.heard_ms >= p.sent_ms and p.item_id in self._audio_done:
                continue  # The caller heard it all; truncating would make the model repeat itself.
            self.to_upstream.append(self.codec.truncate(p.item_id, p.audio_end_ms, p.content_index))
            truncates.append(p)
            self._log_cut_transcript(p.item_id, p.sent_ms, p.heard_ms)
        if active is not None and not self.config.session.interrupt_response:
            self.to_upstream.append(self.codec.cancel_response(active.response_id))
        self.outbound.greeting_interrupted()
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
        self._pending_barge_in = PendingBargeIn(now, record)
        if self._waiting_for_silence:
            self._line_went_quiet(now)

    def _log_cut_transcript(self, item_id: str, sent_ms: int, heard_ms: int) -> None:
        text = self._transcripts.pop(item_id, "")
        if not text:
            return
        # The transcript runs ahead of playback; cut it in proportion to what was heard.
        total = max(sent_ms, 1)
        heard_text = text[: round(len(text) * min(heard_ms / total, 1.0))]
        self._record(
            RecordKind.ASSISTANT_TRANSCRIPT,
            item_id=item_id,
            text=heard_text.rstrip(),
            full_text=text,
            interrupted=True,
            heard_ms=heard_ms,
        )
        if heard_text.strip():
            self.history.append(("assistant", heard_text.rstrip()))

    # -- endings ----------------------------------------------------------------------------------

    def _ask_goodbye(self, reason: str, now: float) -> None:
        self._ask(self.goodbye.instructions, last=True)

    def resume(self, codec: RealtimeCodec, now: float) -> None:
        """A new session replaces a lost one: configure it and give it the conversation so far.

        Whatever the old session was saying is gone (its items do not exist in the new one), so the
        caller's playback is cleared: a short gap, then the conversation goes on. What we had asked
        of the old session and not heard is asked of the new one."""
        self.codec = codec
        self.needs_new_session = False
        if self.ledger.pending():
            self.to_carrier.append(ClearPlayback())
            self.ledger.clear(now)
        self._transcripts.clear()
        self.outbound.drop()
        self.to_upstream.append(codec.session_update(self.config.session))
        self.to_upstream.extend(codec.history_item(role, text) for role, text in self.history)
        if (request := self.responses.restart()) is not None:
            self._create(request)
        self.sessions_restored += 1
        self._record(RecordKind.SESSION_RESTORED, items=len(self.history))

    def after_call(self, reason: str) -> PostCallSummary | None:
        """Once the call ended with `reason`: the summary to ask the still-open session for, or None
        (none configured, nothing was said, or no session to ask). A response the model was still
        giving is cancelled first: nobody will hear it."""
        if not self.config.dispositions or not self.history or reason in NO_SUMMARY_REASONS:
            return None
        active = self.responses.active
        answering = active.response_id if active is not None and not active.interrupted else None
        return PostCallSummary(self.codec, self.config.dispositions, answering)
