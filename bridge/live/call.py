"""A phone call answered by a Live session (GPT-Live): its rules, with no I/O (`PhoneCall` has the rest).

A Live model listens while it speaks, takes its own turns and stops by itself when talked over; it
speaks one continuous stream, silence included, clocked by the audio it is sent, and nothing it says
can be asked for, cancelled or truncated (docs/protocols.md §L4, §L5). So the same phone call runs on
different rules:

* **Start.** `session.start` first; caller audio is dropped, not held, until `session.started`, then
  flows at the wall clock's pace, silence standing in when the carrier sends none (`InputClock`). The
  greeting is a commentary append: the model does not speak first by itself (§L6).
* **What the model says.** Its stream is cut into turns by an energy gate (`SpeechGate`), `turn_1`,
  `turn_2`, ...: the items the `PlaybackLedger`, `OutboundAudio` and the call log know. Turns are sent
  to the carrier at real time with a small lead (`OutputPacer`); silence between turns is not sent.
* **Barge-in.** The model stops by itself; the bridge's part is the carrier: when the model falls
  silent mid-turn while the caller is talking, the carrier's playback is cleared at once and the
  ledger says what the caller heard. The transcript is cut by its fragments' session times: the
  output is clocked by the input, so each frame's session time is known exactly.
* **Tools** run on the delegated Responses backend: a function call comes wrapped in `response.event`,
  its output goes back as `response.item.create`, and once every open call of the session has one,
  `response.create` lets the backend go on (§L7). end_call and transfer_call keep their rules.
* **Keypad entries, operators' notes and announcements** are context appends (§L6, §L8).
* **The end.** `session.close`, then `session.closed` with the billed seconds (`LiveSessionEnd`).
  There is no out-of-band text response, so no post-call summary: the call log says so.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.audio import Transcoder
from bridge.call_config import CallConfig, LiveConfig
from bridge.call_jobs import ToolRequest
from bridge.carrier.events import CallStarted, ClearPlayback
from bridge.goodbye import GOODBYES, GoodbyeState
from bridge.live import events as ev
from bridge.live.codec import MAX_HISTORY_ITEMS, LiveCodec, context_chunks
from bridge.live.input_clock import InputClock
from bridge.live.output_pacer import OutputPacer, PacedFrame
from bridge.live.speech_gate import CallerVoice, SpeechGate, TurnEnded, TurnStarted
from bridge.log_records import LogRecord, RecordKind
from bridge.outbound_audio import FRAME_MS
from bridge.phone_call import PendingBargeIn, PhoneCall
from bridge.upstream_loss import NOT_TRIED, ConnectReport, UpstreamLoss

if TYPE_CHECKING:
    from bridge.recording.call_recording import CallRecording

START_TIMEOUT_MS = 10_000.0  # session.start -> session.started; then the call is the upstream's failure
STOP_SILENCE_MS = 40  # the model silent this long mid-turn, the caller talking: it stopped for them
CALLER_RECENT_MS = 500.0  # "the caller is talking": a loud frame of theirs arrived this recently
STOPPED_CHECK_MS = 200  # after a clear, did the model stay silent this long (session time)?
TRANSCRIPT_WAIT_MS = 500  # a turn's transcript is written this long (session time) after its speech
CALLER_LINE_GAP_MS = 1000  # a pause this long between the caller's fragments starts a new line
QUIET_GOODBYE_MS = 4000.0  # a goodbye asked for and no new turn: the model has nothing more to say
CLOSE_TIMEOUT_S = 11.0  # the service drains delegations and output for up to 10 s before session.closed
RTT_SAMPLES = 50

# Errors after which the session is of no further use (docs/protocols.md §L10).
FATAL_ERROR_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "billing_hard_limit_reached",
        "model_not_found",
    }
)
# session.closed reasons after which a new session can take the call on (§L9); `content` ends it.
RENEW_REASONS = frozenset({"expired", "connection_lost", "remote_hangup"})
NO_BACKEND = (
    "Nothing is connected to do this on this call. Tell the caller briefly that you cannot do it here."
)
SUMMARY_UNAVAILABLE = "live_api"  # the reason: a Live session has no out-of-band text response


@dataclass
class _Turn:
    turn_id: str
    start_ms: float  # session time of its first frame
    started_at: float  # when its first frame arrived
    after_goodbye: bool  # began after a goodbye was asked for
    speech_end_ms: float = 0.0  # session time at the end of its last loud frame
    silent_since: float | None = None  # when the first frame of its current silence arrived
    sent: list[float] = field(default_factory=list)  # session time of each frame sent to the carrier
    ended: bool = False
    cut_at_ms: float | None = None  # cleared: the caller heard up to this session time
    written: bool = False  # its transcript is in the call log


@dataclass(slots=True)
class _StopCheck:
    """After a clear: did the model stay silent (it stopped for the caller), or talk on (a pause)?"""

    until_ms: float  # session time the check ends at
    loud: bool = False
    done: bool = False
    record: dict[str, Any] | None = None  # the barge-in's record, once its clear was written


class LiveCall(PhoneCall):
    def __init__(
        self,
        config: CallConfig,
        codec: LiveCodec,
        started: CallStarted,
        now: float,
        *,
        play_chunk_ms: int = FRAME_MS,
        tap: CallRecording | None = None,
    ) -> None:
        """`tap`: the call's recording, when it is recorded."""
        if config.live is None:
            raise ValueError(f"Live calls cannot run with these settings: {config.live_unavailable}")
        self.live: LiveConfig = config.live
        options = self.live.session(started.line)
        fmt = options.audio_format
        super().__init__(config, started, now, fmt, play_chunk_ms, tap)
        self.codec = codec
        self.fmt = fmt
        self._frame_bytes = fmt.frame_bytes(FRAME_MS)
        self._silence = fmt.silence(self._frame_bytes)
        self._inbound = Transcoder(started.line, fmt)
        self._input = InputClock()
        self._caller = CallerVoice(started.line)
        self._gate = SpeechGate(fmt)
        self._pacer = OutputPacer(self.live.lead_ms)
        self._output = bytearray()  # model audio not yet a whole frame
        self._output_ms = 0.0  # session time the model's output has reached
        self._turn: _Turn | None = None  # the turn being received
        self._turns: dict[str, _Turn] = {}  # turns not yet done with (audio at the carrier, transcript)
        self._fragments: list[ev.OutputTranscript] = []  # the model's words not yet given to a turn
        self._caller_line: list[ev.InputTranscript] = []
        self._open_calls: dict[str, str | None] = {}  # function calls awaiting output -> delegation
        self._answered = False  # outputs went to the backend since it last went on
        self._backend_running = 0
        self._stop_check: _StopCheck | None = None
        self._rtt: deque[float] = deque(maxlen=RTT_SAMPLES)  # input sent -> its output received
        self._goodbye_turn: str | None = None
        self._goodbye_asked_at = 0.0
        self.session_id = ""
        self._session_started_at: float | None = None
        self._start_deadline: float | None = now + START_TIMEOUT_MS
        self._billed_s = 0.0  # final seconds of the sessions this call had before the current one
        self.session_seconds = 0.0  # of the current session, as the service last reported them
        self.closed: ev.SessionClosed | None = None
        self._closing = False  # we asked for the session.close
        self._greeted = False
        self.to_upstream.append(codec.session_start(options))
        if config.greeting:
            self.outbound.await_greeting(now)
        self._probe(now)

    # -- the caller --------------------------------------------------------------------------------

    def _caller_audio(self, audio: bytes, now: float) -> None:
        change = self._caller.feed(audio, now)
        if change is False and self._turn is None and self._caller.last_loud_at is not None:
            self.outbound.await_reply(self._caller.last_loud_at)
        converted = self._inbound.process(audio)
        if converted and self._input.caller(len(converted) / self.fmt.bytes_per_ms, now):
            self.to_upstream.append(self.codec.append_audio(converted))

    def pace(self, now: float) -> None:
        """The pump's audio clock: silence for the model while the caller sends none, and whatever the
        pacer lets go to the carrier now."""
        if self.end_reason is not None:
            return
        frames = self._input.fill(now)
        if frames:
            self.to_upstream.append(self.codec.append_audio(self._silence * frames))
        self._send_paced(now)

    def next_wakeup(self, now: float) -> float | None:
        due = [t for t in (self._input.next_due(), self._pacer.next_due(now)) if t is not None]
        return min(due, default=None)

    def tick(self, now: float) -> None:
        super().tick(now)
        if self._start_deadline is not None and now >= self._start_deadline and self.end_reason is None:
            message = f"no session.started within {START_TIMEOUT_MS / 1000:.0f} s"
            self.upstream_lost(UpstreamLoss("start_timeout", message))
        goodbye = self.goodbye
        if (
            goodbye.state is GoodbyeState.ASKED
            and self._goodbye_turn is None
            and self._turn is None
            and now - self._goodbye_asked_at >= QUIET_GOODBYE_MS
        ):
            goodbye.spoken()  # nothing more to say: the line closes once the rest was heard
            self._line_went_quiet(now)

    # -- the model ---------------------------------------------------------------------------------

    def model_event(self, event: ev.LiveEvent, now: float) -> None:
        if isinstance(event, ev.OutputAudio):
            self._model_audio(event.audio, now)
        elif isinstance(event, ev.OutputTranscript):
            self._fragments.append(event)
        elif isinstance(event, ev.InputTranscript):
            self._caller_said(event)
        elif isinstance(event, ev.SessionStarted):
            self._session_started(event, now)
        elif isinstance(event, ev.UsageUpdated):
            self.session_seconds = event.seconds
            self.records.append(LogRecord(RecordKind.SESSION_USAGE, {"session_seconds": self.billed_seconds}))
        elif isinstance(event, ev.DelegationCreated):
            self._record(
                RecordKind.DELEGATION,
                delegation_id=event.delegation_id,
                target=event.target,
                offset_ms=event.offset_ms,
            )
            if event.target == "client":  # no backend of ours answers: the model must not wait for one
                self.to_upstream.append(
                    self.codec.append_context("commentary", NO_BACKEND, event.delegation_id)
                )
        elif isinstance(event, ev.FunctionCall):
            self._open_calls[event.call_id] = event.delegation_id
            self._function_call(ToolRequest(event.call_id, event.name, event.arguments), now)
        elif isinstance(event, ev.BackendResponseCreated):
            self._backend_running += 1
        elif isinstance(event, ev.BackendResponseDone):
            self._backend_done(event)
        elif isinstance(event, ev.SessionClosed):
            self._session_closed(event, now)
        elif isinstance(event, ev.ServerError):
            self._server_error(event)
        # Context acknowledgements, mute, fixtures, backend text (the model speaks it), notices: nothing
        # to do.

    def _session_started(self, event: ev.SessionStarted, now: float) -> None:
        self.session_id = event.session_id
        self._start_deadline = None
        self._session_started_at = now
        self.closed = None
        self.session_seconds = 0.0
        self._input.start(now)
        self._record(
            RecordKind.LIVE_SESSION,
            session_id=event.session_id,
            model=event.model,
            audio_format=event.audio_format,
            voice=event.voice,
            delegation=event.delegation,
            lead_ms=self.live.lead_ms,
            dropped_before_start_ms=round(self._input.dropped_before_start_ms),
        )
        greeting = self.config.greeting
        if greeting and not self._greeted:
            self._greeted = True
            for chunk in context_chunks(greeting):
                self.to_upstream.append(self.codec.append_context("commentary", chunk))

    def _model_audio(self, audio: bytes, now: float) -> None:
        if self.end_reason is not None:
            return
        output = self._output
        output += audio
        size = self._frame_bytes
        whole = len(output) - len(output) % size
        for offset in range(0, whole, size):
            self._model_frame(bytes(output[offset : offset + size]), now)
        del output[:whole]
        self._send_paced(now)

    def _model_frame(self, frame: bytes, now: float) -> None:
        session_ms = self._output_ms
        self._output_ms = end_ms = session_ms + FRAME_MS
        if (sent_at := self._input.sent_at(end_ms)) is not None:
            self._rtt.append(now - sent_at)
        gate = self._gate
        change = gate.feed(frame)
        if type(change) is TurnStarted:
            self._turn_started(change.turn_id, session_ms, now)
        turn = self._turn
        if turn is not None:
            if gate.loud:
                turn.speech_end_ms = end_ms
                turn.silent_since = None
            elif turn.silent_since is None:
                turn.silent_since = now
            self._pacer.push(PacedFrame(frame, turn.turn_id, gate.loud, session_ms), now)
            # Silent mid-turn while the caller talks, and they began before the silence did: the model
            # stopped for them. (A caller who began after it is answering a model that had finished.)
            if (
                turn.silent_since is not None
                and gate.silent_ms == STOP_SILENCE_MS
                and self._caller.talking_over(turn.silent_since, now, CALLER_RECENT_MS)
            ):
                self._model_stopped(turn, now)
        if type(change) is TurnEnded:
            self._turn_ended(now)
        if (check := self._stop_check) is not None and not check.done:
            check.loud = check.loud or gate.loud
            if end_ms >= check.until_ms:
                check.done = True
                self._report_barge_in(check)
        self._finish_transcripts(end_ms)

    def _send_paced(self, now: float) -> None:
        outbound, turns = self.outbound, self._turns
        for frame in self._pacer.pull(now):
            turns[frame.turn_id].sent.append(frame.session_ms)
            record = outbound.play(frame.turn_id, 0, frame.audio, now, self.to_carrier)
            if record is not None:
                self.records.append(record)
        item = outbound.item
        if item is not None and turns[item].ended and self._pacer.next_turn_id != item:
            record = outbound.item_done(item, now, self.to_carrier)  # its rest and its last mark
            if record is not None:
                self.records.append(record)

    # -- turns -------------------------------------------------------------------------------------

    def _turn_started(self, turn_id: str, session_ms: float, now: float) -> None:
        after_goodbye = self.goodbye.state is GoodbyeState.ASKED
        self._turn = _Turn(turn_id, session_ms, now, after_goodbye, speech_end_ms=session_ms + FRAME_MS)
        self._turns[turn_id] = self._turn
        self._write_caller_line()  # the speaker changed
        self._forget_old_turns()

    def _forget_old_turns(self) -> None:
        """Turns done with: transcript written, audio all handed to the carrier."""
        pacer, playing = self._pacer, self.outbound.item
        for turn in [t for t in self._turns.values() if t.written]:
            if turn.turn_id != playing and not pacer.holds(turn.turn_id):
                del self._turns[turn.turn_id]
                self.ledger.forget(turn.turn_id)

    def _turn_ended(self, now: float) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        turn.ended = True
        self._pacer.end_turn()
        goodbye = self.goodbye
        # end_call's goodbye may be what the model was saying as it called the tool; any other must
        # come after it was asked for.
        said = turn.after_goodbye or goodbye.reason == "assistant_ended"
        if goodbye.state is GoodbyeState.ASKED and said:
            self._goodbye_turn = turn.turn_id
            goodbye.spoken()
        if self._waiting_for_silence:
            self._line_went_quiet(now)

    def _model_stopped(self, turn: _Turn, now: float) -> None:
        """The model fell silent mid-turn while the caller talks: it stopped for them. The carrier
        must not play on what it holds: clear it now, and settle what the caller heard."""
        self.to_carrier.append(ClearPlayback())  # First, before any bookkeeping: the caller hears this.
        if self._stop_check is not None:  # a second clear before the first one's check is over
            self._stop_check.done = True
            self._report_barge_in(self._stop_check)
        self._pacer.clear()
        self.outbound.drop()
        self.outbound.greeting_interrupted()
        stopped = self._playback_cut(self.ledger.clear(now, [turn.turn_id]), "barge_in")
        playback = {p.item_id: p for p in stopped}
        self._gate.end_turn()  # if the model talks on, that is a turn of its own
        self._turn_ended(now)
        p = playback.get(turn.turn_id)
        sent_ms, heard_ms = (p.sent_ms, p.heard_ms) if p is not None else (0, 0)
        heard_to = self._heard_to(turn, heard_ms)
        turn.cut_at_ms = heard_to
        stop = turn.speech_end_ms
        self.barge_ins += 1
        record = {
            "item_id": turn.turn_id,
            "sent_ms": sent_ms,
            "heard_ms": heard_ms,
            "rtt_ms": round(self.ledger.rtt_ms or 0.0, 1),
            "stop_ms": round(stop),  # session time the model stopped at
            "heard_to_ms": round(heard_to),  # ... and the caller heard it up to
            "unheard_ms": round(max(0.0, stop - heard_to)),  # said, never heard
            "heard_after_stop_ms": self._heard_after_stop(stop, now),
            "lead_ms": self.live.lead_ms,
        }
        self._pending_barge_in = PendingBargeIn(now, record)
        self._stop_check = _StopCheck(until_ms=self._output_ms + STOPPED_CHECK_MS)
        if self._waiting_for_silence:
            self._line_went_quiet(now)

    def _heard_to(self, turn: _Turn, heard_ms: int) -> float:
        """The session time the caller heard `turn` up to, from the ledger's `heard_ms` of it."""
        if heard_ms <= 0 or not turn.sent:
            return turn.start_ms
        index, rest = divmod(heard_ms, FRAME_MS)
        if index >= len(turn.sent):
            return turn.sent[-1] + FRAME_MS
        return turn.sent[index] + rest

    def _heard_after_stop(self, stop_ms: float, now: float) -> int | None:
        """How long the caller went on hearing the model after it stopped, as best the bridge can tell:
        from the stop (when the input reaching it left us, plus half the upstream round trip) to our
        clear reaching the carrier (half the carrier's round trip from now)."""
        sent_at = self._input.sent_at(stop_ms)
        if sent_at is None or not self._rtt:
            return None
        stopped_at = sent_at + min(self._rtt) / 2
        return round(max(0.0, now + self.ledger.half_rtt - stopped_at))

    def clear_written(self, now: float) -> LogRecord | None:
        """A Live barge-in's record says whether the model really stopped (`model_stopped`): it waits
        for that if it is not known yet."""
        record = super().clear_written(now)
        check = self._stop_check
        if record is None or check is None:
            return record
        check.record = record.data
        if not check.done:
            return None
        self._stop_check = None
        return LogRecord(RecordKind.BARGE_IN, {**record.data, "model_stopped": not check.loud})

    def _report_barge_in(self, check: _StopCheck) -> None:
        """The record goes out once its clear was written (`model_stopped` None: the call ended before
        the check was over)."""
        if check.record is None:
            return
        self._stop_check = None
        model_stopped = (not check.loud) if check.done else None
        self.records.append(LogRecord(RecordKind.BARGE_IN, {**check.record, "model_stopped": model_stopped}))

    # -- transcripts -------------------------------------------------------------------------------

    def _finish_transcripts(self, output_ms: float) -> None:
        """A turn's words arrive around its audio: once the output is well past its speech, write them."""
        for turn in self._turns.values():
            if turn.ended and not turn.written and output_ms >= turn.speech_end_ms + TRANSCRIPT_WAIT_MS:
                self._write_turn(turn)

    def _write_turn(self, turn: _Turn) -> None:
        turn.written = True
        end = turn.speech_end_ms + FRAME_MS
        mine = [f for f in self._fragments if f.start_ms < end]
        self._fragments = [f for f in self._fragments if f.start_ms >= end]
        text = "".join(f.text for f in mine).strip()
        if not text:
            return
        if turn.cut_at_ms is None:
            self.records.append(
                LogRecord(
                    RecordKind.ASSISTANT_TRANSCRIPT,
                    {"item_id": turn.turn_id, "text": text, "interrupted": False},
                    turn.started_at,
                )
            )
            self.history.append(("assistant", text))
            return
        heard = "".join(f.text for f in mine if f.end_ms <= turn.cut_at_ms).strip()
        data = {
            "item_id": turn.turn_id,
            "text": heard,
            "full_text": text,
            "interrupted": True,
            "heard_ms": round(max(0.0, turn.cut_at_ms - turn.start_ms)),
        }
        self.records.append(LogRecord(RecordKind.ASSISTANT_TRANSCRIPT, data, turn.started_at))
        if heard:
            self.history.append(("assistant", heard))

    def _caller_said(self, fragment: ev.InputTranscript) -> None:
        line = self._caller_line
        if line and fragment.start_ms - line[-1].end_ms > CALLER_LINE_GAP_MS:
            self._write_caller_line()
        line.append(fragment)

    def _write_caller_line(self) -> None:
        line, self._caller_line = self._caller_line, []
        text = "".join(f.text for f in line).strip()
        if not text:
            return
        at = self._input.sent_at(line[0].start_ms)  # where the caller began, not when the words came
        self.records.append(LogRecord(RecordKind.CALLER_TRANSCRIPT, {"text": text}, at))
        self.history.append(("user", text))

    # -- tools, keypad, operators ------------------------------------------------------------------

    def _send_tool_output(self, call_id: str, output: str) -> None:
        if call_id not in self._open_calls:
            return  # its backend response failed: the service discarded the call
        del self._open_calls[call_id]
        self.to_upstream.append(self.codec.function_output(call_id, output))
        self._answered = True
        self._continue_backend()

    def _continue_after_tool(self) -> None:
        pass  # the backend goes on once every open call has its output (`_continue_backend`)

    def _continue_backend(self) -> None:
        """`response.create` once every open function call has its output and the backend response
        that made them is done: the service refuses it earlier (docs/protocols.md §L7)."""
        if self._answered and not self._open_calls and not self._backend_running:
            self._answered = False
            self.to_upstream.append(self.codec.continue_backend())

    def _backend_done(self, event: ev.BackendResponseDone) -> None:
        self._backend_running = max(0, self._backend_running - 1)
        if event.status != "completed":
            # Its function calls will never be accepted: the service discarded them with it.
            for call_id, delegation in list(self._open_calls.items()):
                if delegation == event.delegation_id:
                    del self._open_calls[call_id]
        self._record(
            RecordKind.BACKEND_RESPONSE,
            delegation_id=event.delegation_id,
            response_id=event.response_id,
            status=event.status,
            model=self.live.backend_model,
            usage=event.usage,
            **({"error": event.error} if event.error else {}),
        )
        self._continue_backend()

    def _keyed(self, digits: str) -> None:
        self._context("commentary", f"The caller typed {digits} on the keypad. Answer them now.")
        self.history.append(("user", f"[keypad: {digits}]"))

    def inject(self, text: str, image_url: str | None = None, *, respond: bool = False) -> None:
        """Silent context (thinking), or with `respond` something the model answers (commentary)."""
        kind = "commentary" if respond else "thinking"
        self._context(kind, text)
        self._record(RecordKind.NOTE, text=text, injected=True, image=False, context=kind)

    def say(self, text: str) -> None:
        """An announcement: the model says it in its own words, which is all Live offers short of
        recorded audio."""
        self._context("commentary", f"Say exactly this to the caller, nothing else: {text}")
        self._record(RecordKind.NOTE, text=text, source="say", exact=False)

    def image_problem(self) -> str | None:
        return "this call is on the Live API, whose voice model takes no images (docs/protocols.md §L2)"

    def _context(self, kind: ev.ContextKind, text: str) -> None:
        for chunk in context_chunks(text):
            self.to_upstream.append(self.codec.append_context(kind, chunk))

    def _model_quiet(self) -> bool:
        return self._turn is None and not self._pacer.waiting_ms

    # -- endings and the session -------------------------------------------------------------------

    def _ask_goodbye(self, reason: str, now: float) -> None:
        self._goodbye_asked_at = now
        self._goodbye_turn = None
        if reason != "assistant_ended":  # after end_call's output the model says goodbye by itself
            self._context("commentary", GOODBYES[reason])

    def _server_error(self, event: ev.ServerError) -> None:
        code = event.code or ""
        if code in FATAL_ERROR_CODES or self._start_deadline is not None:
            # an error before session.started: the session will not start (§L10)
            self.upstream_lost(UpstreamLoss(code or event.type, event.message))
            return
        self._record(RecordKind.ERROR, source="upstream", code=code or event.type, message=event.message)

    def _session_closed(self, event: ev.SessionClosed, now: float) -> None:
        self.closed = event
        seconds = event.seconds if event.seconds is not None else self._estimated_seconds(now)
        self._record(
            RecordKind.SESSION_CLOSED,
            reason=event.reason,
            seconds=seconds,
            confirmed=event.seconds is not None,
        )
        self._billed_s += seconds
        self.session_seconds = 0.0
        self._session_started_at = None
        self._input.stop()
        self.records.append(LogRecord(RecordKind.SESSION_USAGE, {"session_seconds": self._billed_s}))
        if self._closing or self.end_reason is not None:
            return
        if event.reason in RENEW_REASONS:
            self.needs_new_session = True
        else:
            self.upstream_lost(UpstreamLoss(event.reason, "the Live session was closed"))

    def _estimated_seconds(self, now: float) -> float:
        started = self._session_started_at
        return float(int((now - started) / 1000)) if started is not None else 0.0

    @property
    def billed_seconds(self) -> float:
        """Session seconds of this call so far: its earlier sessions' final ones, and the current one's."""
        return self._billed_s + self.session_seconds

    def resume(
        self, codec: LiveCodec, now: float, lost: str = "", connecting: ConnectReport = NOT_TRIED
    ) -> None:
        """A new session replaces a lost one, started with the conversation so far (as text). What the
        old one was saying is gone: the carrier's playback is cleared, and caller audio waits for the
        new session to start (dropped, like at the call's start)."""
        if self._session_started_at is not None:  # lost without session.closed: billed unconfirmed
            self._session_closed(ev.SessionClosed("connection_lost", None, {}), now)
        self.needs_new_session = False
        self.codec = codec
        if self.ledger.pending():
            self.to_carrier.append(ClearPlayback())
            self._playback_cut(self.ledger.clear(now), "session_replaced")
        self._pacer.clear()
        self.outbound.drop()
        self._gate.end_turn()
        self._turn = None
        self._output.clear()
        self._output_ms = 0.0
        self._input.stop()
        self._open_calls.clear()
        self._backend_running = 0
        self._answered = False
        history = tuple(self.history[-MAX_HISTORY_ITEMS:])
        self.to_upstream.append(codec.session_start(self.live.session(self.started.line, history)))
        self._start_deadline = now + START_TIMEOUT_MS
        self.sessions_restored += 1
        self._record(RecordKind.SESSION_RESTORED, items=len(history), lost=lost, **connecting.data())

    def after_call(self, reason: str) -> LiveSessionEnd:
        """Once the call ended: close the session and wait for its final usage (§L9)."""
        return LiveSessionEnd(self)

    def closing_events(self) -> list[dict[str, Any]]:
        if self._session_started_at is None or self.closed is not None:
            return []
        self._closing = True
        return [self.codec.session_close()]

    def final_records(self, now: float) -> list[LogRecord]:
        """What the call log keeps once the session is over: the last words, the billed seconds (or an
        estimate, without session.closed), how the audio was paced, and that there is no summary."""
        for turn in self._turns.values():
            if not turn.written:
                self._write_turn(turn)
        self._write_caller_line()
        if (check := self._stop_check) is not None:
            self._report_barge_in(check)  # unknown if the call ended first
        if self._session_started_at is not None and self.closed is None:
            self._session_closed(ev.SessionClosed("unconfirmed", None, {}), now)
        pacer, clock = self._pacer, self._input
        self._record(
            RecordKind.LIVE_AUDIO,
            lead_ms=self.live.lead_ms,
            underruns=pacer.underruns,
            silence_shed_ms=round(pacer.dropped_silence_ms),
            max_waiting_ms=round(pacer.max_waiting_ms),
            dropped_before_start_ms=round(clock.dropped_before_start_ms),
            silence_filled_ms=round(clock.filled_ms),
            dropped_late_ms=round(clock.dropped_late_ms),
            upstream_rtt_ms=round(min(self._rtt), 1) if self._rtt else None,
        )
        if self.config.dispositions and self.history:
            self._record(RecordKind.SUMMARY_UNAVAILABLE, reason=SUMMARY_UNAVAILABLE)
        records, self.records = self.records, []
        return records


class LiveSessionEnd:
    """The end of a Live call's session, sans-IO like `PostCallSummary`: send `events` (the
    `session.close`), feed each server event to `receive` until it returns True or `timeout_s` has
    passed, then write `outcome()` to the call log."""

    timeout_s = CLOSE_TIMEOUT_S

    def __init__(self, call: LiveCall) -> None:
        self._call = call
        self.events = call.closing_events()

    def receive(self, event: ev.LiveEvent, now: float) -> bool:
        self._call.model_event(event, now)
        return isinstance(event, ev.SessionClosed)

    def outcome(self, now: float) -> list[LogRecord]:
        return self._call.final_records(now)
