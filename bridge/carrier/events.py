"""Plain events a carrier codec produces and plain commands it turns back into messages.

Every carrier (Twilio, Telnyx, a SIP leg, a browser softphone) is reduced to these, so the `Call`
never learns which carrier it is talking to. Audio is in the line format `CallStarted.line` names
(µ-law 8 kHz unless the carrier negotiated another), in 20 ms frames both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.audio import PCMU_8K, AudioFormat


@dataclass(frozen=True, slots=True)
class CallStarted:
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    line: AudioFormat = PCMU_8K  # the carrier's audio on the wire, both ways


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One inbound frame of caller audio in the line format (normally 20 ms)."""

    payload: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PlaybackMark:
    """The carrier echoed a mark: the audio before it was played, or was discarded by a clear."""

    name: str


# The sixteen DTMF keys (ITU-T Q.23): 0-9, * and #, and the A-D column few phones have.
DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str  # one of DTMF_DIGITS


@dataclass(frozen=True, slots=True)
class CallEnded:
    reason: str = "caller_hangup"


@dataclass(frozen=True, slots=True)
class Connected:
    """The carrier's hello before the stream starts (Twilio `connected`)."""

    protocol: str = ""
    version: str = ""


CarrierEvent = Connected | CallStarted | CallerAudio | PlaybackMark | Dtmf | CallEnded


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Queue audio for the caller: line format, whole 20 ms frames (at most the leg's
    `play_chunk_ms`), or the last piece of an item."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    """Ask the carrier to echo `name` once everything queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Drop everything queued for the caller, at once."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the carrier leg (for a media stream: close the socket with `reason`)."""

    reason: str


CarrierCommand = PlayAudio | Mark | ClearPlayback | Hangup


class CarrierProtocolError(ValueError):
    """A carrier message we cannot use. The message says what was wrong, never the payload."""
