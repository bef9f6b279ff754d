"""Several bridge processes sharing one call log (in this process, over loopback sockets): any of them
controls any call, a call's stream is admitted once whichever process it reaches, and its greeting is
made once, by the process that takes the stream.

The processes are `running_replica`s: each the whole bridge app on a port of its own, with its internal
listener, and one SQLite call log between them, as the workers of one host share it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from bridge import call_forwarding
from bridge.calllog import CallRecorder
from bridge.calllog.leases import ReplicaIdentity, ReplicaLeases
from bridge.calllog.schema import replica_leases
from bridge.cluster_auth import OPERATOR_HEADER, REFUSED_HEADER, ClusterSigner, Target, cluster_key
from bridge.server import REPLICA_KEY
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatedSession, RealtimeEmulator
from tests.e2e import (
    ADMIN_TOKEN,
    RunningBridge,
    eventually,
    free_port,
    message_texts,
    running_emulator,
    running_replica,
)

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ALICE_TOKEN = "alice-operator-token-0123"
ALICE = {"Authorization": f"Bearer {ALICE_TOKEN}"}
GREETING = "Greet the caller."


async def post(
    base_url: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """POST `body` as JSON (none at all when None); status, body and headers of the answer."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + path, json=body, headers=AUTH if headers is None else headers) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


def internal_url(replica: RunningBridge) -> str:
    return replica.app[REPLICA_KEY].internal_url


def said(session: EmulatedSession) -> list[str]:
    """The instructions of every response the bridge asked the session for."""
    return [
        (e.get("response") or {}).get("instructions", "")
        for e in session.client_events
        if e["type"] == "response.create"
    ]


def greetings(emulator: RealtimeEmulator) -> int:
    return sum(said(session).count(GREETING) for session in emulator.sessions)


@pytest.fixture
async def two_replicas(
    tmp_path: Path,
) -> AsyncIterator[tuple[RealtimeEmulator, RunningBridge, RunningBridge]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/calls.db"
    operators = f"alice:{ALICE_TOKEN}"
    async with (
        running_emulator() as (emulator, realtime_url),
        running_replica(realtime_url, url, "replica-a", GREETING=GREETING, OPERATOR_TOKENS=operators) as a,
        running_replica(realtime_url, url, "replica-b", GREETING=GREETING, OPERATOR_TOKENS=operators) as b,
    ):
        yield emulator, a, b


async def test_any_replica_controls_a_call_another_carries_with_the_owners_own_answers(
    two_replicas: tuple[RealtimeEmulator, RunningBridge, RunningBridge],
) -> None:
    emulator, a, b = two_replicas
    async with TwilioCallerEmulator(a.media_url) as caller:
        session = await emulator.wait_for_session()
        await caller.wait_heard(min_ms=300, timeout_s=10)  # the greeting plays: the call is up
        calls = f"/api/calls/{caller.call_sid}"

        # Checked where it arrives: no token, no forwarding.
        assert (await post(b.base_url, f"{calls}/inject", {"text": "x"}, headers={}))[0] == 401
        assert (await post(b.base_url, "/api/calls/CA0000/inject", {"text": "x"}))[0] == 404

        # Carried out by the owner, whose answer comes back as it gave it, for every outcome.
        for path, body in (
            ("inject", {"image": "data:image/gif;base64,R0lGOD"}),
            ("inject", {}),
            ("say", {"text": " "}),
            ("transfer", {"number": "555-1234"}),
            ("transfer", {"number": "+15550001111"}),  # no Twilio credentials: 409, the owner's reason
        ):
            here = await post(a.base_url, f"{calls}/{path}", body)
            there = await post(b.base_url, f"{calls}/{path}", body)
            assert there[:2] == here[:2] and here[0] in (400, 409), (path, body, here, there)
            assert there[2]["X-Bridge-Call-Owner"] == "replica-a"
            assert there[2]["Content-Type"] == here[2]["Content-Type"]
            assert "X-Bridge-Call-Owner" not in here[2]
        assert not caller.ended  # a refused action leaves the call as it was

        status, _, headers = await post(b.base_url, f"{calls}/inject", {"text": "VIP customer"})
        assert (status, headers["X-Bridge-Call-Owner"]) == (200, "replica-a")
        await eventually(lambda: "VIP customer" in message_texts(session))
        # The owner records the action as the operator's who signed in where the request arrived.
        status, answer, _ = await post(b.base_url, f"{calls}/say", {"text": "Please hold."}, headers=ALICE)
        assert status == 200 and json.loads(answer)["operator"] == "alice"
        await eventually(lambda: any("Please hold." in text for text in said(session)))

        # A hang-up has no body at all; forwarded just the same.
        assert (await post(b.base_url, f"{calls}/hangup", None))[0] == 200
        await caller.wait_closed(timeout_s=5)
    # Live nowhere now: 404 wherever it is asked.
    await eventually(lambda: not a.bridge.active_calls)
    for replica in (a, b):
        assert (await post(replica.base_url, f"{calls}/inject", {"text": "late"}))[0] == 404
    assert len(emulator.sessions) == 1 and session.rejected == []


async def test_the_internal_listener_takes_only_signed_forwards_for_its_own_calls(
    two_replicas: tuple[RealtimeEmulator, RunningBridge, RunningBridge],
) -> None:
    emulator, a, b = two_replicas
    async with TwilioCallerEmulator(a.media_url) as caller:
        session = await emulator.wait_for_session()
        path = f"/api/calls/{caller.call_sid}/say"
        body = json.dumps({"text": "Signed."}).encode()
        a_id, b_id = a.app[REPLICA_KEY], b.app[REPLICA_KEY]
        to_a = Target(a_id.replica_id, a_id.incarnation)
        to_b = Target(b_id.replica_id, b_id.incarnation)
        signer = ClusterSigner(cluster_key("", ADMIN_TOKEN))  # the key both derive from ADMIN_TOKEN
        json_type = {"Content-Type": "application/json", OPERATOR_HEADER: "alice"}

        async def internal(replica: RunningBridge, headers: dict[str, str]) -> tuple[int, str]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(internal_url(replica) + path, data=body, headers=headers) as response,
            ):
                return response.status, response.headers.get(REFUSED_HEADER, "")

        # Health checks are open; nothing else is without a sibling's signature, not even the admin token.
        async with aiohttp.ClientSession() as http, http.get(internal_url(a) + "/readyz") as response:
            assert response.status == 200 and (await response.json())["replica"] == "replica-a"
        assert await internal(a, {**AUTH, **json_type}) == (403, "not signed")
        stranger = ClusterSigner(cluster_key("another-secret", ""))
        status, why = await internal(a, stranger.sign("POST", path, body, to_a, json_type))
        assert status == 403 and why.startswith("bad signature")

        # The operator named is signed with the request: another name breaks the signature.
        impostor = {**signer.sign("POST", path, body, to_a, json_type), OPERATOR_HEADER: "admin"}
        status, why = await internal(a, impostor)
        assert status == 403 and why.startswith("bad signature")
        # A forward signed for A is carried out by A, once.
        headers = signer.sign("POST", path, body, to_a, json_type)
        assert (await internal(a, headers))[0] == 200
        await eventually(lambda: any("Signed." in text for text in said(session)))
        assert await internal(a, headers) == (403, "replayed")
        # Meant for A, delivered to B (A's address now leads elsewhere): misdirected, never carried out.
        assert await internal(b, signer.sign("POST", path, body, to_a, json_type)) == (
            421,
            "meant for another process",
        )
        # Meant for B, about A's call: B looks only at its own calls and never forwards it on.
        assert (await internal(b, signer.sign("POST", path, body, to_b, json_type)))[0] == 404
        # The public listener does not take a sibling's signature in place of the admin token.
        signed = signer.sign("POST", path, body, to_a, json_type)
        async with (
            aiohttp.ClientSession() as http,
            http.post(a.base_url + path, data=body, headers=signed) as r,
        ):
            assert r.status == 401
        assert sum("Signed." in text for text in said(session)) == 1


