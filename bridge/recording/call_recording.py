"""One call's two-channel recording as the call happens: sans-IO, a few microseconds per frame.

The call's tap feeds it on the call's own clock (the monotonic milliseconds `Call` works in):

    recording.caller(payload, at_ms)             each caller frame as received, when it arrived
    recording.assistant(payload, play_at_ms)     each piece of assistant line audio handed to the carrier,
                                                 with when the carrier will start playing it
    recording.assistant_moved(by_ms)             the carrier's first echo showed the assistant audio
                                                 being played started `by_ms` later than projected
    recording.cleared(unheard_bytes)             a barge-in cleared playback: the last `unheard_bytes` of
                                                 the queued assistant audio were never heard
    recording.finish(at_ms)                      the call is over

and the I/O edge (`bridge.recording.recordings.Recordings`) collects `take_spool()` now and then and
appends it to the spool file in a worker thread. Audio stays in the line's own format (one byte a
sample for G.711) until the call is laid out after it ended (`bridge.recording.finish`).

Where audio lands (sample 0 is `started_ms`; everything at the line's rate):

* **Caller.** Frames are consecutive audio, so they go one after the other in *runs*. A frame is
  placed so it ends when it arrived; network jitter only ever delays a frame, so a run starts where its
  least-delayed frame puts it (the same rule as the playback ledger's shortest round trip). A frame
  more than `CALLER_GAP_MS` later than its run predicts means the carrier paused: a new run starts and
  the pause is silence. Runs never overlap, and a gap shorter than `CALLER_GAP_MS` between runs closes
  (it was jitter, not a pause).
* **Assistant.** The carrier plays what it is sent in order: a piece starts at `play_at_ms` or when the
  piece before it ends, whichever is later. A piece that would start after the queue ran dry (the model
  stalled) starts a new run, and the wait is silence. The run being played moves when the carrier's
  echoes say when it really began. A clear cuts it: only what was heard stays.
"""

from __future__ import annotations

from datetime import datetime

from bridge.audio import AudioFormat
from bridge.recording.spool import (
    ASSISTANT,
    AUDIO,
    CALLER,
    CUT,
    END,
    RUN,
    SpoolHeader,
    encode_header,
    encode_record,
)

CALLER_GAP_MS = 60.0
# A piece projected to start this little after the queue's end follows it: the projection's float
# arithmetic, not a pause.
ASSISTANT_SLACK_MS = 1.0


class _Run:
    __slots__ = ("buffer", "index", "length", "spooled", "start", "start_spooled")

    def __init__(self, index: int, start: float) -> None:
        self.index = index
        self.start = start  # samples after the recording's start (fractional for the caller's estimate)
        self.length = 0  # samples in the run
        self.spooled = 0  # samples of it already handed out by take_spool()
        self.buffer = bytearray()  # the samples after `spooled`, in line format
        self.start_spooled: int | None = None


