"""Three `bridge serve` processes behind a real HAProxy (deploy/haproxy/haproxy.cfg, round robin,
websockets passed through) sharing a real PostgreSQL call log: the service behaves as one.

Thirty calls are placed through the balancer the way Twilio places them (a signed webhook, then the
media stream with its one-time token, each landing wherever the balancer sends it). For every call,
an inject and a say sent through the balancer reach that call's own Realtime session (the caller keys
its number, so the emulator tells the sessions apart); the call log is readable from any replica;
the model is asked for exactly one greeting per call, and the sessions prepared on a replica the
stream never reached are closed unused. Then one replica is stopped with SIGTERM (a rolling deploy):
its calls hear their goodbye and end as `shutdown` while a control request for one of them still
works, and the other calls are untouched; another is killed with -9: the survivor marks its calls
`interrupted` within LEASE_SECONDS + LEASE_RENEW_SECONDS (30 s at most in production). Every call in
the log ends with a reason.

HAProxy comes from Debian (.ci/haproxy.sh); BRIDGE_SKIP_REPLICAS=1 skips this test, and a missing
HAProxy otherwise fails it, like sipp and Chromium elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.calllog import CallStore
from bridge.sim.carrier_emulator import TwilioCallerEmulator, random_sid
from bridge.sim.realtime_emulator import EmulatedSession, RealtimeEmulator, ScriptedReply
from bridge.sim.twilio_voice import answer_call, stream_headers
from tests.calllog.conftest import PostgresDatabase
from tests.e2e import (
    ADMIN_TOKEN,
    ServerProcess,
    bridge_process,
    free_port,
    message_texts,
    running_emulator,
    tone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AUTH_TOKEN = "twilio-auth-token-of-the-test"
GREETING = "Greet the caller."
CALLS = 30
REPLICAS = ("r1", "r2", "r3")
# Short leases, so a killed replica's calls are closed in seconds; a short drain, so the rolling
# deploy's goodbye comes soon. Production: 15 / 5 and 30.
SETTINGS = {
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "GREETING": GREETING,
    "LEASE_SECONDS": "2",
    "LEASE_RENEW_SECONDS": "0.5",
    "DRAIN_SECONDS": "2",
}


def require_haproxy() -> str:
    if os.environ.get("BRIDGE_SKIP_REPLICAS"):
        pytest.skip("BRIDGE_SKIP_REPLICAS is set: the multi-replica test is skipped")
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail(
            "haproxy is not installed: run `bash .ci/haproxy.sh` (Debian's haproxy), "
            "or set BRIDGE_SKIP_REPLICAS=1"
        )
    return haproxy


def balancer_config(port: int, replicas: list[int]) -> str:
    """deploy/haproxy/haproxy.cfg as it is, but on loopback ports instead of compose's DNS names."""
    text = HAPROXY_CONFIG.read_text()
    text, binds = re.subn(r"(?m)^    bind :8080$", f"    bind 127.0.0.1:{port}", text)
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(replicas, 1))
    text, templates = re.subn(r"(?m)^    server-template .*$", servers, text)
    text, resolvers = re.subn(r"(?m)^resolvers docker\n(?:    .*\n)+", "", text)
    assert (binds, templates, resolvers) == (1, 1, 1), "deploy/haproxy/haproxy.cfg changed shape"
    return text


@contextlib.asynccontextmanager
async def load_balancer(workdir: Path, port: int, replicas: list[ServerProcess]) -> AsyncIterator[str]:
    """HAProxy on `port` in front of `replicas`; yields its base URL."""
    haproxy = require_haproxy()
    config = workdir / "haproxy.cfg"
    config.write_text(balancer_config(port, [int(r.base_url.rsplit(":", 1)[1]) for r in replicas]))
    process = _start(haproxy, "-db", "-f", str(config), log_path=workdir / "haproxy.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def until(what: str, check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)
    return result


@contextlib.asynccontextmanager
async def postgres_database(server_url: str) -> AsyncIterator[str]:
    database = PostgresDatabase(server_url)
    await database.create()
    try:
        yield database.url
    finally:
        await database.drop()


class Floor:
    """The calls in progress, as the test placed them and as the call log and the emulator see them."""

    def __init__(self, base_url: str, store: CallStore, emulator: RealtimeEmulator) -> None:
        self.base_url = base_url
        self.store = store
        self.emulator = emulator
        self.callers: dict[str, TwilioCallerEmulator] = {}  # call sid -> caller, in the order placed
        self.owner: dict[str, str] = {}  # call sid -> replica id

    async def place(self, http: aiohttp.ClientSession, index: int) -> None:
        """A call as Twilio places it, through the balancer; the caller keys its index."""
        call_sid = random_sid("CA")
        form = {
            "CallSid": call_sid,
            "From": f"+1415555{index:04d}",
            "To": "+18005551212",
            "Direction": "inbound",
        }
        stream_url, parameters = await answer_call(http, self.base_url + "/twilio/voice", form, AUTH_TOKEN)
        caller = TwilioCallerEmulator(
            stream_url,
            custom_parameters=parameters,
            headers=stream_headers(stream_url, AUTH_TOKEN),
            call_sid=call_sid,
        )
        await caller.connect()
        for digit in f"{index}#":
            caller.press(digit)
        self.callers[call_sid] = caller

    def index(self, call_sid: str) -> int:
        return list(self.callers).index(call_sid)

    def session(self, call_sid: str) -> EmulatedSession | None:
        """The Realtime session the caller keyed its number into: that call's own upstream."""
        keyed = f"keypad: {self.index(call_sid)}#"
        found = [s for s in self.emulator.sessions if any(keyed in text for text in message_texts(s))]
        assert len(found) <= 1
        return found[0] if found else None

    async def rows(self) -> dict[str, dict[str, Any]]:
        """Every call in the log, by call id."""
        calls, cursor = await self.store.list_calls(limit=1000)
        assert cursor is None
        return {c["call_id"]: c for c in calls}

    def of(self, replica: str) -> list[str]:
        return [sid for sid, owner in self.owner.items() if owner == replica]


def instructions(session: EmulatedSession) -> list[str]:
    return [
        (e.get("response") or {}).get("instructions", "")
        for e in session.client_events
        if e["type"] == "response.create"
    ]


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str | None]:
    async with http.post(url, json=body, headers=AUTH) as response:
        return response.status, response.headers.get("X-Bridge-Call-Owner")


