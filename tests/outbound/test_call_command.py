"""`bridge call` against a running bridge: placed, followed to its end, honest exit status; and, as a
new user does it, `bridge serve` in demo mode then `bridge call +15550100` with no account at all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bridge.outbound.command import main_call
from bridge.sim.callee import Unanswered
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import ADMIN_TOKEN, free_port, running_emulator, tone
from tests.outbound.harness import outbound_bridge, quick_person

pytestmark = pytest.mark.e2e

PERSON, BUSY = "+15550100", "+15550102"


def said(output: str) -> list[str]:
    """What `bridge call` printed (this process's own log lines go to the same stdout)."""
    return [line for line in output.splitlines() if not line[:4].isdigit()]


async def test_bridge_call_follows_the_call_and_exits_by_how_it_went(
    capsys: pytest.CaptureFixture[str],
) -> None:
    callees = {PERSON: quick_person(), BUSY: Unanswered("busy", ring_ms=200)}
    async with running_emulator() as (emulator, url), outbound_bridge(url, callees) as outbound:
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(600, 600, rate=24000), transcript="Hello Ann."))
        base = ["--url", outbound.bridge.base_url, "--token", ADMIN_TOKEN]
        answered = await asyncio.to_thread(main_call, [PERSON, *base, "--metadata", '{"booking": "B-17"}'])
        person_said = said(capsys.readouterr().out)
        busy = await asyncio.to_thread(main_call, [BUSY, *base])
        busy_said = said(capsys.readouterr().out)
        refused = await asyncio.to_thread(main_call, ["5550100", *base])
        refused_said = capsys.readouterr().err
        wrong_token = await asyncio.to_thread(
            main_call, [PERSON, "--url", outbound.bridge.base_url, "--token", "x"]
        )
        unauthorised = capsys.readouterr().err
    assert answered == 0
    lines = person_said
    assert lines[0].startswith("call out_") and f"to {PERSON} from" in lines[0]
    for expected in (
        "  status: ringing",
        "  answered by: human",
        "  the assistant speaks",
        "  assistant: Hello Ann.",
    ):
        assert expected in lines
    assert lines[-1].startswith("ended: caller_hangup after") and lines[-1].endswith("(answered by: human)")
    assert busy == 1 and busy_said[-1].startswith("ended: busy after")
    assert refused == 2 and "HTTP 400: to: must be an E.164 number" in refused_said
    assert wrong_token == 2 and "HTTP 401" in unauthorised


def test_bridge_call_needs_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("CALL_LOG_URL", f"sqlite+aiosqlite:///{tmp_path}/calls.db")  # no token file there
    assert main_call([PERSON, "--url", "http://127.0.0.1:9"]) == 2
    assert "no admin token" in capsys.readouterr().err


async def test_a_fresh_demo_bridge_places_a_call_to_its_simulated_person(tmp_path: Path) -> None:
    """No OPENAI_API_KEY, no Twilio account, no ADMIN_TOKEN: `make run`, then `bridge call +15550100`."""
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name
        not in ("OPENAI_API_KEY", "ADMIN_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_URL")
    }
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        LOG_FORMAT="console",
        CALL_LOG_URL=f"sqlite+aiosqlite:///{tmp_path}/data/calls.db",
    )
    base_url = f"http://127.0.0.1:{port}"
    with (tmp_path / "server.log").open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "serve",
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await _healthy(base_url, server)
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", "+15550100", "--url", base_url,
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(command.communicate(), 90)
        said = out.decode()
        assert command.returncode == 0, f"{said}\n{err.decode()}"
        assert "  answered by: human" in said and "  the assistant speaks" in said
        assert "ended: caller_hangup" in said.splitlines()[-1]
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        assert oct((tmp_path / "data" / "admin-token").stat().st_mode & 0o777) == "0o600"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get(f"{base_url}/api/calls") as response:
                [call] = (await response.json())["calls"]
            async with http.get(f"{base_url}/calls") as page:
                assert page.status == 200
        assert (call["direction"], call["answered_by"], call["outbound_status"]) == (
            "outbound",
            "human",
            "completed",
        )
        assert call["to_number"] == "+****0100"  # masked, as every number the API shows
        transcript = [
            e
            for e in (await _call(base_url, token, call["call_id"]))["events"]
            if e["kind"] == "assistant_transcript"
        ]
        assert len(transcript) >= 2  # the greeting, then a reply to what the person said
    finally:
        server.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait(), 15)
        if server.returncode is None:
            server.kill()
            await server.wait()


async def _call(base_url: str, token: str, call_id: str) -> dict:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
        http.get(f"{base_url}/api/calls/{call_id}") as response,
    ):
        return await response.json()


async def _healthy(base_url: str, server: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert server.returncode is None, "the server exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base_url + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise TimeoutError("the demo bridge did not become ready")
