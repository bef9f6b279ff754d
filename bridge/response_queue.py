"""The model's responses in one conversation, and the ones we asked for waiting their turn.

Only one response may write to the conversation at a time: the service refuses a `response.create`
sent while another is active (`conversation_already_has_active_response`). So every response we want
(the answer after a tool, a keypad entry or an operator's note, an operator's announcement, the
goodbye) is a `Request` that goes through this queue:

    waiting ──(the line is free)──► asked ──(response.created)──► active ──(response.done)──► gone
       ▲                               │
       └──(refused: the service had just started a response of its own)

The line is free when no response is active and none we asked for is unanswered. Server VAD starts
responses of its own; they become active without being asked for. The last request (the goodbye)
closes the queue: what was still waiting is dropped and nothing is asked for after it.

Out-of-band responses (`conversation: none`, the post-call summary) never write to the conversation;
they are tracked but never active. A response the caller interrupted stays known as interrupted, so
its late audio and transcripts are dropped.

Sans-IO: the caller of this class builds the `response.create` events (`Request` says what to ask)
and reports back with `asked`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.realtime import events as rt


@dataclass(eq=False, slots=True)
class Request:
    instructions: str | None = None  # None: a plain "go on"
    last: bool = False  # the goodbye: nothing is asked after it
    event_id: str = ""  # of its response.create, once sent


@dataclass(slots=True)
class Response:
    response_id: str
    out_of_band: bool = False
    answers: Request | None = None  # the request it answers; None: the service started it itself
    audio_items: list[str] = field(default_factory=list)
    interrupted: bool = False


class ResponseQueue:
    def __init__(self) -> None:
        self._waiting: list[Request] = []
        self._asked: dict[str, Request] = {}  # by event id: sent, not yet answered
        self._responses: dict[str, Response] = {}
        self.active: Response | None = None  # the response writing to the conversation
        self.interrupted: set[str] = set()  # response ids whose audio must never reach the caller
        self.closed = False  # the last request was made

    @property
    def line_free(self) -> bool:
        return self.active is None and not self._asked

    def ask(self, instructions: str | None = None, *, last: bool = False) -> Request | None:
        """Queue a request; returns it if it is to be sent now. A plain "go on" already waiting is
        not queued twice. The last request replaces whatever was still waiting."""
        if self.closed:
            return None
        request = Request(instructions, last)
        if last:
            self.closed = True
            self._waiting = [request]
        elif instructions is None and any(r.instructions is None for r in self._waiting):
            return None
        else:
            self._waiting.append(request)
        return self._next()

    def asked(self, request: Request, event_id: str) -> None:
        """The request's response.create went out as `event_id`."""
        request.event_id = event_id
        self._asked[event_id] = request

    def refused(self, event_id: str | None) -> bool:
        """The service refused our response.create `event_id` because a response of its own was
        active: the request waits for the line again, first in line. False: not one of ours."""
        request = self._asked.pop(event_id or "", None)
        if request is None:
            return False
        for response in self._responses.values():
            if response.answers is request:
                response.answers = None  # it was the service's own after all
        self._waiting.insert(0, request)
        return True

    def unanswered(self, event_id: str | None) -> Request | None:
        """The service refused our response.create `event_id` for good (any other error): it will not
        be answered, so it no longer holds the line. Returns the request to send now, if any."""
        if self._asked.pop(event_id or "", None) is None:
            return None
        return self._next()

    def created(self, event: rt.ResponseCreated) -> Response:
        out_of_band = event.conversation is None and bool(event.metadata)
        response = Response(event.response_id, out_of_band=out_of_band)
        self._responses[event.response_id] = response
        if not out_of_band:
            # Responses answer requests in order; one that answers none is the service's own.
            response.answers = next(iter(self._asked.values()), None)
            self.active = response
        return response

    def audio(self, response_id: str, item_id: str) -> None:
        """The response sent audio for `item_id`."""
        response = self._responses.get(response_id)
        if response is not None and item_id not in response.audio_items:
            response.audio_items.append(item_id)

    def done(self, event: rt.ResponseDone) -> tuple[Response | None, Request | None]:
        """The response finished: returns it (None if unknown) and the request to send now, if any."""
        response = self._responses.pop(event.response_id, None)
        if self.active is not None and self.active.response_id == event.response_id:
            self.active = None
        if response is not None and response.answers is not None:
            self._asked.pop(response.answers.event_id, None)
        return response, self._next()

    def interrupt(self) -> Response | None:
        """The caller talked over the active response: none of its audio may reach them any more."""
        response = self.active
        if response is None or response.interrupted:
            return None
        response.interrupted = True
        self.interrupted.add(response.response_id)
        return response

    @property
    def generating(self) -> bool:
        """A response the caller has not interrupted is writing to the conversation."""
        return self.active is not None and not self.active.interrupted

    def restart(self) -> Request | None:
        """A new session replaced the old one, whose responses are gone: requests not yet answered
        wait again, first in line. Returns the request to send now, if any."""
        self._waiting[:0] = self._asked.values()
        self._asked.clear()
        self._responses.clear()
        self.active = None
        self.interrupted.clear()
        return self._next()

    def _next(self) -> Request | None:
        if self._waiting and self.line_free:
            return self._waiting.pop(0)
        return None
