"""The emulated model, whichever API it is reached through: its settings and what it says.

What the model says: a queued `ScriptedReply` if any; else the words an instruction asks for word for
word ("Say exactly this ...: <words>"); else what it was last given, said back (echo): a text message
(an operator's note) as those words, the caller's last utterance as that audio; else a recorded
greeting. Given words are heard as a hum with their rhythm (`murmur_pcm24k`): it has no voice.
Asked for the post-call summary (JSON), it answers one that says plainly it is the emulator's.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

import numpy as np

from bridge.sim.carrier_emulator import DelayLine
from bridge.sim.emulator_audio import greeting_pcm24k, murmur_pcm24k

GREETING_TRANSCRIPT = "Hello! This is the bridge demo. Say something, and I will say it back to you."


@dataclass
class EmulatorConfig:
    speed: float = 4.0  # audio deltas are streamed this many times faster than real time
    first_delta_delay_ms: float = 120  # time from response.create / commit to the first audio delta
    delta_ms: int = 100  # audio per audio delta
    stall_after_ms: float | None = None  # after this much audio of a response, pause ...
    stall_ms: float = 0  # ... for this long (the model stalls mid-response)
    reject_beta: bool = (
        False  # like api.openai.com today: beta header -> beta_api_shape_disabled + close 4000
    )
    refuse_status: int | None = None  # refuse the websocket upgrade with this HTTP status
    refuse_times: int | None = None  # ... only this many times, then accept (None: always)
    refuse_for_s: float | None = None  # ... only for this long after the first refusal, then accept
    strict: bool = True  # validate every client event against the openai SDK types of the session's dialect
    vad_threshold_dbfs: float = -40.0  # energy threshold at the session's default VAD threshold of 0.5
    # The network from the service to the bridge: every server event is late by delay +/- jitter
    # (uniform, seeded per session), never overtaking an earlier one.
    upstream_delay_ms: float = 0.0
    upstream_jitter_ms: float = 0.0
    upstream_seed: int = 0
    # -- the Live dialect (GPT-Live); its output is clocked by the input, so these durations are on the
    # input audio's clock, except the three marked wall clock.
    live_frame_ms: int = 20  # output audio per session.output_audio.delta, made from as much input
    live_silence_ms: int = 500  # caller silence that ends their turn
    live_reply_delay_ms: float = 300  # from the end of the caller's turn to the model's first word
    live_yield_ms: float = 240  # caller speech over the model before it stops talking (shorter: ignored)
    live_start_delay_ms: float = 0  # wall clock: session.start -> session.started
    live_usage_interval_s: float = 10.0  # wall clock: cadence of session.usage.updated
    live_max_session_s: float = 3600.0  # wall clock: then session.closed with reason "expired"


def upstream_line(config: EmulatorConfig, session_index: int) -> DelayLine | None:
    """The network one session's server events cross, or None for loopback as it is."""
    if not config.upstream_delay_ms and not config.upstream_jitter_ms:
        return None
    rng = random.Random(config.upstream_seed * 1_000_003 + session_index)
    return DelayLine(config.upstream_delay_ms, config.upstream_jitter_ms, rng)


@dataclass
class ScriptedReply:
    audio_pcm24k: bytes | None = None  # PCM16 24 kHz mono to speak
    transcript: str = ""
    tool_call: tuple[str, dict] | None = None  # (name, arguments): a function call instead of audio
    more_audio: tuple[bytes, ...] = ()  # further assistant message items (PCM16 24 kHz) in the same response


def emulated_transcript(seconds: float) -> str:
    """What the emulator's transcription says of caller speech it was given no words for: it has no
    speech recognition, and says so rather than invent words."""
    return f"[Demo: the emulator has no speech recognition. The caller spoke for {seconds:.1f} s]"


Utterance = tuple[np.ndarray, int]  # PCM16 samples and their rate


def spoken_parts(
    script: ScriptedReply | None, last_utterance: Utterance | None
) -> list[tuple[np.ndarray, int, str]]:
    """(samples, rate, transcript) of each stretch of speech of a reply that is not a tool call."""
    if script is not None:
        parts = [(script.audio_pcm24k or b"", script.transcript)]
        parts += [(audio, "") for audio in script.more_audio]
        return [(np.frombuffer(audio, dtype="<i2"), 24000, text) for audio, text in parts]
    if last_utterance is not None:
        pcm, rate = last_utterance
        return [(pcm, rate, f"You said something for {pcm.size / rate:.1f} seconds.")]
    return [(np.frombuffer(greeting_pcm24k(), dtype="<i2"), 24000, GREETING_TRANSCRIPT)]


_SAY_WORDS = re.compile(r"\bsay exactly this\b[^:]*:\s*(?P<words>.+)", re.IGNORECASE | re.DOTALL)
_CHOICES = re.compile(r"one of (\[[^\]]*\])")


def words_to_say(instructions: str | None) -> str | None:
    """The words an instruction asks to be said word for word ("Say exactly this to the caller,
    nothing else: <words>"): the one kind of instruction the emulated model follows to the letter."""
    match = _SAY_WORDS.search(instructions or "")
    return (match.group("words").strip() or None) if match else None


def said_words(words: str) -> list[tuple[np.ndarray, int, str]]:
    """(samples, rate, transcript) of saying `words`: the transcript is the words, the audio a hum."""
    return [(murmur_pcm24k(words), 24000, words)]


def emulated_summary(instructions: str | None, caller_turns: int, answers: int) -> str | None:
    """Asked for the post-call summary as JSON (summary, intent, disposition), the emulator's answer:
    what it can count, said to be the emulator's; None for any other request."""
    text = instructions or ""
    if '"summary"' not in text or '"disposition"' not in text:
        return None
    try:
        choices = [str(c) for c in json.loads(found.group(1))] if (found := _CHOICES.search(text)) else []
    except ValueError:
        choices = []
    summary = (
        f"Demo call, summarised by the emulator (it has no language model): the caller spoke "
        f"{caller_turns} time{'s' if caller_turns != 1 else ''} and the assistant answered {answers} "
        f"time{'s' if answers != 1 else ''}."
    )
    disposition = "resolved" if "resolved" in choices else (choices[0] if choices else None)
    return json.dumps({"summary": summary, "intent": "trying the bridge demo", "disposition": disposition})
