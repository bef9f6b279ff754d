from bridge.summary import CallSummary, parse_summary, summary_instructions

DISPOSITIONS = ("resolved", "follow_up_needed")


def test_json_answer() -> None:
    text = 'Sure: {"summary": "Asked about order A-1.", "intent": "order status", "disposition": "resolved"}'
    expected = CallSummary("Asked about order A-1.", "resolved", "order status")
    assert parse_summary(text, DISPOSITIONS) == expected


def test_unknown_disposition_is_dropped_and_prose_is_kept() -> None:
    assert parse_summary('{"summary": "x", "disposition": "weird"}', DISPOSITIONS) == CallSummary("x", None)
    assert parse_summary("The caller asked about hours.", DISPOSITIONS) == CallSummary(
        "The caller asked about hours.", None
    )
    assert parse_summary("  ", DISPOSITIONS) is None


def test_instructions_name_the_dispositions() -> None:
    assert '"resolved", "follow_up_needed"' in summary_instructions(DISPOSITIONS)


def test_the_exchange_cancels_a_response_nobody_will_hear_then_reads_only_its_own_answer() -> None:
    from bridge.realtime import events as rt
    from bridge.realtime.codec import RealtimeCodec
    from bridge.summary import SUMMARY_METADATA, PostCallSummary

    exchange = PostCallSummary(RealtimeCodec("ga"), DISPOSITIONS, still_answering="resp_talking")
    cancel, create = exchange.events
    assert cancel == {
        "type": "response.cancel",
        "event_id": cancel["event_id"],
        "response_id": "resp_talking",
    }
    assert create["response"]["conversation"] == "none" and create["response"]["metadata"] == SUMMARY_METADATA
    # The cancelled answer's last words arrive first: they are not the summary.
    assert not exchange.receive(rt.OutputTranscriptDone("resp_talking", "i1", "Sure, let me"), 0.0)
    assert not exchange.receive(rt.ResponseDone("resp_talking", "cancelled", "client_cancelled", None), 0.0)
    assert not exchange.receive(rt.ResponseCreated("resp_sum", None, dict(SUMMARY_METADATA)), 0.0)
    assert not exchange.receive(
        rt.OutputTextDone("resp_sum", "i2", '{"summary": "Asked.", "disposition": "resolved"}'), 0.0
    )
    assert exchange.receive(rt.ResponseDone("resp_sum", "completed", None, None), 0.0)
    assert exchange.result == CallSummary("Asked.", "resolved")


def test_a_refused_summary_request_ends_the_wait_with_no_summary() -> None:
    from bridge.realtime import events as rt
    from bridge.realtime.codec import RealtimeCodec
    from bridge.summary import PostCallSummary

    exchange = PostCallSummary(RealtimeCodec("ga"), DISPOSITIONS)
    [create] = exchange.events
    assert not exchange.receive(
        rt.ServerError("invalid_request_error", "other", "not ours", "bridge_99"), 0.0
    )
    assert exchange.receive(rt.ServerError("invalid_request_error", "x", "no", create["event_id"]), 0.0)
    assert exchange.result is None
