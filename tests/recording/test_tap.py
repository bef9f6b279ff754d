"""The tap inside the call, without sockets: a `Call` fed plain events at explicit times, its
`CallRecording` rendered, and the two channels compared sample for sample with what the carrier was
sent and what the ledger says was heard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.audio import L16_16K, L16_24K, PCMU_8K, AudioFormat, Transcoder
from bridge.call import Call
from bridge.call_config import CallConfig
from bridge.carrier.events import CallerAudio, CallStarted, ClearPlayback, Mark, PlayAudio
from bridge.carrier.events import PlaybackMark as Echo
from bridge.log_records import RecordKind
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec, SessionOptions
from bridge.recording import CallRecording
from tests.recording.helpers import STARTED_AT, T0, kept, noise, pcm, placed, rendered
from tests.test_call import tone_24k


class Carrier:
    """A carrier `delay_ms` away each way that plays what it is sent in real time, after `buffer_ms`
    of start-up buffering whenever its queue was empty, and echoes each mark once the audio before it
    has played (a probe at once). Keeps exactly what it played, with when: the truth a recording is
    held to."""

    def __init__(self, call: Call, line: AudioFormat, delay_ms: float = 0.0, buffer_ms: float = 0.0) -> None:
        self.call, self.line = call, line
        self.delay_ms, self.buffer_ms = delay_ms, buffer_ms
        self.queue_end = float("-inf")  # when what is queued has played
        self.pieces: list[tuple[float, bytes]] = []  # (start, audio) as played
        self.sent: list[tuple[float, bytes]] = []  # (start, audio) as scheduled when it came, cleared or not
        self.echoes: list[tuple[float, str]] = []  # (reaches the bridge, name)

    def take(self, now: float) -> list[object]:
        commands, self.call.to_carrier = self.call.to_carrier, []
        arrives = now + self.delay_ms
        for command in commands:
            if isinstance(command, PlayAudio):
                start = self.queue_end if arrives <= self.queue_end else arrives + self.buffer_ms
                self.pieces.append((start, command.payload))
                self.sent.append((start, command.payload))
                self.queue_end = start + len(command.payload) / self.line.bytes_per_ms
            elif isinstance(command, Mark):
                played = max(self.queue_end, arrives)
                self.echoes.append((played + self.delay_ms, command.name))
            elif isinstance(command, ClearPlayback):
                self._clear(arrives)
        self.echoes.sort()
        return commands

    def _clear(self, at: float) -> None:
        kept = []
        for start, audio in self.pieces:
            if start >= at:
                continue
            played = int((at - start) * self.line.bytes_per_ms)
            kept.append((start, audio[: played - played % self.line.bytes_per_sample]))
        self.pieces = kept
        self.queue_end = at
        # A clear echoes the marks it discarded at once (Twilio); they say nothing about playback.
        self.echoes = [(t if t - self.delay_ms < at else at + self.delay_ms, n) for t, n in self.echoes]

    def run_until(self, t: float) -> None:
        while self.echoes and self.echoes[0][0] <= t:
            at, name = self.echoes.pop(0)
            self.call.carrier_event(Echo(name), at)
            self.take(at)

    def bursts(self, played: bool = True) -> list[tuple[float, np.ndarray]]:
        """(start, samples) of each stretch of audio played without a gap (or sent, as scheduled)."""
        out: list[tuple[float, np.ndarray]] = []
        end = float("-inf")
        for start, audio in self.pieces if played else self.sent:
            samples = pcm(self.line, audio)
            if out and abs(start - end) < 1e-6:
                out[-1] = (out[-1][0], np.concatenate([out[-1][1], samples]))
            else:
                out.append((start, samples))
            end = start + samples.size / (self.line.rate / 1000)
        return out

    def heard(self, total: int) -> np.ndarray:
        """What the caller heard, as a channel of `total` samples on the recording's timeline."""
        out = np.zeros(total, dtype="<i2")
        rate = self.line.rate / 1000
        for start, audio in self.pieces:
            at = round((start - T0) * rate)
            samples = pcm(self.line, audio)
            out[at : at + samples.size] = samples[: max(0, total - at)]
        return out


