"""A phone call answered by a Realtime session: its rules, with no I/O (`PhoneCall` has the rest).

We own the turn structure here: every response is asked for through the `ResponseQueue` (one at a
time), the service streams a response's audio faster than real time, and a barge-in clears the
carrier and truncates the model's item at exactly what the caller heard (the `PlaybackLedger`).
Relay, greeting, barge-in and truncation, tool outputs, keypad entries, operators' notes, the session
replaced after a loss, and the post-call summary are decided here; on a call we placed with machine
detection, `AnswerDetection` (who answered, and what to do about it).

The assistant's lines are logged as the caller heard them: whole once heard to the end, cut where a
barge-in, a hang-up or a lost session stopped them. A recorded call's notice, if one is configured,
plays before anything of the model's and is never cut by a barge-in: the model's audio waits for it,
and the caller's words still reach the model meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.answer_detection import AnswerDetection, Step, Verdict
from bridge.audio import L16_24K, PCMU_8K, Transcoder
from bridge.call_config import CallConfig
from bridge.call_jobs import AwaitVerdict, ToolRequest, TurnReview
from bridge.carrier.events import CallStarted, ClearPlayback
from bridge.ledger import ItemPlayback
from bridge.log_records import LogRecord, RecordKind
from bridge.outbound_audio import FRAME_MS
from bridge.phone_call import PendingBargeIn, PhoneCall
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec
from bridge.response_queue import Request, Response, ResponseQueue
from bridge.summary import PostCallSummary
from bridge.upstream_loss import NOT_TRIED, ConnectReport, UpstreamLoss

if TYPE_CHECKING:
    from bridge.recording.call_recording import CallRecording

VOICEMAIL_LIMIT_MS = 60_000.0  # a message on a machine may run longer than a goodbye
# A carrier that never echoes the notice's marks does not hold the model back for longer than the notice
# plus this.
NOTICE_GRACE_MS = 5000.0

# Errors after which the session is of no further use (docs/protocols.md §R10).
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
# The normal outcome of a late barge-in (docs/protocols.md §R9): not worth more than a debug line.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active", "input_audio_buffer_commit_empty"})
# End reasons after which no summary is asked for: the session is gone, or the process is going.
NO_SUMMARY_REASONS = frozenset({"upstream_failure", "shutdown", "error"})


@dataclass(slots=True)
class _CallerTurn:
    began_at: float  # when the service said the caller began speaking (our clock)
    audio_start_ms: int
    spoken_ms: int | None = None  # known once they stopped


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
        tap: CallRecording | None = None,
    ) -> None:
        """`configured`/`greeted`: a pre-opened session was already sent its configuration/greeting.
        `play_chunk_ms`: the most audio the carrier takes in one message (`CarrierLeg.play_chunk_ms`).
        `tap`: the call's recording, when it is recorded (then the recording notice plays first)."""
        model = PCMU_8K if config.audio_passthrough else L16_24K
        super().__init__(config, started, now, model, play_chunk_ms, tap)
        self.codec = codec
        self._inbound = Transcoder(started.line, model)
        self.responses = ResponseQueue()
        self._audio_done: set[str] = set()
        self._transcripts: dict[str, str] = {}  # assistant item -> its transcript so far, not yet logged
        # ... of which complete (and since when): logged once the caller heard it all
        self._complete: dict[str, float] = {}
        self._caller_turns: dict[str, _CallerTurn] = {}  # caller item -> when they spoke, how long
        self._last_caller_item: str | None = None  # the newest caller audio item the service has added
        # A call we placed says nothing, and hears nothing, until the carrier says who answered.
        self.answer = AnswerDetection(config.detection, now) if config.detection is not None else None
        # Caller audio appended to the current session (line bytes), counted on a recorded call: where
        # its VAD's times fall on the recording.
        self._caller_bytes = 0
        self._notice_until: float | None = None  # the notice is playing; the model waits until then

        if not configured:
            self.to_upstream.append(codec.session_update(config.session))
        if self.answer is not None:
            self.jobs.append(AwaitVerdict())
        elif config.greeting:
            self.outbound.await_greeting(now)
            if not greeted:
                self._ask(config.greeting)
        self._probe(now)  # before the notice: its echo must not wait behind it
        if tap is not None and config.recording_notice:
            self._play_notice(config.recording_notice, now)

    def _caller_audio(self, audio: bytes, now: float) -> None:
        if self.answer is not None and not self.answer.hears_callee:
            return
        if self._tap is not None:
            self._caller_bytes += len(audio)
        converted = self._inbound.process(audio)
        if converted:
            self.to_upstream.append(self.codec.append_audio(converted))

    def _heard(self, now: float) -> None:
        if self._notice_until is not None and not self.ledger.pending():
            self._notice_heard(now, whole=True)
        if self._complete:
            self._log_heard_transcripts()

    def tick(self, now: float) -> None:
        if self._notice_until is not None and now >= self._notice_until:
            self._notice_heard(now, whole=False)
        if self.answer is not None and (step := self.answer.tick(now)) is not Step.NONE:
            self._answer_step(step, None, now)
        super().tick(now)

    # -- model side -------------------------------------------------------------------------------

    def model_event(self, event: rt.RealtimeEvent, now: float) -> None:
        if isinstance(event, rt.AudioDelta):
            self._assistant_audio(event, now)
        elif isinstance(event, rt.SpeechStarted):
            began_at = self._caller_spoke_at(event.audio_start_ms, now)
            self._caller_turns[event.item_id] = _CallerTurn(began_at, event.audio_start_ms)
            self._speech_started(now)
        elif isinstance(event, rt.SpeechStopped):
            self.outbound.await_reply(now)
            self._caller_stopped(event)
        elif isinstance(event, rt.OutputTranscriptDelta):
            if event.response_id not in self.responses.interrupted:
                self._transcripts[event.item_id] = self._transcripts.get(event.item_id, "") + event.delta
        elif isinstance(event, rt.AudioDone):
            self._audio_done.add(event.item_id)
            self._latency(self.outbound.item_done(event.item_id, now, self.to_carrier))
            if self._complete:
                self._log_heard_transcripts()
        elif isinstance(event, rt.OutputTranscriptDone):
            if event.response_id not in self.responses.interrupted and event.item_id in self._transcripts:
                # Logged once the caller heard it all; a barge-in or a hang-up first logs what was.
                self._transcripts[event.item_id] = event.transcript
                self._complete[event.item_id] = now
                self._log_heard_transcripts()
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
            text = event.transcript.strip()
            if text:
                turn = self._caller_turns.pop(event.item_id, None)
                data: dict[str, Any] = {"item_id": event.item_id, "text": text}
                if turn is not None and turn.spoken_ms is not None:
                    data["spoken_ms"] = turn.spoken_ms
                # Transcripts arrive late; the line belongs where the caller began to speak.
                self.records.append(
                    LogRecord(RecordKind.CALLER_TRANSCRIPT, data, turn.began_at if turn else None)
                )
                self.history.append(("user", text))
            else:
                self._caller_spoke(event.item_id, "empty")
        elif isinstance(event, rt.InputTranscriptFailed):
            if self.config.review_turns and self.config.transcribed:
                self.jobs.append(TurnReview(event.item_id, ""))  # unheard words still get an answer
            self._caller_spoke(event.item_id, "failed", message=event.message)
        elif isinstance(event, rt.ServerError):
            self._server_error(event)
        elif isinstance(event, rt.ItemAdded):
            if event.role == "user" and event.item_type == "message":
                self._last_caller_item = event.item_id
        elif isinstance(event, rt.FunctionCall):
            self._function_call(ToolRequest(event.call_id, event.name, event.arguments), now)
        elif isinstance(event, rt.ItemTruncated):
            pass  # Confirms our truncate; nothing left to do.

    def _caller_stopped(self, event: rt.SpeechStopped) -> None:
        turn = self._caller_turns.get(event.item_id)
        if turn is None:
            return
        # The service's figures include the padding before the speech and the silence that ended it
        # (docs/protocols.md §R6): what is left is how long the caller spoke. Speech at the very start
        # of the session has its padding cut short (it starts at 0): none is subtracted then.
        session = self.config.session
        padding = session.vad_prefix_padding_ms if turn.audio_start_ms > 0 else 0
        if session.turn_detection == "server_vad":
            padding += session.vad_silence_duration_ms
        turn.spoken_ms = max(event.audio_end_ms - turn.audio_start_ms - padding, 0)
        if not self.config.transcribed:
            self._caller_spoke(event.item_id, "off")

    def _caller_spoke(self, item_id: str, words: str, **details: Any) -> None:
        """A caller turn without its words (transcription off, failed or empty): how long they spoke,
        where they spoke, so the timeline still reads as a conversation."""
        turn = self._caller_turns.pop(item_id, None)
        if turn is None:
            return
        data = {"item_id": item_id, "spoken_ms": turn.spoken_ms, "words": words, **details}
        self.records.append(LogRecord(RecordKind.CALLER_SPOKE, data, turn.began_at))

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
                self.outbound.play_started.pop(item_id, None)

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
        if code in FATAL_ERROR_CODES:
            self.upstream_lost(UpstreamLoss(code, event.message))
            return
        self._record(RecordKind.ERROR, source="upstream", code=code or event.type, message=event.message)
        if code in RENEW_ERROR_CODES:
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
        """Context from outside (an operator, a CRM): placed right after the caller's latest words.
        Whoever added it puts it on record (`CallPump.operator_action`)."""
        self.to_upstream.append(self.codec.user_text(text, self._last_caller_item, image_url))
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

    # -- a call we placed: who answered ------------------------------------------------------------

    def answered(self, verdict: Verdict, now: float) -> None:
        """The carrier said who answered (or, later, that a machine's greeting ended)."""
        if self.answer is None or self.end_reason is not None:
            return
        self._answer_step(self.answer.verdict(verdict, now), verdict, now)

    def _answer_step(self, step: Step, verdict: Verdict | None, now: float) -> None:
        answer = self.answer
        assert answer is not None
        record: dict[str, Any] = {"action": step.value, "after_ms": round(now - self.started_at)}
        if verdict is not None:
            record.update(answered_by=verdict.answered_by.value, message_end=verdict.message_end)
        else:
            record["assumed"] = True  # no word in time: as with a person, or as if the beep had come
        self._record(RecordKind.ANSWERING, **record)
        if step is Step.CONVERSE:
            if self.config.greeting:
                self.outbound.await_greeting(now)
                self._ask(self.config.greeting)
        elif step is Step.AWAIT_MESSAGE_END:
            self.jobs.append(AwaitVerdict(verdict))
        elif step is Step.HANG_UP:
            self._end("machine")
        elif step is Step.LEAVE_MESSAGE:
            instructions = answer.plan.voicemail_instructions()
            self.say_goodbye("voicemail", now, instructions=instructions, limit_ms=VOICEMAIL_LIMIT_MS)

    # -- barge-in ---------------------------------------------------------------------------------

    def _caller_spoke_at(self, audio_start_ms: int, now: float) -> float:
        """On a recorded call, when the caller began the speech the model's VAD found at
        `audio_start_ms` of the audio we appended, on our clock as the recording places caller audio;
        otherwise (or if that does not fit) `now`, when we heard of it."""
        behind = self._caller_bytes / self.ledger.bytes_per_ms - audio_start_ms
        if self._tap is None or not 0 <= behind <= now - self.started_at:
            return now  # the service's clock is not ours to read (a session that restarted it)
        return now - behind - self.ledger.half_rtt

    def _speech_started(self, now: float) -> None:
        responses = self.responses
        if self._notice_until is not None:
            self._talked_over_notice()
            return
        if not self.ledger.pending() and not responses.generating:
            return  # An ordinary turn: nothing of ours is playing.
        self.to_carrier.append(ClearPlayback())  # First, before any bookkeeping: the caller hears this.
        interrupted_item = self.outbound.drop()
        active = responses.interrupt()
        truncates = self._playback_cut(self.ledger.clear(now, self._unfinished(active)), "barge_in")
        for p in truncates:
            self.to_upstream.append(self.codec.truncate(p.item_id, p.audio_end_ms, p.content_index))
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

    def _unfinished(self, response: Response | None) -> list[str]:
        """The items `response` is still speaking (`PlaybackLedger.clear`'s `unfinished`)."""
        return [i for i in response.audio_items if i not in self._audio_done] if response else []

    def _playback_cut(self, playbacks: list[ItemPlayback], cut_by: str) -> list[ItemPlayback]:
        """Playback stopped (a barge-in, a hang-up, a lost session): each item's transcript is logged
        as far as the caller heard it (and the recording drops what was not). Returns the items cut
        short, not heard whole."""
        super()._playback_cut(playbacks, cut_by)
        cut = []
        for p in playbacks:
            if p.heard_ms >= p.sent_ms and p.item_id in self._audio_done:
                continue  # Heard whole: not cut (and not truncated, or the model would repeat itself).
            cut.append(p)
            self._log_cut_transcript(p.item_id, p.sent_ms, p.heard_ms, cut_by)
        self._log_heard_transcripts()
        return cut

    def _log_heard_transcripts(self, *, all_of_them: bool = False) -> None:
        """Log each complete transcript whose audio the caller has now heard to the end (`all_of_them`:
        the rest too, whose audio will not play any further). Audio held behind the recording notice
        has not played yet."""
        if self._notice_until is not None and not all_of_them:
            return
        for item_id, complete_at in list(self._complete.items()):
            if all_of_them or (item_id in self._audio_done and not self.ledger.playing(item_id)):
                del self._complete[item_id]
                text = self._transcripts.pop(item_id)
                at = self.outbound.play_started.pop(item_id, complete_at)
                self._log_assistant_line(item_id, text, at, interrupted=False)

    def _log_cut_transcript(self, item_id: str, sent_ms: int, heard_ms: int, cut_by: str) -> None:
        self._complete.pop(item_id, None)
        text = self._transcripts.pop(item_id, "")
        at = self.outbound.play_started.pop(item_id, None)
        if not text:
            return
        # The transcript runs ahead of playback; cut it in proportion to what was heard.
        total = max(sent_ms, 1)
        heard_text = text[: round(len(text) * min(heard_ms / total, 1.0))].rstrip()
        self._log_assistant_line(
            item_id, heard_text, at, full_text=text, interrupted=True, cut_by=cut_by, heard_ms=heard_ms
        )

    def _log_assistant_line(self, item_id: str, heard: str, at: float | None, **data: Any) -> None:
        """An assistant line in the call log, placed `at` (None: now); what the caller heard of it
        joins the history. A line is placed where the caller began to hear it (the recording's time
        axis), else where its transcript was complete: either way after the reply's latency record,
        which the call page pairs it with."""
        self.records.append(
            LogRecord(RecordKind.ASSISTANT_TRANSCRIPT, {"item_id": item_id, "text": heard, **data}, at)
        )
        if heard:
            self.history.append(("assistant", heard))

    # -- endings ----------------------------------------------------------------------------------

    def _ask_goodbye(self, reason: str, now: float) -> None:
        self._ask(self.goodbye.instructions, last=True)

    def resume(
        self, codec: RealtimeCodec, now: float, lost: str = "", connecting: ConnectReport = NOT_TRIED
    ) -> None:
        """A new session replaces a lost one (`lost` says why it ended, `connecting` what opening the
        new one took): configure it and give it the conversation so far.

        Whatever the old session was saying is gone (its items do not exist in the new one), so the
        caller's playback is cleared: a short gap, then the conversation goes on. What we had asked
        of the old session and not heard is asked of the new one."""
        self.codec = codec
        self.needs_new_session = False
        if self._notice_until is not None:
            # The notice plays on; what the old session said waited behind it, unheard, and is gone.
            self._drop_held("session_replaced")
        elif self.ledger.pending():
            self.to_carrier.append(ClearPlayback())
            self._playback_cut(self.ledger.clear(now), "session_replaced")
        self._caller_bytes = 0  # the new session's clock starts at its first append
        self._log_heard_transcripts(all_of_them=True)
        self._transcripts.clear()
        self.outbound.drop()
        self.to_upstream.append(codec.session_update(self.config.session))
        self.to_upstream.extend(codec.history_item(role, text) for role, text in self.history)
        if (request := self.responses.restart()) is not None:
            self._create(request)
        self.sessions_restored += 1
        self._record(RecordKind.SESSION_RESTORED, items=len(self.history), lost=lost, **connecting.data())

    def _still_speaking(self) -> list[str]:
        return self._unfinished(self.responses.active)

    def line_closed(self, now: float, reason: str) -> None:
        super().line_closed(now, reason)
        if self._notice_until is not None:
            self._notice_until = None
            self._drop_held(reason)
            self._record(
                RecordKind.NOTE,
                text="The call ended during the recording notice",
                source="recording_notice",
                heard_whole=False,
            )
        self._log_heard_transcripts(all_of_them=True)

    # -- the recording notice ---------------------------------------------------------------------

    def _play_notice(self, notice_pcm24k: bytes, now: float) -> None:
        line = self.started.line
        to_line = Transcoder(L16_24K, line)
        audio = to_line.process(notice_pcm24k) + to_line.flush()
        self.outbound.notice(audio, now, self.to_carrier)
        self._notice_until = now + len(audio) / line.bytes_per_ms + NOTICE_GRACE_MS

    def _notice_heard(self, now: float, *, whole: bool) -> None:
        """The notice played to its end (or its marks never came back): the model may speak, and the
        lines it said meanwhile are logged as the caller hears them."""
        self._notice_until = None
        text = "Recording notice played" if whole else "Recording notice sent; the carrier never confirmed it"
        data = {"text": text, "source": "recording_notice", "heard_whole": whole}
        self.records.append(LogRecord(RecordKind.NOTE, data, now))  # before what follows it
        for record in self.outbound.release(now, self.to_carrier):
            self.records.append(record)

    def _talked_over_notice(self) -> None:
        """The caller spoke during the notice, which plays on: whatever the model said meanwhile is
        dropped unheard (the model hears it was not heard), and its answer to the caller waits behind
        the notice."""
        items = self.outbound.drop_held()
        active = self.responses.interrupt()
        if active is not None:
            for item_id in active.audio_items:
                items.setdefault(item_id, 0)
        for item_id, content_index in items.items():
            self.to_upstream.append(self.codec.truncate(item_id, 0, content_index))
            self._log_cut_transcript(item_id, 1, 0, "barge_in")
        if active is not None and not self.config.session.interrupt_response:
            self.to_upstream.append(self.codec.cancel_response(active.response_id))
        self.outbound.greeting_interrupted()

    def _drop_held(self, cut_by: str) -> None:
        """The model's audio held behind the notice will never play: its lines are logged unheard."""
        for item_id in self.outbound.drop_held():
            self._log_cut_transcript(item_id, 1, 0, cut_by)

    def after_call(self, reason: str) -> PostCallSummary | None:
        """Once the call ended with `reason`: the summary to ask the still-open session for, or None
        (none configured, nothing was said, or no session to ask). A response the model was still
        giving is cancelled first: nobody will hear it."""
        if not self.config.dispositions or not self.history or reason in NO_SUMMARY_REASONS:
            return None
        active = self.responses.active
        answering = active.response_id if active is not None and not active.interrupted else None
        return PostCallSummary(self.codec, self.config.dispositions, answering)

