"""Every carrier's REST client reports a transfer that did not happen the same way: TransferFailed, whose
text says why (status and the carrier's own error) and never carries a credential. Against the
carriers' loopback stand-ins; Twilio's client has its own tests (test_twilio_rest.py)."""

from __future__ import annotations

import pytest

from bridge.carrier.events import CallStarted
from bridge.carrier.plivo.rest import transfer_call
from bridge.carrier.telnyx.rest import TelnyxCallControl
from bridge.carrier.telnyx.routes import call_control_transfer
from bridge.carrier.transfer import TransferFailed
from bridge.sim.plivo_api import PlivoApiStandIn
from bridge.sim.telnyx_api import TelnyxApiStandIn

NUMBER = "+15550001111"


async def test_telnyx_refusals_name_the_status_and_telnyx_code_never_the_key() -> None:
    api = TelnyxApiStandIn("KEY-for-tests", known_calls={"v3:live"})
    base = await api.start()
    try:
        await TelnyxCallControl("KEY-for-tests", base).transfer("v3:live", NUMBER)
        with pytest.raises(TransferFailed) as gone:
            await TelnyxCallControl("KEY-for-tests", base).transfer("v3:gone", NUMBER)
        assert str(gone.value) == "Telnyx transfer failed: HTTP 422 (code 90018: Call has already ended)"
        with pytest.raises(TransferFailed) as refused:
            await TelnyxCallControl("WRONG-KEY", base).transfer("v3:live", NUMBER)
        assert "HTTP 401" in str(refused.value) and "WRONG-KEY" not in str(refused.value)
        assert len(api.requests) == 3
    finally:
        await api.stop()
    with pytest.raises(TransferFailed, match="ClientConnectorError"):  # nothing listens there any more
        await TelnyxCallControl("KEY-for-tests", base).transfer("v3:live", NUMBER)


async def test_a_telnyx_stream_that_names_no_call_cannot_be_transferred() -> None:
    transfer = call_control_transfer(TelnyxCallControl("KEY-for-tests", "http://127.0.0.1:9"))
    started = CallStarted(stream_sid="S1", call_sid="v3:live")  # no call_control_id parameter
    with pytest.raises(TransferFailed, match="did not say which Telnyx call"):
        await transfer(started, NUMBER, "https://bridge.example")


async def test_plivo_refusals_name_the_call_and_status_never_the_token() -> None:
    api = PlivoApiStandIn("MAPLIVOTESTAUTHID000", "the-real-token", known_calls={"live"})
    base = await api.start()
    try:
        with pytest.raises(TransferFailed) as gone:
            await transfer_call("MAPLIVOTESTAUTHID000", "the-real-token", "gone", "http://x/t", api_base=base)
        assert str(gone.value) == "plivo transfer gone failed: HTTP 404 call not found"
        with pytest.raises(TransferFailed) as refused:
            await transfer_call("MAPLIVOTESTAUTHID000", "a-wrong-token", "live", "http://x/t", api_base=base)
        assert "HTTP 401" in str(refused.value) and "a-wrong-token" not in str(refused.value)
    finally:
        await api.stop()