def recorded_call(
    line: AudioFormat = PCMU_8K, *, notice: bytes = b"", greeting: str = "", now: float = T0
) -> tuple[Call, CallRecording]:
    recording = CallRecording("CA-tap", line, T0, STARTED_AT)
    opts = SessionOptions(instructions="x", voice="marin")
    config = CallConfig(session=opts, greeting=greeting, recording_notice=notice)
    started = CallStarted(stream_sid="MZ1", call_sid="CA-tap", line=line)
    return Call(config, RealtimeCodec("ga"), started, now, play_chunk_ms=1000, tap=recording), recording


def model_says(
    call: Call, carrier: Carrier, ms: int, at: float, item: str = "i1", response: str = "r1"
) -> None:
    call.model_event(rt.ResponseCreated(response), at)
    call.model_event(rt.AudioDelta(response, item, 0, tone_24k(ms)), at)
    carrier.take(at)


def channels(recording: CallRecording, tmp_path: Path, end: float) -> tuple[np.ndarray, np.ndarray]:
    recording.finish(end)
    _, wav = rendered(recording, tmp_path)
    return wav[:, 0], wav[:, 1]


def runs(channel: np.ndarray, gap: int = 40) -> list[tuple[int, int]]:
    """(start, end) of each stretch of sound: silences shorter than `gap` samples (a tone's zero
    crossings) do not split one."""
    nonzero = np.flatnonzero(channel)
    if nonzero.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(nonzero) > gap)
    starts = [nonzero[0], *nonzero[breaks + 1]]
    ends = [*nonzero[breaks], nonzero[-1]]
    return [(int(a), int(b) + 1) for a, b in zip(starts, ends, strict=True)]


def test_the_caller_channel_holds_every_frame_where_it_left_the_phone(tmp_path: Path) -> None:
    call, recording = recorded_call()
    carrier = Carrier(call, PCMU_8K, delay_ms=30)
    carrier.take(T0)
    carrier.run_until(T0 + 100)  # the probe: a 60 ms round trip
    audio = noise(160 * 50, 1)
    for k in range(50):  # frame k is spoken in [200 + 20k, 220 + 20k) and arrives 30 ms after its end
        call.carrier_event(CallerAudio(audio[k * 160 : (k + 1) * 160]), T0 + 220 + 20 * k + 30)
    caller, _ = channels(recording, tmp_path, T0 + 2000)
    expected = np.zeros(caller.size, dtype="<i2")
    expected[1600 : 1600 + 8000] = pcm(PCMU_8K, audio)
    assert np.array_equal(caller, expected)


@pytest.mark.parametrize("line", [PCMU_8K, L16_16K])
def test_the_assistant_channel_is_what_the_carrier_played_cut_where_the_caller_cut_in(
    line: AudioFormat, tmp_path: Path
) -> None:
    """A reply, a model stall of a second in the middle of it, then the caller talks over it: the
    recording holds the played audio, the stall's silence, and not a sample past the ledger's cut."""
    call, recording = recorded_call(line)
    carrier = Carrier(call, line, delay_ms=40, buffer_ms=60)
    carrier.take(T0)
    carrier.run_until(T0 + 200)
    model_says(call, carrier, 800, T0 + 200)
    carrier.run_until(T0 + 1800)  # the model stalls: the carrier plays out and idles
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(2000, 600)), T0 + 1800)
    carrier.take(T0 + 1800)
    carrier.run_until(T0 + 2600)
    call.model_event(rt.SpeechStarted("u1", 0), T0 + 2600)
    carrier.take(T0 + 2600)
    _, upstream, _ = call.drain()
    truncate = next(e for e in upstream if e["type"] == "conversation.item.truncate")
    _, assistant = channels(recording, tmp_path, T0 + 4000)
    per_ms = line.rate / 1000
    played, sent = carrier.bursts(), carrier.bursts(played=False)
    assert len(played) == len(sent) == 2  # the stall is silence, in the recording as on the line
    # Each burst, sample for sample, within a millisecond of where the carrier played it (the first
    # echo of each burst moves the recording's projection there).
    starts = [
        placed(assistant, samples[: round(100 * per_ms)], round((start - T0) * per_ms), round(per_ms))
        for start, samples in played
    ]
    assert np.array_equal(assistant[: starts[0]], np.zeros(starts[0]))
    assert kept(assistant, starts[0], sent[0][1]) == sent[0][1].size  # heard whole
    # The second is cut exactly where the ledger said the caller stopped hearing it (the truncate's
    # figure, in line samples), and nothing of what was cleared follows.
    cut = kept(assistant, starts[1], sent[1][1])
    lag = call.outbound.output_lag_ms
    heard_of_item = (sent[0][1].size + cut) / per_ms  # one item: its first burst, then this much
    assert round(heard_of_item - lag) == pytest.approx(truncate["audio_end_ms"], abs=1)
    assert not assistant[starts[1] + cut :].any()
    assert abs(cut - played[1][1].size) <= 20 * per_ms  # and the ledger's cut is within its ±20 ms


