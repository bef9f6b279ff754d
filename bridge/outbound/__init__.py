"""Calls the bridge places: `POST /api/calls` and `bridge call`.

    request.py        the API's request, validated
    calls.py          OutboundCalls: limits, placing through the carrier's Dialer, the answer, the
                      stream's configuration, the carrier's progress and verdicts from any replica
    status_events.py  progress posted on to the request's callback_url, signed
    routes.py         POST /api/calls, and the carriers' progress callbacks
    tokens.py         the token binding our URLs to one placed call

A carrier places calls through its `bridge.carrier.outbound.Dialer`; the call log keeps each placed
call's progress (`bridge.calllog.placed_calls`); the call waits for who answered in
`bridge.answer_detection`.
"""
