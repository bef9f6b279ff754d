"""CallLogHealth: /readyz's view of the call-log database, which it must give without waiting on it."""

from __future__ import annotations

import pytest

from bridge.calllog import CallStore
from bridge.calllog.health import CallLogHealth
from tests.calllog.helpers import database_outage, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_an_outage_nobody_read_through_is_found_by_the_probe_readyz_starts(
    request: pytest.FixtureRequest, db_url: str, store: CallStore
) -> None:
    clock = Clock()
    health = CallLogHealth(store, probe_after_s=10.0, clock=clock)
    try:
        assert health.report() == {"status": "ok"}  # nothing known yet: a probe starts
        await wait_until(lambda: health._probe is not None and health._probe.done(), what="the first probe")
        async with database_outage(request, db_url):
            assert health.report() == {"status": "ok"}  # what was seen a moment ago: no new probe
            assert health._probe.done()
            clock.now += 10.0
            health.report()  # stale: answered at once, and probed for next time
            await wait_until(lambda: health.report()["status"] == "degraded", what="the outage seen")
            report = health.report()
            assert "not currently accepting connections" in report["error"]
            assert "does not make the server unready" in report["detail"]
        clock.now += 10.0
        health.report()
        await wait_until(lambda: health.report() == {"status": "ok"}, what="the database back")
    finally:
        await health.close()
