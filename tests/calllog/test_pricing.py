from __future__ import annotations

import pytest

from bridge.calllog.pricing import DEFAULT_PRICES, PriceTable, TokenUsage
from tests.calllog.sample_calls import USAGE, USAGE_COST


def test_usage_sums_each_kind_over_responses() -> None:
    usage = TokenUsage()
    usage.add(USAGE)
    usage.add(USAGE)
    assert (usage.input_text, usage.input_audio, usage.input_cached) == (400, 2000, 1200)
    assert (usage.cached_text, usage.cached_audio) == (200, 1000)
    assert (usage.output_text, usage.output_audio) == (160, 640)


def test_usage_without_cached_split_shares_it_like_the_input() -> None:
    usage = TokenUsage()
    usage.add({"input_token_details": {"text_tokens": 100, "audio_tokens": 300, "cached_tokens": 40}})
    assert (usage.cached_text, usage.cached_audio) == (10, 30)


def test_usage_ignores_junk_fields() -> None:
    usage = TokenUsage()
    junk = {"input_token_details": "nope", "output_token_details": {"audio_tokens": -5, "text_tokens": "9"}}
    usage.add(junk)
    usage.add({})
    assert usage == TokenUsage()


def test_cost_prices_cached_and_uncached_input_separately() -> None:
    usage = TokenUsage()
    usage.add(USAGE)
    assert PriceTable().estimate("gpt-realtime-2.1", usage) == pytest.approx(USAGE_COST)


def test_model_names_match_longest_name_and_dated_snapshots() -> None:
    table = PriceTable()
    assert table.for_model("gpt-realtime-2025-08-28") == DEFAULT_PRICES["gpt-realtime"]
    assert table.for_model("gpt-realtime-mini-2025-10-06") == DEFAULT_PRICES["gpt-realtime-mini"]
    assert table.for_model("gpt-realtime-2.1-mini") == DEFAULT_PRICES["gpt-realtime-2.1-mini"]
    assert table.for_model("gpt-realtime-2.1") == DEFAULT_PRICES["gpt-realtime-2.1"]
    assert table.for_model("some-other-model") is None
    assert table.estimate("some-other-model", TokenUsage(input_text=5)) is None


def test_overrides_from_json_merge_over_defaults() -> None:
    table = PriceTable.from_json(
        '{"gpt-realtime-2.1": {"output_audio": 100}, '
        '"my-model": {"input_text": 1, "input_audio": 2, "input_cached": 0.5,'
        ' "output_text": 3, "output_audio": 4}}'
    )
    assert table.prices["gpt-realtime-2.1"].output_audio == 100
    assert table.prices["gpt-realtime-2.1"].input_audio == 32
    mine = table.prices["my-model"]
    assert (mine.input_cached_text, mine.input_cached_audio) == (0.5, 0.5)
    assert table.prices["gpt-realtime"] == DEFAULT_PRICES["gpt-realtime"]


def test_from_setting_reads_a_file(tmp_path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-realtime": {"input_text": 9}}')
    assert PriceTable.from_setting(str(path)).prices["gpt-realtime"].input_text == 9
    assert PriceTable.from_setting("").prices == DEFAULT_PRICES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"gpt-realtime": 3}', "must map kinds"),
        ('{"gpt-realtime": {"input_text": -1}}', "non-negative"),
        ('{"gpt-realtime": {"input_txt": 1}}', "not a price kind"),
        ('{"new-model": {"input_text": 1}}', "needs"),
    ],
)
def test_bad_price_tables_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable.from_json(text)
