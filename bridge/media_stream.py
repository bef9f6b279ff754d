"""One carrier media-stream websocket served as a call: the handshake, then the pump over a
`WebSocketLeg` speaking that carrier's codec."""

from __future__ import annotations

import contextlib

from aiohttp import web

from bridge.carrier_leg import Transfer
from bridge.logs import get_logger
from bridge.pump import CallPump, StreamContext
from bridge.websocket_leg import CarrierCodec, WebSocketLeg

log = get_logger("bridge.call")

MAX_CARRIER_MESSAGE = 64 * 1024
HEARTBEAT_S = 30.0  # a ping; a stream that does not answer within it is dead (proxies' idle limits exceed it)


async def handle_media_stream(
    ctx: StreamContext, request: web.Request, codec: CarrierCodec, transfer: Transfer | None = None
) -> web.StreamResponse:
    """Serve one carrier media-stream websocket as a call."""
    # The leg pings a quiet stream itself (its HEARTBEAT_S), and so answers the carrier's pings too.
    ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_CARRIER_MESSAGE, compress=False)
    logger = log.bind(remote=request.remote or "", carrier=codec.carrier)
    try:
        await ws.prepare(request)
    except ConnectionResetError:
        # The carrier gave up before our handshake answer went out (an overloaded server answers
        # late): nothing was started, so this is one line, not aiohttp's "Error handling request".
        logger.warning("media stream closed by the carrier during the handshake")
        # The half-prepared websocket cannot be finished; this answer only reaches the access log.
        return web.Response(status=499, reason="Client Closed Request")
    pump = CallPump(ctx, WebSocketLeg(ws, codec, logger, transfer, HEARTBEAT_S), logger)
    try:
        await pump.run()
    except Exception:
        pump.log.exception("media stream failed")
        with contextlib.suppress(Exception):
            await ws.close(code=1011, message=b"internal error")
    return ws
