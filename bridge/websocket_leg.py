"""A carrier's media stream on an aiohttp websocket as a `CarrierLeg`, spoken through that carrier's
sans-IO codec: a flood or a stream of junk ends the call, nothing else a carrier sends can; a stream
that stops sending and does not answer a ping is closed.

The keepalive is the leg's own, not aiohttp's `heartbeat`: aiohttp resets its heartbeat timer on every
frame received (a scheduled callback each time, about 6 thousand instructions, a fifth of what the
server spends on a received frame), and a media stream receives 50 or more frames a second. Here each
frame only notes when it arrived, and one timer per call looks at that when a ping could be due."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from bridge.carrier.events import (
    CallEnded,
    CallStarted,
    CarrierCommand,
    CarrierEvent,
    CarrierProtocolError,
    ClearPlayback,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.transfer import TransferUnavailable
from bridge.carrier_leg import Transfer
from bridge.clock import now_ms
from bridge.message_rate import MAX_MESSAGES_PER_S, MessageRate

_TEXT, _BINARY, _PING, _ERROR = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.ERROR

START_TIMEOUT_S = 10.0
MAX_BAD_MESSAGES = 50  # beyond this a stream is not a confused carrier but a broken or hostile one
EXTRA_CODEC_COUNTERS = ("late_frames", "reordered_frames", "carrier_errors")


class CarrierCodec(Protocol):
    """A carrier's media-stream dialect, sans-IO (see `bridge.carrier.twilio.codec.TwilioCodec`)."""

    carrier: str  # its name in the call log: "twilio", "telnyx", ...
    sequence_gaps: int
    play_chunk_ms: int  # the most audio one message may carry (an apology is sent in such pieces)

    def decode(self, data: str | bytes) -> CarrierEvent | None: ...
    def encode(self, command: CarrierCommand) -> str | bytes | None: ...


