"""One response at a time: what we ask for waits its turn, refusals and lost sessions included."""

from __future__ import annotations

from bridge.realtime import events as rt
from bridge.response_queue import Request, ResponseQueue


def created(queue: ResponseQueue, response_id: str, **kwargs: object) -> None:
    queue.created(rt.ResponseCreated(response_id, **kwargs))  # type: ignore[arg-type]


def done(queue: ResponseQueue, response_id: str) -> Request | None:
    return queue.done(rt.ResponseDone(response_id, "completed", None, None))[1]


def sent(queue: ResponseQueue, request: Request | None, event_id: str) -> Request:
    assert request is not None
    queue.asked(request, event_id)
    return request


def test_a_request_goes_at_once_when_the_line_is_free_and_the_next_waits_for_its_answer() -> None:
    queue = ResponseQueue()
    first = sent(queue, queue.ask("one"), "e1")
    assert queue.ask("two") is None  # asked and unanswered: the line is not free
    created(queue, "r1")
    assert queue.active is not None and queue.active.answers is first
    assert queue.generating
    [two] = [done(queue, "r1")]
    assert two is not None and two.instructions == "two" and queue.active is None


def test_the_services_own_response_holds_the_line_too() -> None:
    queue = ResponseQueue()
    created(queue, "r_vad")
    assert queue.active is not None and queue.active.answers is None
    assert queue.ask() is None and queue.ask() is None  # a plain "go on" is not queued twice
    go_on = done(queue, "r_vad")
    assert go_on is not None and go_on.instructions is None
    sent(queue, go_on, "e1")
    created(queue, "r1")
    assert done(queue, "r1") is None  # nothing else was waiting


def test_a_refused_request_goes_first_once_the_services_response_is_done() -> None:
    queue = ResponseQueue()
    say = sent(queue, queue.ask("Please hold."), "e1")
    created(queue, "r_vad")  # server VAD started one at the same moment...
    assert queue.active is not None and queue.active.answers is say  # (taken for ours, in order)
    assert queue.refused("e1")  # ...and ours was refused
    assert queue.active.answers is None
    assert not queue.refused("e1") and not queue.refused(None)  # not ours (any more)
    again = done(queue, "r_vad")
    assert again is say


def test_a_request_refused_for_good_no_longer_holds_the_line() -> None:
    queue = ResponseQueue()
    sent(queue, queue.ask("one"), "e1")
    assert queue.ask("two") is None
    two = queue.unanswered("e1")
    assert two is not None and two.instructions == "two"
    assert queue.unanswered("e1") is None


def test_the_last_request_replaces_what_waits_and_nothing_is_asked_after_it() -> None:
    queue = ResponseQueue()
    created(queue, "r1")
    assert queue.ask("one") is None and queue.ask("two") is None
    assert queue.ask("Say goodbye.", last=True) is None  # behind the response in progress
    assert queue.ask("three") is None and queue.ask("again", last=True) is None
    goodbye = sent(queue, done(queue, "r1"), "e9")
    assert goodbye.last and goodbye.instructions == "Say goodbye."
    created(queue, "r2")
    response, following = queue.done(rt.ResponseDone("r2", "completed", None, None))
    assert response is not None and response.answers is goodbye and following is None


def test_out_of_band_responses_never_hold_the_line() -> None:
    queue = ResponseQueue()
    created(queue, "r_summary", conversation=None, metadata={"purpose": "post_call_summary"})
    assert queue.active is None and queue.line_free
    assert queue.ask() is not None


def test_an_interrupted_response_stays_known_as_such() -> None:
    queue = ResponseQueue()
    created(queue, "r1")
    queue.audio("r1", "i1")
    queue.audio("r1", "i1")
    interrupted = queue.interrupt()
    assert interrupted is not None and interrupted.audio_items == ["i1"]
    assert queue.interrupt() is None and not queue.generating
    done(queue, "r1")
    assert "r1" in queue.interrupted  # its late deltas are still dropped


def test_a_new_session_is_asked_again_what_the_lost_one_left_unanswered() -> None:
    queue = ResponseQueue()
    say = sent(queue, queue.ask("Please hold."), "e1")
    created(queue, "r1")  # being spoken when the session was lost
    queue.interrupt()
    assert queue.ask("after") is None
    again = queue.restart()
    assert again is say and queue.active is None and not queue.interrupted
    sent(queue, again, "e2")
    created(queue, "r2")
    after = done(queue, "r2")
    assert after is not None and after.instructions == "after"
