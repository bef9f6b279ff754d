"""`bridge dial` against the real bridge: placed through the voice webhook, honest about what it heard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.config import load_settings
from bridge.dial import NotConnected, dial, main_dial
from bridge.server import create_app
from bridge.sim.realtime_emulator import ScriptedReply
from bridge.wavfile import write_wav
from tests.e2e import ADMIN_TOKEN, eventually, running_bridge, running_emulator, serving, tone

pytestmark = pytest.mark.e2e
TOKEN = "auth-token-for-dial"


def speech_wav(path: Path, ms: float) -> Path:
    write_wav(path, tone(ms, 400), 8000)
    return path


async def test_dial_places_a_signed_call_through_the_webhook_and_hears_greeting_and_reply(
    tmp_path: Path,
) -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet the caller.", TWILIO_AUTH_TOKEN=TOKEN) as bridge,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(600, 500, rate=24000), transcript="Hello!"))
        report = await dial(
            bridge.base_url + "/twilio/voice",
            speech_wav(tmp_path / "hi.wav", 500),
            tmp_path / "heard.wav",
            auth_token=TOKEN,  # the bridge checks the webhook's signature, the upgrade's and the stream token
            quiet=0.5,
            time_limit=20,
        )
        call = await bridge.logged_call(report.call_sid)
    assert report.outcome == "reply heard" and report.protocol_errors == []
    assert report.greeting_ms is not None and report.reply_latency_ms is not None
    assert report.heard_ms >= 600 + 500 - 40  # the greeting, then the caller's words echoed back
    assert call is not None and call["from_number"] == "+15550100001"


async def test_with_no_greeting_dial_says_so_and_the_caller_does_not_wait_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = speech_wav(tmp_path / "hi.wav", 500)
    async with running_emulator() as (_, url), running_bridge(url) as bridge:
        argv = [
            "--url",
            bridge.base_url + "/twilio/voice",
            "--wav",
            str(wav),
            "--out",
            str(tmp_path / "o.wav"),
        ]
        code = await asyncio.to_thread(main_dial, [*argv, "--answer-wait", "1", "--quiet", "0.5"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = {line[:22].strip(): line[22:] for line in printed.splitlines()}
    assert lines["greeting heard after"] == "no greeting (silence for 1 s, then the caller spoke)"
    assert 1000 <= float(lines["caller spoke after"].removesuffix(" ms")) < 2500
    assert lines["outcome"] == "reply heard"


async def test_dial_stops_at_once_when_the_bridge_hangs_up_while_the_caller_speaks(tmp_path: Path) -> None:
    async with running_emulator() as (_, url), running_bridge(url) as bridge:

        async def hang_up_mid_sentence() -> None:
            await eventually(lambda: bool(bridge.bridge.active_calls), timeout_s=5)
            await asyncio.sleep(1.5)  # the caller started speaking after 0.5 s of silence
            [call_sid] = bridge.bridge.active_calls
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{bridge.base_url}/api/calls/{call_sid}/hangup",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                ) as response,
            ):
                assert response.status == 200

        operator = asyncio.create_task(hang_up_mid_sentence())
        started = time.monotonic()
        report = await dial(
            bridge.base_url + "/twilio/voice",
            speech_wav(tmp_path / "long.wav", 8000),
            tmp_path / "heard.wav",
            answer_wait=0.5,
            time_limit=30,
        )
        elapsed = time.monotonic() - started
        await operator
    assert report.outcome == "the bridge hung up while the caller was speaking"
    assert report.closed_by_server and report.close_reason == "operator_ended"
    assert elapsed < 8  # not the 8 s sentence, nor the 30 s limit
    assert any("bridge (close code 1000, 'operator_ended')" in line for line in report.lines())


async def test_dial_reports_a_call_the_bridge_turned_away(tmp_path: Path) -> None:
    async with running_emulator() as (_, url), running_bridge(url) as bridge:
        bridge.bridge.draining = True
        with pytest.raises(NotConnected, match="all our lines are busy"):
            await dial(
                bridge.base_url + "/twilio/voice", speech_wav(tmp_path / "hi.wav", 300), tmp_path / "o.wav"
            )


async def test_the_first_call_in_demo_mode_is_greeted(tmp_path: Path) -> None:
    """No API key, no GREETING: `make run` then `bridge dial` sounds like a phone agent picking up."""
    settings = load_settings({"CALL_LOG_URL": f"sqlite+aiosqlite:///{tmp_path}/calls.db", "ADMIN_TOKEN": "x"})
    assert settings.demo_mode and not settings.greeting
    async with serving(create_app(settings)) as base_url:
        report = await dial(
            base_url + "/twilio/voice",
            speech_wav(tmp_path / "hi.wav", 500),
            tmp_path / "heard.wav",
            greeting_wait=1.5,  # the demo's greeting is long: the caller talks over its end
            quiet=0.5,
            time_limit=20,
        )
    assert report.greeting_ms is not None and report.heard_ms > 1000
    assert report.outcome == "reply heard" and report.protocol_errors == []
