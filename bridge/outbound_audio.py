"""The model's audio on its way to the caller, and how long the caller waited for it.

Audio is resampled to the line and goes out as soon as it is ready, in pieces that end where a mark
is due: the first frame after silence alone with its own mark (its echo is the earliest evidence of
when the carrier really started playing), then a mark every 100 ms of audio, and one at the end of
each item. Every piece is entered in the `PlaybackLedger`, which is what the marks are for.

The reply latency is timed here because it ends here: from the start of the call (the greeting) or
the end of the caller's turn, to the first audio that goes out after it.

A recorded call's notice goes out the same way, before anything of the model's: the model's audio is
held until the caller has heard the notice to its end (`notice`, `release`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.audio import AudioFormat, Transcoder
from bridge.carrier.events import CarrierCommand, Mark, PlayAudio
from bridge.ledger import PlaybackLedger
from bridge.log_records import LogRecord, RecordKind

if TYPE_CHECKING:
    from bridge.recording.call_recording import CallRecording

FRAME_MS = 20  # the carriers' frame: 160 bytes of µ-law at 8 kHz
MARK_EVERY_FRAMES = 5  # a mark per 100 ms bounds how stale our view of playback can be
NOTICE_ITEM = "recording-notice"  # the notice's audio in the ledger: no model item, never truncated

_Held = tuple[str, int, bytes | None]  # (item, content index, model audio; None: the item's audio is done)


class OutboundAudio:
    """One call's outbound audio: its resampler, the item being sent, and the mark cadence.

    `play`, `item_done` and `finish` append carrier commands to the list they are given (the call's
    outbox) and return a latency record when the audio they sent is the first the caller waited for.
    """

    def __init__(
        self,
        model: AudioFormat,
        line: AudioFormat,
        ledger: PlaybackLedger,
        play_chunk_ms: int,
        tap: CallRecording | None = None,
    ) -> None:
        """`play_chunk_ms`: the most audio the carrier takes in one message (`CarrierLeg.play_chunk_ms`).
        `tap`: the call's recording, handed each piece with when the caller will hear it."""
        self.ledger = ledger
        self.tap = tap
        self._resampler = Transcoder(model, line)
        self._model_bytes_per_ms = model.bytes_per_ms
        self._frame_bytes = line.frame_bytes(FRAME_MS)
        self._mark_bytes = MARK_EVERY_FRAMES * self._frame_bytes
        # Audio ready at once goes in as few messages as the marks allow, not one per frame: a 100 ms
        # delta is two `media` at most, not five. Never more than a mark covers.
        self._piece_bytes = max(1, min(play_chunk_ms // FRAME_MS, MARK_EVERY_FRAMES)) * self._frame_bytes
        self.item: str | None = None  # the assistant item whose audio is going out
        self._content_index = 0
        self._pending = bytearray()  # line audio not yet a whole frame
        self._bytes_since_mark = 0
        self.frames_out = 0
        # Latency: what the caller is waiting for, and since when (None: nothing).
        self._awaiting: RecordKind | None = None
        self._awaiting_since = 0.0
        # When the caller began to hear each item (the call's clock), until the call takes it.
        self.play_started: dict[str, float] = {}
        self._held: list[_Held] | None = None  # the model's audio while the notice plays

    @property
    def output_lag_ms(self) -> float:
        """What we send lags the model's audio by the resampler's delay."""
        return self._resampler.delay_ms

    # -- latency ------------------------------------------------------------------------------------

    def await_greeting(self, since: float) -> None:
        self._awaiting, self._awaiting_since = RecordKind.GREETING_LATENCY, since

    def await_reply(self, since: float) -> None:
        """The caller stopped speaking at `since`: the next audio sent is the reply (unless the
        greeting, still awaited, goes first)."""
        if self._awaiting is not RecordKind.GREETING_LATENCY:
            self._awaiting, self._awaiting_since = RecordKind.TURN_LATENCY, since

    def greeting_interrupted(self) -> None:
        """The caller talked over the greeting: its latency is not the greeting's any more."""
        if self._awaiting is RecordKind.GREETING_LATENCY:
            self._awaiting = None

    # -- audio ----------------------------------------------------------------------------------------

    def play(
        self, item_id: str, content_index: int, audio: bytes, now: float, out: list[CarrierCommand]
    ) -> LogRecord | None:
        """A delta of the model's audio for `item_id`: what is ready goes to `out` at once."""
        if self._held is not None:
            self._held.append((item_id, content_index, audio))
            return None
        record = None
        if item_id != self.item:
            record = self._send_rest(now, out)
            self.item, self._content_index = item_id, content_index
        self.ledger.received(item_id, len(audio) / self._model_bytes_per_ms)
        self._pending += self._resampler.process(audio)
        return self._send(now, out, final=False) or record

    def item_done(self, item_id: str, now: float, out: list[CarrierCommand]) -> LogRecord | None:
        """The model finished the item's audio: send its rest, the resampler's tail included."""
        if self._held is not None:
            self._held.append((item_id, 0, None))
            return None
        if item_id != self.item:
            return None
        return self._send_rest(now, out)

    def projection_moved(self, since: float, by: float) -> None:
        """The carrier's first echo of a burst projected to start at `since` showed it playing `by` ms
        later (earlier if negative): what was placed by that projection moves with it."""
        for item_id, at in self.play_started.items():
            if at >= since:
                self.play_started[item_id] = at + by
        if self.tap is not None:
            self.tap.assistant_moved(by)

    # -- the recording notice -------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """The notice is playing: the model's audio waits."""
        return self._held is not None

    def notice(self, audio: bytes, now: float, out: list[CarrierCommand]) -> None:
        """Play `audio` (line format) now; the model's audio waits until `release`."""
        awaiting, self._awaiting = self._awaiting, None  # the caller is not waiting for this
        self.item, self._content_index = NOTICE_ITEM, 0
        self._pending += audio
        self._send(now, out, final=True)
        self.item, self._awaiting = None, awaiting
        self._held = []

    def release(self, now: float, out: list[CarrierCommand]) -> list[LogRecord]:
        """The notice was heard: what the model said meanwhile goes out now. A greeting still awaited
        is timed from here: that is how long the caller waited after the notice."""
        held, self._held = self._held or [], None
        self.play_started.pop(NOTICE_ITEM, None)
        if self._awaiting is RecordKind.GREETING_LATENCY:
            self._awaiting_since = now
        records = []
        for item_id, content_index, audio in held:
            if audio is None:
                record = self.item_done(item_id, now, out)
            else:
                record = self.play(item_id, content_index, audio, now, out)
            if record is not None:
                records.append(record)
        return records

    def drop_held(self) -> dict[str, int]:
        """The caller talked over the notice: the model's audio held behind it is dropped (the notice
        plays on). Returns each item dropped with its content index."""
        held = self._held or []
        if self._held is not None:
            self._held = []
        return {item_id: content_index for item_id, content_index, audio in held if audio is not None}

    def drop(self) -> str | None:
        """Send nothing more of what is pending (a barge-in, a replaced session); returns the item
        that was going out."""
        item, self.item = self.item, None
        self._pending.clear()
        self._resampler.reset()
        return item

    def _send_rest(self, now: float, out: list[CarrierCommand]) -> LogRecord | None:
        if self.item is None:
            return None
        self._pending += self._resampler.flush()  # flush() also resets it
        record = self._send(now, out, final=True)
        self.item = None
        return record

    def _send(self, now: float, out: list[CarrierCommand], *, final: bool) -> LogRecord | None:
        item = self.item
        if item is None:
            return None
        pending = self._pending
        frame_bytes = self._frame_bytes
        ledger = self.ledger
        end = len(pending) if final else len(pending) - len(pending) % frame_bytes
        offset = 0
        tap = self.tap
        first: float | None = None
        while offset < end:
            idle = not ledger.pending()
            # The first frame after silence goes alone with its own mark: its echo is the earliest
            # evidence of when the carrier really started playing (its buffering is unknown until then).
            # Later pieces end where a mark is due, so marks fall every 100 ms of audio after it.
            due = self._mark_bytes - self._bytes_since_mark
            size = min(end - offset, frame_bytes if idle else min(self._piece_bytes, due))
            piece = bytes(pending[offset : offset + size])
            offset += size
            out.append(PlayAudio(piece))
            play_at = ledger.sent(item, self._content_index, size, now)
            if tap is not None:
                tap.assistant(piece, play_at)
            if first is None:
                first = play_at
            self.frames_out += -(-size // frame_bytes)
            self._bytes_since_mark += size
            if idle or self._bytes_since_mark >= self._mark_bytes:
                self._mark(out)
        del pending[:offset]
        if first is not None and item not in self.play_started:
            self.play_started[item] = first
        if final:
            self._mark(out)
        if offset and self._awaiting is not None:
            kind, self._awaiting = self._awaiting, None
            return LogRecord(kind, {"ms": round(now - self._awaiting_since, 1)})
        return None

    def _mark(self, out: list[CarrierCommand]) -> None:
        name = self.ledger.mark()
        if name is not None:
            out.append(Mark(name))
        self._bytes_since_mark = 0
