"""Plivo's side of the bridge: the answer URL, the audio-stream websocket, and transfers.

* `POST|GET /plivo/answer` (the number's or application's Answer URL) checks Plivo's V3 signature,
  pre-opens the Realtime session, and answers XML with a bidirectional `<Stream keepCallAlive="true">`
  to `/plivo/media`. The stream's parameters (caller, callee, direction and the one-time stream token)
  travel in `extraHeaders`, which Plivo hands back in the `start` message (bridge/carrier/plivo.py says
  how they are spelled). Because `keepCallAlive` runs the rest of the document only once the stream has
  ended, the `<Redirect>` after the stream asks `/plivo/after-stream` what next: the fallback number for
  a call the bridge failed, else hang up.
* `GET /plivo/media` is the stream; its `start` must present the token its answer issued.
* Transfers use the Call API's "transfer a call" (`POST /v1/Account/{auth_id}/Call/{call_uuid}/`,
  `legs=aleg`, `aleg_url`): Plivo fetches `/plivo/transfer?to=…` (signed like any of its requests),
  which answers `<Dial>`, and the new document replaces the stream.

Signature V3 (as Plivo's SDKs compute it): base64(HMAC-SHA256(auth token, base + "." + nonce)), where
base is the URL Plivo requested without its query, then for a POST "?" + the URL's query parameters
sorted as `k=v&…` (+ "." when both exist) + the form parameters sorted by name as `namevalue…`; for a
GET "?" + the query and form parameters together as `k=v&…`. `X-Plivo-Signature-V3` may list several
signatures (one per active token), comma-separated. Plivo documents no signature on the websocket
upgrade, so the stream is bound to its signed answer by the one-time token instead.

Unverified: whether `<Dial><Number>` accepts a leading "+" (Plivo's examples write bare digits, so the
"+" is dropped); whether Plivo signs the `<Redirect>` and `aleg_url` requests exactly like the answer
URL (its docs say every callback carries the V3 headers, and that is what is checked).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.etree import ElementTree

import aiohttp
from aiohttp import web

from bridge.audio import PCMU_8K
from bridge.carrier.events import CallStarted
from bridge.carrier.plivo import PlivoCodec, content_type, encode_extra_headers
from bridge.carrier.signature import STREAM_TOKEN_PARAMETER, http_url, public_url, websocket_url
from bridge.carrier.transfer import TransferFailed
from bridge.config import Settings
from bridge.logs import get_logger, mask_number
from bridge.phone_numbers import valid_e164
from bridge.resources import BRIDGE_KEY, Bridge, media_stream, public_base_url

log = get_logger("bridge.plivo")


ANSWER_PATH = "/plivo/answer"
MEDIA_PATH = "/plivo/media"
AFTER_STREAM_PATH = "/plivo/after-stream"
TRANSFER_PATH = "/plivo/transfer"
SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
DEFAULT_API_BASE = "https://api.plivo.com"
API_TIMEOUT_S = 10.0
BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."

Params = Mapping[str, str | list[str]]


# ---- signature V3 ---------------------------------------------------------------------------------


def _sorted_pairs(params: Params) -> list[tuple[str, str]]:
    """Every (name, value), names sorted and a repeated name's values sorted, as V3 signs them."""
    pairs = []
    for name in sorted(params):
        values = params[name]
        pairs += [(name, value) for value in (sorted(values) if isinstance(values, list) else [values])]
    return pairs


def _sorted_query(params: Params) -> str:
    return "&".join(f"{name}={value}" for name, value in _sorted_pairs(params))


def _sorted_form(params: Params) -> str:
    return "".join(f"{name}{value}" for name, value in _sorted_pairs(params))


