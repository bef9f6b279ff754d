"""SIP calls where sipp does the signalling and the test is the caller's media: every RTP packet of
the bridge's reply is recorded as it arrives, and the caller talks over it from the port its SDP gave.
Barge-in (what was heard is exact: the bridge owns the playout clock), a model stall, hold/resume by
re-INVITE, and a transfer by REFER."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.audio import L16_24K, PCMU_8K, Transcoder
from bridge.sim.realtime_emulator import EmulatedSession, EmulatorConfig, RealtimeEmulator, ScriptedReply
from tests.e2e import RunningBridge, eventually, tone
from tests.sip.rtp_peer import RtpPeer, rtp_peer
from tests.sip.sipp import SippResult, ended_calls, free_udp_port, hang_up, require_sipp, run_sipp, sip_bridge

pytestmark = pytest.mark.e2e

REPLY_HZ = 500.0  # the assistant's interrupted reply
NEXT_HZ = 300.0  # its answer to the interruption: anything else the caller hears afterwards
CALLER_HZ = 1200.0
FRAME_MS = 20
# The Call cuts the truncate back by the resampler's delay (model time lags line time by it).
RESAMPLER_LAG_MS = Transcoder(L16_24K, PCMU_8K).delay_ms


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


@dataclass
class SipCall:
    emulator: RealtimeEmulator
    bridge: RunningBridge
    peer: RtpPeer
    sipp: asyncio.Task[SippResult]

    async def session(self) -> EmulatedSession:
        return await self.emulator.wait_for_session(timeout=15)

    async def hang_up_and_finish(self) -> SippResult:
        """The operator hangs up (BYE from the bridge, which every scenario here ends on)."""
        await eventually(lambda: len(self.bridge.bridge.active_calls) == 1, timeout_s=10)
        (call_id,) = list(self.bridge.bridge.active_calls)
        await hang_up(self.bridge, call_id)
        return await self.sipp


@contextlib.asynccontextmanager
async def sip_call(
    scenario: str,
    replies: list[ScriptedReply],
    config: EmulatorConfig | None = None,
    talk: bool = True,
    **env: str,
) -> AsyncIterator[SipCall]:
    async with sip_bridge(config, **env) as (emulator, bridge, port, workdir), rtp_peer(talk) as peer:
        for reply in replies:
            emulator.script_reply(reply)
        sipp = asyncio.create_task(
            run_sipp(
                scenario,
                port,
                Path(workdir),
                "-key",
                "rtp_port",
                str(peer.port),
                "-mp",
                str(free_udp_port(True, 3)),
                timeout_s=40,
            )
        )
        try:
            yield SipCall(emulator, bridge, peer, sipp)
        finally:
            if not sipp.done():
                sipp.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sipp


def reply(seconds: float, hz: float) -> ScriptedReply:
    return ScriptedReply(audio_pcm24k=tone(seconds * 1000, hz, rate=24000, dbfs=-12), transcript=f"{hz} Hz")


@dataclass
class SipBargeIn:
    audio_end_ms: int  # what the bridge told the model the caller heard
    packets: int  # RTP packets of the interrupted reply the caller received (20 ms each)
    leaked: int  # packets of it that arrived after the truncate was seen
    longest_gap_ms: float  # the longest silence between two of its packets (a stall shows here)

    @property
    def error_ms(self) -> int:
        return self.audio_end_ms - self.packets * FRAME_MS


async def barge_in(config: EmulatorConfig | None = None, heard_ms: int = 1500) -> SipBargeIn:
    replies = [reply(8, REPLY_HZ), reply(1, NEXT_HZ)]
    async with sip_call("call_rtp_peer.xml", replies, config, GREETING="Read the long announcement.") as call:
        peer = call.peer
        session = await call.session()
        await eventually(lambda: len(peer.packets_matching(REPLY_HZ)) * FRAME_MS >= heard_ms, timeout_s=20)
        said = peer.say(tone(400, CALLER_HZ))
        await eventually(lambda: bool(session.truncations), timeout_s=10)
        at_truncate = len(peer.packets_matching(REPLY_HZ))
        await said.wait()
        await asyncio.sleep(0.5)  # anything of the reply the bridge wrongly let through would arrive now
        result = await call.hang_up_and_finish()
        assert result.returncode == 0, result.output[-2000:] + result.errors
        assert session.rejected == []
        ours = peer.packets_matching(REPLY_HZ)
        # Nothing of the reply after anything else: no frame of it slipped out after the clear.
        others = [a for a in peer.arrivals if a not in ours]
        assert all(a.packet.sequence < o.packet.sequence for a in ours for o in others[-1:])
        gaps = [b.at_ms - a.at_ms for a, b in itertools.pairwise(ours)]
        return SipBargeIn(
            audio_end_ms=session.truncations[0]["audio_end_ms"],
            packets=len(ours),
            leaked=len(ours) - at_truncate,
            longest_gap_ms=max(gaps, default=0.0),
        )


def assert_exact(result: SipBargeIn) -> None:
    """The bound: the leg reports a mark once the frame before it has played out, so the ledger counts
    what had played when the clear was written; the packet then on the wire is still heard whole, so
    the truncate is short by up to one 20 ms frame, plus the resampler's delay (the truncate speaks
    model time, which lags line time by it). It never counts audio that was not sent."""
    print(
        f"SIP barge-in: audio_end_ms {result.audio_end_ms}, reply packets {result.packets} "
        f"({result.packets * FRAME_MS} ms), error {result.error_ms} ms, leaked {result.leaked}"
    )
    assert -(FRAME_MS + RESAMPLER_LAG_MS + 1) <= result.error_ms <= 1  # a ms of rounding either way
    # Packets already in the test's socket buffer when it saw the truncate: at most the one in flight.
    assert result.leaked <= 1


async def test_barge_in_truncates_at_exactly_the_audio_sent_as_rtp() -> None:
    result = await barge_in()
    assert result.packets * FRAME_MS >= 1500
    assert_exact(result)


async def test_silence_during_a_model_stall_is_not_counted_as_heard() -> None:
    # 800 ms of the reply, then the model stalls 1.5 s: at 4x real time the caller hears 800 ms,
    # then about 900 ms of nothing, then the rest.
    stall = EmulatorConfig(stall_after_ms=800, stall_ms=1500, speed=4.0)
    result = await barge_in(stall, heard_ms=1500)
    assert result.longest_gap_ms > 400, "the stall never reached the caller"
    assert_exact(result)


async def test_hold_stops_our_rtp_and_resume_continues_where_it_stopped() -> None:
    """sipp holds the call (re-INVITE a=sendonly, the scenario checks our a=recvonly) 1 s into a 4 s
    reply, resumes it 1.5 s later (a=sendrecv both ways); the reply pauses on hold and is heard whole."""
    async with sip_call("hold.xml", [reply(4, REPLY_HZ)], GREETING="Read the long announcement.") as call:
        peer = call.peer
        # The whole reply, however long the hold: 200 packets of 20 ms, and the resampler's tail.
        await eventually(lambda: len(peer.packets_matching(REPLY_HZ)) >= 200, timeout_s=20)
        await asyncio.sleep(0.2)
        result = await call.hang_up_and_finish()
        assert result.returncode == 0, result.output[-2000:] + result.errors
    ours = peer.arrivals  # the bridge sends nothing but the reply (no silence frames while held, either)
    assert len(ours) in (200, 201)
    tone_packets = peer.packets_matching(REPLY_HZ)
    assert ours[: len(tone_packets)] == tone_packets  # all but the resampler's tail, padded with silence
    sequences = [a.packet.sequence for a in ours]
    assert sequences == list(range(sequences[0], sequences[0] + len(ours)))
    # One pause in the stream: the RTP clock ran on through the hold (the timestamp jumps by its
    # length), no packet was sent during it, and the first one after it starts a talkspurt.
    steps = [(b.packet.timestamp - a.packet.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(ours)]
    jumps = [i for i, step in enumerate(steps) if step != 160]
    assert len(jumps) == 1, steps
    (i,) = jumps
    held_ms = steps[i] / 8
    assert held_ms >= 1000  # sipp held for 1.5 s
    assert ours[i + 1].at_ms - ours[i].at_ms >= 1000
    assert ours[i + 1].packet.marker and not any(a.packet.marker for a in ours[1 : i + 1])
    print(f"SIP hold: {i + 1} packets before the hold, {len(ours) - i - 1} after, held {held_ms:.0f} ms")


async def test_transfer_call_tool_sends_refer_and_the_call_ends_transferred() -> None:
    """The caller asks; the model calls transfer_call; the bridge REFERs sipp to TRANSFER_NUMBER (the
    scenario checks the Refer-To), sipp accepts (202) and reports the target answered (NOTIFY with a
    sipfrag of SIP/2.0 200 OK); the bridge hangs up (BYE) and logs the call as transferred."""
    tool = ScriptedReply(tool_call=("transfer_call", {"reason": "wants a human"}))
    env = {"TRANSFER_NUMBER": "+15550002222", "GREETING": "Greet the caller."}
    async with sip_call("refer.xml", [reply(0.6, REPLY_HZ), tool], **env) as call:
        # The greeting tells the caller's side where the bridge's media is; then the caller asks.
        await eventually(lambda: len(call.peer.packets_matching(REPLY_HZ)) >= 30, timeout_s=15)
        await call.peer.say(tone(500, CALLER_HZ)).wait()
        result = await call.sipp
        assert result.returncode == 0, result.output[-2000:] + result.errors
        (row,) = await ended_calls(call.bridge, 1)
        assert row["end_reason"] == "transferred"
        assert row["carrier"] == "sip"
