"""Call recordings: two channels (left the caller as received, right the assistant as the caller heard
it), spooled during the call off the event loop and laid out after it as WAV and FLAC.

    CallRecording   one call's recording, sans-IO: what the call's tap feeds (call_recording.py)
    render          spool -> WAV + FLAC, after the call (finish.py)
"""

from bridge.recording.call_recording import CallRecording
from bridge.recording.finish import FORMATS, RecordingFailed, render

__all__ = ["FORMATS", "CallRecording", "RecordingFailed", "render"]