def test_assistant_lines_are_logged_where_the_caller_began_to_hear_them() -> None:
    call, _ = recorded_call()
    carrier = Carrier(call, PCMU_8K, delay_ms=40, buffer_ms=60)
    carrier.take(T0)
    carrier.run_until(T0 + 200)
    model_says(call, carrier, 1000, T0 + 200)
    carrier.run_until(T0 + 500)  # the burst's first echo: when it really started is known
    call.model_event(rt.OutputTranscriptDelta("r1", "i1", "Hello there"), T0 + 500)
    call.model_event(rt.OutputTranscriptDone("r1", "i1", "Hello there"), T0 + 500)
    call.model_event(rt.AudioDone("r1", "i1"), T0 + 500)
    carrier.take(T0 + 500)
    assert not [r for r in call.drain()[2] if r.kind is RecordKind.ASSISTANT_TRANSCRIPT]  # still playing
    carrier.run_until(T0 + 1500)  # heard to its end: logged now, placed where it began
    line = next(r for r in call.drain()[2] if r.kind is RecordKind.ASSISTANT_TRANSCRIPT)
    assert line.at == pytest.approx(carrier.pieces[0][0], abs=1)  # 200 + 40 + 60: not 500 nor 1500


def test_caller_lines_are_logged_where_their_speech_reached_us() -> None:
    call, _ = recorded_call()
    for k in range(100):  # two seconds of caller audio, a frame every 20 ms, no network delay
        call.carrier_event(CallerAudio(noise(160, k)), T0 + 20 * (k + 1))
    # The model's VAD says speech began 1.2 s into the audio; we hear of it at 2.3 s.
    call.model_event(rt.SpeechStarted("u1", 1200), T0 + 2300)
    call.model_event(rt.InputTranscript("u1", "hello"), T0 + 3000)
    line = next(r for r in call.drain()[2] if r.kind is RecordKind.CALLER_TRANSCRIPT)
    assert line.at == pytest.approx(T0 + 2300 - (2000 - 1200))


# -- the recording notice -----------------------------------------------------------------------------

NOTICE_MS = 1500


def notice_audio() -> bytes:
    return tone_24k(NOTICE_MS, 700)


