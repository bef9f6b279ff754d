"""Call recordings: two channels (left the caller as received, right the assistant as the caller heard
it), spooled during the call off the event loop, stored after it as WAV, FLAC and a waveform's peaks in
a directory or an S3-compatible bucket, served with range requests at /api/calls/{id}/recording,
deleted with their call. The `Call` feeds a call's `CallRecording` (its tap); the pump begins and ends it.

    CallRecording     one call's recording, sans-IO: what the call's tap feeds (call_recording.py)
    Recordings        the process's recordings: spool thread, finishing, call-log status (recordings.py)
    render            spool -> WAV + FLAC + peaks, after the call (finish.py)
    RecordingArchive  where finished recordings live: a directory or S3 (archive.py)
    recording_response  serving one with byte ranges (download.py)
"""

from bridge.recording.archive import ArchiveError, RecordingArchive, StoredFile
from bridge.recording.call_recording import CallRecording
from bridge.recording.finish import FORMATS, RecordingFailed, render
from bridge.recording.recordings import RecordingLog, Recordings, recording_wanted

__all__ = [
    "FORMATS",
    "ArchiveError",
    "CallRecording",
    "RecordingArchive",
    "RecordingFailed",
    "RecordingLog",
    "Recordings",
    "StoredFile",
    "recording_wanted",
    "render",
]
