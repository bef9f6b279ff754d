"""One emulated upstream WebSocket connection, whatever the protocol it speaks (Realtime or Live).

Client events are handled synchronously as they arrive and emit server events into an outbox that a
writer task sends, stamping when each one left; a refused event becomes an `error` event and never
escapes the session. An optional `DelayLine` stands for the network between the service and the bridge:
each event then leaves late by its delay and jitter, never overtaking an earlier one. Subclasses supply
the handlers and what happens when the socket opens and closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import structlog
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from bridge.clock import now_ms
from bridge.sim import realtime_schema as schema
from bridge.sim.carrier_emulator import DelayLine
from bridge.sim.emulator_audio import decode_g711
from bridge.sim.realtime_schema import ProtocolError

log = structlog.get_logger(__name__)

FLUSH_TIMEOUT_S = 5.0


class Reject(Exception):
    """Control flow inside a handler: becomes an `error` event, never escapes the session."""

    def __init__(self, error: ProtocolError, tie_event_id: bool = True) -> None:
        super().__init__(error.message)
        self.error = error
        self.tie_event_id = tie_event_id


class EmulatedConnection:
    """Public attributes are for tests to inspect."""

    def __init__(
        self,
        dialect: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        validate: bool,
        network: DelayLine | None = None,
    ) -> None:
        self.dialect = dialect
        self.headers: CIMultiDict[str] = CIMultiDict(headers)
        self.query: dict[str, str] = dict(query)
        self.client_events: list[dict] = []
        self.rejected: list[dict] = []
        self.closed = False
        # (time.monotonic() in ms when written to the socket, event type) of every event sent, to correlate
        # with the carrier emulator's clock.
        self.sent_log: list[tuple[float, str]] = []
        self._validate = validate
        self._network = network
        self._handlers: dict[str, Callable[[dict], None]] = {}
        self._tasks: set[asyncio.Task] = set()
        # (event type, JSON text, time.monotonic() in ms when emitted)
        self._outbox: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
        self._ws: web.WebSocketResponse | None = None
        self._writer: asyncio.Task | None = None
        self._carry = b""  # the first byte of a PCM16 sample split across appends

    # -- hooks ------------------------------------------------------------------------------------

    async def _opened(self, ws: web.WebSocketResponse) -> bool:
        """Called once the socket is up; False ends the connection at once."""
        return True

    def _stop(self) -> None:
        """Stop background work without telling the client (the connection is going away)."""
        for task in self._tasks:
            task.cancel()

    def _disconnected(self) -> None:
        """The socket is gone, for whatever reason."""

    # -- connection edge --------------------------------------------------------------------------

    async def serve(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(ws))
        try:
            if not await self._opened(ws):
                return
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self.handle_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self._reject(
                        ProtocolError("invalid_json", "Binary frames are not supported; send JSON text.")
                    )
        finally:
            await self._shutdown()

    async def close(self, code: int = 1011) -> None:
        """Drop the connection from the server side (upstream failure)."""
        if self.closed or self._ws is None:
            return
        self._stop()
        await self._flush()
        await self._ws.close(code=code)
        self.closed = True

    def send_server_event(self, event: dict) -> None:
        """Inject any server event (tests: errors, expiry notices)."""
        self._emit(copy.deepcopy(event))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _write_loop(self, ws: web.WebSocketResponse) -> None:
        try:
            while True:
                event_type, text, emitted_ms = await self._outbox.get()
                try:
                    if self._network is not None:
                        late = self._network.due(emitted_ms) - now_ms()
                        if late > 0:
                            await asyncio.sleep(late / 1000.0)
                    await ws.send_str(text)
                    self.sent_log.append((now_ms(), event_type))
                finally:
                    self._outbox.task_done()
        except (ConnectionError, RuntimeError):
            # The peer went away (aiohttp raises either); whatever is still queued is undeliverable.
            while not self._outbox.empty():
                self._outbox.get_nowait()
                self._outbox.task_done()

    async def _flush(self) -> None:
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), FLUSH_TIMEOUT_S)

    async def _shutdown(self) -> None:
        self._stop()
        self._disconnected()
        self.closed = True
        tasks = [*self._tasks, *([self._writer] if self._writer is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self._ws.close()
        log.debug("emulator.connection_closed", dialect=self.dialect)

    # -- dispatch ---------------------------------------------------------------------------------

    def handle_text(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            self._reject(
                ProtocolError(
                    "invalid_json",
                    "We could not parse the JSON body of your request. Expected a JSON object.",
                ),
                text,
            )
            return
        self.client_events.append(event)
        if error := schema.client_event_error(event, self.dialect, check_schema=self._validate):
            self._reject(error, event)
            return
        try:
            self._handlers[event["type"]](event)
        except Reject as exc:
            self._reject(exc.error, event, exc.tie_event_id)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            if self._validate:
                raise  # the event passed the schema, so this is an emulator bug: let it surface
            # Without validation a malformed event lands here; the service would have refused it.
            self._reject(ProtocolError("invalid_value", f"Invalid '{event['type']}' event: {exc!r}"), event)

    def _decode_append(self, audio: str, fmt: str) -> np.ndarray:
        """An append's audio as PCM16 samples (`fmt`: pcm16 | g711_ulaw | g711_alaw)."""
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise Reject(
                ProtocolError(
                    "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
                )
            ) from None
        if fmt != "pcm16":
            return decode_g711(raw, fmt)
        data = self._carry + raw
        even = len(data) & ~1
        self._carry = data[even:]
        return np.frombuffer(data, dtype="<i2", count=even // 2)

    def _emit(self, event: dict) -> None:
        if self.closed:
            return
        event.setdefault("event_id", schema.new_id("event"))
        # Serialised now, so later changes to session state cannot leak into an already-emitted event.
        self._outbox.put_nowait((event["type"], json.dumps(event), now_ms()))

    def _reject(self, error: ProtocolError, client_event: Any = None, tie_event_id: bool = True) -> None:
        event_id = client_event.get("event_id") if tie_event_id and isinstance(client_event, dict) else None
        payload = self._error_payload(error, event_id)
        self._emit({"type": "error", "error": payload})
        self.rejected.append({"error": payload, "client_event": client_event})
        log.info(
            "emulator.client_event_rejected",
            dialect=self.dialect,
            code=error.code,
            message=error.message,
            event_type=client_event.get("type") if isinstance(client_event, dict) else None,
        )

    def _error_payload(self, error: ProtocolError, client_event_id: str | None) -> dict:
        return error.payload(client_event_id)
