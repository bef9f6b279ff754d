"""CallRecorder: the call log's face towards the audio path.

Every recording method is synchronous, O(1) and never raises: it turns the call into an op and
appends it to an in-memory queue. One writer task drains the queue into the CallStore a batch at a
time, so a slow or absent database costs the call nothing. While the database is unreachable the
writer keeps the ops (in order) and retries with backoff; nothing is lost unless the queue overflows,
and even then call starts, ends and final totals are kept and only excess events are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.calllog.leases import ReplicaIdentity
from bridge.calllog.ops import (
    CallEndedOp,
    CallStartedOp,
    CallSummaryOp,
    CallTotalsOp,
    EventOp,
    LogOp,
    RecordingOp,
    UnconnectedCallOp,
)
from bridge.calllog.pricing import PriceTable, TokenUsage
from bridge.calllog.store import CallStore, database_unavailable
from bridge.log_records import RecordKind

log = structlog.get_logger(__name__)

_BATCH_SIZE = 500
# A transaction costs the event loop about 0.3 ms of SQLAlchemy work however few rows it holds; at 100
# calls events arrive ~170 a second, so writing each as it comes took 8 % of the loop. Waiting this
# long lets a batch gather (flush and stop cut the wait short); a support agent never notices.
_LINGER_S = 0.25
# Per-call state is kept a while after the end so a late event (a transcript that completes after the
# hang-up) still gets the next seq and a late usage object still updates the totals.
_ENDED_CALLS_KEPT = 1024
# A stream waits at most this long for its call's row before it is admitted unchecked (the caller
# hears nothing meanwhile; a claim takes a millisecond or two).
CLAIM_TIMEOUT_S = 1.0


@dataclass(slots=True)
class _CallState:
    model: str
    upstream_api: str = "realtime"
    seq: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    latencies_ms: list[int] = field(default_factory=list)
    barge_ins: int = 0
    errors: int = 0
    # Live calls: the session, its billed seconds, and the delegated backend's model and tokens.
    live_session_id: str | None = None
    session_seconds: float | None = None
    backend_model: str | None = None
    backend: TokenUsage = field(default_factory=TokenUsage)


class CallRecorder:
    """Call its recording methods from the event loop's thread (they are not thread-safe)."""

    def __init__(
        self,
        store: CallStore,
        *,
        max_queue: int = 10000,
        prices: PriceTable | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        linger_s: float = _LINGER_S,
        owner: ReplicaIdentity | None = None,
    ) -> None:
        self.store = store
        self.owner = owner  # recorded as every call's owner (bridge.calllog.leases)
        self.prices = prices or PriceTable()
        self.max_queue = max_queue
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.linger_s = linger_s
        self.write_failures = 0  # failed write attempts (a batch retried 3 times counts 3)
        self.dropped = 0  # ops given up on: queue overflow, or data the database rejects
        self.written = 0
        self.outage_since: datetime | None = None  # the writer cannot reach the database since then
        self._queue: deque[LogOp] = deque()
        self._inflight: list[LogOp] = []
        self._calls: dict[str, _CallState] = {}
        self._ended: OrderedDict[str, _CallState] = OrderedDict()
        self._queued_total = 0  # ops ever accepted; with `_done_total`, what `flush` waits on
        self._done_total = 0
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()  # someone waits for the writes: no lingering
        self._progress = asyncio.Condition()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._overflowing = False
        self._writer: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Ops accepted but not yet in the database."""
        return len(self._queue) + len(self._inflight)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is None:
            self._stopping = False
            self._stop_requested.clear()
            self._writer = asyncio.create_task(self._write_loop(), name="calllog-writer")
            self._writer.add_done_callback(_report_writer_death)

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the agreed interface
        """Write everything queued, then stop. Gives up after `timeout` (logging what is lost)."""
        writer = self._writer
        if writer is None:
            return
        self._stopping = True
        self._stop_requested.set()
        self._hurry.set()
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(writer)
        except TimeoutError:
            log.error("calllog.stop_timeout", lost_ops=self.backlog, timeout_s=timeout)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._writer = None

    async def flush(self) -> None:
        """Wait until every op accepted so far is written (or given up on)."""
        if self._writer is None:
            raise RuntimeError("CallRecorder.flush() needs start() first")
        target = self._queued_total
        self._hurry.set()
        self._wakeup.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done_total >= target)

    # ---- recording (audio path: sync, O(1), never raises) -------------------------------------

    def call_started(self, **fields: Any) -> None:
        """Record a call's start (see `_start_op` for the fields), written with the next batch."""
        try:
            op = self._start_op(**fields)
            self._calls[op.call_id] = _CallState(model=op.model, upstream_api=op.upstream_api)
            self._put(op, essential=True)
        except Exception:
            log.exception("calllog.record_failed", method="call_started", call_id=fields.get("call_id"))

    async def claim_call(self, **fields: Any) -> bool:
        """A stream for this call is admitted here: its row is written now (not with the next batch),
        naming this process its owner, so every process sees at once who carries it. False when the
        call has a row already: a second stream for it, or a replayed one, wherever it landed.

        The database cannot refuse calls: while it is unreachable (or slower than CLAIM_TIMEOUT_S) the
        start is queued like any record and the call admitted, checked by this process alone."""
        op = self._start_op(**fields)
        claimed: bool | None = None
        if self.outage_since is None:
            try:
                async with asyncio.timeout(CLAIM_TIMEOUT_S):
                    claimed = await self.store.claim_call(op)
            except Exception as exc:
                log.warning(
                    "calllog.claim_unchecked", call_id=op.call_id, error=repr(exc), backlog=self.backlog
                )
        if claimed is False:
            return False
        self._calls[op.call_id] = _CallState(model=op.model, upstream_api=op.upstream_api)
        if claimed is None:
            self._put(op, essential=True)
        return True

    def _start_op(
        self,
        *,
        call_id: str,
        call_sid: str,
        stream_sid: str,
        from_number: str,
        to_number: str,
        direction: str,
        model: str,
        voice: str,
        carrier: str = "twilio",
        started_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        placed: bool = False,
        upstream_api: str = "realtime",
    ) -> CallStartedOp:
        """`placed`: a call we placed, whose row was written when it was (bridge.calllog.placed_calls);
        its stream and owner are recorded on it, the rest of that row is left as it is."""
        return CallStartedOp(
            call_id=call_id,
            call_sid=call_sid,
            stream_sid=stream_sid,
            carrier=carrier,
            from_number=from_number,
            to_number=to_number,
            direction=direction,
            model=model,
            voice=voice,
            started_at=_utc(started_at),
            metadata=dict(metadata) if metadata else None,
            upstream_api=upstream_api,
            **self._owner(),
            placed=placed,
        )

    def _owner(self) -> dict[str, str | None]:
        owner = self.owner
        return {
            "owner_id": owner.replica_id if owner else None,
            "owner_incarnation": owner.incarnation if owner else None,
            "owner_url": owner.internal_url if owner else None,
        }

    def event(self, call_id: str, kind: str, data: dict[str, Any], at: datetime | None = None) -> None:
        try:
            state = self._state(call_id)
            state.seq += 1
            self._put(EventOp(call_id=call_id, seq=state.seq, at=_utc(at), kind=kind, data=dict(data)))
            totals_changed = True
            if kind == RecordKind.TURN_LATENCY and isinstance(data.get("ms"), int | float):
                state.latencies_ms.append(int(data["ms"]))
            elif kind == RecordKind.BARGE_IN:
                state.barge_ins += 1
            elif kind == RecordKind.ERROR:
                state.errors += 1
            elif kind == RecordKind.LIVE_SESSION and isinstance(data.get("session_id"), str):
                state.live_session_id = data["session_id"]
            elif kind == RecordKind.BACKEND_RESPONSE:
                if isinstance(data.get("model"), str) and data["model"]:
                    state.backend_model = data["model"]
                if isinstance(data.get("usage"), dict):
                    state.backend.add_responses(data["usage"])
            else:
                totals_changed = False
            if totals_changed:
                self._put(self._totals(call_id, state))
        except Exception:
            log.exception("calllog.record_failed", method="event", call_id=call_id, kind=kind)

    def usage(self, call_id: str, usage: dict[str, Any]) -> None:
        """A Realtime response's token usage (summed), or a Live call's billed session seconds so far
        (`{"session_seconds": n}`, cumulative: the latest stands)."""
        try:
            state = self._state(call_id)
            seconds = usage.get("session_seconds")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                state.session_seconds = float(seconds)
            else:
                state.usage.add(usage)
            self._put(self._totals(call_id, state))
        except Exception:
            log.exception("calllog.record_failed", method="usage", call_id=call_id)

    def call_ended(self, call_id: str, reason: str, at: datetime | None = None) -> None:
        try:
            state = self._state(call_id)
            # Totals again, as essential: intermediate ones may have been dropped in an overflow.
            self._put(self._totals(call_id, state), essential=True)
            self._put(CallEndedOp(call_id=call_id, ended_at=_utc(at), reason=reason), essential=True)
            self._calls.pop(call_id, None)
            self._ended[call_id] = state
            self._ended.move_to_end(call_id)
            while len(self._ended) > _ENDED_CALLS_KEPT:
                self._ended.popitem(last=False)
        except Exception:
            log.exception("calllog.record_failed", method="call_ended", call_id=call_id)

    def call_never_connected(
        self,
        *,
        call_id: str,
        carrier: str,
        from_number: str,
        to_number: str,
        direction: str,
        model: str,
        voice: str,
        answered_at: datetime,
        noticed_at: datetime,
    ) -> None:
        """A call whose webhook was answered and whose media stream never connected (see
        `bridge.awaited_streams`): ended before it began, unless it is recorded already."""
        try:
            call = self._start_op(
                call_id=call_id,
                call_sid=call_id,
                stream_sid="",
                carrier=carrier,
                from_number=from_number,
                to_number=to_number,
                direction=direction,
                model=model,
                voice=voice,
                started_at=answered_at,
            )
            self._put(UnconnectedCallOp(call, noticed_at=_utc(noticed_at)), essential=True)
        except Exception:
            log.exception("calllog.record_failed", method="call_never_connected", call_id=call_id)

    def summary(self, call_id: str, summary: str, disposition: str | None, intent: str | None = None) -> None:
        """The model's post-call summary (it comes after the call ended)."""
        try:
            op = CallSummaryOp(call_id=call_id, summary=summary, disposition=disposition, intent=intent)
            self._put(op, essential=True)
        except Exception:
            log.exception("calllog.record_failed", method="summary", call_id=call_id)

    def recording(
        self,
        call_id: str,
        status: str,
        *,
        started_at: datetime | None = None,
        location: str | None = None,
        formats: tuple[str, ...] = (),
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """The call's recording began ("recording"), was stored ("ready") or failed, with the reason."""
        try:
            op = RecordingOp(
                call_id=call_id,
                status=status,
                started_at=started_at,
                location=location,
                formats=tuple(formats),
                duration_s=duration_s,
                error=error,
            )
            self._put(op, essential=True)
        except Exception:
            log.exception("calllog.record_failed", method="recording", call_id=call_id)

    # ---- internals ----------------------------------------------------------------------------

    def _state(self, call_id: str) -> _CallState:
        state = self._calls.get(call_id) or self._ended.get(call_id)
        if state is None:
            # No call_started seen: record anyway; the database rejects the orphan ops and they are
            # counted as dropped, which is better than losing the call's own events silently.
            state = self._calls[call_id] = _CallState(model="")
        return state

    def _totals(self, call_id: str, state: _CallState) -> CallTotalsOp:
        usage, backend = state.usage, state.backend
        latencies = state.latencies_ms
        if state.upstream_api == "live":
            seconds = state.session_seconds or 0.0
            cost, _ = self.prices.estimate_live(state.model, seconds, state.backend_model or "", backend)
        else:
            cost = self.prices.estimate(state.model, usage)
        return CallTotalsOp(
            call_id=call_id,
            input_text_tokens=usage.input_text,
            input_audio_tokens=usage.input_audio,
            input_cached_tokens=usage.input_cached,
            output_text_tokens=usage.output_text,
            output_audio_tokens=usage.output_audio,
            cost_usd=cost,
            turn_latency_p50_ms=statistics.median_low(latencies) if latencies else None,
            turn_latency_max_ms=max(latencies) if latencies else None,
            barge_in_count=state.barge_ins,
            error_count=state.errors,
            live_session_id=state.live_session_id,
            session_seconds=state.session_seconds,
            backend_model=state.backend_model,
            backend_input_tokens=backend.input_text,
            backend_cached_tokens=backend.cached_text,
            backend_output_tokens=backend.output_text,
        )

    def _put(self, op: LogOp, essential: bool = False) -> None:
        if not essential and len(self._queue) >= self.max_queue:
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning("calllog.queue_overflow", max_queue=self.max_queue, backlog=self.backlog)
            return
        self._queue.append(op)
        self._queued_total += 1
        if len(self._queue) >= _BATCH_SIZE:
            self._hurry.set()
        self._wakeup.set()

    async def _write_loop(self) -> None:
        delay = self.retry_initial_s
        while True:
            if not self._inflight:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    self._hurry.clear()  # nothing is queued or in flight: every flush is satisfied
                    await self._wakeup.wait()
                    continue
                await self._linger()
                count = min(len(self._queue), _BATCH_SIZE)
                self._inflight = [self._queue.popleft() for _ in range(count)]
                if self._overflowing and len(self._queue) < self.max_queue // 2:
                    self._overflowing = False
            try:
                await self.store.write_batch(self._inflight)
            except Exception as exc:
                self.write_failures += 1
                if not database_unavailable(exc):
                    await self._write_one_by_one()
                    continue
                if self.outage_since is None:
                    self.outage_since = datetime.now(UTC)
                    log.warning("calllog.database_unavailable", error=repr(exc), backlog=self.backlog)
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if self.outage_since is not None:
                outage_s = (datetime.now(UTC) - self.outage_since).total_seconds()
                log.info("calllog.database_back", outage_s=outage_s)
                self.outage_since = None
            delay = self.retry_initial_s
            await self._finish(len(self._inflight), written=True)

    async def _linger(self) -> None:
        if self.linger_s <= 0 or self._hurry.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.linger_s):
                await self._hurry.wait()

    async def _write_one_by_one(self) -> None:
        """Isolate the op(s) the database rejects; the others are written. Stops at an outage."""
        while self._inflight:
            op = self._inflight[0]
            try:
                await self.store.write_batch([op])
            except Exception as exc:
                if database_unavailable(exc):
                    self.write_failures += 1
                    return  # the database went away: the normal retry path takes over
                self.dropped += 1
                log.error("calllog.op_rejected", op=type(op).__name__, call_id=op.call_id, error=repr(exc))
                await self._finish(1, written=False)
            else:
                await self._finish(1, written=True)

    async def _finish(self, count: int, *, written: bool) -> None:
        del self._inflight[:count]
        if written:
            self.written += count
        self._done_total += count
        async with self._progress:
            self._progress.notify_all()

    async def _sleep(self, seconds: float) -> None:
        # A stop() request cuts the backoff short so the final attempts come promptly, but they stay
        # spaced: a database that is still down must not be retried in a tight loop until the timeout.
        # (asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as the event
        # fires, and stop() could then never cancel this task.)
        if self._stop_requested.is_set():
            await asyncio.sleep(min(seconds, self.retry_initial_s))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()


def _report_writer_death(task: asyncio.Task[None]) -> None:
    # The loop handles database errors itself; anything reaching here is a bug worth shouting about.
    if not task.cancelled() and task.exception() is not None:
        log.error("calllog.writer_crashed", error=repr(task.exception()), exc_info=task.exception())


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
