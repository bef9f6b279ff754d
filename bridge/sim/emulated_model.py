"""The emulated model, whichever API it is reached through: its settings and what it says.

What the model says: a queued `ScriptedReply` if any, else the caller's last utterance played back
(echo), else a recorded greeting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from bridge.sim.carrier_emulator import DelayLine
from bridge.sim.emulator_audio import greeting_pcm24k

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
