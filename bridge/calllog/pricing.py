"""Per-model prices used to put an *estimated* dollar cost on each call.

The numbers below are list prices (USD per 1M tokens; for Live models, per minute of session) as
published by OpenAI when this was written. They are estimates: they ignore discounts, contract pricing,
image tokens and any later price change, and the bill from OpenAI is the only authority. Operators
override or add models with `PriceTable.from_json(...)` / `PriceTable.from_file(...)`, e.g.

    {"gpt-realtime-2.1": {"input_text": 4, "input_audio": 32, "input_cached": 0.4,
                          "output_text": 24, "output_audio": 64},
     "gpt-5-mini": {"input_text": 0.25, "input_cached": 0.025, "output_text": 2}}

`input_cached` sets both cached prices; `input_cached_text` / `input_cached_audio` set them separately.
A model new to the table needs `input_text` and `output_text` (its audio prices are then 0 and its
cached ones those of its input), or `per_minute` alone for a model billed by duration.

A Live call (`estimate_live`) costs its session's seconds at its model's per-minute price (billed per
second, docs/protocols.md §L9), plus its delegated backend's tokens at the backend model's prices,
which are billed apart; a backend model the table does not know leaves that part out (`partial`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

_PER_TOKEN = 1 / 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per 1M tokens of each kind."""

    input_text: float
    input_audio: float
    input_cached_text: float
    input_cached_audio: float
    output_text: float
    output_audio: float
    per_minute: float = 0.0  # USD per minute of session (Live models): billed by duration, not tokens


@dataclass(slots=True)
class TokenUsage:
    """Running token totals of one call, summed over its `response.done` usage objects.

    `input_text` and `input_audio` include the cached tokens, as in OpenAI's usage objects;
    `cached_text` + `cached_audio` is the call's `input_cached` column.
    """

    input_text: int = 0
    input_audio: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    output_text: int = 0
    output_audio: int = 0

    @property
    def input_cached(self) -> int:
        return self.cached_text + self.cached_audio

    def add(self, usage: dict[str, Any]) -> None:
        """Add one Realtime `response.done` usage object; missing or malformed fields count as 0."""
        inp = _mapping(usage.get("input_token_details"))
        out = _mapping(usage.get("output_token_details"))
        text, audio = _count(inp.get("text_tokens")), _count(inp.get("audio_tokens"))
        cached = _count(inp.get("cached_tokens"))
        split = _mapping(inp.get("cached_tokens_details"))
        if split:
            cached_text, cached_audio = _count(split.get("text_tokens")), _count(split.get("audio_tokens"))
        else:
            # Older payloads give only the total: share it out like the uncached input.
            cached_text = round(cached * text / (text + audio)) if text + audio else 0
            cached_audio = cached - cached_text
        self.input_text += text
        self.input_audio += audio
        self.cached_text += cached_text
        self.cached_audio += cached_audio
        self.output_text += _count(out.get("text_tokens"))
        self.output_audio += _count(out.get("audio_tokens"))

    def add_responses(self, usage: dict[str, Any]) -> None:
        """Add one Responses API usage object (a Live call's delegated backend): text tokens only."""
        self.input_text += _count(usage.get("input_tokens"))
        self.cached_text += _count(_mapping(usage.get("input_tokens_details")).get("cached_tokens"))
        self.output_text += _count(usage.get("output_tokens"))


# Longest matching name wins; a name also covers its dated snapshots ("gpt-realtime-2025-08-28").
DEFAULT_PRICES: dict[str, ModelPrices] = {
    "gpt-realtime": ModelPrices(4.0, 32.0, 0.4, 0.4, 16.0, 64.0),
    "gpt-realtime-1.5": ModelPrices(4.0, 32.0, 0.4, 0.4, 16.0, 64.0),
    "gpt-realtime-2": ModelPrices(4.0, 32.0, 0.4, 0.4, 24.0, 64.0),
    "gpt-realtime-2.1": ModelPrices(4.0, 32.0, 0.4, 0.4, 24.0, 64.0),
    "gpt-realtime-mini": ModelPrices(0.6, 10.0, 0.06, 0.3, 2.4, 20.0),
    "gpt-realtime-2.1-mini": ModelPrices(0.6, 10.0, 0.06, 0.3, 2.4, 20.0),
    "gpt-4o-realtime-preview": ModelPrices(5.0, 40.0, 2.5, 2.5, 20.0, 80.0),
    "gpt-4o-mini-realtime-preview": ModelPrices(0.6, 10.0, 0.3, 0.3, 2.4, 20.0),
    # Live: $0.05 a minute, billed per second (https://developers.openai.com/api/docs/models/gpt-live-1.md);
    # 1.1 the same per active minute, and a WebSocket call is all active (docs/protocols.md §L9).
    "gpt-live-1": ModelPrices(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, per_minute=0.05),
    "gpt-live-1.1": ModelPrices(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, per_minute=0.05),
}

