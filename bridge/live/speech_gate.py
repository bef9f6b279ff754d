"""Speaking or silent, frame by frame: the model's own output cut into turns, and the caller's voice.

A Live session streams the model's audio continuously and marks none of it (docs/protocols.md §L4,
§L5): no response, no item, no "speech started/stopped". The service sends digital silence while the
model is quiet, so an energy gate on its own audio is exact enough to tell speech from silence. The
`SpeechGate` turns the stream into **model turns** (`turn_1`, `turn_2`, ...): a turn starts with the
first loud frame and ends once `END_AFTER_MS` of silence followed its last loud one. The turns are the
"items" the playback ledger and the call log already know.

`CallerVoice` is the same idea on the caller's frames, with a threshold for speech on a phone line: it
says whether the caller is talking now (a Live model stops by itself when talked over, and the bridge
must then clear what the carrier still holds) and when they last stopped (a reply's latency).

Both are plain per-frame logic with no clock of their own: they count frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.audio import AudioFormat

FRAME_MS = 20
MODEL_SILENCE_DBFS = -60.0  # the service's silence is digital zero; its speech is far above this
END_AFTER_MS = 500  # silence that ends a model turn (pauses between words and sentences are shorter)
CALLER_SPEECH_DBFS = -40.0  # a caller talking, not line noise (the session VAD's default threshold)
CALLER_ONSET_FRAMES = 2  # consecutive loud frames: a click or a pop is not speech
CALLER_END_MS = 300  # quiet that ends the caller's speech


def amplitude(dbfs: float) -> float:
    return 32768.0 * 10.0 ** (dbfs / 20.0)


@dataclass(frozen=True, slots=True)
class TurnStarted:
    turn_id: str


@dataclass(frozen=True, slots=True)
class TurnEnded:
    turn_id: str
    speech_ms: float  # from the turn's first loud frame to the end of its last one


GateEvent = TurnStarted | TurnEnded


class SpeechGate:
    """The model's output, one frame at a time (`feed`), into turns."""

    def __init__(self, fmt: AudioFormat, threshold_dbfs: float = MODEL_SILENCE_DBFS) -> None:
        self.fmt = fmt
        self._amplitude = amplitude(threshold_dbfs)
        self.turn_id: str | None = None  # the turn in progress
        self.loud = False  # the last frame fed
        self.silent_ms = 0  # silence since the turn's last loud frame
        self.speech_ms = 0  # the turn so far, up to the end of its last loud frame
        self._turns = 0

    def feed(self, frame: bytes) -> GateEvent | None:
        """One frame of the model's audio (`FRAME_MS`): the turn it starts or ends, if any."""
        self.loud = self.fmt.rms(frame) > self._amplitude
        if self.turn_id is None:
            if not self.loud:
                return None
            self._turns += 1
            self.turn_id = f"turn_{self._turns}"
            self.silent_ms, self.speech_ms = 0, FRAME_MS
            return TurnStarted(self.turn_id)
        if self.loud:
            self.speech_ms += self.silent_ms + FRAME_MS
            self.silent_ms = 0
            return None
        self.silent_ms += FRAME_MS
        if self.silent_ms >= END_AFTER_MS:
            return self.end_turn()
        return None

    def end_turn(self) -> TurnEnded | None:
        """End the turn in progress now (its audio was cleared: what follows is another turn)."""
        if self.turn_id is None:
            return None
        ended = TurnEnded(self.turn_id, self.speech_ms)
        self.turn_id = None
        self.silent_ms = self.speech_ms = 0
        return ended


class CallerVoice:
    """Is the caller talking? Fed every caller frame with its arrival time."""

    def __init__(self, fmt: AudioFormat, threshold_dbfs: float = CALLER_SPEECH_DBFS) -> None:
        self.fmt = fmt
        self._amplitude = amplitude(threshold_dbfs)
        self.speaking = False
        self.began_at: float | None = None  # arrival of the first loud frame of the latest speech
        self.last_loud_at: float | None = None  # arrival of the latest loud frame of speech
        self._run = 0
        self._run_began = 0.0

    def feed(self, frame: bytes, now: float) -> bool | None:
        """True: the caller started talking with this frame; False: they stopped (`last_loud_at` says
        when); None: no change."""
        loud = self.fmt.rms(frame) > self._amplitude
        if loud:
            if self._run == 0:
                self._run_began = now
            self._run += 1
            if self.speaking or self._run >= CALLER_ONSET_FRAMES:
                self.last_loud_at = now
            if not self.speaking and self._run >= CALLER_ONSET_FRAMES:
                self.speaking = True
                self.began_at = self._run_began
                return True
            return None
        self._run = 0
        if self.speaking and self.last_loud_at is not None and now - self.last_loud_at >= CALLER_END_MS:
            self.speaking = False
            return False
        return None

    def talking_over(self, since: float, now: float, recent_ms: float) -> bool:
        """The caller's latest speech began no later than `since` and was loud within `recent_ms`: they
        were talking before something happened at `since` (a reply to it begins after it)."""
        last, began = self.last_loud_at, self.began_at
        return last is not None and began is not None and began <= since and now - last <= recent_ms
