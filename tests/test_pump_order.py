"""The pump sends what a call produced in the order it produced it, without a lock per flush: a flush
that finds its direction still sending (the socket draining) leaves its batch to that send.

The carrier leg and the model's socket are stand-ins here, so that a send can be held open as a socket
under back-pressure holds it; the call is a real `Call`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bridge.call import Call
from bridge.call_config import CallConfig
from bridge.call_log_sink import NoCallLog
from bridge.call_registry import CallRegistry
from bridge.carrier.events import CallStarted, CarrierCommand, ClearPlayback, Hangup, Mark, PlayAudio
from bridge.logs import get_logger
from bridge.metrics import BridgeMetrics
from bridge.pump import CallPump, StreamContext
from bridge.realtime.codec import RealtimeCodec, SessionOptions
from bridge.upstream import UpstreamSession


class HeldLeg:
    """Records every command as its send begins; a send of `hold_on` waits until `release` is set."""

    carrier = "test"
    play_chunk_ms = 1000
    started = None
    closed = False

    def __init__(self, hold_on: type) -> None:
        self.sent: list[CarrierCommand] = []
        self.hold_on = hold_on
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, command: CarrierCommand) -> None:
        self.sent.append(command)
        if type(command) is self.hold_on and not self.release.is_set():
            self.held.set()
            await self.release.wait()


class HeldSocket:
    """The model's socket: records each message; the first one waits until `release` is set."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: bytes) -> None:
        self.sent.append(message)
        if not self.release.is_set():
            self.held.set()
            await self.release.wait()


def pump_for(leg: HeldLeg, socket: HeldSocket) -> tuple[CallPump, Call]:
    async def no_upstream(*_: Any) -> Any:
        raise AssertionError("not opened here")

    async def nothing_prepared(_: str) -> None:
        return None

    config = CallConfig(session=SessionOptions(instructions="x", voice="marin"))
    ctx = StreamContext(
        call_config=config,
        open_upstream=no_upstream,
        claim_prepared=nothing_prepared,
        call_log=NoCallLog(),
        active_calls=CallRegistry(),
        metrics=BridgeMetrics(process_metrics=False),
        apology=b"",
        stream_failed=lambda *_: None,
    )
    pump = CallPump(ctx, leg, get_logger("test"))  # type: ignore[arg-type]
    codec = RealtimeCodec("ga")
    call = Call(config, codec, CallStarted("MZ1", "CA1"), 0.0, configured=True)
    call.drain()
    pump.call = call
    pump.upstream = UpstreamSession(socket, codec)  # type: ignore[arg-type]
    return pump, call


async def test_a_flush_during_a_held_carrier_send_goes_after_it() -> None:
    leg, socket = HeldLeg(hold_on=PlayAudio), HeldSocket()
    socket.release.set()
    pump, call = pump_for(leg, socket)
    call.to_carrier += [PlayAudio(b"\xff" * 160), Mark("a1")]
    first = asyncio.create_task(pump._flush())
    await leg.held.wait()  # the first flush is inside its send of the audio
    call.to_carrier += [ClearPlayback(), Mark("a2")]
    await pump._flush()  # returns at once: its batch is the held send's to finish
    assert leg.sent == [PlayAudio(b"\xff" * 160)]
    leg.release.set()
    await first
    assert leg.sent == [PlayAudio(b"\xff" * 160), Mark("a1"), ClearPlayback(), Mark("a2")]


async def test_nothing_goes_to_the_carrier_after_a_hang_up() -> None:
    leg, socket = HeldLeg(hold_on=Hangup), HeldSocket()
    socket.release.set()
    pump, call = pump_for(leg, socket)
    call.to_carrier += [Mark("a1"), Hangup("goodbye")]
    first = asyncio.create_task(pump._flush())
    await leg.held.wait()
    call.to_carrier.append(Mark("a2"))  # produced while the hang-up was going out
    await pump._flush()
    leg.release.set()
    await first
    assert leg.sent == [Mark("a1"), Hangup("goodbye")]
    call.to_carrier.append(Mark("a3"))  # a later flush sends again (the leg itself is closed by now)
    await pump._flush()
    assert leg.sent[-1] == Mark("a3")


async def test_a_flush_during_a_held_upstream_send_goes_after_it() -> None:
    leg, socket = HeldLeg(hold_on=type(None)), HeldSocket()
    pump, call = pump_for(leg, socket)
    codec = call.codec
    call.to_upstream += [codec.append_audio(b"\x01\x00" * 480), codec.truncate("item_1", 400)]
    first = asyncio.create_task(pump._flush())
    await socket.held.wait()  # the first flush is inside its send of the append
    call.to_upstream.append(codec.create_response("hello"))
    await pump._flush()
    assert len(socket.sent) == 1
    socket.release.set()
    await first
    sent = [json.loads(message)["type"] for message in socket.sent]
    assert sent == ["input_audio_buffer.append", "conversation.item.truncate", "response.create"]
    assert call.to_upstream == []