async def test_an_unreachable_or_gone_owner(
    two_replicas: tuple[RealtimeEmulator, RunningBridge, RunningBridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 while the owner's lease lives but it cannot be reached; 404 once the lease lapsed, or when
    another process answers at its address; 504 when it takes the request and never answers."""
    _, a, b = two_replicas
    store = b.bridge.store
    assert store is not None
    leases = ReplicaLeases(store)

    async def call_owned_by(name: str, url: str) -> tuple[str, ReplicaIdentity]:
        ghost = ReplicaIdentity(name, url)
        await leases.claim(ghost, lease_s=60)
        recorder = CallRecorder(store, owner=ghost)
        call_id = f"CA-{name}"
        fields = {"call_sid": call_id, "stream_sid": "MZ", "from_number": "+1", "to_number": "+2"}
        assert await recorder.claim_call(call_id=call_id, direction="inbound", model="m", voice="v", **fields)
        return f"/api/calls/{call_id}/say", ghost

    # Nothing listens at the owner's address while its lease is live: it may be stopping, or cut off.
    path, ghost = await call_owned_by("ghost-down", f"http://127.0.0.1:{free_port()}")
    status, body, headers = await post(b.base_url, path, {"text": "hello"})
    assert status == 503 and headers["Retry-After"] == "2"
    assert json.loads(body)["error"] == "the call's owner (ghost-down) is unreachable; try again shortly"
    async with store.engine.begin() as conn:  # its lease lapses: it is dead, and its calls with it
        await conn.execute(
            update(replica_leases)
            .where(replica_leases.c.replica_id == ghost.replica_id)
            .values(expires_at=replica_leases.c.started_at)
        )
    assert (await post(b.base_url, path, {"text": "hello"}))[0] == 404

    # Another process answers at the owner's address now (a pod IP reused): it refuses, misdirected.
    path, _ = await call_owned_by("ghost-moved", internal_url(a))
    assert (await post(b.base_url, path, {"text": "hello"}))[0] == 404

    # The owner takes the request and never answers.
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    monkeypatch.setattr(call_forwarding, "FORWARD_TIMEOUT_S", 0.5)
    try:
        port = silent.sockets[0].getsockname()[1]
        path, _ = await call_owned_by("ghost-silent", f"http://127.0.0.1:{port}")
        status, body, _ = await post(b.base_url, path, {"text": "hello"})
        assert status == 504 and "may or may not have been carried out" in json.loads(body)["error"]
    finally:
        silent.close()
    outcomes = {
        outcome: b.bridge.metrics.registry.get_sample_value(
            "bridge_control_forwards_total", {"outcome": outcome}
        )
        for outcome in ("unreachable", "owner_gone", "timed_out")
    }
    assert outcomes == {"unreachable": 1, "owner_gone": 1, "timed_out": 1}


async def test_processes_that_do_not_share_a_key_say_so(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/calls.db"
    async with (
        running_emulator() as (emulator, realtime_url),
        running_replica(realtime_url, url, "replica-a", CLUSTER_SECRET="one") as a,
        running_replica(realtime_url, url, "replica-b", CLUSTER_SECRET="two") as b,
        TwilioCallerEmulator(a.media_url) as caller,
    ):
        await emulator.wait_for_session()
        await eventually(lambda: bool(a.bridge.active_calls))
        with capture_logs() as logs:
            status, body, _ = await post(b.base_url, f"/api/calls/{caller.call_sid}/say", {"text": "x"})
        assert status == 503 and "refused the forwarded request: bad signature" in json.loads(body)["error"]
        assert any(e["log_level"] == "error" and "CLUSTER_SECRET" in e["event"] for e in logs)


async def test_a_calls_stream_is_admitted_once_whichever_replica_it_reaches(
    two_replicas: tuple[RealtimeEmulator, RunningBridge, RunningBridge],
) -> None:
    emulator, a, b = two_replicas
    async with TwilioCallerEmulator(a.media_url) as caller:
        await emulator.wait_for_session()
        await eventually(lambda: bool(a.bridge.active_calls))
        # The same call's stream again, on the other replica (a replay, or a carrier's mistake).
        second = TwilioCallerEmulator(b.media_url, call_sid=caller.call_sid)
        await second.connect()
        await second.wait_closed(timeout_s=5)
        assert (second.close_code, second.close_reason) == (1008, "duplicate call")
        await second.hangup()
        assert not caller.ended and not b.bridge.active_calls
        await caller.wait_heard(min_ms=200, timeout_s=10)  # the first stream carries on
    await eventually(lambda: not a.bridge.active_calls)
    # After it ended, a replay of its start is refused too, here or there.
    for replica in (a, b):
        replay = TwilioCallerEmulator(replica.media_url, call_sid=caller.call_sid)
        await replay.connect()
        await replay.wait_closed(timeout_s=5)
        assert replay.close_reason == "duplicate call"
        await replay.hangup()
    assert len(emulator.sessions) == 1  # nothing was opened for the refused streams


async def test_the_greeting_is_made_once_by_the_replica_that_takes_the_stream(
    two_replicas: tuple[RealtimeEmulator, RunningBridge, RunningBridge],
) -> None:
    emulator, a, b = two_replicas

    async def webhook(replica: RunningBridge, call_sid: str) -> None:
        form = {"CallSid": call_sid, "From": "+14155550123", "To": "+18005551212"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(replica.base_url + "/twilio/voice", data=form) as r,
        ):
            assert r.status == 200

    # Webhook on A, stream on B: A's session is configured, never greeted, and closed once B takes
    # the stream (well before the 30 s expiry); B greets.
    elsewhere = TwilioCallerEmulator(b.media_url)
    await webhook(a, elsewhere.call_sid)
    prepared = await emulator.wait_for_session()
    await eventually(lambda: [e["type"] for e in prepared.client_events] == ["session.update"])
    async with elsewhere:
        await elsewhere.wait_heard(min_ms=300, timeout_s=10)
        await eventually(lambda: prepared.closed, timeout_s=3)
        assert len(a.bridge.prepared) == 0 and not a.bridge.at_capacity
    assert [e["type"] for e in prepared.client_events] == ["session.update"]
    assert greetings(emulator) == 1 and len(emulator.sessions) == 2

    # Webhook and stream on B: the stream claims the prepared session and only then asks for the greeting.
    here = TwilioCallerEmulator(b.media_url)
    await webhook(b, here.call_sid)
    claimed = await emulator.wait_for_session(3)
    async with here:
        await here.wait_heard(min_ms=300, timeout_s=10)
    assert [e["type"] for e in claimed.client_events][:2] == ["session.update", "response.create"]
    assert greetings(emulator) == 2 and len(emulator.sessions) == 3
