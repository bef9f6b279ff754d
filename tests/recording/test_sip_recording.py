"""A recorded SIP call: sipp does the signalling (its INVITE asks for a recording with X-Record), the test
is the caller's media. The bridge paces the RTP itself, so what the caller heard is every packet that
reached the test's socket, when it did; what they said, every frame the test sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import PCMU_8K
from bridge.sim.realtime_emulator import EmulatorConfig, ScriptedReply
from tests.e2e import ADMIN_TOKEN, eventually, voice_like
from tests.recording.helpers import Stretch, assert_recorded_as_heard, pcm, read_back
from tests.sip.rtp_peer import RtpPeer
from tests.sip.sipp import require_sipp
from tests.sip.test_media_peer import sip_call

pytestmark = pytest.mark.e2e

FRAME_MS = 20
SILENT_FRAME = PCMU_8K.silence(160)


def heard(peer: RtpPeer) -> list[Stretch]:
    """The packets as the caller heard them: a stretch goes on while the RTP clock does (a stall makes
    it skip), from the arrival of its first packet."""
    stretches: list[Stretch] = []
    previous = None
    for arrival in sorted(peer.arrivals, key=lambda a: a.packet.sequence):
        samples = pcm(PCMU_8K, arrival.packet.payload)
        if previous is not None and arrival.packet.timestamp == previous + 160:
            stretches[-1].samples = np.concatenate([stretches[-1].samples, samples])
        else:
            stretches.append(Stretch(arrival.at_ms, samples))
        previous = arrival.packet.timestamp
    return stretches


def said(peer: RtpPeer) -> list[Stretch]:
    """What the caller said: the frames from the first that was not silence to the last, each spoken in
    the 20 ms before it was sent (a phone sends a frame once it has captured it)."""
    talking = [i for i, (_, frame) in enumerate(peer.said) if frame != SILENT_FRAME]
    first, last = talking[0], talking[-1]
    audio = b"".join(frame for _, frame in peer.said[first : last + 1])
    return [Stretch(peer.said[first][0] - FRAME_MS, pcm(PCMU_8K, audio))]


async def test_a_sip_call_is_recorded_as_the_caller_heard_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_sipp()
    stall = EmulatorConfig(stall_after_ms=800, stall_ms=1500, speed=4.0)
    greeting = ScriptedReply(audio_pcm24k=voice_like(8000, rate=24000, seed=1), transcript="announcement")
    env = {"RECORDING": "requested", "RECORDING_DIR": str(tmp_path), "GREETING": "Read the announcement."}
    async with sip_call("call_rtp_peer.xml", [greeting], stall, **env) as call:
        peer = call.peer
        session = await call.session()
        await eventually(lambda: len(peer.arrivals) * FRAME_MS >= 1500, timeout_s=20)
        spoken = peer.say(voice_like(400, seed=2))
        await eventually(lambda: bool(session.truncations), timeout_s=10)
        await spoken.wait()
        await asyncio.sleep(1.5)  # the model's answer (its echo of the caller) plays out
        (call_id,) = list(call.bridge.bridge.active_calls)
        result = await call.hang_up_and_finish()
        assert result.returncode == 0, result.output[-2000:] + result.errors
        back = await read_back(call.bridge.base_url, call_id, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    stretches = heard(peer)
    assert len(stretches) == 3  # the greeting until the stall, its rest until the caller cut in, the answer
    alignment = assert_recorded_as_heard(back, stretches, said(peer), clears=1)
    with capsys.disabled():
        print("\n" + alignment.line("sip, 8 kHz µ-law"))
