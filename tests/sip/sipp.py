"""Running sipp, the real SIP peer of the scenario tests (Debian's sip-tester; see .ci/sipp.sh)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator
from tests.e2e import ADMIN_TOKEN, RunningBridge, running_bridge, running_emulator

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")


def require_sipp() -> str:
    """sipp's path; BRIDGE_SKIP_SIP=1 skips the SIP scenario tests, a missing sipp otherwise fails them."""
    if os.environ.get("BRIDGE_SKIP_SIP"):
        pytest.skip("BRIDGE_SKIP_SIP is set: the sipp scenario tests are skipped")
    if SIPP is None:
        pytest.fail(
            "sipp is not installed: run `bash .ci/sipp.sh` (Debian's sip-tester), or set BRIDGE_SKIP_SIP=1"
        )
    return SIPP


def free_udp_port(even: bool = False, span: int = 1) -> int:
    """A free UDP port on loopback (even, with the `span` ports above it free too, for sipp's -mp)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if even and port % 2:
            continue
        try:
            holders = []
            for p in range(port, port + span + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                holders.append(sock)
                sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for sock in holders:
                sock.close()
        return port
    raise RuntimeError("no free UDP port")


def _read_error_logs(workdir: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in workdir.glob("*_errors.log")]


@dataclass
class SippResult:
    returncode: int
    output: str
    errors: str

    def counter(self, name: str) -> int:
        """A cumulative counter from sipp's final screen, e.g. "Successful call"."""
        match = re.findall(rf"{re.escape(name)}\s*\|\s*\d+\s*\|\s*(\d+)", self.output)
        return int(match[-1]) if match else -1


async def run_sipp(
    scenario: str,
    sip_port: int,
    workdir: Path,
    *args: str,
    calls: int = 1,
    duration_ms: int = 1000,
    timeout_s: float = 60,
) -> SippResult:
    """Run `scenario` (a file in tests/sip/scenarios) against the bridge on 127.0.0.1:`sip_port`."""
    sipp = require_sipp()
    command = [
        sipp,
        "-sf",
        str(SCENARIOS / scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-m",
        str(calls),
        "-d",
        str(duration_ms),
        "-timeout",
        f"{int(timeout_s)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        *args,
        f"127.0.0.1:{sip_port}",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout_s + 10):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    errors = "\n".join(await asyncio.to_thread(_read_error_logs, workdir))
    return SippResult(process.returncode or 0, output.decode(errors="replace"), errors)


# -- the bridge side ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sip_bridge(
    config: EmulatorConfig | None = None, **env: str
) -> AsyncIterator[tuple[RealtimeEmulator, RunningBridge, int, Path]]:
    port = free_udp_port()
    low = free_udp_port(even=True, span=20)
    with tempfile.TemporaryDirectory(prefix="bridge-sip-") as workdir:
        async with (
            running_emulator(config) as (emulator, url),
            running_bridge(
                url,
                SIP_LISTEN=f"127.0.0.1:{port}",
                RTP_PORT_RANGE=f"{low}-{low + 198}",
                LIVE_URL=url.replace("/v1/realtime", "/v1/live/sessions"),  # the same emulator's Live dialect
                **env,
            ) as bridge,
        ):
            yield emulator, bridge, port, Path(workdir)


async def calls_in_log(bridge: RunningBridge) -> list[dict[str, Any]]:
    store = bridge.bridge.store
    assert store is not None
    rows, _ = await store.list_calls(limit=200)
    return rows


async def ended_calls(bridge: RunningBridge, count: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _ in range(int(timeout_s * 10)):
        rows = [r for r in await calls_in_log(bridge) if r["status"] == "ended"]
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{len(rows)} of {count} calls ended in the call log")


async def hang_up(bridge: RunningBridge, call_id: str) -> None:
    """The operator's hang-up (the admin API): the bridge sends BYE."""
    async with aiohttp.ClientSession() as http:
        url = f"{bridge.base_url}/api/calls/{call_id}/hangup"
        async with http.post(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 200, await response.text()
