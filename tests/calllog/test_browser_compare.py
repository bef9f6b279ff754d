"""The list page's Voice API filter and its Realtime/Live comparison, in real headless Chromium."""

from __future__ import annotations

import pytest

from tests.calllog.cdp import Page
from tests.calllog.sample_calls import record_live_call
from tests.calllog.test_browser import Site, page, sign_in, site  # noqa: F401 - fixtures used below

pytestmark = pytest.mark.browser


async def test_the_list_compares_realtime_and_live_and_filters_by_either(
    site: Site,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    base, recorder = site.base, site.recorder  # the afternoon's Realtime calls, and a Live call:
    record_live_call(recorder, "CA0020gptlive", seconds=90, heard_after_stop_ms=170)
    await recorder.flush()
    await sign_in(page, f"{base}/calls")
    await page.wait_for(
        "document.querySelectorAll('#compare tbody tr').length === 2"
        " && !document.querySelector('#compare').hidden"
    )
    # textContent: the words as written (the table's style may set them in capitals)
    rows = await page.evaluate(
        "[...document.querySelectorAll('#compare tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent).join('\\t'))"
    )
    live = next(row for row in rows if row.startswith("Live API"))
    assert "170 ms" in live and "$0.050" in live and "940 ms" in live  # p95 heard after stop, $/min, latency
    assert next(row for row in rows if row.startswith("Realtime API")).count("—") == 1  # no heard-after-stop
    await page.wait_for("document.querySelectorAll('#calls tbody.call').length === 9")
    assert any(
        "Live API" in row
        for row in await page.evaluate(
            "[...document.querySelectorAll('#calls tbody.call')].map(r => r.innerText)"
        )
    )

    await page.evaluate(
        "(() => { const f = document.querySelector('#filters');"
        " f.elements.upstream_api.value = 'live'; f.requestSubmit(); })()"
    )
    await page.wait_for("document.querySelectorAll('#calls tbody.call').length === 1")
    await page.wait_for("document.querySelectorAll('#compare tbody tr').length === 1")
    assert "upstream_api=live" in await page.evaluate("location.search")
    only = await page.evaluate("document.querySelector('#compare tbody tr').textContent")
    assert only.startswith("Live API")
