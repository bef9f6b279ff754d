"""Plain events a carrier codec produces and plain commands it turns back into messages.

Every carrier (Twilio, Telnyx, a SIP leg, a browser softphone) is reduced to these, so the `Call`
never learns which carrier it is talking to. Audio is in the line format `CallStarted.line` names
(µ-law 8 kHz unless the carrier negotiated another), in 20 ms frames both ways.
"""

from __future__ import annotations

import msgspec

from bridge.audio import PCMU_8K, AudioFormat


class CallStarted(msgspec.Struct, frozen=True):
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    custom_parameters: dict[str, str] = msgspec.field(default_factory=dict)
    line: AudioFormat = PCMU_8K  # the carrier's audio on the wire, both ways


class CallerAudio(msgspec.Struct, frozen=True):
    """One inbound frame of caller audio in the line format (normally 20 ms)."""

    payload: bytes
    timestamp_ms: int | None = None


class PlaybackMark(msgspec.Struct, frozen=True):
    """The carrier echoed a mark: the audio before it was played, or was discarded by a clear."""

    name: str


# The sixteen DTMF keys (ITU-T Q.23): 0-9, * and #, and the A-D column few phones have.
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class Dtmf(msgspec.Struct, frozen=True):
    digit: str  # one of DTMF_DIGITS


class CallEnded(msgspec.Struct, frozen=True):
    reason: str = "caller_hangup"


class Connected(msgspec.Struct, frozen=True):
    """The carrier's hello before the stream starts (Twilio `connected`)."""

    protocol: str = ""
    version: str = ""


CarrierEvent = Connected | CallStarted | CallerAudio | PlaybackMark | Dtmf | CallEnded


class PlayAudio(msgspec.Struct, frozen=True):
    """Queue audio for the caller: line format, whole 20 ms frames (at most the leg's
    `play_chunk_ms`), or the last piece of an item."""

    payload: bytes


class Mark(msgspec.Struct, frozen=True):
    """Ask the carrier to echo `name` once everything queued before it has played."""

    name: str


class ClearPlayback(msgspec.Struct, frozen=True):
    """Drop everything queued for the caller, at once."""


class Hangup(msgspec.Struct, frozen=True):
    """End the carrier leg (for a media stream: close the socket with `reason`)."""

    reason: str


CarrierCommand = PlayAudio | Mark | ClearPlayback | Hangup


class CarrierProtocolError(ValueError):
    """A carrier message we cannot use. The message says what was wrong, never the payload."""
