"""PROTOCOLS.md Part C helper for contract tests: the openai SDK's Realtime event types per dialect.

The logic lives in `bridge.sim.realtime_schema` (the emulator's strict mode uses it too); this module
gives tests the names the protocol reference uses.

    validate_client_event(event, "ga")   # KeyError / pydantic.ValidationError / UnknownKeysError (ValueError)
    validate_server_event(event, "beta") # unknown keys allowed: real servers may be newer than the SDK
"""

from __future__ import annotations

from bridge.sim.realtime_schema import (
    UnknownKeysError,
    client_types,
    server_types,
    type_map,
    unknown_keys,
    validate_client_event,
    validate_server_event,
)

GA_CLIENT, GA_SERVER = client_types("ga"), server_types("ga")  # 11, 46 types
BETA_CLIENT, BETA_SERVER = client_types("beta"), server_types("beta")  # 12, 34 types

__all__ = [
    "BETA_CLIENT",
    "BETA_SERVER",
    "GA_CLIENT",
    "GA_SERVER",
    "UnknownKeysError",
    "type_map",
    "unknown_keys",
    "validate_client_event",
    "validate_server_event",
]
