"""Helper for contract tests: the openai SDK's event types per dialect (Realtime "ga"/"beta", Live "live").

The logic lives in `bridge.sim.realtime_schema` (the emulator's strict mode uses it too); this module
gives tests the names docs/protocols.md §R12 and §L11 use.

    validate_client_event(event, "ga")   # KeyError / pydantic.ValidationError / UnknownKeysError (ValueError)
    validate_server_event(event, "beta") # unknown keys allowed: real servers may be newer than the SDK
    validate_backend_event(event)        # a Responses stream event, as a Live `response.event` wraps it
"""

from __future__ import annotations

import functools

from pydantic import BaseModel

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
LIVE_CLIENT, LIVE_SERVER = client_types("live"), server_types("live")  # 15, 28 types


@functools.cache
def _backend_types() -> dict[str, type[BaseModel]]:
    from openai.types.responses import ResponseStreamEvent

    return type_map(ResponseStreamEvent)


def validate_backend_event(event: dict) -> BaseModel:
    return _backend_types()[event["type"]].model_validate(event)


__all__ = [
    "BETA_CLIENT",
    "BETA_SERVER",
    "GA_CLIENT",
    "GA_SERVER",
    "LIVE_CLIENT",
    "LIVE_SERVER",
    "UnknownKeysError",
    "type_map",
    "unknown_keys",
    "validate_backend_event",
    "validate_client_event",
    "validate_server_event",
]
