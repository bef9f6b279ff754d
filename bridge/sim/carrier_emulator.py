"""A carrier plus caller: a websocket client that dials the bridge's media stream endpoint.

`CallerEmulator` is the carrier-neutral part: a frame clock sending one 20 ms frame every 20 ms of real
time (silence when the caller is quiet), DTMF on request, a hang-up, and the playout of what comes back.
A subclass says how its carrier puts those on the wire (the `_*_message` hooks and `parse_outbound`).
`TwilioCallerEmulator` speaks Twilio Media Streams (docs/protocols.md §T3, §T4, §T5) the way Twilio does:
`connected`, `start`, `media`, `dtmf`, `stop`. What the bridge sends back goes through a `Playout`,
which decides what the caller heard and when marks are echoed. Both directions can be delayed and
jittered; like a TCP stream, a late message is never overtaken by a later one.

All times are `time.monotonic()` milliseconds (`now_ms()`), so records correlate with any other
component in the same process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bridge.audio import L16_8K, PCMU_8K, AudioFormat, Transcoder
from bridge.carrier.events import DTMF_DIGITS
from bridge.clock import now_ms
from bridge.sim.playout import MarkRecord, Playout

FRAME_MS = 20


async def sleep_until(t_ms: float) -> None:
    delay = t_ms - now_ms()
    if delay > 0:
        await asyncio.sleep(delay / 1000.0)


@functools.cache
def _silent_frame(line: AudioFormat, n_bytes: int) -> bytes:
    return line.silence(n_bytes)


def random_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class LineConditions:
    uplink_delay_ms: float = 0.0
    downlink_delay_ms: float = 0.0
    jitter_ms: float = 0.0
    # The carrier's jitter buffer: audio reaching an idle line is heard this much later.
    playout_delay_ms: float = 0.0
    seed: int = 0


class DelayLine:
    """One direction of the line: each message is late by delay ± jitter, never overtaking an earlier one."""

    def __init__(self, delay_ms: float, jitter_ms: float, rng: random.Random) -> None:
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self._rng = rng
        self._last_due = float("-inf")

    def due(self, sent_ms: float) -> float:
        jitter = self._rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        due = max(sent_ms + self.delay_ms + jitter, sent_ms, self._last_due)
        self._last_due = due
        return due


@dataclass
class Utterance:
    """Caller speech queued with `say`, and when it actually went out.

    not_before_ms: earliest start, in ms after stream start (the only relative time here);
    spoken_*: media-clock times of its first and last sample (when the caller said them);
    sent_*: when the first and last frame carrying it were written to the socket (after uplink delay).
    """

    audio: bytes = field(repr=False)  # in the line's format
    not_before_ms: float
    bytes_per_ms: int = 8
    spoken_start_ms: float | None = None
    spoken_end_ms: float | None = None
    sent_start_ms: float | None = None
    sent_end_ms: float | None = None
    frames: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _pos: int = field(default=0, repr=False)

    @property
    def duration_ms(self) -> float:
        return len(self.audio) / self.bytes_per_ms


@dataclass
class ProtocolError:
    """An outbound message Twilio would reject with error 31924."""

    at_ms: float
    reason: str
    message: str


class OutboundError(ValueError):
    pass


def outbound_json(data: str | bytes) -> tuple[Any, dict[str, Any]]:
    """An outbound JSON message's `event` and the message; OutboundError for what no carrier takes."""
    if isinstance(data, bytes):
        raise OutboundError("binary frame")
    try:
        message = json.loads(data)
    except json.JSONDecodeError:
        raise OutboundError("not JSON") from None
    if not isinstance(message, dict):
        raise OutboundError("not a JSON object")
    return message.get("event"), message


def outbound_audio(payload: Any, event: str, line: AudioFormat = PCMU_8K) -> bytes:
    """The audio of an outbound media message: base64 of whole samples in the line's format."""
    if not isinstance(payload, str):
        raise OutboundError(f"{event}: missing media.payload")
    try:
        audio = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise OutboundError(f"{event}: payload is not valid base64") from None
    if len(audio) % line.bytes_per_sample:
        raise OutboundError(f"{event}: payload is not whole samples")
    return audio


