"""The thin socket pump around one `Call`: carrier leg in, Realtime websocket out, and back.

Everything here is I/O: read a message, stamp the time, hand it to the `Call`, then send what the
call left in its outboxes, carrier first (a `clear` must never wait behind anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.audio import PCMU_8K, Transcoder
from bridge.call import Call, CallConfig, ToolRequest, TurnReview
from bridge.call_log_sink import CallLogSink
from bridge.call_registry import CallRegistry
from bridge.carrier.events import CallEnded, CallStarted, ClearPlayback, Hangup, Mark, PlayAudio
from bridge.carrier_leg import CarrierLeg
from bridge.clock import now_ms
from bridge.log_records import LOGGED_KINDS, LogRecord, RecordKind
from bridge.logs import mask_number
from bridge.metrics import BridgeMetrics
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeProtocolError
from bridge.summary import SUMMARY_METADATA, parse_summary, summary_instructions
from bridge.tools.builtin import END_CALL, TRANSFER_CALL
from bridge.tools.toolbox import TOOL_TIMEOUT_S, Toolbox, failure
from bridge.upstream import UpstreamClosed, UpstreamRefused, UpstreamSession

TICK_S = 0.5
SUMMARY_TIMEOUT_S = 15.0  # the phone leg is already closed; this only bounds the session's life
GOODBYE_LIMIT_S = 20.0  # a goodbye that never finishes playing still ends the call
MAX_SESSION_REPLACEMENTS = 5  # per call: an upstream that keeps failing is not worth more tries

GOODBYES = {
    "timeout": "The call has reached its time limit. Tell the caller briefly and warmly, then say goodbye.",
    "shutdown": (
        "This line is closing for maintenance. Apologise, ask the caller to call back, and say goodbye."
    ),
}


UpstreamOpener = Callable[[], Awaitable[UpstreamSession]]
Claim = Callable[[str], Awaitable[UpstreamSession | None]]


@dataclass(slots=True)
class StreamContext:
    """What every call of this server shares, handed in by the app."""

    call_config: CallConfig
    open_upstream: UpstreamOpener
    claim_prepared: Claim
    call_log: CallLogSink
    model: str
    voice: str
    active_calls: CallRegistry
    metrics: BridgeMetrics
    apology: bytes  # µ-law 8 kHz, heard when the model cannot be reached
    stream_failed: Callable[[str, str], None]
    authorize: Callable[[CallStarted], bool] | None = None  # None: the stream was authenticated already
    tools: Toolbox | None = None
    end_call_tool: bool = False
    transfer_numbers: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()  # empty: no post-call summary
    before_response_url: str = ""  # RESPONSE_MODE=manual
    max_call_seconds: int = 0


class CallPump:
    def __init__(self, ctx: StreamContext, leg: CarrierLeg, logger: Any) -> None:
        self.ctx = ctx
        self.leg = leg
        self.log = logger
        self.call: Call | None = None
        self.upstream: UpstreamSession | None = None
        self.call_id = ""
        self._carrier_lock = asyncio.Lock()
        self._upstream_lock = asyncio.Lock()
        self._goodbye_deadline: float | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()

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
        if not self.ctx.active_calls.add(self.call_id, self):
            self.log.warning("second stream for a call already in progress refused")
            await self.leg.close("duplicate call", code=1008)
            return
        self.ctx.call_log.call_started(
            call_id=self.call_id,
            call_sid=started.call_sid,
            stream_sid=started.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            direction=params.get("direction", "inbound"),
            carrier="browser" if params.get("direction") == "browser" else self.leg.carrier,
            model=self.ctx.model,
            voice=self.ctx.voice,
        )
        self.log.info(
            "call started", caller=mask_number(params.get("from")), callee=mask_number(params.get("to"))
        )
        reason = "error"
        try:
            reason = await self._connected(started)
        finally:
            await self._close(reason)
            self.ctx.active_calls.remove(self.call_id, self)

    async def _connected(self, started: CallStarted) -> str:
        try:
            self.upstream = await self.ctx.claim_prepared(started.call_sid) or await self.ctx.open_upstream()
        except UpstreamRefused as exc:
            self.ctx.metrics.upstream_error("connect")
            self.log.error("upstream session failed, ending call", reason=str(exc))
            self.ctx.call_log.event(
                self.call_id, RecordKind.ERROR, {"source": "upstream", "code": "connect", "message": str(exc)}
            )
            return "upstream_failure"
        self.ctx.metrics.upstream_connected(self.upstream.connect_ms)
        self.call = Call(
            self.ctx.call_config,
            self.upstream.codec,
            started,
            now_ms(),
            configured=self.upstream.configured,
            greeted=self.upstream.greeted,
            play_chunk_ms=self.leg.play_chunk_ms,
        )
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
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, *self._tool_tasks):
                task.cancel()
            await asyncio.gather(*tasks, *self._tool_tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.log.error("call pump failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                return "error"
        return self.call.end_reason or "caller_hangup"

    async def _summarise(self) -> None:
        """Ask the still-open session for a summary (out of band: it never joins the conversation)."""
        upstream = self.upstream
        if upstream is None or self.call is None or not self.call.history:
            return
        codec = upstream.codec
        request = codec.create_response(
            summary_instructions(self.ctx.dispositions),
            out_of_band=True,
            text_only=True,
            metadata=SUMMARY_METADATA,
        )
        await upstream.socket.send(codec.encode(request))
        text = ""
        async with asyncio.timeout(SUMMARY_TIMEOUT_S):
            async for message in upstream.socket:
                event = codec.decode(message)
                if isinstance(event, rt.OutputTextDone | rt.OutputTranscriptDone):
                    text = event.text if isinstance(event, rt.OutputTextDone) else event.transcript
                elif isinstance(event, rt.ResponseDone) and event.metadata == SUMMARY_METADATA:
                    break
        if (summary := parse_summary(text, self.ctx.dispositions)) is not None:
            self.ctx.call_log.summary(self.call_id, summary.summary, summary.disposition)
            self.log.info("post-call summary", disposition=summary.disposition)

    async def _close(self, reason: str) -> None:
        if reason == "upstream_failure":
            self.ctx.stream_failed(self.call_id, reason)
            if not self.leg.closed:
                with contextlib.suppress(Exception):
                    await self.leg.apologise(self._apology())
        if not self.leg.closed:  # the phone leg first: nothing below may keep the caller on the line
            with contextlib.suppress(Exception):
                await self.leg.close(reason)
        call = self.call
        self.ctx.call_log.call_ended(self.call_id, reason)  # the call ended when the line did
        self.ctx.metrics.call_ended(reason)
        self.log.info(
            "call ended",
            reason=reason,
            frames_in=call.frames_in if call else 0,
            frames_out=call.frames_out if call else 0,
            barge_ins=call.barge_ins if call else 0,
            **self.leg.stats(),
        )
        if self.ctx.dispositions and reason not in ("upstream_failure", "shutdown", "error"):
            with contextlib.suppress(Exception):
                await self._summarise()
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.socket.close()

    def end(self, reason: str) -> None:
        """End the call now (shutdown, admin hang-up): the hang-up goes out with the next flush."""
        if self.call is not None:
            self.call.hang_up(reason)
            asyncio.get_running_loop().create_task(self._flush())

    def control(self, action: Callable[[Call], None]) -> None:
        """Apply an operator's action to the call; what it produces goes out with a flush."""
        if self.call is not None and self.call.end_reason is None:
            action(self.call)
            asyncio.get_running_loop().create_task(self._flush())

    async def transfer_now(self, number: str) -> str | None:
        """An operator's transfer: Twilio dials `number` now. Returns why it failed, or None."""
        if self.call is None:
            return "the call has not started"
        if (problem := await self.leg.transfer(number)) is not None:
            return problem
        self.log.info("call transferred by an operator", to=mask_number(number))
        self.call.transferred()
        await self._flush()
        return None

    def _apology(self) -> bytes:
        """The apology (µ-law 8 kHz) in this call's line format."""
        assert self.leg.started is not None
        converter = Transcoder(PCMU_8K, self.leg.started.line)
        return converter.process(self.ctx.apology) + converter.flush()

    def say_goodbye(self, reason: str) -> None:
        """End the call after the assistant's goodbye has been heard (at most GOODBYE_LIMIT_S)."""
        if self.call is None or self._goodbye_deadline is not None:
            return
        self.log.info("saying goodbye", reason=reason)
        self._goodbye_deadline = now_ms() + GOODBYE_LIMIT_S * 1000
        self.call.say_goodbye(reason, GOODBYES[reason])
        asyncio.get_running_loop().create_task(self._flush())

    # -- pumps ------------------------------------------------------------------------------------

    async def _carrier_loop(self) -> None:
        call = self.call
        assert call is not None
        async for event, now in self.leg.events():
            started = time.perf_counter()
            call.carrier_event(event, now)
            await self._flush()
            self.ctx.metrics.carrier_frame(time.perf_counter() - started)
            if isinstance(event, CallEnded) or call.end_reason is not None:
                return

    async def _upstream_loop(self) -> None:
        call = self.call
        assert call is not None
        while True:
            await self._relay_upstream()
            if call.end_reason is not None:
                return
            if call.sessions_restored >= MAX_SESSION_REPLACEMENTS or not await self._replace_session():
                call.upstream_lost()
                return

    async def _relay_upstream(self) -> None:
        """Model events into the call until the session ends or must be replaced."""
        call, upstream = self.call, self.upstream
        assert call is not None and upstream is not None
        try:
            async for message in upstream.socket:
                now = now_ms()
                try:
                    event = upstream.codec.decode(message)
                except RealtimeProtocolError as exc:
                    self.log.warning("unusable upstream message", error=str(exc))
                    continue
                started = time.perf_counter()
                call.realtime_event(event, now)
                await self._flush()
                self.ctx.metrics.upstream_message(time.perf_counter() - started)
                if call.end_reason is not None or call.needs_new_session:
                    return
        except UpstreamClosed as exc:
            self.log.error("upstream connection dropped", code=exc.code, reason=exc.reason)
        else:
            self.log.warning("upstream closed the session", code=upstream.socket.close_code)

    async def _replace_session(self) -> bool:
        """Open a new session and hand it the conversation; False if none can be had."""
        assert self.call is not None and self.upstream is not None
        with contextlib.suppress(Exception):
            await self.upstream.socket.close()
        try:
            replacement = await self.ctx.open_upstream()
        except UpstreamRefused as exc:
            self.ctx.metrics.upstream_error("reconnect")
            self.log.error("no replacement upstream session", reason=str(exc))
            return False
        self.upstream = replacement
        self.call.resume(replacement.codec, now_ms())
        self.log.info("upstream session replaced", items_restored=len(self.call.history))
        await self._flush()
        return True

    async def _ticker(self) -> None:
        call = self.call
        assert call is not None
        while True:
            await asyncio.sleep(TICK_S)
            now = now_ms()
            limit = self.ctx.max_call_seconds
            if limit and now - call.started_at >= limit * 1000:
                self.say_goodbye("timeout")
            if self._goodbye_deadline is not None and now >= self._goodbye_deadline:
                call.hang_up(call.goodbye_reason or "timeout")
            call.tick(now)
            await self._flush()

    async def _flush(self) -> None:
        # Runs for every message either way (50+ a second per call): plain try/except and local names,
        # no per-call context-manager objects.
        call = self.call
        if call is None:
            return
        to_carrier, to_upstream, records = call.drain()
        if to_carrier:
            async with self._carrier_lock:
                send = self.leg.send
                for command in to_carrier:
                    await send(command)
                    if type(command) is PlayAudio or type(command) is Mark:
                        continue
                    if isinstance(command, Hangup):
                        break
                    if isinstance(command, ClearPlayback):
                        call.clear_written(now_ms())
            if call.records:
                records += call.drain()[2]
        upstream = self.upstream
        if to_upstream and upstream is not None:
            socket, encode = upstream.socket, upstream.codec.encode
            async with self._upstream_lock:
                try:
                    for event in to_upstream:
                        await socket.send(encode(event))
                except UpstreamClosed:
                    pass  # the upstream loop sees the close and replaces the session or ends the call
        if records:
            for record in records:
                self._record(record)
        if call.tool_requests or call.turn_reviews:  # rare: the per-frame flush stays free of it
            self._start_jobs(call)

    def _start_jobs(self, call: Call) -> None:
        """Tools and turn reviews run beside the call, never on the audio path."""
        jobs = [*map(self._run_tool, call.take_tool_requests()), *map(self._review, call.take_turn_reviews())]
        for job in jobs:
            task = asyncio.get_running_loop().create_task(job)
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)

    async def _review(self, review: TurnReview) -> None:
        """RESPONSE_MODE=manual: the hook sees the caller's turn before the model answers it."""
        assert self.call is not None
        context = ""
        if self.ctx.tools is not None and self.ctx.before_response_url:
            turn = {"item_id": review.item_id, "transcript": review.transcript}
            try:
                context = await self.ctx.tools.before_response(
                    self.ctx.before_response_url, turn, {"call_id": self.call_id}
                )
            except Exception as exc:
                self.log.error("before-response hook failed", error=f"{type(exc).__name__}: {exc}")
        self.call.turn_reviewed(review, context)
        await self._flush()

    async def _run_tool(self, request: ToolRequest) -> None:
        """Off the audio path: the call goes on while a tool runs, and a failure is the model's to tell."""
        assert self.call is not None
        started = time.perf_counter()
        if request.name == END_CALL and self.ctx.end_call_tool:
            self.call.end_after_goodbye(request)
            await self._flush()
            return
        if request.name == TRANSFER_CALL and self.ctx.transfer_numbers:
            await self._transfer(request)
            return
        if self.ctx.tools is None:
            ok, output = False, failure("no tools are configured")
        else:
            try:
                async with asyncio.timeout(TOOL_TIMEOUT_S):
                    result = await self.ctx.tools.run(
                        request.name, request.arguments, {"call_id": self.call_id}
                    )
                ok, output = result.ok, result.output
            except TimeoutError:
                ok, output = False, failure("the tool did not answer in time")
            except Exception as exc:
                self.log.error("tool failed", tool=request.name, error=f"{type(exc).__name__}: {exc}")
                ok, output = False, failure("the tool failed")
        self.call.tool_result(request, ok, output, (time.perf_counter() - started) * 1000)
        await self._flush()

    async def _transfer(self, request: ToolRequest) -> None:
        """Let the caller hear the model's preamble, then have the carrier connect the number."""
        call = self.call
        assert call is not None
        started = time.perf_counter()
        try:
            number = str(json.loads(request.arguments or "{}").get("number") or "")
        except (ValueError, AttributeError):
            number = ""
        number = number or self.ctx.transfer_numbers[0]
        if number not in self.ctx.transfer_numbers:
            allowed = ", ".join(self.ctx.transfer_numbers)
            call.tool_result(request, False, failure(f"transfers go only to {allowed}"), 0.0)
            await self._flush()
            return
        for _ in range(300):  # the preamble may take a while to play: wait up to 15 s
            if not call.speaking:
                break
            await asyncio.sleep(0.05)
        outcome = await self.leg.transfer(number)
        elapsed = (time.perf_counter() - started) * 1000
        if outcome is not None:
            self.log.error("transfer failed", error=outcome)
            call.tool_result(
                request, False, failure("the transfer failed; apologise and offer more help"), elapsed
            )
        else:
            self.log.info("call transferred", to=mask_number(number))
            call.tool_result(request, True, '{"ok": true}', elapsed)
            call.transferred()
        await self._flush()

    def _record(self, record: LogRecord) -> None:
        self.ctx.metrics.record(record.kind, record.data)
        if record.kind is RecordKind.USAGE:
            self.ctx.call_log.usage(self.call_id, record.data)
            return
        at = None
        if record.at is not None:  # it happened earlier than now: place it where it belongs
            at = datetime.now(UTC) - timedelta(milliseconds=now_ms() - record.at)
        self.ctx.call_log.event(self.call_id, record.kind, record.data, at)
        if record.kind in LOGGED_KINDS:
            level = "warning" if record.kind is RecordKind.ERROR else "info"
            getattr(self.log, level)(record.kind.replace("_", " "), **record.data)
