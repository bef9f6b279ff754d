"""What every carrier's transfer promises: the call was handed to the number, or `TransferFailed`
says why not. One exception for every carrier (REST clients, the SIP REFER), so whoever asked (the
model's transfer_call, an operator through the control API) handles a failure one way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bridge.carrier.events import CallStarted


class TransferFailed(Exception):
    """A transfer that did not happen; the call goes on as it was.

    str() is one line saying why (the carrier's HTTP status and error code, a timeout, missing
    credentials), never a credential or a full phone number: safe to log and to show an operator.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransferUnavailable(TransferFailed):
    """The bridge cannot transfer this call as it is configured: nothing was tried. `setting` names
    what would make it possible, when a setting can ("TWILIO_AUTH_TOKEN")."""

    def __init__(self, reason: str, setting: str | None = None) -> None:
        super().__init__(reason)
        self.setting = setting


# A carrier's transfer of the call `CallStarted` describes to a number, given the http(s) base URL the
# carrier reaches us at (where it fetches what to do next, for carriers that ask): returns once the
# carrier took it, or raises TransferFailed.
CarrierTransfer = Callable[[CallStarted, str, str], Awaitable[None]]


def transfers_unavailable(reason: str, setting: str | None = None) -> CarrierTransfer:
    """The transfer of a carrier that cannot transfer calls as configured: TransferUnavailable, naming
    the `setting` that would make it possible (if one would)."""

    async def transfer(started: CallStarted, number: str, public_base: str) -> None:
        raise TransferUnavailable(reason, setting)

    return transfer
