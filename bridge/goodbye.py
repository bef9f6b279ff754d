"""The call's last word: the model says goodbye, and the line closes once the caller has heard it.

    none ──begin──► asked ──its response done──► spoken ──the caller heard it all──► (the call ends)

A goodbye is asked for once per call, whatever asks (the time limit, a shutdown, the model's own
end_call tool, the message left on an answering machine), and it waits its turn behind the response
in progress (`ResponseQueue`). One that is never heard whole (a model that never answers, a carrier
that never confirms playback) still ends the call at its deadline.
"""

from __future__ import annotations

from enum import Enum

GOODBYE_LIMIT_MS = 20_000.0  # from asking for the goodbye to the end of the call, at most

# What the model is asked to say, by the reason the call is ending.
GOODBYES = {
    "timeout": "The call has reached its time limit. Tell the caller briefly and warmly, then say goodbye.",
    "shutdown": (
        "This line is closing for maintenance. Apologise, ask the caller to call back, and say goodbye."
    ),
    "assistant_ended": "Say goodbye to the caller in one short sentence.",
}


class GoodbyeState(Enum):
    NONE = "none"  # no goodbye yet
    ASKED = "asked"  # asked of the model: waiting its turn, or being spoken
    SPOKEN = "spoken"  # the model finished it; the caller may still be hearing it


class Goodbye:
    def __init__(self) -> None:
        self.state = GoodbyeState.NONE
        self.reason: str | None = None  # the call's end reason once the goodbye was heard
        self.instructions = ""  # what the model is asked to say
        self.deadline: float | None = None

    def begin(
        self, reason: str, now: float, instructions: str = "", limit_ms: float = GOODBYE_LIMIT_MS
    ) -> bool:
        """Say goodbye because of `reason`: `instructions`, else GOODBYES[reason] (a voicemail left
        on a machine brings its own, and a longer limit). False: one was already begun."""
        if self.state is not GoodbyeState.NONE:
            return False
        self.state, self.reason, self.deadline = GoodbyeState.ASKED, reason, now + limit_ms
        self.instructions = instructions or GOODBYES[reason]
        return True

    def spoken(self) -> None:
        """The goodbye's response is done: the line closes once the caller has heard it."""
        if self.state is GoodbyeState.ASKED:
            self.state = GoodbyeState.SPOKEN

    def ends_call(self, now: float, playing: bool) -> str | None:
        """The reason to end the call now: the goodbye was spoken and nothing of it is still playing,
        or its deadline passed. None: not yet (or no goodbye)."""
        if self.state is GoodbyeState.NONE:
            return None
        if self.state is GoodbyeState.SPOKEN and not playing:
            return self.reason
        if self.deadline is not None and now >= self.deadline:
            return self.reason
        return None