class CallRecording:
    """Call from one thread (the event loop's). Every method is O(size of its audio) and never raises
    for well-formed input; after `finish` or `stop`, audio is ignored."""

    def __init__(self, call_id: str, line: AudioFormat, started_ms: float, started_at: datetime) -> None:
        """`started_ms`: the call clock's time of the first sample; `started_at`: the same moment in
        wall-clock time (aware), which places the call log's events on the recording."""
        if started_at.tzinfo is None:
            raise ValueError("started_at must be an aware datetime")
        self.call_id = call_id
        self.line = line
        self.rate = line.rate
        self.started_ms = started_ms
        self.active = True
        self._width = line.bytes_per_sample
        self._per_ms = line.rate / 1000.0
        self._gap = CALLER_GAP_MS * self._per_ms
        self._slack = ASSISTANT_SLACK_MS * self._per_ms
        self._caller: _Run | None = None
        self._assistant: _Run | None = None
        self._runs = [0, 0]  # runs begun per channel
        header = SpoolHeader(call_id, line.encoding, line.rate, started_at.isoformat())
        self._records: list[bytes] = [encode_header(header)]  # spool records not yet taken
        self._pending_bytes = 0  # audio bytes held here, not yet taken
        self.samples_end = 0  # the recording's length once finished

    @property
    def pending_bytes(self) -> int:
        """Audio held in memory until the next `take_spool()`."""
        return self._pending_bytes

    # -- the tap --------------------------------------------------------------------------------

    def caller(self, payload: bytes, at_ms: float) -> None:
        if not self.active:
            return
        n = len(payload) // self._width
        if n == 0:
            return
        end = (at_ms - self.started_ms) * self._per_ms
        run = self._caller
        if run is not None:
            late = end - (run.start + run.length + n)
            if late > self._gap:
                self._close(CALLER, run)
                run = None
            elif late < 0:
                run.start += late  # this frame was less delayed: the run began earlier than thought
        if run is None:
            run = self._caller = self._open(CALLER, end - n)
        run.buffer += payload[: n * self._width]
        run.length += n
        self._pending_bytes += n * self._width

    def assistant(self, payload: bytes, play_at_ms: float) -> None:
        if not self.active:
            return
        n = len(payload) // self._width
        if n == 0:
            return
        start = round((play_at_ms - self.started_ms) * self._per_ms)
        run = self._assistant
        if run is not None and start > run.start + run.length + self._slack:
            self._close(ASSISTANT, run)  # the queue ran dry before this piece: silence in between
            run = None
        if run is None:
            run = self._assistant = self._open(ASSISTANT, start)
        run.buffer += payload[: n * self._width]
        run.length += n
        self._pending_bytes += n * self._width

    def assistant_moved(self, by_ms: float) -> None:
        """The assistant audio being played began `by_ms` later than its `play_at_ms` said (earlier
        if negative): its run moves, what follows it keeps following it."""
        run = self._assistant
        if self.active and run is not None:
            run.start += round(by_ms * self._per_ms)

    def cleared(self, unheard_bytes: int) -> None:
        """Playback was cleared and the last `unheard_bytes` of what was sent were never heard."""
        run = self._assistant
        if not self.active or run is None:
            return
        keep = max(0, run.length - max(0, unheard_bytes) // self._width)
        if keep < run.spooled:
            self._records.append(encode_record(CUT, ASSISTANT, run.index, keep))
            self._pending_bytes -= len(run.buffer)
            run.buffer.clear()
            run.spooled = keep
        else:
            drop = (run.length - keep) * self._width
            if drop:
                del run.buffer[len(run.buffer) - drop :]
                self._pending_bytes -= drop
        run.length = keep
        self._close(ASSISTANT, run)

    def finish(self, at_ms: float | None = None) -> None:
        """The call ended at `at_ms`: the recording lasts until then, or to its last audio if that is
        later (or if `at_ms` is None)."""
        if not self.active:
            return
        for channel, run in ((CALLER, self._caller), (ASSISTANT, self._assistant)):
            if run is not None:
                self._close(channel, run)
        end = 0 if at_ms is None else round((at_ms - self.started_ms) * self._per_ms)
        self.samples_end = max(0, end)
        self._records.append(encode_record(END, 0, 0, self.samples_end))
        self.active = False

    def stop(self) -> None:
        """Recording failed (the spool cannot be written): drop what is held and ignore what comes."""
        self.active = False
        self._caller = self._assistant = None
        self._records.clear()
        self._pending_bytes = 0

    # -- the spool ------------------------------------------------------------------------------

    def take_spool(self) -> bytes:
        """Spool records for everything since the last call (b"" if nothing happened)."""
        records = self._records
        for channel, run in ((CALLER, self._caller), (ASSISTANT, self._assistant)):
            if run is not None:
                self._spool_run(channel, run, records)
        if not records:
            return b""
        self._records = []
        self._pending_bytes = 0
        return b"".join(records)

    def _open(self, channel: int, start: float) -> _Run:
        run = _Run(self._runs[channel], start)
        self._runs[channel] += 1
        return run

    def _close(self, channel: int, run: _Run) -> None:
        self._spool_run(channel, run, self._records)
        if channel == CALLER:
            self._caller = None
        else:
            self._assistant = None

    def _spool_run(self, channel: int, run: _Run, records: list[bytes]) -> None:
        start = round(run.start)
        if start != run.start_spooled:
            records.append(encode_record(RUN, channel, run.index, start))
            run.start_spooled = start
        if run.buffer:
            records.append(encode_record(AUDIO, channel, run.index, run.spooled, bytes(run.buffer)))
            run.spooled = run.length
            run.buffer.clear()
