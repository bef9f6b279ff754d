"""SIP calls placed by sipp, a real SIP peer, to the bridge on loopback, answered through the Realtime
emulator: audio both ways, BYE from either side, CANCEL, digest auth, 50 calls at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bridge.sim.realtime_emulator import EmulatorConfig, ScriptedReply
from bridge.wavfile import read_wav_mono
from tests.e2e import dominant_hz, eventually, message_texts, similarity, tone
from tests.sip.pcap import rtp_packets, with_dtmf, write_pcap
from tests.sip.sipp import (
    calls_in_log,
    ended_calls,
    free_udp_port,
    hang_up,
    require_sipp,
    run_sipp,
    sip_bridge,
)

pytestmark = pytest.mark.e2e

CALLER_WAV = Path(__file__).parents[2] / "bridge" / "sim" / "assets" / "caller.wav"
REPLY_HZ = 500.0


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


def caller_speech() -> bytes:
    return read_wav_mono(CALLER_WAV, 8000)


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (8 * ms)


def decimate_24k_to_8k(pcm24k: bytes) -> bytes:
    """The emulator's input (24 kHz, already low-passed by the bridge's resampler) back at 8 kHz."""
    return np.frombuffer(pcm24k, dtype="<i2")[::3].astype("<i2").tobytes()


async def test_answered_call_carries_audio_both_ways_and_bye_ends_it() -> None:
    """sipp plays the caller's speech as µ-law RTP; the model hears it and answers with a tone;
    sipp echoes every RTP packet it receives (-rtp_echo), so the model hearing its own tone back
    proves the reply reached the peer as RTP. The tone is below the emulator's VAD threshold, so
    its echo does not count as the caller talking over it."""
    speech = caller_speech()
    async with sip_bridge() as (emulator, bridge, port, workdir):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(3000, REPLY_HZ, rate=24000, dbfs=-46)))
        write_pcap(workdir / "caller.pcap", rtp_packets(speech + silence(1000)))
        media_port = free_udp_port(even=True, span=3)
        result = await run_sipp(
            "call_audio.xml", port, workdir, "-rtp_echo", "-mp", str(media_port), duration_ms=11000
        )
        assert result.returncode == 0, result.output[-2000:] + result.errors
        assert result.counter("Successful call") == 1

        session = emulator.sessions[0]
        heard = decimate_24k_to_8k(bytes(session.appended_pcm))
        speech_bytes = len(speech)
        assert similarity(heard[: speech_bytes + 16000], speech) > 0.8  # the caller was heard
        echoed = heard[speech_bytes + 8000 :]  # after the speech and the turn's end: the echo
        level = np.sqrt(np.mean(np.frombuffer(echoed, dtype="<i2").astype(float) ** 2))
        assert level > 20, "no reply came back from sipp"
        assert abs(dominant_hz(echoed) - REPLY_HZ) < 20

        (row,) = await ended_calls(bridge, 1)
        assert row["carrier"] == "sip"
        assert row["end_reason"] == "caller_hangup"
        assert row["from_number"] == "+15550001111"
        assert row["to_number"] == "service"


async def test_operator_hangup_sends_bye_to_the_caller() -> None:
    async with sip_bridge() as (_, bridge, port, workdir):
        write_pcap(workdir / "caller.pcap", rtp_packets(caller_speech()[:16000]))
        sipp = asyncio.create_task(
            run_sipp("call_until_bye.xml", port, workdir, "-mp", str(free_udp_port(True, 3)))
        )
        await eventually(lambda: len(bridge.bridge.active_calls) == 1, timeout_s=10)
        (call_id,) = list(bridge.bridge.active_calls)
        await hang_up(bridge, call_id)
        result = await sipp
        assert result.returncode == 0, result.output[-2000:] + result.errors  # sipp got our BYE
        (row,) = await ended_calls(bridge, 1)
        assert row["call_id"] == call_id
        assert row["end_reason"] == "operator_ended"


async def test_cancel_before_answer_gets_487_and_no_call() -> None:
    # The model's session takes a while to open (two refusals, then retries): the bridge rings meanwhile.
    config = EmulatorConfig(refuse_status=503, refuse_times=2)
    async with sip_bridge(config) as (_, bridge, port, workdir):
        result = await run_sipp("cancel.xml", port, workdir)
        assert result.returncode == 0, result.output[-2000:] + result.errors
        await asyncio.sleep(0.5)
        assert await calls_in_log(bridge) == []
        assert not bridge.bridge.active_calls


async def test_wrong_password_is_refused_and_no_call_starts() -> None:
    async with sip_bridge(SIP_USERNAME="trunk", SIP_PASSWORD="right-secret") as (
        emulator,
        bridge,
        port,
        workdir,
    ):
        result = await run_sipp("auth_wrong.xml", port, workdir, "-au", "trunk", "-ap", "wrong-secret")
        assert result.returncode == 0, result.output[-2000:] + result.errors
        await asyncio.sleep(0.5)
        assert await calls_in_log(bridge) == []
        assert emulator.sessions == []


async def test_right_password_is_admitted() -> None:
    async with sip_bridge(SIP_USERNAME="trunk", SIP_PASSWORD="right-secret") as (_, bridge, port, workdir):
        write_pcap(workdir / "caller.pcap", rtp_packets(caller_speech()[:8000]))
        result = await run_sipp(
            "auth_call.xml",
            port,
            workdir,
            "-au",
            "trunk",
            "-ap",
            "right-secret",
            "-mp",
            str(free_udp_port(True, 3)),
        )
        assert result.returncode == 0, result.output[-2000:] + result.errors
        (row,) = await ended_calls(bridge, 1)
        assert row["end_reason"] == "caller_hangup"


async def test_fifty_concurrent_calls_complete() -> None:
    async with sip_bridge(MAX_CALLS="60") as (emulator, bridge, port, workdir):
        write_pcap(workdir / "caller.pcap", rtp_packets(caller_speech()[:8000]))
        result = await run_sipp(
            "call_audio.xml",
            port,
            workdir,
            "-l",
            "50",
            "-r",
            "25",
            "-mp",
            str(free_udp_port(True, 3)),
            calls=50,
            duration_ms=4000,
            timeout_s=90,
        )
        assert result.returncode == 0, result.output[-3000:] + result.errors
        assert result.counter("Successful call") == 50
        assert result.counter("Failed call") == 0
        rows = await ended_calls(bridge, 50, timeout_s=20)
        assert {r["end_reason"] for r in rows} == {"caller_hangup"}
        assert len(emulator.sessions) == 50


async def test_rfc4733_digits_reach_the_model() -> None:
    async with sip_bridge() as (emulator, _, port, workdir):
        write_pcap(
            workdir / "caller.pcap", with_dtmf(silence(400), "42#") + rtp_packets(silence(400), sequence=2000)
        )
        result = await run_sipp(
            "call_audio.xml", port, workdir, "-mp", str(free_udp_port(True, 3)), duration_ms=3000
        )
        assert result.returncode == 0, result.output[-2000:] + result.errors
        session = emulator.sessions[0]
        texts = message_texts(session)
        assert any("42#" in text for text in texts), texts


async def test_a_call_beyond_max_calls_gets_503() -> None:
    async with sip_bridge(MAX_CALLS="1") as (_, bridge, port, workdir):
        media = str(free_udp_port(True, 3))
        first = asyncio.create_task(
            run_sipp("call_rtp_peer.xml", port, workdir, "-key", "rtp_port", media, "-mp", media)
        )
        await eventually(lambda: len(bridge.bridge.active_calls) == 1, timeout_s=10)
        busy = await run_sipp("busy.xml", port, workdir, "-key", "rtp_port", media, timeout_s=20)
        assert busy.returncode == 0, busy.output[-2000:] + busy.errors
        (call_id,) = list(bridge.bridge.active_calls)
        await hang_up(bridge, call_id)
        result = await first
        assert result.returncode == 0, result.output[-2000:] + result.errors
        (row,) = await ended_calls(bridge, 1)  # the refused call never reached the call log
        assert row["call_id"] == call_id


async def test_an_allowed_address_needs_no_password() -> None:
    """SIP_ALLOWED_IPS admits 127.0.0.1 without the digest challenge a password would otherwise bring
    (call_audio.xml sends no credentials and fails on any 401)."""
    env = {"SIP_ALLOWED_IPS": "127.0.0.1", "SIP_USERNAME": "trunk", "SIP_PASSWORD": "right-secret"}
    async with sip_bridge(**env) as (_, bridge, port, workdir):
        write_pcap(workdir / "caller.pcap", rtp_packets(caller_speech()[:8000]))
        result = await run_sipp("call_audio.xml", port, workdir, "-mp", str(free_udp_port(True, 3)))
        assert result.returncode == 0, result.output[-2000:] + result.errors
        (row,) = await ended_calls(bridge, 1)
        assert row["end_reason"] == "caller_hangup"


async def test_options_outside_a_dialog_and_a_bye_for_an_unknown_one() -> None:
    async with sip_bridge() as (_, bridge, port, workdir):
        result = await run_sipp("out_of_dialog.xml", port, workdir, timeout_s=20)
        assert result.returncode == 0, result.output[-2000:] + result.errors
        assert await calls_in_log(bridge) == []
