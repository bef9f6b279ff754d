"""The socket pump around one call: the carrier leg on one side, the model's session on the other.

The call is a `Call` (a Realtime session) or a `LiveCall` (a Live session), as the webhook or the
called number chose (`CallConfig.upstream_for`); the pump treats both alike, but gives a Live call an
audio clock of its own (`_audio_clock`): its audio is paced to real time, not sent as it comes.

It only pumps: read a message, stamp the time, hand it to the `Call`, send what the call produced
(carrier first: a `clear` must never wait behind anything), and run the jobs the call asked for
(tools, turn reviews, transfers) beside it, off the audio path. Every rule is the call's.

Nothing the call produces can be lost: each flush takes the call's outboxes once and sends all it
took; whatever the call produces while a flush is sending waits in the outboxes for the next one.
What an operator does to a live call wakes the pump's own flusher, and jobs run as tasks the pump
holds and cancels when the call ends.

A recorded call's recording begins with the call (sample 0 is the call log's `started_at`) and ends
when the line closed; the `Call` feeds it as the call goes (its tap), and what happens after the call
(rendering, storing) is `Recordings`' business, off this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from bridge.audio import PCMU_8K, Transcoder
from bridge.call import Call
from bridge.call_config import CallConfig, UpstreamApi
from bridge.call_jobs import AwaitVerdict, CallJob, ToolRequest, TransferRequest, TurnReview
from bridge.call_log_sink import CallLogSink
from bridge.call_registry import CallRegistry
from bridge.carrier.events import (
    CallEnded,
    CallStarted,
    CarrierCommand,
    ClearPlayback,
    Hangup,
    Mark,
    PlayAudio,
)
from bridge.carrier.outbound import PLACED_CALL_PARAMETER
from bridge.carrier.stream_tokens import UPSTREAM_PARAMETER
from bridge.carrier.transfer import TransferFailed
from bridge.carrier_leg import CarrierLeg
from bridge.clock import now_ms
from bridge.live.call import LiveCall
from bridge.live.codec import LiveCodec
from bridge.log_records import LOGGED_KINDS, LogRecord, RecordKind
from bridge.logs import mask_number
from bridge.metrics import BridgeMetrics
from bridge.phone_call import PhoneCall
from bridge.tools.builtin import failure
from bridge.tools.toolbox import TOOL_TIMEOUT_S, Toolbox
from bridge.upstream import UPSTREAM_PROTOCOL_ERRORS, UpstreamClosed, UpstreamRefused, UpstreamSession
from bridge.upstream_loss import UpstreamLoss

if TYPE_CHECKING:
    from bridge.outbound.calls import OutboundCalls, PlacedCall
    from bridge.recording import CallRecording, Recordings

TICK_S = 0.5
AUDIO_TICK_MS = 20.0  # a Live call's audio clock wakes at least this often
MAX_SESSION_REPLACEMENTS = 5  # per call: an upstream that keeps failing is not worth more tries

# The connect budget counts from `since` (default now); the API the session is for.
UpstreamOpener = Callable[[float | None, UpstreamApi], Awaitable[UpstreamSession]]
Claim = Callable[[str], Awaitable[UpstreamSession | None]]


class AfterCall(Protocol):
    """What a call still does with its session once the line has closed (`PhoneCall.after_call`): the
    post-call summary of a Realtime call, the session's close of a Live one. Sans-IO."""

    events: list[dict[str, Any]]
    timeout_s: float

    def receive(self, event: Any, now: float) -> bool: ...  # True: done
    def outcome(self, now: float) -> list[LogRecord]: ...


