"""What every carrier's transfer promises: the call was handed to the number, or `TransferFailed`
says why not. One exception for every carrier (REST clients, the SIP REFER), so whoever asked (the
model's transfer_call, an operator through the control API) handles a failure one way."""

from __future__ import annotations


class TransferFailed(Exception):
    """A transfer that did not happen; the call goes on as it was.

    str() is one line saying why (the carrier's HTTP status and error code, a timeout, missing
    credentials), never a credential or a full phone number: safe to log and to show an operator.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