async def test_three_replicas_behind_haproxy_are_one_service(
    tmp_path: Path, postgres_server_url: str
) -> None:
    require_haproxy()
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        emulator, realtime_url = await stack.enter_async_context(running_emulator())
        for _ in range(400):  # every response (greeting, keypad, say, goodbye) a short one
            emulator.script_reply(ScriptedReply(audio_pcm24k=tone(300, 500, rate=24000), transcript="OK."))
        call_log_url = await stack.enter_async_context(postgres_database(postgres_server_url))
        lb_port = free_port()
        public = {"PUBLIC_URL": f"http://127.0.0.1:{lb_port}", "CALL_LOG_URL": call_log_url}
        replicas = dict(
            zip(
                REPLICAS,
                await asyncio.gather(
                    *(
                        stack.enter_async_context(
                            bridge_process(
                                _workdir(tmp_path, name), realtime_url, REPLICA_ID=name, **SETTINGS, **public
                            )
                        )
                        for name in REPLICAS
                    )
                ),
                strict=True,
            )
        )
        base = await stack.enter_async_context(load_balancer(tmp_path, lb_port, list(replicas.values())))
        store = await CallStore.open(call_log_url)
        stack.push_async_callback(store.close)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        floor = Floor(base, store, emulator)

        # The balancer sends to all three once their health checks pass.
        seen: set[str] = set()

        async def all_three_in_rotation() -> bool:
            with contextlib.suppress(aiohttp.ClientConnectionError):  # HAProxy still starting
                async with http.get(base + "/readyz") as response:
                    if response.status == 200:
                        seen.add((await response.json())["replica"])
            return seen == set(REPLICAS)

        await until("the balancer to route to every replica", all_three_in_rotation)
        started_s = time.monotonic() - began

        # ---- thirty calls through the balancer --------------------------------------------------
        for index in range(CALLS):
            await floor.place(http, index)

        async def every_call_owned() -> bool:
            rows = await floor.rows()
            floor.owner = {sid: rows[sid]["owner_id"] for sid in floor.callers if sid in rows}
            return len(floor.owner) == CALLS

        await until("every call's row, naming its owner", every_call_owned)
        spread = Counter(floor.owner.values())
        assert set(spread) == set(REPLICAS), spread  # the streams landed on all three
        await until(
            "every caller's keypad entry in its session",
            lambda: _true(all(floor.session(sid) is not None for sid in floor.callers)),
        )
        sessions = {sid: floor.session(sid) for sid in floor.callers}
        assert len({id(s) for s in sessions.values()}) == CALLS  # one session per call

        # ---- control of every call through the balancer: an inject and a say each ----------------
        forwarded = 0
        for sid in floor.callers:
            n = floor.index(sid)
            for action, body in (("inject", {"text": f"note {n}."}), ("say", {"text": f"announcement {n}."})):
                status, owner = await post(http, f"{base}/api/calls/{sid}/{action}", body)
                assert status == 200, (action, sid, floor.owner[sid])
                assert owner in (None, floor.owner[sid])  # forwarded to the owner, or answered by it
                forwarded += owner is not None

        def delivered() -> list[str]:
            missing = []
            for sid in floor.callers:
                n, session = floor.index(sid), sessions[sid]
                assert session is not None
                if f"note {n}." not in message_texts(session) or not any(
                    f"announcement {n}." in text for text in instructions(session)
                ):
                    missing.append(sid)
            return missing

        await until("every inject and say in its call's session", lambda: _true(not delivered()))
        for sid, session in sessions.items():  # ... and in no other call's
            n = floor.index(sid)
            for other in sessions.values():
                if other is not session:
                    assert f"note {n}." not in message_texts(other)  # type: ignore[arg-type]
        assert 0 < forwarded < 2 * CALLS  # both paths taken: answered by the owner, and forwarded

        # The live call's page reads the shared log: every replica shows the note (round robin).
        sid = next(iter(floor.callers))
        for _ in REPLICAS:
            async with http.get(f"{base}/api/calls/{sid}", headers=AUTH) as response:
                call = await response.json()
            assert call["status"] == "in_progress"
            actions = [e["data"] for e in call["events"] if e["kind"] == "operator_action"]
            assert any(data.get("text") == "note 0." for data in actions)

        # ---- one greeting per call; sessions prepared where no stream came, closed unused --------
        greetings = sum(instructions(s).count(GREETING) for s in emulator.sessions)
        assert greetings == CALLS
        prepared_elsewhere = [s for s in emulator.sessions if s not in sessions.values()]
        await until(
            "unused prepared sessions closed", lambda: _true(all(s.closed for s in prepared_elsewhere)), 5
        )
        for session in prepared_elsewhere:  # configured (unless dropped before that), never asked anything
            assert [e["type"] for e in session.client_events] in ([], ["session.update"])

        # ---- a rolling deploy: SIGTERM one replica ---------------------------------------------
        stopped, killed, survivor = sorted(REPLICAS, key=lambda r: -spread[r])
        sigterm_ms = time.monotonic() * 1000
        replicas[stopped].process.send_signal(signal.SIGTERM)
        # A control request in flight during the drain still reaches the draining owner.
        draining_call = floor.of(stopped)[0]
        assert (await post(http, f"{base}/api/calls/{draining_call}/inject", {"text": "during the drain"}))[
            0
        ] == 200
        for sid in floor.of(stopped):
            await floor.callers[sid].wait_closed(timeout_s=20)
        assert await asyncio.to_thread(replicas[stopped].process.wait, 20) == 0
        rows = await floor.rows()
        for sid in floor.of(stopped):
            caller, session = floor.callers[sid], sessions[sid]
            assert session is not None and any("closing for maintenance" in t for t in instructions(session))
            assert caller.playout.played_ms_since(sigterm_ms) > 0  # the goodbye was heard
            assert (rows[sid]["status"], rows[sid]["end_reason"]) == ("ended", "shutdown")
        for sid in floor.of(killed) + floor.of(survivor):
            assert not floor.callers[sid].ended and rows[sid]["status"] == "in_progress"

        # ---- kill -9 another: the survivor closes its calls in the log -------------------------
        replicas[killed].process.kill()
        killed_at = time.monotonic()
        await asyncio.to_thread(replicas[killed].process.wait, 10)
        orphan = floor.of(killed)[0]
        # Until its lease lapses the owner may only be unreachable (503); never a success, never a crash.
        assert (await post(http, f"{base}/api/calls/{orphan}/say", {"text": "anyone?"}))[0] in (503, 404)

        async def killed_calls_interrupted() -> dict[str, dict[str, Any]] | None:
            rows = await floor.rows()
            done = all(rows[sid]["status"] == "ended" for sid in floor.of(killed))
            return rows if done else None

        rows = await until("the killed replica's calls closed", killed_calls_interrupted, timeout_s=30)
        closed_after_s = time.monotonic() - killed_at
        for sid in floor.of(killed):
            assert rows[sid]["end_reason"] == "interrupted"
            call = await store.get_call(sid)
            assert call is not None
            why = call["events"][-1]
            assert (why["kind"], why["data"]["swept_by"], why["data"]["owner"]) == (
                "interrupted",
                survivor,
                killed,
            )
            await floor.callers[sid].wait_closed(timeout_s=10)  # the line went with the process
        assert (await post(http, f"{base}/api/calls/{orphan}/say", {"text": "anyone?"}))[0] == 404
        for sid in floor.of(survivor):
            assert not floor.callers[sid].ended and rows[sid]["status"] == "in_progress"

        # ---- the survivor's callers hang up: every call in the log has its end ------------------
        for caller in floor.callers.values():
            await caller.hangup()

        async def all_ended() -> dict[str, dict[str, Any]] | None:
            rows = await floor.rows()
            return rows if all(rows[sid]["status"] == "ended" for sid in floor.callers) else None

        rows = await until("every call ended in the log", all_ended)
        reasons = Counter(rows[sid]["end_reason"] for sid in floor.callers)
        assert reasons == {
            "shutdown": len(floor.of(stopped)),
            "interrupted": len(floor.of(killed)),
            "caller_hangup": len(floor.of(survivor)),
        }
    print(
        f"replicas in rotation after {started_s:.1f} s; calls per replica {dict(spread)}; "
        f"{forwarded} of {2 * CALLS} control requests forwarded; killed replica's calls closed "
        f"{closed_after_s:.1f} s after the kill; whole test {time.monotonic() - began:.1f} s"
    )


async def _true(value: bool) -> bool:
    return value


def _workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def _start(*command: str, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
