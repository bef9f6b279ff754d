"""The request to place a call (`POST /api/calls`), validated: each problem named by its field."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.answer_detection import MachineDetection
from bridge.phone_numbers import valid_e164

MAX_METADATA_BYTES = 8 * 1024  # kept with the call and sent with every tool call and status event
E164_HINT = "must be an E.164 number like +14155550123"


class BadOutboundRequest(ValueError):
    """str() says what is wrong, one line per problem, each naming its field."""


class OutboundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: str
    from_: str | None = Field(default=None, alias="from")
    instructions: str = Field(default="", max_length=20_000)  # "": the server's
    greeting: str | None = Field(default=None, max_length=4_000)  # None: the server's; "": wait for them
    metadata: dict[str, Any] = Field(default_factory=dict)
    machine_detection: MachineDetection | None = None  # None: OUTBOUND_MACHINE_DETECTION
    voicemail_message: str = Field(default="", max_length=2_000)  # "": the model's own, short
    callback_url: str = ""
    carrier: str | None = None  # None: OUTBOUND_CARRIER
    record: bool = False  # ask for the call to be recorded (what RECORDING=requested records)

    @field_validator("to", "from_")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None and not valid_e164(value):
            raise ValueError(E164_HINT)
        return value

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    @field_validator("callback_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError("must be an http(s) URL")
        return value

    @classmethod
    def parse(cls, body: object) -> OutboundRequest:
        """The request in `body` (decoded JSON); BadOutboundRequest names every problem."""
        if not isinstance(body, dict):
            raise BadOutboundRequest("the body must be a JSON object")
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise BadOutboundRequest(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]).replace("from_", "from") or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not a field of this request"
        elif error["type"] == "enum":
            message = "must be " + message.removeprefix("Input should be ")
        lines.append(f"{where}: {message}")
    return "\n".join(lines)
