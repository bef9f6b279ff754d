"""/metrics after real calls: the counters move with what the calls did."""

from __future__ import annotations

import gc

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import ADMIN_TOKEN, eventually, running_bridge, running_emulator, tone

pytestmark = pytest.mark.e2e


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http, http.get(base_url + "/metrics", headers=headers) as response:
        assert response.status == 200
        return samples(await response.text())


async def test_metrics_count_calls_barge_ins_and_latencies() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Announce.") as bridge,
    ):
        async with aiohttp.ClientSession() as http, http.get(bridge.base_url + "/metrics") as response:
            assert response.status == 401
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(5000, 500, rate=24000), transcript="announcement")
        )
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            await caller.wait_heard(min_ms=1000, timeout_s=10)
            during = await scrape(bridge.base_url)
            caller.say(tone(500, 1200))
            await caller.wait_until(lambda: len(caller.playout.clears) == 1, timeout_s=5)
        await eventually(lambda: not bridge.bridge.active_calls)
        after = await scrape(bridge.base_url)

    assert during[("bridge_active_calls", ())] == 1
    assert after[("bridge_active_calls", ())] == 0
    realtime = ("upstream_api", "realtime")
    assert after[("bridge_calls_total", (("reason", "caller_hangup"), realtime))] == 1
    assert after[("bridge_barge_ins_total", (realtime,))] == 1
    assert after[("bridge_barge_in_reaction_seconds_count", (realtime,))] == 1
    assert after[("bridge_greeting_latency_seconds_count", (realtime,))] == 1
    assert after[("bridge_upstream_connect_seconds_count", ())] == 1
    assert after[("bridge_frame_processing_seconds_count", (("source", "carrier"),))] > 40
    # The collector ran while the call was live (a call allocates as it goes) and was timed.
    assert after[("bridge_gc_pause_seconds_count", (("generation", "0"),))] > 0


async def test_the_heap_loaded_at_start_up_is_frozen_out_of_collections() -> None:
    gc.unfreeze()  # whatever earlier tests froze is scanned again, as in a fresh process
    async with running_emulator() as (_, url), running_bridge(url):
        tracked, frozen = len(gc.get_objects()), gc.get_freeze_count()
    gc.freeze()  # leave the test process as the bridge left it
    # Without the freeze a full collection walks the whole start-up heap; with it, only what was
    # allocated since the bridge got ready.
    assert frozen > 50_000
    assert tracked < frozen / 10