def signed_string(method: str, url: str, params: Params) -> str:
    """What Plivo signs for a request to `url` carrying form (POST) or query (GET) `params`."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query: dict[str, str | list[str]] = dict(parse_qs(parts.query, keep_blank_values=True))
    if method.upper() == "GET":
        merged = {**params, **query}  # the URL's own query wins, as in Plivo's SDKs
        text = _sorted_query(merged)
        return f"{base}?{text}" if text else base
    text = _sorted_query(query)
    if params:
        return f"{base}?{text}{'.' if text else ''}{_sorted_form(params)}"
    return f"{base}?{text}" if text else base


def signature_v3(auth_token: str, method: str, url: str, params: Params, nonce: str) -> str:
    message = f"{signed_string(method, url, params)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), message, hashlib.sha256).digest()).decode()


def request_is_signed(
    auth_token: str, method: str, url: str, params: Params, signatures: str | None, nonce: str | None
) -> bool:
    """Does any signature in the `X-Plivo-Signature-V3` header sign this request with `auth_token`?"""
    if not auth_token or not signatures or not nonce:
        return False
    expected = signature_v3(auth_token, method, url, params, nonce).encode()
    return any(hmac.compare_digest(expected, s.strip().encode()) for s in signatures.split(","))


def _params(pairs: Mapping[str, object]) -> dict[str, str | list[str]] | None:
    """A form or query as Plivo signs it (repeated names as lists); None if it holds a file upload."""
    out: dict[str, str | list[str]] = {}
    getall = getattr(pairs, "getall", None)
    for name in dict.fromkeys(pairs):
        values = getall(name) if getall is not None else [pairs[name]]
        if not all(isinstance(v, str) for v in values):
            return None
        out[name] = values[0] if len(values) == 1 else list(values)
    return out


# ---- XML ------------------------------------------------------------------------------------------


def _document(response: ElementTree.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(response, encoding="unicode")


def stream_xml(stream_url: str, extra_headers: str, after_url: str, line_content_type: str) -> str:
    response = ElementTree.Element("Response")
    attributes = {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "audioTrack": "inbound",
        "contentType": line_content_type,
    }
    if extra_headers:
        attributes["extraHeaders"] = extra_headers
    ElementTree.SubElement(response, "Stream", attributes).text = stream_url
    ElementTree.SubElement(response, "Redirect", {"method": "POST"}).text = after_url
    return _document(response)


def dial_xml(number: str, message: str = "") -> str:
    """`<Dial>` to an E.164 number (Plivo writes numbers as bare digits), after `message` if any."""
    response = ElementTree.Element("Response")
    if message:
        ElementTree.SubElement(response, "Speak").text = message
    dial = ElementTree.SubElement(response, "Dial")
    ElementTree.SubElement(dial, "Number").text = number.removeprefix("+")
    return _document(response)


def hangup_xml(message: str = "") -> str:
    response = ElementTree.Element("Response")
    if message:
        ElementTree.SubElement(response, "Speak").text = message
    ElementTree.SubElement(response, "Hangup")
    return _document(response)


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml")


# ---- the Call API ---------------------------------------------------------------------------------


async def transfer_call(
    auth_id: str, auth_token: str, call_uuid: str, aleg_url: str, *, api_base: str = ""
) -> None:
    """Have Plivo fetch `aleg_url` and run its XML on the live call (this ends the audio stream);
    TransferFailed names the call and the HTTP status, never the credentials."""
    url = f"{(api_base or DEFAULT_API_BASE).rstrip('/')}/v1/Account/{auth_id}/Call/{call_uuid}/"
    body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
    auth = base64.b64encode(f"{auth_id}:{auth_token}".encode()).decode("ascii")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S)) as http,
            http.post(url, json=body, headers={"Authorization": f"Basic {auth}"}) as response,
        ):
            if 200 <= response.status < 300:
                return
            try:
                detail = (await response.json(content_type=None)).get("error", "")
            except (ValueError, AttributeError, aiohttp.ClientError):
                detail = ""
            raise TransferFailed(
                f"plivo transfer {call_uuid} failed: HTTP {response.status} {detail}".rstrip()
            )
    except TimeoutError:
        raise TransferFailed(f"plivo transfer {call_uuid} timed out after {API_TIMEOUT_S:g} s") from None
    except aiohttp.ClientError as exc:
        raise TransferFailed(f"plivo transfer {call_uuid} failed: {type(exc).__name__}") from None


# ---- handlers -------------------------------------------------------------------------------------


def _auth_token(settings: Settings) -> str:
    token = settings.plivo_auth_token
    return token.get_secret_value() if token is not None else ""


async def _signed_params(request: web.Request, bridge: Bridge) -> dict[str, str | list[str]] | None:
    """The request's parameters if Plivo sent it (always, when no Auth Token is configured), else None."""
    raw = request.query if request.method == "GET" else await request.post()
    params = _params(raw)
    token = _auth_token(bridge.settings)
    if params is None or not token:
        return params
    url = public_url(public_base_url(bridge.settings, request), request.raw_path)
    signed_params = {} if request.method == "GET" else params  # a GET's parameters are in its URL
    headers = request.headers
    if request_is_signed(
        token, request.method, url, signed_params, headers.get(SIGNATURE_HEADER), headers.get(NONCE_HEADER)
    ):
        return params
    log.warning("plivo signature rejected", path=request.path, remote=request.remote)
    return None


