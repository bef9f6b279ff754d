"""Call control over Twilio's REST API: transferring a live call (docs/protocols.md §T8) and placing
one (§T9).

The official SDK builds the requests, adds the credentials and turns error bodies into exceptions; its async
resource methods (`update_async`) run on the event loop rather than the sync client in a thread, so a
timeout really cancels the request (a thread would keep a blocked socket alive) and no thread pool slot
is held per in-flight call. The transport is a small `twilio.http.AsyncHttpClient` (the SDK's extension
point for custom clients) instead of its `AsyncTwilioHttpClient`, which on current aiohttp needs a
running loop at construction, ignores its own timeout when the resource methods pass none, and sends
auth through aiohttp's deprecated `BasicAuth`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterator
from types import TracebackType

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from bridge.answer_detection import MachineDetection
from bridge.carrier.outbound import CallNotPlaced, Placement
from bridge.carrier.transfer import TransferFailed
from bridge.carrier.twilio.signature import TwilioSignature
from bridge.phone_numbers import valid_e164

DEFAULT_TIMEOUT_S = 10.0
# Progress worth hearing about (docs/protocols.md §T9); Twilio sends only `completed` when none is named.
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Enable answers as soon as it can tell (hang up on a machine); DetectMessageEnd waits for a
# machine's greeting to end, so a message left then is recorded whole.
MACHINE_DETECTION = {
    MachineDetection.HANG_UP: "Enable",
    MachineDetection.LEAVE_MESSAGE: "DetectMessageEnd",
}


class _AiohttpTransport(AsyncHttpClient):
    def __init__(self, timeout: float) -> None:
        super().__init__(logging.getLogger("twilio.http"), is_async=True, timeout=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's HttpClient signature
        allow_redirects: bool = False,
    ) -> Response:
        if self._session is None:
            # Created here, not in __init__: an aiohttp session binds to the running loop.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        async with self._session.request(
            method.upper(),
            uri,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as response:
            return Response(response.status, await response.text(), response.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class TwilioCalls:
    """One Twilio account's calls: transfers, and placing calls (a `bridge.carrier.outbound.Dialer`)."""

    carrier = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_base: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._timeout = timeout
        self.signature = TwilioSignature(auth_token)  # its callbacks are signed with the Auth Token
        # No retries: a rejected token or a 5xx is reported at once and the caller decides.
        self._http = _AiohttpTransport(timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        if api_base is not None:
            # Domain.base_url is the public prefix every REST URL of the `api` domain is built from
            # (Domain.absolute_url). Edge/region (which the SDK also reads from TWILIO_EDGE/REGION)
            # would rewrite the host name, which only makes sense for *.twilio.com.
            self._client.api.base_url = api_base.rstrip("/")
            self._client.edge = None
            self._client.region = None

    async def transfer(self, call_sid: str, number: str, *, caller_id: str | None = None) -> None:
        """Replace the call's TwiML with a <Dial> to `number`, which ends the <Connect><Stream>;
        TransferFailed says why Twilio did not."""
        if not valid_e164(number):
            raise TransferFailed("the transfer number is not E.164")
        if caller_id is not None and not valid_e164(caller_id):
            raise TransferFailed("the caller id is not E.164")
        twiml = str(transfer_twiml(number, caller_id=caller_id))
        with self._request(f"twilio transfer {call_sid}", TransferFailed):
            async with asyncio.timeout(self._timeout):
                await self._client.calls(call_sid).update_async(twiml=twiml)

    async def place(self, placement: Placement) -> str:
        """Create the call (`Calls.json`), answered by our `answer_url`, its progress and (with machine
        detection) Twilio's asynchronous verdict posted to our callback URLs; returns its CallSid.
        CallNotPlaced says why Twilio did not take it."""
        detection: dict[str, str] = {}
        if (mode := MACHINE_DETECTION.get(placement.machine_detection)) is not None:
            detection = {
                "machine_detection": mode,
                "async_amd": "true",  # the call connects at once: our stream starts while Twilio listens
                "async_amd_status_callback": placement.detection_url,
                "async_amd_status_callback_method": "POST",
            }
        with self._request("twilio call", CallNotPlaced):
            async with asyncio.timeout(self._timeout):
                call = await self._client.calls.create_async(
                    to=placement.to,
                    from_=placement.from_,
                    url=placement.answer_url,
                    method="POST",
                    status_callback=placement.status_url,
                    status_callback_method="POST",
                    status_callback_event=STATUS_EVENTS,
                    timeout=placement.ring_timeout_s,
                    **detection,
                )
        if not call.sid:
            raise CallNotPlaced("twilio call: the answer names no call")
        return str(call.sid)

    @contextlib.contextmanager
    def _request(self, what: str, failure: type[Exception]) -> Iterator[None]:
        """Turn whatever a REST request raises into `failure` with a one-line reason."""
        try:
            yield
        except TwilioException as exc:
            status = getattr(exc, "status", None)
            code = getattr(exc, "code", None)
            # TwilioRestException.__str__ adds terminal colours; build a plain one-line message instead.
            detail = getattr(exc, "msg", None) or getattr(exc, "title", None) or type(exc).__name__
            raise failure(f"{what} failed: HTTP {status} code {code}: {detail}") from None
        except TimeoutError:
            raise failure(f"{what} timed out after {self._timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise failure(f"{what} failed: {type(exc).__name__}: {exc}") from None
        except ValueError:
            # A 2xx whose body is not JSON: it may have happened, but nothing confirms it.
            raise failure(f"{what}: unreadable response") from None

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> TwilioCalls:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def transfer_twiml(number: str, *, caller_id: str | None = None) -> VoiceResponse:
    response = VoiceResponse()
    dial = Dial(caller_id=caller_id) if caller_id else Dial()
    dial.number(number)
    response.append(dial)
    return response
