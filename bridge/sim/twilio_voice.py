"""Twilio's side of a voice webhook, for the simulators (`bridge dial`, the Twilio REST stand-in, the load
benchmark): POST it signed as Twilio does, and read the `<Stream>` its TwiML answer connects."""

from __future__ import annotations

from xml.etree import ElementTree

import aiohttp
from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


class NotConnected(Exception):
    """The voice webhook did not connect the call to a media stream (refused, busy, an error)."""


def twiml_stream(twiml: str) -> tuple[str, dict[str, str]]:
    """What Twilio reads from the TwiML's <Stream>: the URL it connects to, and its <Parameter name=
    value=> pairs, which arrive as start.customParameters (the one-time stream token among them)."""
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError as exc:
        raise NotConnected(f"the voice webhook's answer is not TwiML ({exc})") from None
    stream = next(root.iter("Stream"), None)
    if stream is None or not stream.attrib.get("url"):
        said = " ".join(" ".join(say.itertext()).strip() for say in root.iter("Say"))
        dialled = " ".join(" ".join(dial.itertext()).strip() for dial in root.iter("Dial"))
        detail = f': "{said}"' if said else ""
        detail += f" (sent on to {dialled})" if dialled else ""
        raise NotConnected(f"the bridge did not connect the call to a media stream{detail}")
    parameters = {p.attrib["name"]: p.attrib.get("value", "") for p in stream.iter("Parameter")}
    return stream.attrib["url"], parameters


async def answer_call(
    http: aiohttp.ClientSession,
    voice_url: str,
    form: dict[str, str],
    auth_token: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """POST the voice webhook as Twilio does (signed with `auth_token`, if given); returns the media
    stream's URL and parameters from the TwiML answer."""
    sent = dict(headers or {})
    if auth_token:
        sent[SIGNATURE_HEADER] = RequestValidator(auth_token).compute_signature(voice_url, form)
    async with http.post(voice_url, data=form, headers=sent) as response:
        twiml = await response.text()
        if response.status != 200:
            raise NotConnected(f"the voice webhook answered HTTP {response.status}: {twiml.strip()[:200]}")
    return twiml_stream(twiml)


def stream_headers(
    stream_url: str, auth_token: str = "", headers: dict[str, str] | None = None
) -> dict[str, str]:
    """The media stream upgrade's headers: Twilio signs the URL alone (docs/protocols.md §T7)."""
    sent = dict(headers or {})
    if auth_token:
        sent[SIGNATURE_HEADER] = RequestValidator(auth_token).compute_signature(stream_url, {})
    return sent