_FIELDS = {f.name for f in fields(ModelPrices)}


class PriceTable:
    """Model name -> `ModelPrices`, with estimated costs. Unknown models cost `None`, not 0."""

    def __init__(self, prices: dict[str, ModelPrices] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def from_json(cls, text: str) -> PriceTable:
        """Defaults overlaid with a JSON object `{model: {kind: usd_per_1m, ...}}`; raises ValueError."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"price table is not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise ValueError("price table must be a JSON object of model name -> prices")
        prices = dict(DEFAULT_PRICES)
        for model, entry in raw.items():
            prices[model] = _parse_entry(model, entry, prices.get(model))
        return cls(prices)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read price table {path}: {exc.strerror}") from None
        return cls.from_json(text)

    @classmethod
    def from_setting(cls, value: str) -> PriceTable:
        """One setting for both forms: inline JSON (starts with `{`) or a file path; empty = defaults."""
        value = value.strip()
        if not value:
            return cls()
        return cls.from_json(value) if value.startswith("{") else cls.from_file(value)

    def for_model(self, model: str) -> ModelPrices | None:
        best: str | None = None
        for name in self.prices:
            if (model == name or model.startswith(name + "-")) and (best is None or len(name) > len(best)):
                best = name
        return self.prices[best] if best is not None else None

    def estimate(self, model: str, usage: TokenUsage) -> float | None:
        """Estimated USD for `usage` on `model`, or None when the model has no known prices."""
        p = self.for_model(model)
        if p is None:
            return None
        uncached_text = max(usage.input_text - usage.cached_text, 0)
        uncached_audio = max(usage.input_audio - usage.cached_audio, 0)
        total = (
            uncached_text * p.input_text
            + uncached_audio * p.input_audio
            + usage.cached_text * p.input_cached_text
            + usage.cached_audio * p.input_cached_audio
            + usage.output_text * p.output_text
            + usage.output_audio * p.output_audio
        )
        return round(total * _PER_TOKEN, 6)

    def estimate_live(
        self, model: str, seconds: float, backend_model: str, backend: TokenUsage
    ) -> tuple[float | None, bool]:
        """Estimated USD of a Live call: its session's `seconds` on `model`, and its backend's tokens
        on `backend_model`. Returns (cost, partial): None when the session's price is unknown;
        `partial` when backend tokens were used on a model the table does not price."""
        prices = self.for_model(model)
        if prices is None:
            return None, False
        cost = seconds / 60 * prices.per_minute
        used = backend.input_text or backend.output_text
        backend_cost = self.estimate(backend_model, backend) if used else 0.0
        if backend_cost is None:
            return round(cost, 6), True
        return round(cost + backend_cost, 6), False


def _parse_entry(model: str, entry: object, base: ModelPrices | None) -> ModelPrices:
    if not isinstance(entry, dict):
        raise ValueError(f"price table: {model!r} must map kinds to USD per 1M tokens")
    values: dict[str, float] = {}
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"price table: {model}.{key} must be a non-negative number")
        if key == "input_cached":
            values.setdefault("input_cached_text", float(value))
            values.setdefault("input_cached_audio", float(value))
        elif key in _FIELDS:
            values[key] = float(value)
        else:
            allowed = ", ".join(sorted({*_FIELDS, "input_cached"}))
            raise ValueError(f"price table: {model}.{key} is not a price kind ({allowed})")
    if base is not None:
        return replace(base, **values)
    if "per_minute" in values and len(values) == 1:
        return ModelPrices(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, per_minute=values["per_minute"])
    missing = {"input_text", "output_text"} - values.keys()
    if missing:
        raise ValueError(
            f"price table: new model {model!r} needs {', '.join(sorted(missing))} (or per_minute alone)"
        )
    # A text model: no audio prices; cached input at the input's price unless given (an upper bound).
    values.setdefault("input_cached_text", values["input_text"])
    values.setdefault("input_cached_audio", values["input_text"])
    return ModelPrices(**{"input_audio": 0.0, "output_audio": 0.0, **values})


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
