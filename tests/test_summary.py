from bridge.summary import CallSummary, parse_summary, summary_instructions

DISPOSITIONS = ("resolved", "follow_up_needed")


def test_json_answer() -> None:
    text = 'Sure: {"summary": "Asked about order A-1.", "intent": "order status", "disposition": "resolved"}'
    expected = CallSummary("Asked about order A-1.\nCaller's intent: order status", "resolved")
    assert parse_summary(text, DISPOSITIONS) == expected


def test_unknown_disposition_is_dropped_and_prose_is_kept() -> None:
    assert parse_summary('{"summary": "x", "disposition": "weird"}', DISPOSITIONS) == CallSummary("x", None)
    assert parse_summary("The caller asked about hours.", DISPOSITIONS) == CallSummary(
        "The caller asked about hours.", None
    )
    assert parse_summary("  ", DISPOSITIONS) is None


def test_instructions_name_the_dispositions() -> None:
    assert '"resolved", "follow_up_needed"' in summary_instructions(DISPOSITIONS)
