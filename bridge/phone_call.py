"""One phone call's state and the rules that do not depend on which voice API answers it, with no I/O.

The pump feeds a call carrier events and model events, each with the time it arrived, and calls `tick`
now and then; it sends whatever the call leaves in its outboxes (commands for the carrier, client
events for the model, records for the call log) and runs the jobs it asks for (tools, turn reviews,
transfers), reporting each outcome back.

`PhoneCall` holds what every call has: the line (marks and round-trip probes, the `PlaybackLedger`,
`OutboundAudio`), the keypad, the time limit, transfers, the goodbye's end, the outboxes, and on a
recorded call its `tap` (the `CallRecording`): the caller's frames as received, and the assistant's
audio as the caller hears it (placed by the ledger's playout clock, cut where a clear discarded it).
The two kinds of call differ in how they talk to the model, and only there:

* `bridge.call.Call`, a Realtime session: we ask for each response, barge-in truncates what the caller
  did not hear, a post-call summary is asked of the session;
* `bridge.live.call.LiveCall`, a Live session: the model takes its own turns and stops by itself, so
  its audio is paced to the line and a barge-in only clears what the carrier still holds.

A subclass supplies the model side (`model_event`, `_caller_audio`, `_ask_goodbye`,
`_send_tool_output`, `_continue_after_tool`, `_keyed`, `_model_quiet`) and the operators' actions
(`inject`, `say`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bridge.audio import AudioFormat
from bridge.call_config import CallConfig
from bridge.call_jobs import CallJob, ToolRequest, TransferRequest, TurnReview
from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierCommand,
    CarrierEvent,
    Dtmf,
    Hangup,
    Mark,
    PlaybackMark,
)
from bridge.goodbye import GOODBYE_LIMIT_MS, Goodbye, GoodbyeState
from bridge.keypad import KeypadEntry
from bridge.ledger import ItemPlayback, PlaybackLedger
from bridge.log_records import LogRecord, RecordKind
from bridge.outbound_audio import FRAME_MS, OutboundAudio
from bridge.tools.builtin import END_CALL, TRANSFER_CALL, failure
from bridge.upstream_loss import NOT_TRIED, ConnectReport, UpstreamLoss

if TYPE_CHECKING:
    from bridge.recording.call_recording import CallRecording

PROBE_INTERVAL_MS = 2000.0  # while idle: keeps the round-trip window fresh at no audible cost
TRANSFER_WAIT_MS = 15_000.0  # the preamble may take a while to be heard; the transfer goes at the latest then

SPOKEN = GoodbyeState.SPOKEN


@dataclass(slots=True)
class PendingBargeIn:
    detected_at: float
    record: dict[str, Any]


@dataclass(slots=True)
class _WaitingTransfer:
    transfer: TransferRequest
    since: float


class PhoneCall:
    def __init__(
        self,
        config: CallConfig,
        started: CallStarted,
        now: float,
        model_format: AudioFormat,
        play_chunk_ms: int = FRAME_MS,
        tap: CallRecording | None = None,
    ) -> None:
        """`model_format`: the audio the model speaks. `play_chunk_ms`: the most audio the carrier takes
        in one message (`CarrierLeg.play_chunk_ms`). `tap`: the call's recording, when it is recorded."""
        self.config = config
        self.started = started
        self.started_at = now
        self.to_carrier: list[CarrierCommand] = []
        self.to_upstream: list[dict[str, Any]] = []
        self.records: list[LogRecord] = []
        self.jobs: list[CallJob] = []
        self.end_reason: str | None = None

        line = started.line
        self._tap = tap
        self.ledger = PlaybackLedger(bytes_per_ms=line.bytes_per_ms)
        self.outbound = OutboundAudio(model_format, line, self.ledger, play_chunk_ms, tap)
        self.ledger.output_lag_ms = self.outbound.output_lag_ms
        self.goodbye = Goodbye()
        self._keypad = KeypadEntry()
        self._pending_barge_in: PendingBargeIn | None = None
        self._waiting_transfer: _WaitingTransfer | None = None
        self._last_probe = float("-inf")
        self._line_closed_at: float | None = None  # when the carrier told us the caller hung up
        self.history: list[tuple[Literal["user", "assistant"], str]] = []  # for a replacement session
        self.needs_new_session = False
        self.sessions_restored = 0
        self.barge_ins = 0
        self.frames_in = 0

    @property
    def frames_out(self) -> int:
        return self.outbound.frames_out

    # -- carrier side -----------------------------------------------------------------------------

    def carrier_event(self, event: CarrierEvent, now: float) -> None:
        if isinstance(event, CallerAudio):
            if event.payload and self.end_reason is None:
                self.frames_in += 1
                if self._tap is not None:
                    # The frame left the carrier half a round trip before it reached us.
                    self._tap.caller(event.payload, now - self.ledger.half_rtt)
                self._caller_audio(event.payload, now)
        elif isinstance(event, PlaybackMark):
            ledger = self.ledger
            if ledger.acked(event.name, now):
                if (moved := ledger.take_projection_shift()) is not None:
                    self.outbound.projection_moved(*moved)
                self._heard(now)
                if self._waiting_for_silence:
                    self._line_went_quiet(now)
        elif isinstance(event, Dtmf):
            self._record(RecordKind.DTMF, digit=event.digit)
            if (entry := self._keypad.press(event.digit, now)) is not None:
                self._keyed(entry)
        elif isinstance(event, CallEnded):
            if self.end_reason is None:
                self._line_closed_at = now
            self._end(event.reason, hang_up=False)
        elif isinstance(event, CallStarted):
            self._record(
                RecordKind.ERROR, source="carrier", code="duplicate_start", message="second start ignored"
            )

    def tick(self, now: float) -> None:
        """Called periodically by the pump: the clock's rules (probes, keypad entries, the time limit,
        a transfer or goodbye that waited long enough)."""
        if now - self._last_probe >= PROBE_INTERVAL_MS:
            self._probe(now)
        if (entry := self._keypad.due(now)) is not None:
            self._keyed(entry)
        limit = self.config.max_call_seconds
        if limit and now - self.started_at >= limit * 1000:
            self.say_goodbye("timeout", now)
        self._line_went_quiet(now)

    def _probe(self, now: float) -> None:
        name = self.ledger.probe(now)
        if name is not None:
            self._last_probe = now
            self.to_carrier.append(Mark(name))

    # -- tools --------------------------------------------------------------------------------------

    def _function_call(self, request: ToolRequest, now: float) -> None:
        self._record(
            RecordKind.TOOL_CALL, call_id=request.call_id, name=request.name, arguments=request.arguments
        )
        if request.name == END_CALL and self.config.end_call_tool:
            self._end_after_goodbye(request, now)
        elif request.name == TRANSFER_CALL and self.config.transfer_numbers:
            self._transfer_requested(request, now)
        else:
            self.jobs.append(request)

    def tool_result(self, request: ToolRequest, ok: bool, output: str, duration_ms: float) -> None:
        """The pump ran a tool: hand the model its output and let it go on speaking."""
        if self.end_reason is not None:
            return
        self._tool_output(request, ok, output, duration_ms)
        self._continue_after_tool()

    def _tool_output(self, request: ToolRequest, ok: bool, output: str, duration_ms: float) -> None:
        self._record(
            RecordKind.TOOL_RESULT,
            call_id=request.call_id,
            name=request.name,
            ok=ok,
            duration_ms=round(duration_ms, 1),
            **({"result": output} if ok else {"error": output}),
        )
        self._send_tool_output(request.call_id, output)

    def _end_after_goodbye(self, request: ToolRequest, now: float) -> None:
        """The model chose to end the call: it says goodbye, and the line closes once that was heard."""
        self._record(
            RecordKind.TOOL_RESULT,
            call_id=request.call_id,
            name=request.name,
            ok=True,
            duration_ms=0.0,
            result="the call ends after the goodbye",
        )
        self._send_tool_output(request.call_id, '{"ok": true}')
        self.say_goodbye("assistant_ended", now)

    def take_jobs(self) -> list[CallJob]:
        jobs, self.jobs = self.jobs, []
        return jobs

    def turn_reviewed(self, review: TurnReview, context: str) -> None:
        """RESPONSE_MODE=manual: the hook has seen the caller's turn (only a call that asks for each
        response has turns to review)."""

    # -- transfers --------------------------------------------------------------------------------

    def _transfer_requested(self, request: ToolRequest, now: float) -> None:
        """transfer_call: only to an allowed number, and only once the caller heard the preamble."""
        allowed = self.config.transfer_numbers
        try:
            number = str(json.loads(request.arguments or "{}").get("number") or "")
        except (ValueError, AttributeError):
            number = ""
        number = number or allowed[0]
        if number not in allowed:
            self.tool_result(request, False, failure(f"transfers go only to {', '.join(allowed)}"), 0.0)
            return
        self._waiting_transfer = _WaitingTransfer(TransferRequest(request, number), now)
        self._line_went_quiet(now)

    def transfer_finished(self, transfer: TransferRequest, problem: str | None, duration_ms: float) -> None:
        """The carrier tried the transfer: `problem` says why it failed; None: the caller is on their way."""
        if problem is None:
            self._tool_output(transfer.request, True, '{"ok": true}', duration_ms)
            self.transferred()
        else:
            failed = failure("the transfer failed; apologise and offer more help")
            self.tool_result(transfer.request, False, failed, duration_ms)

    def transferred(self) -> None:
        """The carrier now runs a <Dial>: this stream is over."""
        self._end("transferred", hang_up=False)

    @property
    def _waiting_for_silence(self) -> bool:
        """Something waits until the caller heard everything: a transfer's preamble, the goodbye."""
        return self._waiting_transfer is not None or self.goodbye.state is SPOKEN

    def _line_went_quiet(self, now: float) -> None:
        """Act on what waited for the assistant to finish and the caller to have heard it all."""
        playing = self.ledger.pending()
        waiting = self._waiting_transfer
        if (
            waiting is not None
            and self.end_reason is None
            and ((self._model_quiet() and not playing) or now - waiting.since >= TRANSFER_WAIT_MS)
        ):
            self._waiting_transfer = None
            self.jobs.append(waiting.transfer)
        if self.end_reason is None and (reason := self.goodbye.ends_call(now, playing)) is not None:
            self._end(reason)

    # -- barge-in ---------------------------------------------------------------------------------

    def clear_written(self, now: float) -> LogRecord | None:
        """The pump wrote our clear to the carrier: the barge-in's reaction time is known. Returns the
        barge-in's record for the pump to write with the batch it is sending."""
        pending, self._pending_barge_in = self._pending_barge_in, None
        if pending is None:
            return None
        data = {"reaction_ms": round(now - pending.detected_at, 2), **pending.record}
        return LogRecord(RecordKind.BARGE_IN, data)

    # -- endings ----------------------------------------------------------------------------------

    def say_goodbye(
        self, reason: str, now: float, *, instructions: str = "", limit_ms: float = GOODBYE_LIMIT_MS
    ) -> bool:
        """Let the model say a last word (`instructions`, else `goodbye.GOODBYES[reason]`); the call
        ends with `reason` once the caller has heard it, or at the goodbye's deadline. False: the
        call is ending already."""
        if self.end_reason is not None or not self.goodbye.begin(reason, now, instructions, limit_ms):
            return False
        self._ask_goodbye(reason, now)
        return True

    def hang_up(self, reason: str) -> None:
        self._end(reason, hang_up=True)

    def upstream_lost(self, loss: UpstreamLoss) -> None:
        """The model is gone for good: the record says why; the pump apologises to the caller and
        closes the line."""
        if self.end_reason is None:
            self.records.append(loss.record())
        self._end("upstream_failure", hang_up=False)

    def line_closed(self, now: float, reason: str) -> None:
        """The line is closed (`reason`: how the call ended): what the caller was still hearing was
        cut there, and the call's record keeps it. Called once, by the pump, as the call ends."""
        # The caller's hang-up reached us half a round trip after they stopped hearing anything.
        stopped_at = None if self._line_closed_at is None else self._line_closed_at - self.ledger.half_rtt
        self._playback_cut(self.ledger.clear(now, self._still_speaking(), stopped_at), reason)

    def _playback_cut(self, playbacks: list[ItemPlayback], cut_by: str) -> list[ItemPlayback]:
        """Playback stopped (`cut_by`: a barge-in, a hang-up, a lost session): the recording drops what
        was not heard. Returns the pieces of playback that were stopped."""
        if self._tap is not None:
            self._tap.cleared(sum(p.unheard_bytes for p in playbacks))
        return playbacks

    def apologising(self, audio: bytes, now: float) -> None:
        """The leg plays `audio` (line format) in place of whatever was playing, which `line_closed`
        cut already: the recording keeps it as the caller hears it."""
        if self._tap is not None:
            ledger = self.ledger
            self._tap.assistant(audio, now + ledger.half_rtt + ledger.playout_delay_ms)

    def _end(self, reason: str, *, hang_up: bool = True) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        if hang_up:
            self.to_carrier.append(Hangup(reason))

    def _record(self, kind: RecordKind, **data: Any) -> None:
        self.records.append(LogRecord(kind, data))

    def drain(self) -> tuple[list[CarrierCommand], list[dict[str, Any]], list[LogRecord]]:
        """Take everything the pump must send, in order. The pump drains once per batch and sends all
        of it: whatever the call produces meanwhile waits for the next drain."""
        out = (self.to_carrier, self.to_upstream, self.records)
        self.to_carrier, self.to_upstream, self.records = [], [], []
        return out

    # -- the model side, by API ---------------------------------------------------------------------

    def _heard(self, now: float) -> None:
        """The carrier confirmed more of what we sent was heard."""

    def _still_speaking(self) -> list[str]:
        """The items the model is still speaking (`PlaybackLedger.clear`'s `unfinished`)."""
        return []

    def model_event(self, event: Any, now: float) -> None:
        """One decoded server event of the model's session."""
        raise NotImplementedError

    def _caller_audio(self, audio: bytes, now: float) -> None:
        raise NotImplementedError

    def _keyed(self, digits: str) -> None:
        """The caller keyed an entry: the model hears it."""
        raise NotImplementedError

    def _send_tool_output(self, call_id: str, output: str) -> None:
        raise NotImplementedError

    def _continue_after_tool(self) -> None:
        """A tool's output went to the model: let it go on."""
        raise NotImplementedError

    def _ask_goodbye(self, reason: str, now: float) -> None:
        """The goodbye was begun for `reason`: have the model say it (once the tool's output is in,
        for end_call, the model says it by itself)."""
        raise NotImplementedError

    def _model_quiet(self) -> bool:
        """The model is not speaking, nor about to."""
        raise NotImplementedError

    def inject(self, text: str, image_url: str | None = None, *, respond: bool = False) -> None:
        """Context from outside (an operator, a CRM)."""
        raise NotImplementedError

    def say(self, text: str) -> None:
        """An operator's announcement, spoken as soon as nothing else is."""
        raise NotImplementedError

    def image_problem(self) -> str | None:
        """Why this call cannot take an image from an operator, or None."""
        raise NotImplementedError

    def resume(self, codec: Any, now: float, lost: str = "", connecting: ConnectReport = NOT_TRIED) -> None:
        """A new session (`codec` speaks it) replaces the lost one (`lost` says why it ended,
        `connecting` what opening the new one took): the call goes on with it."""
        raise NotImplementedError

    def after_call(self, reason: str) -> Any:
        """Once the call ended with `reason`: what it still does with its session (`pump.AfterCall`),
        or None."""
        raise NotImplementedError
