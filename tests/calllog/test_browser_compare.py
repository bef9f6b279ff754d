"""The list page's Voice API filter and its Realtime/Live comparison, in real headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.calllog import CallRecorder, CallStore, setup_calllog_routes
from tests.calllog.cdp import Page
from tests.calllog.conftest import ADMIN_TOKEN
from tests.calllog.sample_calls import record_day_of_calls, record_live_call
from tests.calllog.test_browser import chromium, page, sign_in  # noqa: F401 - fixtures used below

pytestmark = pytest.mark.browser


@pytest.fixture
async def both_site(tmp_path: Path) -> AsyncIterator[str]:
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    recorder = CallRecorder(store)
    await recorder.start()
    record_day_of_calls(recorder)
    record_live_call(recorder, "CA0020gptlive", seconds=90, heard_after_stop_ms=170)
    await recorder.flush()
    app = web.Application()
    setup_calllog_routes(app, store, ADMIN_TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await recorder.stop()
        await store.close()


async def test_the_list_compares_realtime_and_live_and_filters_by_either(both_site: str, page: Page) -> None:  # noqa: F811
    await sign_in(page, f"{both_site}/calls")
    await page.wait_for(
        "document.querySelectorAll('#compare tbody tr').length === 2"
        " && !document.querySelector('#compare').hidden"
    )
    rows = await page.evaluate("[...document.querySelectorAll('#compare tbody tr')].map(r => r.innerText)")
    live = next(row for row in rows if row.startswith("Live"))
    assert "170 ms" in live and "$0.050" in live and "940 ms" in live  # p95 heard after stop, $/min, latency
    assert next(row for row in rows if row.startswith("Realtime")).count("—") == 1  # no heard-after-stop
    await page.wait_for("document.querySelectorAll('#calls tbody tr').length === 8")
    assert any(
        "Live API" in row
        for row in await page.evaluate(
            "[...document.querySelectorAll('#calls tbody tr')].map(r => r.innerText)"
        )
    )

    await page.evaluate(
        "(() => { const f = document.querySelector('#filters');"
        " f.elements.upstream_api.value = 'live'; f.requestSubmit(); })()"
    )
    await page.wait_for("document.querySelectorAll('#calls tbody tr').length === 1")
    await page.wait_for("document.querySelectorAll('#compare tbody tr').length === 1")
    assert "upstream_api=live" in await page.evaluate("location.search")
    assert (await page.evaluate("document.querySelector('#compare tbody tr').innerText")).startswith("Live")