def test_the_notice_plays_first_and_the_model_waits_for_it(tmp_path: Path) -> None:
    call, recording = recorded_call(notice=notice_audio(), greeting="Hello.")
    carrier = Carrier(call, PCMU_8K, delay_ms=20)
    commands = carrier.take(T0)
    assert isinstance(commands[0], Mark)  # the round-trip probe goes first, not behind the notice
    assert sum(len(c.payload) for c in commands if isinstance(c, PlayAudio)) >= NOTICE_MS * 8
    # The prefetched greeting arrives at once, its transcript too; both wait until the notice was heard.
    model_says(call, carrier, 1000, T0 + 10)
    call.model_event(rt.OutputTranscriptDelta("r1", "i1", "Hello."), T0 + 20)
    call.model_event(rt.OutputTranscriptDone("r1", "i1", "Hello."), T0 + 20)
    call.model_event(rt.AudioDone("r1", "i1"), T0 + 20)
    assert not [c for c in carrier.take(T0 + 20) if isinstance(c, PlayAudio)]
    assert not [r for r in call.drain()[2] if r.kind is RecordKind.ASSISTANT_TRANSCRIPT]
    to_line = Transcoder(L16_24K, PCMU_8K)
    assert b"".join(a for _, a in carrier.pieces) == to_line.process(notice_audio()) + to_line.flush()
    carrier.run_until(T0 + NOTICE_MS + 200)
    assert sum(len(a) for _, a in carrier.pieces) > (NOTICE_MS + 900) * 8  # the greeting followed
    records = call.drain()[2]
    notes = [r.data for r in records if r.kind is RecordKind.NOTE]
    assert notes == [{"text": "Recording notice played", "source": "recording_notice", "heard_whole": True}]
    assert not [r for r in records if r.kind is RecordKind.ASSISTANT_TRANSCRIPT]  # the greeting plays on
    # Heard to its end, the greeting's line is placed where the caller began to hear it: after the
    # notice (once its last mark came back), not when its transcript came.
    carrier.run_until(T0 + NOTICE_MS + 1300)
    (line,) = [r for r in call.drain()[2] if r.kind is RecordKind.ASSISTANT_TRANSCRIPT]
    notice, greeting = carrier.bursts()
    assert greeting[0] >= notice[0] + NOTICE_MS
    assert line.data["text"] == "Hello." and line.at == pytest.approx(greeting[0], abs=1)
    _, assistant = channels(recording, tmp_path, T0 + 4000)
    heard = carrier.heard(assistant.size)
    assert runs(assistant) == runs(heard)  # notice and greeting, back to back, in the recording too


def test_talking_over_the_notice_cuts_nothing_of_it(tmp_path: Path) -> None:
    call, recording = recorded_call(notice=notice_audio(), greeting="Hello.")
    carrier = Carrier(call, PCMU_8K)
    carrier.take(T0)
    model_says(call, carrier, 1000, T0 + 10)
    call.model_event(rt.OutputTranscriptDelta("r1", "i1", "Hello."), T0 + 20)
    call.model_event(rt.OutputTranscriptDone("r1", "i1", "Hello."), T0 + 20)
    carrier.run_until(T0 + 500)
    call.model_event(rt.SpeechStarted("u1", 0), T0 + 500)  # "hello?" half-way through the notice
    commands, upstream, records = call.drain()
    # Its line says the caller heard none of it.
    (line,) = [r.data for r in records if r.kind is RecordKind.ASSISTANT_TRANSCRIPT]
    expected = {"item_id": "i1", "text": "", "full_text": "Hello.", "interrupted": True, "heard_ms": 0}
    assert line == {**expected, "cut_by": "barge_in"}
    assert not [c for c in commands if isinstance(c, ClearPlayback)]
    # The greeting the model had made was never heard: the model is told so.
    assert [
        (e["item_id"], e["audio_end_ms"]) for e in upstream if e["type"] == "conversation.item.truncate"
    ] == [("i1", 0)]
    # Its answer to the caller waits behind the notice, and plays once the notice was heard.
    call.model_event(rt.ResponseDone("r1", "cancelled", None, None), T0 + 600)
    model_says(call, carrier, 500, T0 + 900, item="i2", response="r2")
    carrier.run_until(T0 + NOTICE_MS + 100)
    _, assistant = channels(recording, tmp_path, T0 + 3000)
    to_line = Transcoder(L16_24K, PCMU_8K)
    notice = pcm(PCMU_8K, to_line.process(notice_audio()) + to_line.flush())
    ((start, audio),) = carrier.bursts()  # on this line the answer follows the notice without a gap
    assert start == T0 and np.array_equal(audio[: notice.size], notice)  # the notice, whole
    assert (audio.size - notice.size) / 8 == pytest.approx(500, abs=5)  # then the answer to the caller
    assert np.array_equal(assistant[: audio.size], audio) and not assistant[audio.size :].any()


def test_a_call_that_is_not_recorded_hears_no_notice() -> None:
    opts = SessionOptions(instructions="x", voice="marin")
    config = CallConfig(session=opts, recording_notice=notice_audio())
    call = Call(config, RealtimeCodec("ga"), CallStarted(stream_sid="MZ1", call_sid="CA1"), T0)
    assert not [c for c in call.drain()[0] if isinstance(c, PlayAudio)]
