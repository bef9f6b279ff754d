"""Realtime and Live side by side in the call log: the API filter, the comparison, a Live call's cost."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from bridge.calllog import CallRecorder, CallStore
from bridge.calllog.pricing import PriceTable
from tests.calllog.sample_calls import record_day_of_calls, record_live_call


@pytest.fixture
async def both(recorder: CallRecorder) -> None:
    record_day_of_calls(recorder)  # six finished Realtime calls and one in progress
    record_live_call(recorder, "CA0020gptlive", seconds=90, heard_after_stop_ms=170)
    record_live_call(recorder, "CA0021gptlive", seconds=30, heard_after_stop_ms=230)
    await recorder.flush()


@pytest.mark.usefixtures("both")
async def test_a_live_call_costs_its_session_seconds_and_keeps_its_backend_tokens(store: CallStore) -> None:
    call = await store.get_call("CA0020gptlive")
    assert call is not None
    assert call["upstream_api"] == "live" and call["model"] == "gpt-live-1"
    assert call["session_seconds"] == 90 and call["live_session_id"] == "live_CA0020gptlive"
    assert call["cost_usd"] == pytest.approx(90 / 60 * 0.05)  # gpt-5-mini is not in the default table
    assert call["backend_model"] == "gpt-5-mini"
    assert (call["backend_input_tokens"], call["backend_cached_tokens"], call["backend_output_tokens"]) == (
        1000,
        400,
        200,
    )
    assert call["input_audio_tokens"] == 0  # no Realtime tokens
    refund = await store.get_call("CA0001refund")
    assert refund is not None and refund["upstream_api"] == "realtime" and refund["session_seconds"] is None


async def test_the_backend_is_priced_when_the_table_knows_its_model(store: CallStore) -> None:
    prices = PriceTable.from_json(
        '{"gpt-5-mini": {"input_text": 0.25, "input_cached": 0.025, "output_text": 2}}'
    )
    recorder = CallRecorder(store, prices=prices)
    await recorder.start()
    try:
        record_live_call(recorder, "CA0022gptlive", seconds=60)
        await recorder.flush()
    finally:
        await recorder.stop()
    call = await store.get_call("CA0022gptlive")
    assert call is not None
    backend = (600 * 0.25 + 400 * 0.025 + 200 * 2) / 1_000_000
    assert call["cost_usd"] == pytest.approx(0.05 + backend)


@pytest.mark.usefixtures("both")
async def test_the_list_filters_by_api(store: CallStore) -> None:
    live, _ = await store.list_calls(upstream_api="live")
    assert {c["call_id"] for c in live} == {"CA0020gptlive", "CA0021gptlive"}
    everything, _ = await store.list_calls(limit=100)
    realtime, _ = await store.list_calls(upstream_api="realtime", limit=100)
    live_ids = {c["call_id"] for c in live}
    assert {c["call_id"] for c in realtime} == {c["call_id"] for c in everything} - live_ids
    assert all(c["upstream_api"] == "realtime" for c in realtime)


@pytest.mark.usefixtures("both")
async def test_the_comparison_puts_the_two_apis_side_by_side(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    response = await client.get("/api/calls/compare", headers=auth_headers)
    assert response.status == 200
    apis = {a["upstream_api"]: a for a in (await response.json())["apis"]}
    live, realtime = apis["live"], apis["realtime"]
    assert live["calls"] == 2 and live["minutes"] == 2.0
    assert live["cost_per_minute_usd"] == pytest.approx(0.05)
    assert live["turn_latency_p50_ms"] == 940 and live["barge_ins_per_call"] == 1.0
    assert live["heard_after_stop_p95_ms"] == 230
    listed = await client.get("/api/calls?upstream_api=realtime&limit=100", headers=auth_headers)
    realtime_calls = len((await listed.json())["calls"])
    assert realtime["calls"] == realtime_calls > 0 and realtime["heard_after_stop_p95_ms"] is None
    assert realtime["cost_per_minute_usd"] is not None and realtime["cost_per_minute_usd"] > 0
    assert realtime["turn_latency_p50_ms"] == 820  # the refund call's is the only one recorded
    # The list's filters apply: only the Live calls, or none of either after a time.
    only = await client.get("/api/calls/compare?upstream_api=live", headers=auth_headers)
    assert [a["upstream_api"] for a in (await only.json())["apis"]] == ["live"]
    none = await client.get("/api/calls/compare?since=2099-01-01T00:00:00Z", headers=auth_headers)
    assert (await none.json())["apis"] == []
    bad = await client.get("/api/calls/compare?upstream_api=gemini", headers=auth_headers)
    assert bad.status == 400 and "upstream_api must be one of realtime, live" in (await bad.json())["error"]
    unauthorized = await client.get("/api/calls/compare")
    assert unauthorized.status == 401