@dataclass(slots=True)
class StreamContext:
    """What every call of this server shares, handed in by the app: its configuration (made from
    the settings in one place, `CallConfig.from_settings`) and the services a call uses."""

    call_config: CallConfig
    open_upstream: UpstreamOpener
    claim_prepared: Claim
    call_log: CallLogSink
    active_calls: CallRegistry
    metrics: BridgeMetrics
    apology: bytes  # µ-law 8 kHz, heard when the model cannot be reached
    stream_failed: Callable[[str, str], None]
    authorize: Callable[[CallStarted], bool] | None = None  # None: the stream was authenticated already
    tools: Toolbox | None = None
    placed_calls: OutboundCalls | None = None  # the calls we placed (None: no call log to find them in)
    recordings: Recordings | None = None  # None: no call is recorded


class CallPump:
    def __init__(self, ctx: StreamContext, leg: CarrierLeg, logger: Any) -> None:
        self.ctx = ctx
        self.leg = leg
        self.log = logger
        self.call: PhoneCall | None = None
        self.upstream: UpstreamSession | None = None
        self.upstream_api: UpstreamApi = "realtime"
        self.recording: CallRecording | None = None
        self.call_id = ""
        self.config = ctx.call_config  # a call we placed brings its own
        self._tool_context: dict[str, Any] = {}  # what tools and the before-response hook are told
        self._end_when_connected: str | None = None  # ended (`end`) before the model's session opened
        # Sends go out in the order the call produced them without a lock per flush: a flush that finds
        # a send of its direction still under way (the socket draining) leaves its batch to that one.
        self._carrier_sending = False
        self._carrier_backlog: list[CarrierCommand] = []
        self._upstream_sending = False
        self._upstream_backlog: list[dict[str, Any]] = []
        self._wake = asyncio.Event()  # the call has something to send that no pump loop will flush
        self._jobs: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        started = await self.leg.wait_for_start()
        if started is None:
            return
        self.call_id = started.call_sid
        params = started.custom_parameters
        self.log = self.log.bind(call_sid=started.call_sid, stream_sid=started.stream_sid)
        self.leg.log = self.log
        if self.ctx.authorize is not None and not self.ctx.authorize(started):
            self.log.warning("stream token rejected: not a stream this server's webhook answered")
            await self.leg.close("unauthorized", code=1008)
            return
        placed = None
        if placed_id := params.get(PLACED_CALL_PARAMETER):
            placed = await self._placed_call(placed_id, started)
            if placed is None:
                self.log.warning("stream refused: it names a call we did not place", placed_call=placed_id)
                await self.leg.close("not a placed call", code=1008)
                return
        self._tool_context = {"call_id": self.call_id}
        if placed is not None and placed.metadata:
            self._tool_context["metadata"] = placed.metadata
        if not self.ctx.active_calls.add(self.call_id, self):
            self.log.warning("second stream for a call already in progress refused")
            await self.leg.close("duplicate call", code=1008)
            return
        config, recordings = self.config, self.ctx.recordings
        recorded = recordings is not None and recordings.wanted(params)
        # The webhook's choice, carried in the stream's parameters (bound to its stream token), or the
        # called number's (a SIP call has only the number); a call we placed has Realtime's.
        requested = params.get(UPSTREAM_PARAMETER, "")
        api, problem = config.upstream_for(params.get("to", ""), requested, recorded=recorded)
        if problem:
            self.log.warning("upstream choice not followed", problem=problem, upstream_api=api)
        self.upstream_api = api
        started_at = datetime.now(UTC)  # the call log's start and the recording's first sample alike
        # The call's row names this process its owner from here on; a stream for a call admitted
        # before (live on another replica, or a replay of an ended one) is refused like the above.
        claimed = await self.ctx.call_log.claim_call(
            call_id=self.call_id,
            call_sid=started.call_sid,
            stream_sid=started.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            direction="outbound" if placed is not None else params.get("direction", "inbound"),
            carrier="browser" if params.get("direction") == "browser" else self.leg.carrier,
            model=config.model_for(api),
            voice=config.live.voice if api == "live" and config.live else config.session.voice,
            upstream_api=api,
            placed=placed is not None,
            started_at=started_at,
        )
        if not claimed:
            self.ctx.active_calls.remove(self.call_id, self)
            self.log.warning("stream for a call admitted before refused (live elsewhere, or a replay)")
            await self.leg.close("duplicate call", code=1008)
            return
        if recordings is not None and recorded:
            self.recording = recordings.begin(self.call_id, started.line, now_ms(), started_at)
        self.log.info(
            "call started",
            caller=mask_number(params.get("from")),
            callee=mask_number(params.get("to")),
            upstream_api=api,
        )
        reason = "error"
        try:
            reason = await self._connected(started)
        finally:
            await self._close(reason)
            self.ctx.active_calls.remove(self.call_id, self)

    async def _placed_call(self, placed_id: str, started: CallStarted) -> PlacedCall | None:
        """The call we placed that this stream carries (from now on the call's id and configuration
        are its own), or None (not ours, or not this carrier call)."""
        if self.ctx.placed_calls is None:
            return None
        try:
            placed = await self.ctx.placed_calls.for_stream(placed_id, started.call_sid)
        except Exception as exc:
            self.log.error("placed call not readable", error=f"{type(exc).__name__}: {exc}")
            return None
        if placed is not None:
            self.call_id, self.config = placed.call_id, placed.config
            self.log = self.leg.log = self.log.bind(call_id=placed.call_id)
        return placed

    async def _connected(self, started: CallStarted) -> str:
        api = self.upstream_api
        try:
            self.upstream = await self._claim(started.call_sid) or await self.ctx.open_upstream(None, api)
        except UpstreamRefused as exc:
            self._record(UpstreamLoss("connect", str(exc), exc.connecting).record())
            return "upstream_failure"
        self.ctx.metrics.upstream_connected(self.upstream.connect_ms)
        self.call = call = self._open_call(self.upstream, started)
        if self._end_when_connected is not None:
            call.hang_up(self._end_when_connected)
        self.log.info(
            "upstream session open",
            connect_ms=round(self.upstream.connect_ms, 1),
            prepared=self.upstream.configured,
        )
        await self._flush()
        tasks = [
            asyncio.create_task(self._carrier_loop(), name="carrier"),
            asyncio.create_task(self._upstream_loop(), name="upstream"),
            asyncio.create_task(self._ticker(), name="ticker"),
            asyncio.create_task(self._flusher(), name="flusher"),
        ]
        if isinstance(call, LiveCall):
            tasks.append(asyncio.create_task(self._audio_clock(call), name="audio-clock"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, *self._jobs):
                task.cancel()
            await asyncio.gather(*tasks, *self._jobs, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.log.error("call pump failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                return "error"
        return self.call.end_reason or "caller_hangup"

    async def _claim(self, call_sid: str) -> UpstreamSession | None:
        """The session opened for this call while its webhook was answered, if it is for the right API."""
        prepared = await self.ctx.claim_prepared(call_sid)
        if prepared is not None and prepared.api != self.upstream_api:
            with contextlib.suppress(Exception):
                await prepared.socket.close()
            return None
        return prepared

    def _open_call(self, upstream: UpstreamSession, started: CallStarted) -> PhoneCall:
        config, codec, chunk = self.config, upstream.codec, self.leg.play_chunk_ms
        if isinstance(codec, LiveCodec):
            return LiveCall(config, codec, started, now_ms(), play_chunk_ms=chunk, tap=self.recording)
        return Call(
            config,
            codec,
            started,
            now_ms(),
            configured=upstream.configured,
            greeted=upstream.greeted,
            play_chunk_ms=chunk,
            tap=self.recording,
        )

    async def _close(self, reason: str) -> None:
        call = self.call
        if call is not None:  # before the apology: it clears whatever the caller was still hearing
            call.line_closed(now_ms(), reason)
            for record in call.drain()[2]:  # the line is gone: only the records are still wanted
                self._record(record)
        if reason == "upstream_failure":
            self.ctx.stream_failed(self.call_id, reason)
            if not self.leg.closed:
                with contextlib.suppress(Exception):
                    await self.leg.apologise(self._apology())
        if not self.leg.closed:  # the phone leg first: nothing below may keep the caller on the line
            with contextlib.suppress(Exception):
                await self.leg.close(reason)
        if self.recording is not None and self.ctx.recordings is not None:
            self.ctx.recordings.end(self.recording, now_ms())
        self.ctx.call_log.call_ended(self.call_id, reason)  # the call ended when the line did
        self.ctx.metrics.call_ended(reason, self.upstream_api)
        self.log.info(
            "call ended",
            reason=reason,
            frames_in=call.frames_in if call else 0,
            frames_out=call.frames_out if call else 0,
            barge_ins=call.barge_ins if call else 0,
            **self.leg.stats(),
        )
        after: AfterCall | None = call.after_call(reason) if call is not None else None
        if after is not None:
            with contextlib.suppress(Exception):
                await self._after_call(after)
            for record in after.outcome(now_ms()):
                self._record(record)
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.socket.close()

    async def _after_call(self, after: AfterCall) -> None:
        """Send the still-open session what the call asks of it once over, and hand it the session's
        answers until it has what it waited for."""
        upstream = self.upstream
        if upstream is None or not after.events:
            return
        for event in after.events:
            await upstream.socket.send(upstream.codec.encode(event))
        async with asyncio.timeout(after.timeout_s):
            async for message in upstream.socket:
                with contextlib.suppress(*UPSTREAM_PROTOCOL_ERRORS):
                    if after.receive(upstream.codec.decode(message), now_ms()):
                        break

    def _apology(self) -> bytes:
        """The apology (µ-law 8 kHz) in this call's line format, as the recording keeps it too."""
        assert self.leg.started is not None
        converter = Transcoder(PCMU_8K, self.leg.started.line)
        audio = converter.process(self.ctx.apology) + converter.flush()
        if self.call is not None:
            self.call.apologising(audio, now_ms())
        elif self.recording is not None:  # the model never answered: nothing played before it
            self.recording.assistant(audio, now_ms())
        return audio

    # -- what operators and the server do to a live call ------------------------------------------

    def end(self, reason: str) -> bool:
        """End the call now (shutdown, an operator's hang-up): the hang-up goes out with the next flush,
        or, while the model's session is still being opened, as soon as it is. False when the call is
        ending already."""
        if self.call is None:
            if self._end_when_connected is not None:
                return False
            self._end_when_connected = reason
            return True
        if self.call.end_reason is not None:
            return False
        self.call.hang_up(reason)
        self._wake.set()
        return True

    def control(self, action: Callable[[PhoneCall], None]) -> bool:
        """Apply an operator's action to the call; what it produces goes out with the next flush.
        False (nothing done) when the call has not connected yet or is ending."""
        if self.call is None or self.call.end_reason is not None:
            return False
        action(self.call)
        self._wake.set()
        return True

    def operator_action(self, operator: str, action: str, outcome: str, **details: Any) -> dict[str, Any]:
        """Put what an operator did to this call on record: in its call log, where the timeline shows
        it as theirs, and in the process log (the words they had said or added are counted there, not
        written, like everything said on a call). Returns the record, with when it happened (`at`)."""
        data = {"operator": operator, "action": action, "outcome": outcome, **details}
        at = datetime.now(UTC)
        self.ctx.call_log.event(self.call_id, RecordKind.OPERATOR_ACTION, data, at)
        logged: dict[str, Any] = {k: v for k, v in details.items() if k not in ("text", "number")}
        if isinstance(text := details.get("text"), str):
            logged["chars"] = len(text)
        if "number" in details:
            logged["to"] = mask_number(details["number"])
        level = "info" if outcome == "done" else "warning"
        getattr(self.log, level)(
            "operator action", operator=operator, action=action, outcome=outcome, **logged
        )
        return {**data, "at": at}

    def say_goodbye(self, reason: str) -> None:
        """End the call after the assistant's goodbye has been heard (shutdown)."""
        if self.call is not None and self.call.say_goodbye(reason, now_ms()):
            self.log.info("saying goodbye", reason=reason)
            self._wake.set()

    async def transfer_now(self, number: str) -> None:
        """An operator's transfer: the carrier dials `number` now; TransferFailed says why not."""
        if self.call is None:
            raise TransferFailed("the call has not started")
        await self.leg.transfer(number)
        self.call.transferred()
        self._wake.set()

    # -- pumps ------------------------------------------------------------------------------------

    async def _carrier_loop(self) -> None:
        call = self.call
        assert call is not None
        observe, clock = self.ctx.metrics.carrier_frame, time.perf_counter
        async for event, now in self.leg.events():
            started = clock()
            call.carrier_event(event, now)  # a CallEnded sets the call's end_reason
            await self._flush()
            observe(clock() - started)
            if call.end_reason is not None:
                return
        # The stream closed without saying the call ended (Vonage ends a call so): the caller is gone.
        call.carrier_event(CallEnded(), now_ms())

    async def _upstream_loop(self) -> None:
        call = self.call
        assert call is not None
        while True:
            lost = await self._relay_upstream()
            if call.end_reason is not None:
                return
            if call.sessions_restored >= MAX_SESSION_REPLACEMENTS:
                replaced = f"the call replaced its session {call.sessions_restored} times already"
                call.upstream_lost(UpstreamLoss("too_many_sessions", f"{lost}; {replaced}"))
                await self._flush()
                return
            if not await self._replace_session(lost, now_ms()):
                return

    async def _relay_upstream(self) -> str:
        """Model events into the call until the session ends or must be replaced; returns why it did."""
        call, upstream = self.call, self.upstream
        assert call is not None and upstream is not None
        observe, clock, decode = self.ctx.metrics.upstream_message, time.perf_counter, upstream.codec.decode
        try:
            async for message in upstream.socket:
                now = now_ms()
                try:
                    event = decode(message)
                except UPSTREAM_PROTOCOL_ERRORS as exc:
                    self.log.warning("unusable upstream message", error=str(exc))
                    continue
                started = clock()
                call.model_event(event, now)
                await self._flush()
                observe(clock() - started)
                if call.end_reason is not None:
                    return "the call ended"
                if call.needs_new_session:
                    return "the service asked for a new session"
        except UpstreamClosed as exc:
            self.log.error("upstream connection dropped", code=exc.code, reason=exc.reason)
            detail = f"close code {exc.code}: {exc.reason}" if exc.reason else f"close code {exc.code}"
            return f"the connection dropped ({detail})"
        code = upstream.socket.close_code
        self.log.warning("upstream closed the session", code=code)
        return f"the service closed the session (close code {code})"

    async def _replace_session(self, lost: str, lost_at: float) -> bool:
        """Open a new session and hand it the conversation; False if none could be had within the
        connect budget from `lost_at` (the call then ends, its record saying why)."""
        assert self.call is not None and self.upstream is not None
        old = self.upstream.socket
        try:
            replacement = await self.ctx.open_upstream(lost_at, self.upstream_api)
        except UpstreamRefused as exc:
            self.call.upstream_lost(
                UpstreamLoss("reconnect", f"{lost}; no new session: {exc}", exc.connecting)
            )
            await self._flush()
            return False
        finally:  # after the attempts, not before: a slow close must not eat into the caller's wait
            with contextlib.suppress(Exception):
                await old.close()
        self.upstream = replacement
        self.call.resume(replacement.codec, now_ms(), lost, replacement.connecting)
        self.log.info("upstream session replaced", items_restored=len(self.call.history))
        await self._flush()
        return True

    async def _ticker(self) -> None:
        call = self.call
        assert call is not None
        while True:
            await asyncio.sleep(TICK_S)
            had_goodbye = call.goodbye.reason is not None
            call.tick(now_ms())
            if not had_goodbye and call.goodbye.reason is not None:
                self.log.info("saying goodbye", reason=call.goodbye.reason)
            await self._flush()

    async def _audio_clock(self, call: LiveCall) -> None:
        """A Live call's audio runs on the wall clock: silence for the model while the caller sends
        none, and the model's audio let out to the carrier at real time (`LiveCall.pace`). Wakes when
        the call says, at least every AUDIO_TICK_MS."""
        while True:
            now = now_ms()
            due = call.next_wakeup(now)
            wait = AUDIO_TICK_MS if due is None else min(max(due - now, 1.0), AUDIO_TICK_MS)
            await asyncio.sleep(wait / 1000)
            call.pace(now_ms())
            await self._flush()

    async def _flusher(self) -> None:
        """Flushes what the call produced outside the pump's own loops (operators, the server)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        # Runs for every message either way (50+ a second per call): plain code and local names, no
        # per-flush lock or context-manager objects.
        call = self.call
        if call is None:
            return
        to_carrier, to_upstream, records = call.drain()  # the one drain: all of it is sent below
        if to_carrier:
            await self._send_carrier(call, to_carrier, records)
        if to_upstream and self.upstream is not None:
            await self._send_upstream(to_upstream)
        if records:
            for record in records:
                self._record(record)
        if call.jobs:  # rare: the per-frame flush stays free of it
            self._start_jobs(call)

    async def _send_carrier(
        self, call: PhoneCall, commands: list[CarrierCommand], records: list[LogRecord]
    ) -> None:
        """Send `commands`, then whatever other flushes left meanwhile, in order; while another flush
        is sending (its send waits for the socket to drain), leave them to it. Nothing goes after a
        hang-up. A barge-in's record, known once its clear is written, joins `records` (the flush's,
        written after its sends)."""
        if self._carrier_sending:
            self._carrier_backlog += commands
            return
        self._carrier_sending = True
        send = self.leg.send
        try:
            while True:
                for command in commands:
                    await send(command)
                    if type(command) is PlayAudio or type(command) is Mark:
                        continue
                    if type(command) is Hangup:
                        self._carrier_backlog.clear()
                        return
                    if type(command) is ClearPlayback and (written := call.clear_written(now_ms())):
                        records.append(written)
                if not self._carrier_backlog:
                    return
                commands, self._carrier_backlog = self._carrier_backlog, []
        finally:
            self._carrier_sending = False

    async def _send_upstream(self, events: list[dict[str, Any]]) -> None:
        """Send `events` to the model's session as `_send_carrier` sends commands: in order, what other
        flushes leave meanwhile after them, to the session replaced meanwhile if it was."""
        if self._upstream_sending:
            self._upstream_backlog += events
            return
        self._upstream_sending = True
        upstream = self.upstream
        assert upstream is not None
        try:
            while True:
                send, encode = upstream.socket.send, upstream.codec.encode
                for event in events:
                    await send(encode(event))
                if not self._upstream_backlog:
                    return
                events, self._upstream_backlog = self._upstream_backlog, []
                upstream = self.upstream or upstream
        except ConnectionError:
            # The upstream loop sees the close and replaces the session or ends the call; what the call
            # sent meanwhile is the new session's to rebuild (`Call.resume`).
            self._upstream_backlog.clear()
        finally:
            self._upstream_sending = False

    # -- jobs: beside the call, never on the audio path -------------------------------------------

    def _start_jobs(self, call: PhoneCall) -> None:
        for job in call.take_jobs():
            task = asyncio.get_running_loop().create_task(self._run_job(job))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _run_job(self, job: CallJob) -> None:
        if isinstance(job, ToolRequest):
            await self._run_tool(job)
        elif isinstance(job, TurnReview):
            await self._review(job)
        elif isinstance(job, AwaitVerdict):
            await self._await_verdict(job)
        else:
            await self._transfer(job)
        await self._flush()

    async def _await_verdict(self, job: AwaitVerdict) -> None:
        """A call we placed waits for who answered; the call log brings the verdict from whichever
        replica the carrier told."""
        assert self.call is not None and self.ctx.placed_calls is not None
        try:
            verdict = await self.ctx.placed_calls.verdict(self.call_id, job.seen)
        except Exception as exc:  # the call's own wait runs out, and it speaks as to a person
            self.log.error("verdict not read", error=f"{type(exc).__name__}: {exc}")
            return
        self.log.info("who answered", answered_by=verdict.answered_by.value, message_end=verdict.message_end)
        self.call.answered(verdict, now_ms())

    async def _review(self, review: TurnReview) -> None:
        """RESPONSE_MODE=manual: the hook sees the caller's turn before the model answers it."""
        assert self.call is not None
        context = ""
        url = self.config.before_response_url
        if self.ctx.tools is not None and url:
            turn = {"item_id": review.item_id, "transcript": review.transcript}
            try:
                context = await self.ctx.tools.before_response(url, turn, self._tool_context)
            except Exception as exc:
                self.log.error("before-response hook failed", error=f"{type(exc).__name__}: {exc}")
        self.call.turn_reviewed(review, context)

    async def _run_tool(self, request: ToolRequest) -> None:
        """The call goes on while a tool runs, and a failure is the model's to tell."""
        assert self.call is not None
        started = time.perf_counter()
        if self.ctx.tools is None:
            ok, output = False, failure("no tools are configured")
        else:
            try:
                async with asyncio.timeout(TOOL_TIMEOUT_S):
                    result = await self.ctx.tools.run(request.name, request.arguments, self._tool_context)
                ok, output = result.ok, result.output
            except TimeoutError:
                ok, output = False, failure("the tool did not answer in time")
            except Exception as exc:
                self.log.error("tool failed", tool=request.name, error=f"{type(exc).__name__}: {exc}")
                ok, output = False, failure("the tool failed")
        self.call.tool_result(request, ok, output, (time.perf_counter() - started) * 1000)

    async def _transfer(self, transfer: TransferRequest) -> None:
        """The caller heard the model's preamble: the carrier connects the number."""
        assert self.call is not None
        started = time.perf_counter()
        problem = None
        try:
            await self.leg.transfer(transfer.number)
        except TransferFailed as exc:
            problem = str(exc)
            self.log.error("transfer failed", error=problem)
        else:
            self.log.info("call transferred", to=mask_number(transfer.number))
        self.call.transfer_finished(transfer, problem, (time.perf_counter() - started) * 1000)

    def _record(self, record: LogRecord) -> None:
        self.ctx.metrics.record(record.kind, record.data, self.upstream_api)
        kind = record.kind
        if kind is RecordKind.USAGE or kind is RecordKind.SESSION_USAGE:  # totals, not events
            self.ctx.call_log.usage(self.call_id, record.data)
            return
        if kind is RecordKind.SUMMARY:
            data = record.data
            self.ctx.call_log.summary(self.call_id, data["summary"], data["disposition"], data.get("intent"))
            self.log.info("post-call summary", disposition=record.data["disposition"])
            return
        at = None
        if record.at is not None:  # it happened earlier than now: place it where it belongs
            at = datetime.now(UTC) - timedelta(milliseconds=now_ms() - record.at)
        self.ctx.call_log.event(self.call_id, record.kind, record.data, at)
        if record.kind in LOGGED_KINDS:
            level = "warning" if record.kind is RecordKind.ERROR else "info"
            getattr(self.log, level)(record.kind.replace("_", " "), **record.data)
