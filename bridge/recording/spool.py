"""The spool: one call's recording as it happens, an append-only file of small binary records.

A call's audio is not laid out while the call runs: a caller run's start is only known well once its
least-delayed frame has arrived, and a barge-in cuts assistant audio that was already queued (and maybe
already spooled). So the spool keeps what happened, in order, and `bridge.recording.finish` lays it out
once the call is over:

    header   MAGIC, u32 length, that many bytes of JSON (call_id, line encoding and rate, wall-clock start)
    record   u8 kind, u8 channel, u32 run, i64 value, u32 payload length, payload

    AUDIO  payload: line-format audio (µ-law, A-law or PCM16 LE) of `run`, `value` samples into the run
    RUN    `run` starts `value` samples after the recording's start (a later RUN for it supersedes)
    CUT    `run` keeps only its first `value` samples (audio spooled so far beyond that was never heard)
    END    the recording is `value` samples long

Runs are numbered per channel from 0. Every value is in samples of the line rate.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, get_args

from bridge.audio import Encoding

MAGIC = b"BRIDGE-RECORDING-SPOOL-1\n"
_LENGTH = struct.Struct("<I")
RECORD = struct.Struct("<BBIqI")

AUDIO, RUN, CUT, END = 1, 2, 3, 4
CALLER, ASSISTANT = 0, 1
CHANNELS = (CALLER, ASSISTANT)
ENCODINGS = get_args(Encoding)


@dataclass(frozen=True, slots=True)
class SpoolHeader:
    call_id: str
    encoding: Encoding
    rate: int
    started_at: str  # ISO 8601, UTC: the wall-clock time of the recording's first sample


def encode_header(header: SpoolHeader) -> bytes:
    body = json.dumps(
        {
            "call_id": header.call_id,
            "encoding": header.encoding,
            "rate": header.rate,
            "started_at": header.started_at,
        },
        separators=(",", ":"),
    ).encode()
    return MAGIC + _LENGTH.pack(len(body)) + body


def encode_record(kind: int, channel: int, run: int, value: int, payload: bytes = b"") -> bytes:
    return RECORD.pack(kind, channel, run, value, len(payload)) + payload


class SpoolError(ValueError):
    """The file is not a recording spool, or its header is unreadable."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    kind: int
    channel: int
    run: int
    value: int
    payload_offset: int  # where the payload starts in the file
    payload_length: int


def read_header(file: BinaryIO) -> SpoolHeader:
    if file.read(len(MAGIC)) != MAGIC:
        raise SpoolError("not a recording spool")
    raw = file.read(_LENGTH.size)
    if len(raw) < _LENGTH.size:
        raise SpoolError("truncated spool header")
    (length,) = _LENGTH.unpack(raw)
    try:
        fields = json.loads(file.read(length))
        header = SpoolHeader(
            call_id=str(fields["call_id"]),
            encoding=fields["encoding"],
            rate=int(fields["rate"]),
            started_at=str(fields["started_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SpoolError(f"unreadable spool header: {exc}") from None
    if header.encoding not in ENCODINGS or header.rate <= 0:
        raise SpoolError(f"unusable spool audio: {header.encoding} at {header.rate} Hz")
    return header


def scan_records(file: BinaryIO) -> Iterator[SpoolRecord]:
    """Every whole record after the header, payloads skipped (not read). A record cut short at the end
    of the file (the process died mid-write) ends the scan."""
    position = file.tell()
    size = file.seek(0, 2)
    while position + RECORD.size <= size:
        file.seek(position)
        kind, channel, run, value, length = RECORD.unpack(file.read(RECORD.size))
        offset = position + RECORD.size
        position = offset + length
        if position > size:
            return
        yield SpoolRecord(kind, channel, run, value, offset, length)