def _one(params: Mapping[str, str | list[str]], name: str) -> str:
    value = params.get(name, "")
    return value[0] if isinstance(value, list) else value


async def answer(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    params = await _signed_params(request, bridge)
    if params is None:
        return web.Response(status=403)
    call_uuid = _one(params, "CallUUID")
    caller, callee = _one(params, "From"), _one(params, "To")
    if bridge.turned_away(call_uuid, "plivo"):
        fallback = bridge.settings.fallback_number
        return _xml(dial_xml(fallback, BUSY_MESSAGE) if fallback else hangup_xml(BUSY_MESSAGE))
    direction = "outbound" if _one(params, "Direction").startswith("outbound") else "inbound"
    if call_uuid:
        bridge.prepared.prepare(call_uuid, bridge.open_prepared)
    base_url = http_url(public_base_url(bridge.settings, request))
    log.info("plivo answer", call_sid=call_uuid, caller=mask_number(caller), callee=mask_number(callee))
    stream_params = {"from": caller, "to": callee, "direction": direction}
    if _auth_token(bridge.settings) and call_uuid:
        stream_params[STREAM_TOKEN_PARAMETER] = bridge.stream_tokens.issue(call_uuid)
    try:
        headers = encode_extra_headers(stream_params)
    except ValueError:
        # Long SIP URIs can overflow Plivo's 512 bytes; the token matters, the numbers are for the log.
        stream_params.pop("from"), stream_params.pop("to")
        headers = encode_extra_headers(stream_params)
    xml = stream_xml(
        websocket_url(base_url + MEDIA_PATH), headers, base_url + AFTER_STREAM_PATH, content_type(PCMU_8K)
    )
    return _xml(xml)


async def after_stream(request: web.Request) -> web.Response:
    """The stream ended and the call is still up: the fallback number if we failed the call."""
    bridge = request.app[BRIDGE_KEY]
    params = await _signed_params(request, bridge)
    if params is None:
        return web.Response(status=403)
    fallback = bridge.fallback_after_stream(_one(params, "CallUUID"))
    if fallback:
        return _xml(dial_xml(fallback))
    return _xml(hangup_xml())


async def transfer_document(request: web.Request) -> web.Response:
    """The `aleg_url` of a transfer the bridge asked for: dial the number. Only Plivo may fetch it."""
    bridge = request.app[BRIDGE_KEY]
    if not _auth_token(bridge.settings):
        return web.Response(status=403)  # transfers need the credentials, so this is never legitimate
    params = await _signed_params(request, bridge)
    if params is None:
        return web.Response(status=403)
    number = request.query.get("to", "")
    if not valid_e164(number):
        raise web.HTTPBadRequest(text="to must be an E.164 number")
    log.info("plivo transfer document", call_sid=_one(params, "CallUUID"), to=mask_number(number))
    return _xml(dial_xml(number))


def _authorize(bridge: Bridge) -> Callable[[CallStarted], bool]:
    def authorized(started: CallStarted) -> bool:
        if not _auth_token(bridge.settings):
            return True
        return bridge.stream_tokens.redeem(
            started.call_sid, started.custom_parameters.get(STREAM_TOKEN_PARAMETER)
        )

    return authorized


async def media_socket(request: web.Request) -> web.StreamResponse:
    bridge = request.app[BRIDGE_KEY]
    base_url = http_url(public_base_url(bridge.settings, request))

    async def transfer(started: CallStarted, number: str) -> None:
        settings = bridge.settings
        token = _auth_token(settings)
        if not (settings.plivo_auth_id and token):
            raise TransferFailed("no Plivo credentials are configured (PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN)")
        if not valid_e164(number):
            raise TransferFailed("the transfer number is not E.164")
        aleg_url = f"{base_url}{TRANSFER_PATH}?{urlencode({'to': number})}"
        await transfer_call(
            settings.plivo_auth_id, token, started.call_sid, aleg_url, api_base=settings.plivo_api_base
        )

    return await media_stream(bridge, request, PlivoCodec(), _authorize(bridge), transfer)


def setup_plivo_routes(app: web.Application) -> None:
    """Plivo may fetch its answer, redirect and transfer URLs with POST or GET (its `*_method` options)."""
    for path, handler in (
        (ANSWER_PATH, answer),
        (AFTER_STREAM_PATH, after_stream),
        (TRANSFER_PATH, transfer_document),
    ):
        app.router.add_post(path, handler)
        app.router.add_get(path, handler)
    app.router.add_get(MEDIA_PATH, media_socket)
