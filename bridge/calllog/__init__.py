"""The call log: every call, its transcript and events, latency and estimated cost, in SQLite or PostgreSQL.

Wiring, in the order the server does it:

    store = await CallStore.open(url)            # migrates the schema to head
    await store.mark_interrupted()               # calls a crashed process left "in progress"
    recorder = CallRecorder(store, prices=PriceTable.from_setting(prices_setting))
    await recorder.start()
    health = CallLogHealth(store, recorder)        # /readyz's view of the database
    setup_calllog_routes(app, store, admin_token, archive, health)
    retention = asyncio.create_task(run_retention(store, days))
    ...
    retention.cancel(); await health.close(); await recorder.stop(); await store.close()
"""

from bridge.calllog.api import setup_calllog_routes
from bridge.calllog.health import CallLogHealth
from bridge.calllog.ops import LogOp
from bridge.calllog.pricing import ModelPrices, PriceTable, TokenUsage
from bridge.calllog.recorder import CallRecorder
from bridge.calllog.retention import run_retention
from bridge.calllog.store import END_REASONS, CallStore

__all__ = [
    "END_REASONS",
    "CallLogHealth",
    "CallRecorder",
    "CallStore",
    "LogOp",
    "ModelPrices",
    "PriceTable",
    "TokenUsage",
    "run_retention",
    "setup_calllog_routes",
]
