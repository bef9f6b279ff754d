"""OutboundCalls: everything about a call we place, from the request to the carrier's last word.

    place(request)          limits (MAX_CALLS here, OUTBOUND_* across replicas), the row in the call
                            log, then the carrier's Dialer; the call is `queued`
    answering(token, sid)   the carrier fetches our answer as the callee picks up (any replica): the
                            call's own configuration, for the answer flow
    for_stream(id, sid)     the media stream starts (any replica): the same, for the pump
    progress(id, progress)  a carrier callback (any replica): into the call log, posted on to the
                            request's callback_url
    verdict(id, seen)       the pump waits for who answered: read from the call log, so the verdict
                            reaches the call wherever its callback landed (at once when it landed here)

Every replica can do each of these for any placed call: what one learns goes to the shared call log,
and the others read it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.answer_detection import AnsweredBy, DetectionPlan, MachineDetection, Verdict
from bridge.call_config import CallConfig
from bridge.calllog.placed_calls import FINAL_STATUSES, LimitReached, PlacedCallStore
from bridge.calllog.store import database_unavailable
from bridge.carrier.outbound import (
    COMPLETED,
    FAILED,
    NEVER_CONNECTED,
    PLACED_CALL_QUERY,
    QUEUED,
    CallNotPlaced,
    CallProgress,
    Dialer,
    PlacedCallPaths,
    Placement,
)
from bridge.carrier.webhook import RECORD_PARAMETER
from bridge.logs import get_logger, mask_number
from bridge.outbound.request import BadOutboundRequest, OutboundRequest
from bridge.outbound.status_events import StatusEvents
from bridge.outbound.tokens import PlacedCallTokens

if TYPE_CHECKING:
    from bridge.config import Settings

log = get_logger("bridge.outbound")

DEMO_CALLER_ID = "+15550199"  # the simulated callee's caller id (555-01xx: fictional numbers)
VERDICT_POLL_S = 0.5  # how often a call waiting for its verdict looks in the call log
END_REASON_WAIT_S = 3.0  # a status event for a finished call waits this long for its end reason
ANSWERED_KEPT = 1024  # placed calls remembered between their answer and their stream (same replica)
# A placement holds a place under MAX_CALLS here until its answer comes, or until it cannot any more.
RESERVATION_MARGIN_S = 60.0


class OutboundUnavailable(Exception):
    """Calls cannot be placed through this carrier now; str() says why and what would fix it."""


@dataclass(frozen=True, slots=True)
class PlacedCall:
    call_id: str
    carrier: str
    to: str
    from_: str
    carrier_call_id: str  # "" until the carrier named it
    config: CallConfig  # this call's own: instructions, greeting, machine detection
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str = ""


@dataclass(frozen=True, slots=True)
class _Route:
    dialer: Dialer
    paths: PlacedCallPaths


class OutboundCalls:
    def __init__(
        self,
        settings: Settings,
        store: PlacedCallStore,
        base_config: CallConfig,
        token_key: bytes,
        events: StatusEvents,
    ) -> None:
        """`token_key`: keys the placed-call tokens; every replica must derive the same one."""
        self.settings = settings
        self.store = store
        self.base_config = base_config
        self.tokens = PlacedCallTokens(token_key)
        self.events = events
        self._routes: dict[str, _Route] = {}
        self._unavailable: dict[str, str] = {}  # carrier -> why it cannot place calls
        self._reserved: dict[str, float] = {}  # call id -> loop time its place under MAX_CALLS lapses
        self._waiters: dict[str, asyncio.Event] = {}  # calls of this process waiting for a verdict
        self._answered: OrderedDict[str, PlacedCall] = OrderedDict()

    # -- carriers -----------------------------------------------------------------------------------

    def register(self, dialer: Dialer, paths: PlacedCallPaths) -> None:
        self._routes[dialer.carrier] = _Route(dialer, paths)
        self._unavailable.pop(dialer.carrier, None)

    def unavailable(self, carrier: str, why: str) -> None:
        self._unavailable[carrier] = why

    def dialer(self, carrier: str) -> Dialer | None:
        route = self._routes.get(carrier)
        return route.dialer if route is not None else None

    async def close(self) -> None:
        await self.events.close()

    # -- placing ------------------------------------------------------------------------------------

    @property
    def reserved(self) -> int:
        """Calls this process placed whose answer has not come yet: they count toward MAX_CALLS."""
        now = asyncio.get_running_loop().time()
        for call_id in [c for c, lapses in self._reserved.items() if lapses <= now]:
            del self._reserved[call_id]
        return len(self._reserved)

    async def place(self, request: OutboundRequest, reached_at: str, *, at_capacity: bool) -> PlacedCall:
        """Place the call (`reached_at`: the base URL its request reached us at). BadOutboundRequest
        (400), OutboundUnavailable (503), LimitReached (429), CallNotPlaced (502: the carrier refused
        it; the call log has it as failed)."""
        settings = self.settings
        carrier = request.carrier or settings.outbound_carrier
        route = self._routes.get(carrier)
        if route is None:
            raise OutboundUnavailable(self._why_unavailable(carrier))
        # Where the carrier reaches us: PUBLIC_URL; the simulated callee is on this machine.
        public_base = settings.public_url or (reached_at if settings.simulated_callee else "")
        if not public_base:
            raise OutboundUnavailable(
                "set PUBLIC_URL: the carrier reaches this bridge there to connect the call"
            )
        prefixes = settings.allowed_prefixes
        if prefixes and not request.to.startswith(prefixes):
            raise BadOutboundRequest(f"to: calls may only go to numbers starting {', '.join(prefixes)}")
        from_ = request.from_ or self._default_caller_id(carrier)
        if not from_:
            raise BadOutboundRequest(f"from: is required (or set {carrier.upper()}_FROM_NUMBER)")
        if request.callback_url and not self.events.secret:
            raise BadOutboundRequest("callback_url: needs TOOLS_SECRET (status events are signed with it)")
        if at_capacity:
            raise LimitReached("max_calls", "this bridge is at MAX_CALLS", retry_after_s=5)
        detection = request.machine_detection or MachineDetection(settings.outbound_machine_detection)
        call_id = f"out_{secrets.token_hex(12)}"
        wanted = {
            "carrier": carrier,
            "machine_detection": detection.value,
            "voicemail_message": request.voicemail_message,
            "instructions": request.instructions,
            "greeting": request.greeting,
            "callback_url": request.callback_url,
            "record": request.record,
        }
        row = {
            "call_id": call_id,
            "carrier": carrier,
            "from_number": from_,
            "to_number": request.to,
            "model": self.base_config.model,
            "voice": self.base_config.session.voice,
            "metadata": request.metadata or None,
            "outbound_request": wanted,
        }
        limits = {"max_concurrent": settings.outbound_max_concurrent}
        await self.store.admit(row, **limits, per_minute=settings.outbound_calls_per_minute)
        self._reserve(call_id)
        placed = self._placed_call({**row, "call_sid": ""})
        self._send_event(placed, {"status": QUEUED, "carrier_call_id": ""})
        token = self.tokens.issue(call_id)
        paths = route.paths
        # The answer URL asks for the recording as any call webhook's does (`record=1`).
        answer_url = _url(public_base, paths.answer, token)
        if request.record:
            answer_url += f"&{RECORD_PARAMETER}=1"
        placement = Placement(
            call_id=call_id,
            to=request.to,
            from_=from_,
            answer_url=answer_url,
            status_url=_url(public_base, paths.status, token),
            detection_url=_url(public_base, paths.verdict, token),
            machine_detection=detection,
            ring_timeout_s=settings.outbound_ring_timeout,
        )
        try:
            carrier_call_id = await route.dialer.place(placement)
        except CallNotPlaced as exc:
            log.error("call not placed", call_id=call_id, carrier=carrier, error=str(exc))
            await self.progress(call_id, CallProgress("not placed", FAILED, detail={"error": str(exc)}))
            raise
        try:
            await self.store.record_placed(call_id, carrier_call_id)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # The call is on its way: its answer binds the carrier's id all the same.
            log.warning("the carrier's id of a placed call not recorded", call_id=call_id, error=repr(exc))
        log.info(
            "call placed",
            call_id=call_id,
            carrier=carrier,
            carrier_call_id=carrier_call_id,
            callee=mask_number(request.to),
            machine_detection=detection.value,
        )
        return placed

    def _why_unavailable(self, carrier: str) -> str:
        if carrier in self._unavailable:
            return self._unavailable[carrier]
        if carrier not in self.settings.carrier_list:
            return f"calls are placed through {carrier}, which this bridge does not serve (see CARRIERS)"
        supported = ", ".join(sorted(self._routes)) or "none configured"
        return f"placing calls through {carrier} is not supported (through: {supported})"

    def _default_caller_id(self, carrier: str) -> str:
        if carrier == "twilio" and self.settings.twilio_from_number:
            return self.settings.twilio_from_number
        return DEMO_CALLER_ID if self.settings.simulated_callee else ""

    def _reserve(self, call_id: str) -> None:
        ringing = self.settings.outbound_ring_timeout + RESERVATION_MARGIN_S
        self._reserved[call_id] = asyncio.get_running_loop().time() + ringing

    # -- the answer and the stream ------------------------------------------------------------------

    async def answering(self, token: str, carrier_call_id: str) -> PlacedCall | None:
        """The carrier asks for the answer to a call we placed: the call (its answer is bound to
        `carrier_call_id` from now on), or None if the token names none of ours."""
        call_id = self.tokens.call_id(token)
        if call_id is None or not carrier_call_id:
            return None
        row = await self.store.bind_answer(call_id, carrier_call_id)
        if row is None:
            return None
        self._reserved.pop(call_id, None)  # its stream counts from now on, as every call's does
        placed = self._placed_call(row)
        self._answered[call_id] = placed
        while len(self._answered) > ANSWERED_KEPT:
            self._answered.popitem(last=False)
        return placed

    async def for_stream(self, call_id: str, carrier_call_id: str) -> PlacedCall | None:
        """The placed call a media stream says it carries, if the carrier's call is the one that
        fetched its answer; None otherwise."""
        placed = self._answered.pop(call_id, None)
        if placed is None:
            row = await self.store.get(call_id)  # the answer was fetched through another replica
            placed = self._placed_call(row) if row is not None else None
        if placed is None or placed.carrier_call_id != carrier_call_id:
            return None
        return placed

    def _placed_call(self, row: dict[str, Any]) -> PlacedCall:
        wanted = row.get("outbound_request") or {}
        detection = MachineDetection(wanted.get("machine_detection", MachineDetection.OFF))
        plan = None
        if detection is not MachineDetection.OFF:
            wait_ms = self.settings.outbound_answer_wait * 1000
            plan = DetectionPlan(detection, wanted.get("voicemail_message", ""), wait_ms=wait_ms)
        config = self.base_config.for_placed_call(
            instructions=wanted.get("instructions", ""), greeting=wanted.get("greeting"), detection=plan
        )
        return PlacedCall(
            call_id=row["call_id"],
            carrier=row["carrier"],
            to=row["to_number"],
            from_=row["from_number"],
            carrier_call_id=row["call_sid"],
            config=config,
            metadata=row.get("metadata") or {},
            callback_url=wanted.get("callback_url", ""),
        )

    # -- the carrier's word -------------------------------------------------------------------------

    async def progress(self, call_id: str, progress: CallProgress) -> bool:
        """Record a carrier callback about a placed call; False if there is no such call."""
        verdict = progress.verdict
        result = await self.store.progress(
            call_id,
            progress.event(),
            status=progress.status,
            answered_by=verdict.answered_by.value if verdict is not None else None,
            message_end=verdict.message_end if verdict is not None else None,
            end_reason=NEVER_CONNECTED.get(progress.status or ""),
        )
        if result is None:
            return False
        row, changes = result
        if progress.status in FINAL_STATUSES:
            self._reserved.pop(call_id, None)
        if verdict is not None and (waiter := self._waiters.get(call_id)) is not None:
            waiter.set()  # the call is here: it hears at once
        log.info(
            "call progress",
            call_id=call_id,
            carrier_status=progress.carrier_status,
            status=row["outbound_status"],
            answered_by=row["answered_by"],
        )
        wanted = row.get("outbound_request") or {}
        if changes and wanted.get("callback_url"):
            placed = self._placed_call(row)
            reported = {"status": progress.status or row["outbound_status"], **_carrier_detail(progress)}
            if progress.status == COMPLETED and row["stream_sid"] and row["status"] == "in_progress":
                # The stream's owner is writing how the call ended: let the event carry it.
                asyncio.get_running_loop().create_task(self._send_when_ended(placed, reported))
            else:
                self._send_event(placed, reported, row)
        return True

    async def verdict(self, call_id: str, seen: Verdict | None = None) -> Verdict:
        """Who answered (after `seen`: the next word, such as a machine's message end), as soon as the
        call log has it. Waits as long as it takes: the call's own rules decide when to stop waiting."""
        waiter = self._waiters[call_id] = asyncio.Event()
        outage_logged = False
        try:
            while True:
                waiter.clear()
                try:
                    answered_by, message_end = await self.store.verdict(call_id)
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    if not outage_logged:
                        log.warning("verdict not readable: the call log is unavailable", call_id=call_id)
                        outage_logged = True
                    answered_by, message_end = None, None
                if answered_by is not None:
                    try:
                        verdict = Verdict(AnsweredBy(answered_by), message_end or "")
                    except ValueError:
                        verdict = Verdict(AnsweredBy.UNKNOWN)
                    if verdict != seen:
                        return verdict
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(VERDICT_POLL_S):
                        await waiter.wait()
        finally:
            if self._waiters.get(call_id) is waiter:
                del self._waiters[call_id]

    # -- status events ------------------------------------------------------------------------------

    async def _send_when_ended(self, placed: PlacedCall, reported: dict[str, Any]) -> None:
        row = None
        deadline = asyncio.get_running_loop().time() + END_REASON_WAIT_S
        with contextlib.suppress(Exception):  # an event without its end reason beats none
            for _ in range(int(END_REASON_WAIT_S / 0.25)):
                row = await self.store.get(placed.call_id)
                if row is None or row["status"] == "ended" or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.25)
        self._send_event(placed, reported, row)

    def _send_event(
        self, placed: PlacedCall, reported: dict[str, Any], row: dict[str, Any] | None = None
    ) -> None:
        if not placed.callback_url:
            return
        event = {
            "call_id": placed.call_id,
            "to": placed.to,
            "from": placed.from_,
            "carrier": placed.carrier,
            "carrier_call_id": placed.carrier_call_id,
            "answered_by": row["answered_by"] if row else None,
            "message_end": row["message_end"] if row else None,
            "end_reason": row["end_reason"] if row else None,
            "metadata": placed.metadata,
            "at": datetime.now(UTC).isoformat(),
            **reported,
        }
        self.events.send(placed.callback_url, event)


def _url(base: str, path: str, token: str) -> str:
    return f"{base.rstrip('/')}{path}?{PLACED_CALL_QUERY}={token}"


def _carrier_detail(progress: CallProgress) -> dict[str, Any]:
    """What a status event repeats of the carrier's own words."""
    return {"carrier_status": progress.carrier_status, **progress.detail}