class WebSocketLeg:
    """A carrier's media stream on an aiohttp websocket, spoken through that carrier's codec."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        codec: CarrierCodec,
        logger: Any,
        transfer: Transfer | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        """`heartbeat_s`: after that long without a frame from the carrier, ping it; no answer (nor
        anything else) within half as long closes the stream. The websocket must then be made with
        `autoping=False`: the leg answers the carrier's pings and hears its pongs itself."""
        self.ws = ws
        self.codec = codec
        self.carrier = codec.carrier
        self.play_chunk_ms = codec.play_chunk_ms
        self.log = logger
        self.bad_messages = 0
        self.started: CallStarted | None = None
        self._rate = MessageRate()
        self._transfer = transfer
        self.heartbeat_s = heartbeat_s
        self._heard_at = now_ms()  # when the carrier last sent anything, a pong included

    @property
    def closed(self) -> bool:
        return self.ws.closed

    def stats(self) -> dict[str, int]:
        counts = {"sequence_gaps": self.codec.sequence_gaps, "bad_messages": self.bad_messages}
        for name in EXTRA_CODEC_COUNTERS:  # what only some dialects count (Telnyx reorders frames)
            if (value := getattr(self.codec, name, None)) is not None:
                counts[name] = value
        return counts

    async def wait_for_start(self) -> CallStarted | None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                async for event, _ in self.events():
                    if isinstance(event, CallStarted):
                        self.started = event
                        return event
                    if isinstance(event, CallEnded):
                        return None
        except TimeoutError:
            self.log.warning("no start message in time, closing stream", seconds=START_TIMEOUT_S)
            await self.ws.close(code=1008, message=b"no start")
        return None

    async def events(self) -> AsyncIterator[tuple[CarrierEvent, float]]:
        """Decoded events with their arrival time. A flood or a stream of junk ends the call; so does a
        stream gone quiet that does not answer a ping (see `heartbeat_s`)."""
        keepalive = None
        if self.heartbeat_s is not None:
            keepalive = asyncio.get_running_loop().create_task(self._keep_alive(self.heartbeat_s))
        rate, decode = self._rate, self.codec.decode  # bound once: read for every message of every call
        try:
            async for msg in self.ws:
                now = self._heard_at = now_ms()
                if rate.exceeded(now):
                    self.log.warning("carrier message flood, closing stream", limit_per_s=MAX_MESSAGES_PER_S)
                    await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"message flood")
                    yield CallEnded("error"), now
                    return
                kind = msg.type
                if kind is not _TEXT and kind is not _BINARY:
                    if kind is _PING:
                        await self.ws.pong(msg.data)
                    elif kind is _ERROR:
                        return
                    continue  # a pong: that it arrived is all it says
                try:
                    event = decode(msg.data)
                except Exception as exc:  # whatever a codec raises, it is this one message that was bad
                    self._bad(str(exc) if isinstance(exc, CarrierProtocolError) else type(exc).__name__)
                    if self.bad_messages > MAX_BAD_MESSAGES:
                        await self.ws.close(
                            code=WSCloseCode.POLICY_VIOLATION, message=b"too many bad messages"
                        )
                        yield CallEnded("error"), now
                        return
                    continue
                if event is not None:
                    yield event, now
        finally:
            if keepalive is not None:
                keepalive.cancel()

    async def _keep_alive(self, heartbeat_s: float) -> None:
        """Ping a stream quiet for `heartbeat_s`; close it if half as long again brings nothing."""
        ws = self.ws
        while not ws.closed:
            quiet_s = (now_ms() - self._heard_at) / 1000
            if quiet_s < heartbeat_s:
                await asyncio.sleep(heartbeat_s - quiet_s)
                continue
            heard_at = self._heard_at
            try:
                await ws.ping()
            except ConnectionError:
                return  # the socket is gone: reading it ends the stream
            await asyncio.sleep(heartbeat_s / 2)
            if self._heard_at == heard_at and not ws.closed:
                self.log.warning("quiet carrier stream did not answer a ping, closing", seconds=heartbeat_s)
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"no pong", drain=False)
                return

    async def send(self, command: CarrierCommand) -> None:
        if isinstance(command, Hangup):
            await self.close(command.reason)
            return
        data = self.codec.encode(command)
        if data is None or self.ws.closed:
            return
        try:
            if isinstance(data, str):
                await self.ws.send_str(data)
            else:
                await self.ws.send_bytes(data)
        except ConnectionError:
            # The carrier closed the stream while we spoke (Vonage ends a call so): the caller is
            # gone, which `events` reports as the socket closes; nothing here is worth failing for.
            return

    async def close(self, reason: str, code: int = 1000) -> None:
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode()[:120])

    async def apologise(self, audio: bytes) -> None:
        """The model is gone: the caller hears `audio` (line format) whole, or hangs up meanwhile."""
        if self.started is None:
            return
        bytes_per_ms = self.started.line.bytes_per_ms
        await self.send(ClearPlayback())
        piece = self.play_chunk_ms * bytes_per_ms
        for i in range(0, len(audio), piece):
            await self.send(PlayAudio(audio[i : i + piece]))
        await self.send(Mark("apology"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(len(audio) / bytes_per_ms / 1000 + 5):
                async for event, _ in self.events():
                    if event == PlaybackMark("apology") or isinstance(event, CallEnded):
                        return

    async def transfer(self, number: str) -> None:
        if self._transfer is None or self.started is None:
            raise TransferUnavailable(f"transfers are not available on {self.carrier} calls")
        await self._transfer(self.started, number)

    def _bad(self, reason: str) -> None:
        self.bad_messages += 1
        # Once per stream at warning; a flood of junk must not become a flood of log lines.
        if self.bad_messages == 1:
            self.log.warning("bad carrier message ignored", reason=reason)
        else:
            self.log.debug("bad carrier message ignored", reason=reason, count=self.bad_messages)