def parse_outbound(text: str, stream_sid: str) -> tuple[str, Any]:
    """Validate one bridge → Twilio message: ("media", bytes), ("mark", name) or ("clear", None)."""
    event, message = outbound_json(text)
    if event not in ("media", "mark", "clear"):
        raise OutboundError(f"event {event!r} is not media, mark or clear")
    if message.get("streamSid") != stream_sid:
        raise OutboundError(f"{event}: streamSid {message.get('streamSid')!r} is not this stream")
    if event == "clear":
        return "clear", None
    body = message.get(event)
    if not isinstance(body, dict):
        raise OutboundError(f"{event}: missing '{event}' object")
    if event == "mark":
        name = body.get("name")
        if not isinstance(name, str):
            raise OutboundError("mark: missing mark.name")
        return "mark", name
    return "media", outbound_audio(body.get("payload"), "media")


Message = dict[str, Any] | str | bytes  # a dict goes out as JSON text


class CallerEmulator:
    """The carrier-neutral caller; subclasses put its frames, digits, echoes and hang-up on the wire."""

    carrier = ""
    line: AudioFormat = PCMU_8K

    def __init__(
        self,
        url: str,
        *,
        line: LineConditions | None = None,
        custom_parameters: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        account_sid: str | None = None,
        tick_ms: float = 10.0,
        connect_timeout: float = 5.0,
        dtx: bool = False,
    ) -> None:
        """`dtx`: send nothing while the caller is silent (discontinuous transmission, as SIP phones
        with silence suppression do), instead of frames of silence."""
        self.url = url
        self.dtx = dtx
        self.conditions = line or LineConditions()
        self.custom_parameters = dict(custom_parameters or {})
        self.headers = dict(headers or {})
        self.call_sid = call_sid or random_sid("CA")
        self.stream_sid = stream_sid or random_sid("MZ")
        self.account_sid = account_sid or random_sid("AC")
        self.tick_ms = tick_ms
        self.connect_timeout = connect_timeout

        self.started_ms: float | None = None
        self.sent_frames = 0
        self.closed_by_server = False
        self.close_code: int | None = None
        self.close_reason = ""  # what the bridge said when it closed the stream ("timeout", ...)
        self.protocol_errors: list[ProtocolError] = []
        self.utterances: list[Utterance] = []
        self.dtmf_sent: list[tuple[str, float]] = []

        self._uplink = DelayLine(
            self.conditions.uplink_delay_ms, self.conditions.jitter_ms, random.Random(self.conditions.seed)
        )
        self._downlink = DelayLine(
            self.conditions.downlink_delay_ms,
            self.conditions.jitter_ms,
            random.Random(self.conditions.seed + 1),
        )
        self._playout: Playout | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._sequence = 0
        self._outbox: asyncio.Queue[tuple[float, str | bytes, Callable[[float], None] | None]] = (
            asyncio.Queue()
        )
        self._inbox: deque[tuple[float, str | bytes]] = deque()
        self._inbox_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._speech: deque[Utterance] = deque()
        self._speaking: Utterance | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ended = asyncio.Event()
        self._hanging_up = False

    clock = staticmethod(now_ms)

    @property
    def playout(self) -> Playout:
        if self._playout is None:
            raise RuntimeError("not connected")
        return self._playout

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # ---- call control -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the websocket, send connected + start, and start the frame clock and playout."""
        self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._ws = await self._session.ws_connect(self.url, headers=self.headers)
        except BaseException:
            await self._session.close()
            raise
        start = now_ms()
        self.started_ms = start
        self._playout = Playout(start, playout_delay_ms=self.conditions.playout_delay_ms, line=self.line)
        for message in self._opening_messages():
            self._send(message, start)
        jobs = {
            "frames": self._frame_clock,
            "sender": self._sender,
            "receiver": self._receiver,
            "deliverer": self._deliverer,
            "driver": self._driver,
        }
        for role, job in jobs.items():
            self._tasks[role] = asyncio.create_task(job(), name=f"caller-emulator-{role}")

    async def __aenter__(self) -> CallerEmulator:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hangup()

    def say(self, pcm16_8k: bytes, at_ms: float | None = None) -> Utterance:
        """Queue caller speech (PCM16 LE 8 kHz) from the next frame, or from `at_ms` after stream start."""
        if len(pcm16_8k) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        to_line = Transcoder(L16_8K, self.line)
        return self.say_line(to_line.process(pcm16_8k) + to_line.flush(), at_ms)

    def say_line(self, audio: bytes, at_ms: float | None = None) -> Utterance:
        """Queue caller speech already in the line's format (e.g. 16 kHz L16 a narrowband `say` cannot
        carry), from the next frame or from `at_ms` after stream start."""
        if len(audio) % self.line.bytes_per_sample:
            raise ValueError(f"audio is not whole {self.line.encoding} samples")
        if at_ms is None:
            at_ms = now_ms() - self.started_ms if self.started_ms is not None else 0.0
        utterance = Utterance(audio, not_before_ms=at_ms, bytes_per_ms=self.line.bytes_per_ms)
        self.utterances.append(utterance)
        self._speech.append(utterance)
        return utterance

    def press(self, digit: str) -> None:
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        at = now_ms()
        self.dtmf_sent.append((digit, at))
        self._send(self._dtmf_message(digit), at)

    def send_raw(self, data: str | bytes) -> None:
        """Put one frame on the line exactly as given (text or binary), behind what is already queued:
        what a confused or hostile carrier sends. Before `connect` it goes ahead of the stream's start."""
        self._send(data, now_ms())

    async def hangup(self, stop_timeout_s: float = 5.0) -> None:
        """Send `stop` (behind everything already on the line) and close the websocket."""
        if self._ws is None:
            return
        if not self.ended:
            self._hanging_up = True
            self._tasks["frames"].cancel()
            stopped = asyncio.Event()
            stop = self._stop_message()
            if stop is not None:
                self._send(stop, now_ms(), lambda _at: stopped.set())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), stop_timeout_s)
            self._finish()
        await self._ws.close()
        if self.close_code is None:
            self.close_code = self._ws.close_code
        for task in self._tasks.values():
            task.cancel()
        results = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
        # A crashed clock or driver would silently falsify the records: surface it to the test.
        for result in results:
            if isinstance(result, Exception):
                raise result

    # ---- waiting ------------------------------------------------------------------------------

    async def wait_heard(self, min_ms: float, timeout_s: float, since_ms: float | None = None) -> None:
        """Until the caller has heard at least min_ms of audio (in total, or since `since_ms`)."""

        def heard() -> bool:
            playout = self.playout
            played = playout.played_ms_total if since_ms is None else playout.played_ms_since(since_ms)
            return played >= min_ms

        await self.wait_until(heard, timeout_s, f"{min_ms} ms heard")

    async def wait_quiet(self, quiet_ms: float, timeout_s: float) -> None:
        """Until nothing is buffered and nothing has played for quiet_ms."""

        def quiet() -> bool:
            playout = self.playout
            last = playout.last_played_ms() or playout.origin_ms
            return not playout.is_playing() and now_ms() - last >= quiet_ms

        await self.wait_until(quiet, timeout_s, f"{quiet_ms} ms quiet")

    async def wait_said(self, utterance: Utterance, timeout_s: float) -> None:
        """Until the last frame of `utterance` was written to the socket; ConnectionError if the call
        ends first (the rest will never be said)."""
        said = asyncio.ensure_future(utterance.done.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait((said, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            said.cancel()
            ended.cancel()
        if not utterance.done.is_set():
            raise ConnectionError("call ended while the caller was speaking")

    async def wait_closed(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._ended.wait(), timeout_s)

    async def wait_until(
        self, condition: Callable[[], bool], timeout_s: float, what: str = "condition"
    ) -> None:
        """Poll `condition` each tick with the playout up to date; ConnectionError if the call ends."""
        deadline = now_ms() + timeout_s * 1000.0
        while True:
            self.sync()
            if condition():
                return
            if self.ended:
                raise ConnectionError(f"call ended before {what}")
            if now_ms() >= deadline:
                raise TimeoutError(f"no {what} within {timeout_s:.1f} s")
            await asyncio.sleep(self.tick_ms / 1000.0)

    # ---- uplink (emulator → bridge) -----------------------------------------------------------

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _send(self, message: Message, at_ms: float, on_sent: Callable[[float], None] | None = None) -> None:
        data = json.dumps(message) if isinstance(message, dict) else message
        self._outbox.put_nowait((self._uplink.due(at_ms), data, on_sent))

    async def _sender(self) -> None:
        assert self._ws is not None
        while True:
            due, data, on_sent = await self._outbox.get()
            await sleep_until(due)
            sent_at = now_ms()
            try:
                if isinstance(data, str):
                    await self._ws.send_str(data)
                else:
                    await self._ws.send_bytes(data)
            except (ConnectionError, aiohttp.ClientError):
                return
            if on_sent is not None:
                on_sent(sent_at)

    async def _frame_clock(self) -> None:
        # Frame n carries the caller's audio of [n*20, (n+1)*20) ms and leaves the phone at its end;
        # scheduling from the stream start keeps the clock free of drift.
        assert self.started_ms is not None
        n = 0
        while True:
            emit_ms = self.started_ms + (n + 1) * FRAME_MS
            await sleep_until(emit_ms)
            payload, utterance, last = self._caller_frame(n)
            if utterance is not None or not self.dtx:
                self._send(
                    self._media_message(n, payload), emit_ms, self._frame_sent_callback(utterance, last)
                )
            n += 1

    def _caller_frame(self, n: int) -> tuple[bytes, Utterance | None, bool]:
        assert self.started_ms is not None
        frame_start = n * FRAME_MS
        speaking = self._speaking
        if speaking is None and self._speech and self._speech[0].not_before_ms <= frame_start:
            speaking = self._speaking = self._speech.popleft()
            speaking.spoken_start_ms = self.started_ms + frame_start
        frame_bytes = self.line.frame_bytes(FRAME_MS)
        if speaking is None:
            return _silent_frame(self.line, frame_bytes), None, False
        chunk = speaking.audio[speaking._pos : speaking._pos + frame_bytes]
        speaking._pos += len(chunk)
        speaking.frames += 1
        last = speaking._pos >= len(speaking.audio)
        if last:
            speaking.spoken_end_ms = self.started_ms + frame_start + len(chunk) / self.line.bytes_per_ms
            self._speaking = None
        return chunk + self.line.silence(frame_bytes - len(chunk)), speaking, last

    def _frame_sent_callback(self, utterance: Utterance | None, last: bool) -> Callable[[float], None]:
        def sent(at_ms: float) -> None:
            self.sent_frames += 1
            if utterance is None:
                return
            if utterance.sent_start_ms is None:
                utterance.sent_start_ms = at_ms
            if last:
                utterance.sent_end_ms = at_ms
                utterance.done.set()

        return sent

    def _send_echoes(self) -> None:
        for mark in self.playout.take_echoes():
            assert mark.echoed_at_ms is not None
            self._send(self._echo_message(mark.name), mark.echoed_at_ms, self._echo_sent_callback(mark))

    @staticmethod
    def _echo_sent_callback(mark: MarkRecord) -> Callable[[float], None]:
        def sent(at_ms: float) -> None:
            mark.echo_sent_at_ms = at_ms

        return sent

    # ---- downlink (bridge → emulator) ---------------------------------------------------------

    async def _receiver(self) -> None:
        assert self._ws is not None
        while True:
            message = await self._ws.receive()
            arrived = now_ms()
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._inbox.append((self._downlink.due(arrived), message.data))
                self._inbox_ready.set()
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                if message.type == aiohttp.WSMsgType.CLOSE and isinstance(message.extra, str):
                    self.close_reason = message.extra
                break
            elif message.type == aiohttp.WSMsgType.ERROR:
                break
        self.close_code = self._ws.close_code
        if not self._hanging_up:
            self.closed_by_server = True
        self._finish()

    async def _deliverer(self) -> None:
        while True:
            await self._inbox_ready.wait()
            while self._inbox:
                due, data = self._inbox[0]
                await sleep_until(due)
                self._inbox.popleft()
                self._deliver(data)
            self._inbox_ready.clear()

    def _deliver(self, data: str | bytes) -> None:
        at = now_ms()
        try:
            kind, value = self.parse_outbound(data)
        except OutboundError as exc:
            shown = data[:200] if isinstance(data, str) else repr(data[:200])
            self.protocol_errors.append(ProtocolError(at, str(exc), shown))
            return
        if kind == "ignore":
            return
        playout = self.playout
        if kind == "media":
            playout.on_media(at, value)
        elif kind == "mark":
            playout.on_mark(at, value)
        else:
            playout.on_clear(at)
        self._send_echoes()
        self._wake.set()

    # ---- playout driver -----------------------------------------------------------------------

    def sync(self) -> None:
        """Bring the playout model up to now; otherwise it is advanced every tick_ms."""
        if self._playout is not None and not self.ended:
            self._playout.advance(now_ms())
            self._send_echoes()

    async def _driver(self) -> None:
        # Wakes at every mark's exact due time (and on each delivered message) so echoes leave on time;
        # the regular tick keeps the heard-audio counters fresh for readers.
        while True:
            self.sync()
            wake = now_ms() + self.tick_ms
            due = self.playout.next_due_ms()
            if due is not None:
                wake = min(wake, due)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - now_ms()) / 1000.0):
                    await self._wake.wait()

    # ---- teardown -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """The call is over: stop the clocks; what was still buffered is never heard."""
        if self.ended:
            return
        if self._playout is not None:
            self._playout.advance(now_ms())
        self._ended.set()
        current = asyncio.current_task()
        for task in self._tasks.values():
            if task is not current:
                task.cancel()

    # ---- the carrier's wire format (subclasses) -------------------------------------------------

    def _opening_messages(self) -> list[Message]:
        raise NotImplementedError

    def _media_message(self, n: int, payload: bytes) -> Message:
        """Frame n (from 0) of caller audio in the line format."""
        raise NotImplementedError

    def _dtmf_message(self, digit: str) -> Message:
        raise NotImplementedError

    def _echo_message(self, name: str) -> Message:
        """The carrier's word that everything before mark `name` was played (or cleared)."""
        raise NotImplementedError

    def _stop_message(self) -> Message | None:
        """What the carrier sends when the caller hangs up (None: it only closes the socket)."""
        raise NotImplementedError

    def parse_outbound(self, data: str | bytes) -> tuple[str, Any]:
        """One bridge -> carrier message: ("media", audio), ("mark", name), ("clear", None) or
        ("ignore", None); OutboundError for what the carrier would reject."""
        raise NotImplementedError


class TwilioCallerEmulator(CallerEmulator):
    """Twilio Media Streams, bidirectional (docs/protocols.md §T3, §T4, §T5)."""

    carrier = "twilio"

    def _opening_messages(self) -> list[Message]:
        return [
            {"event": "connected", "protocol": "Call", "version": "1.0.0"},
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": self.custom_parameters,
                },
                "streamSid": self.stream_sid,
            },
        ]

    def _media_message(self, n: int, payload: bytes) -> Message:
        # 50 a second per call: the same text json.dumps makes of the message as a dict, without it
        # (a load test runs hundreds of these callers on the cores the bridge needs).
        head, tail = self._media_template()
        sequence = self._next_sequence()
        audio = base64.b64encode(payload).decode("ascii")
        clock = f'"chunk": "{n + 1}", "timestamp": "{n * FRAME_MS}"'
        media = f'{{"track": "inbound", {clock}, "payload": "{audio}"}}'
        return f'{head}"{sequence}", "media": {media}{tail}'

    def _media_template(self) -> tuple[str, str]:
        template = self.__dict__.get("_media_json")
        if template is None:
            sid = json.dumps(self.stream_sid)
            template = self._media_json = ('{"event": "media", "sequenceNumber": ', f', "streamSid": {sid}}}')
        return template

    def _dtmf_message(self, digit: str) -> Message:
        return {
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self._next_sequence(),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }

    def _echo_message(self, name: str) -> Message:
        return {
            "event": "mark",
            "sequenceNumber": self._next_sequence(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }

    def _stop_message(self) -> Message | None:
        return {
            "event": "stop",
            "sequenceNumber": self._next_sequence(),
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }

    def parse_outbound(self, data: str | bytes) -> tuple[str, Any]:
        if isinstance(data, bytes):
            raise OutboundError("binary frame")
        return parse_outbound(data, self.stream_sid)
