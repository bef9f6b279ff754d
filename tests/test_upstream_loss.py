"""The connect budget on a made-up clock: when attempts to open a session are due, how long each may
take, and what the record of a lost model says; then the budget holding against a service that never
answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.clock import now_ms
from bridge.config import load_settings
from bridge.log_records import RecordKind
from bridge.upstream import UpstreamRefused, open_session_with_retry
from bridge.upstream_loss import ConnectAttempts, ConnectReport, UpstreamLoss

LOST_AT = 50_000.0  # any monotonic clock


def run(attempts: ConnectAttempts, takes_ms: float) -> list[float]:
    """Every attempt fails after `takes_ms` (or when its time is up); returns when each began."""
    now = attempts.first(LOST_AT)
    while True:
        allowed = attempts.begin(now)
        now += min(takes_ms, allowed)
        due = attempts.due(now)
        if due is None:
            return [at - LOST_AT for at in attempts.started]
        now = due


def test_refused_at_once_the_attempts_follow_the_schedule_to_the_end_of_the_budget() -> None:
    assert run(ConnectAttempts(LOST_AT, budget_s=4.0), takes_ms=5) == [0, 200, 700, 1700, 2700, 3700]


def test_slow_refusals_push_the_next_attempt_back_but_never_past_the_budget() -> None:
    # 0 ends at 900; due at 200 -> 900; ends 1800; due at 1400 -> 1800; ends 2700; due at 2800;
    # ends 3700; due at 3800 < 4000: one more, with only 200 ms left; then 4800 is past the budget.
    attempts = ConnectAttempts(LOST_AT, budget_s=4.0)
    assert run(attempts, takes_ms=900) == [0, 900, 1800, 2800, 3800]
    assert attempts.report(LOST_AT + 4000).spent_ms == 4000


def test_an_attempt_may_take_only_what_is_left_of_the_budget() -> None:
    attempts = ConnectAttempts(LOST_AT, budget_s=4.0)
    assert attempts.begin(LOST_AT) == 4000
    assert attempts.begin(LOST_AT + 3700) == 300
    # An attempt that hangs for the whole budget is the only one.
    hung = ConnectAttempts(LOST_AT, budget_s=4.0)
    assert run(hung, takes_ms=60_000) == [0]


def test_the_budget_counts_from_the_loss_not_from_the_first_attempt() -> None:
    attempts = ConnectAttempts(LOST_AT, budget_s=4.0)
    assert attempts.first(LOST_AT + 1500) == LOST_AT + 1500  # never in the past
    assert attempts.begin(LOST_AT + 1500) == 2500


def test_the_record_of_a_lost_model_says_why_with_the_attempts() -> None:
    attempts = ConnectAttempts(LOST_AT, budget_s=4.0)
    attempts.begin(LOST_AT + 0.4)
    attempts.begin(LOST_AT + 200.6)
    record = UpstreamLoss("reconnect", "no new session: HTTP 503", attempts.report(LOST_AT + 212.3)).record()
    assert record.kind is RecordKind.ERROR
    assert record.data == {
        "source": "upstream",
        "code": "reconnect",
        "message": "no new session: HTTP 503",
        "attempts": 2,
        "attempt_ms": [0, 201],
        "spent_ms": 212,
    }
    # A fatal error code: nothing was tried, and the record says so.
    fatal = UpstreamLoss("invalid_api_key", "Incorrect API key provided.").record().data
    assert (fatal["attempts"], fatal["attempt_ms"], fatal["spent_ms"]) == (0, [], 0)
    assert ConnectReport().data() == {"attempts": 0, "attempt_ms": [], "spent_ms": 0}


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers: a service that hangs every handshake."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hanging_service_is_given_up_on_when_the_budget_ends_not_the_connect_timeout(
    silent_server: str,
) -> None:
    settings = load_settings({"OPENAI_API_KEY": "sk-test", "REALTIME_CONNECT_TIMEOUT": "30"})
    lost_at = now_ms()
    with pytest.raises(UpstreamRefused, match="TimeoutError") as refused:
        await open_session_with_retry(settings, silent_server, since=lost_at)
    connecting = refused.value.connecting
    budget_ms = ConnectAttempts(lost_at).deadline - lost_at
    # One attempt, cut off when the budget ran out (not after REALTIME_CONNECT_TIMEOUT's 30 s).
    assert len(connecting.attempts_ms) == 1
    assert budget_ms <= connecting.spent_ms < settings.realtime_connect_timeout * 1000
