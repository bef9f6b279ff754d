"""The TwiML answer that connects a call to our media stream (PROTOCOLS.md A2).

SignalWire's cXML and Telnyx's TeXML are TwiML dialects: their routes build their answers here too,
with their own paths and, for Telnyx, its own `<Stream>` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.twiml.voice_response import Connect, VoiceResponse

MEDIA_PATH = "/twilio/media"
CONNECT_DONE_PATH = "/twilio/connect-done"


def http_url(public_base: str, path: str) -> str:
    parts = urlsplit(public_base)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


def media_stream_url(public_base: str, path: str = MEDIA_PATH) -> str:
    """wss:// URL of the media socket at `path`; Twilio forbids a query string on it."""
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


def connect_stream(
    stream_url: str,
    parameters: dict[str, str],
    action_url: str = "",
    stream_attributes: Mapping[str, str] | None = None,
) -> str:
    """`action_url`: where Twilio asks what to do once the stream has ended (PROTOCOLS.md A2).
    `stream_attributes`: further `<Stream>` attributes in snake_case (written lowerCamelCase)."""
    response = VoiceResponse()
    connect = Connect(action=action_url, method="POST") if action_url else Connect()
    stream = connect.stream(url=stream_url, name="bridge", **dict(stream_attributes or {}))
    for name, value in parameters.items():
        if value:
            stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def unavailable(message: str, fallback_number: str = "") -> str:
    """Tell the caller we cannot take the call now; send them to `fallback_number` if there is one."""
    response = VoiceResponse()
    response.say(message)
    if fallback_number:
        response.dial(fallback_number)
    else:
        response.hangup()
    return str(response)


def after_stream(fallback_number: str) -> str:
    """What follows a stream that ended: the fallback number for a call we failed, else hang up."""
    response = VoiceResponse()
    if fallback_number:
        response.dial(fallback_number)
    else:
        response.hangup()
    return str(response)
