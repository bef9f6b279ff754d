"""What every call of this server shares (the `Bridge`); bridge.server assembles the app around it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bridge.audio import pcm16_to_ulaw
from bridge.awaited_streams import AwaitedStreams, UnconnectedCall
from bridge.call_config import CallConfig, UpstreamApi
from bridge.call_log_sink import CallLogSink, NoCallLog
from bridge.call_registry import CallRegistry
from bridge.calllog import CallStore
from bridge.calllog.health import CallLogHealth
from bridge.calllog.owners import CallOwners
from bridge.carrier.events import CallStarted
from bridge.carrier.stream_tokens import StreamTokens
from bridge.config import Settings
from bridge.logs import get_logger, mask_number
from bridge.metrics import BridgeMetrics
from bridge.outbound.calls import OutboundCalls
from bridge.pump import StreamContext
from bridge.recording import Recordings
from bridge.session_pool import PreparedSessions
from bridge.stop_budget import StopClock
from bridge.tools.toolbox import Toolbox
from bridge.upstream import UpstreamSession, open_session_with_retry
from bridge.wavfile import read_wav_mono

log = get_logger("bridge.server")

BRIDGE_KEY: web.AppKey[Bridge] = web.AppKey("bridge")
APOLOGY_WAV = Path(__file__).parent / "assets" / "apology.wav"
FAILED_CALLS_REMEMBERED = 1000
ALONE_CHECK_TIMEOUT_S = 1.0  # the webhook's question "does any other process share the call log?"


@dataclass
class Bridge:
    """Resources every call shares, created at start-up."""

    settings: Settings
    admin_token: str = ""
    call_log: CallLogSink = field(default_factory=NoCallLog)
    store: CallStore | None = None
    recordings: Recordings | None = None  # None without a call log to report to
    call_log_health: CallLogHealth | None = None  # with `store`: is its database answering
    owners: CallOwners | None = None  # with `store`: who carries each call, seen by every process
    metrics: BridgeMetrics = field(default_factory=BridgeMetrics)
    failed_calls: OrderedDict[str, str] = field(default_factory=OrderedDict)  # call sid -> why
    stream_tokens: StreamTokens = field(default_factory=StreamTokens)  # bind a stream to its webhook
    toolbox: Toolbox = field(default_factory=Toolbox)
    upstream_url: str = ""  # where Realtime sessions are opened: REALTIME_URL, or the in-process emulator
    live_url: str = ""  # where Live sessions are opened: LIVE_URL, or the in-process emulator
    prepared: PreparedSessions = field(default_factory=PreparedSessions)
    awaited: AwaitedStreams = field(init=False)  # answered webhooks whose stream has not started
    active_calls: CallRegistry = field(default_factory=CallRegistry)
    outbound: OutboundCalls | None = None  # calls we place; None without a call log to follow them in
    ready: bool = False
    draining: bool = False
    stop: StopClock | None = None  # from the first stop signal: the deadlines of the stop

    def __post_init__(self) -> None:
        self.upstream_url = self.upstream_url or self.settings.realtime_url
        self.live_url = self.live_url or self.settings.live_url
        if self.owners is not None:
            self.prepared.claimed_elsewhere = self.owners.claimed_elsewhere
        # One key for every carrier's stream tokens; replicas agree when it comes from the settings.
        secret = self.settings.stream_token_secret
        if secret is not None and secret.get_secret_value():
            self.stream_tokens = StreamTokens.from_auth_token(secret.get_secret_value())
        elif self.twilio_token:
            self.stream_tokens = StreamTokens.from_auth_token(self.twilio_token)
        else:
            self.stream_tokens = StreamTokens()
        self.apology = pcm16_to_ulaw(read_wav_mono(self.settings.fallback_audio or APOLOGY_WAV, 8000))
        self.call_config = CallConfig.from_settings(self.settings, self.toolbox.definitions())
        # As long as the prepared session waits for the stream: then the call never connected.
        self.awaited = AwaitedStreams(self._never_connected, ttl_s=self.prepared.ttl_s)

    def _never_connected(self, unconnected: UnconnectedCall) -> None:
        call = unconnected.call
        log.warning(
            "the call's media stream never connected",
            call_sid=call.call_id,
            carrier=unconnected.carrier,
            caller=mask_number(call.caller),
            waited_s=round((unconnected.noticed_at - unconnected.answered_at).total_seconds(), 1),
        )
        self.call_log.call_never_connected(
            call_id=call.call_id,
            carrier=unconnected.carrier,
            from_number=call.caller,
            to_number=call.callee,
            direction=call.direction,
            model=self.call_config.model,
            voice=self.call_config.session.voice,
            answered_at=unconnected.answered_at,
            noticed_at=unconnected.noticed_at,
        )

    async def claim_prepared(self, call_sid: str) -> UpstreamSession | None:
        """The call's stream started: it is no longer awaited, and takes its prepared session if any."""
        self.awaited.started(call_sid)
        return await self.prepared.claim(call_sid)

    async def open_upstream(
        self, since: float | None = None, api: UpstreamApi = "realtime"
    ) -> UpstreamSession:
        """A session on `api`, tried for the connect budget counted from `since` (default now)."""
        url = self.live_url if api == "live" else self.upstream_url
        return await open_session_with_retry(self.settings, url, since, api)

    def stream_failed(self, call_sid: str, reason: str) -> None:
        """Remember that we failed this call, for the `<Connect action>` request that follows."""
        self.failed_calls[call_sid] = reason
        while len(self.failed_calls) > FAILED_CALLS_REMEMBERED:
            self.failed_calls.popitem(last=False)

    def fallback_after_stream(self, call_sid: str) -> str:
        """Once a stream ended with the call still up: the number to send the caller to if we failed
        the call (and one is configured), else ""."""
        failed = self.failed_calls.pop(call_sid, None)
        fallback = self.settings.fallback_number if failed else ""
        if fallback:
            log.warning("call sent to the fallback number", call_sid=call_sid, reason=failed)
        return fallback

    async def open_prepared(
        self, config: CallConfig | None = None, api: UpstreamApi = "realtime"
    ) -> UpstreamSession:
        """A session for a call whose webhook is being answered. A Realtime one is configured for it
        (`config`: a call we placed brings its own), and its greeting asked for when the stream is
        sure to claim it here (`greets_ahead`); otherwise the process that admits the stream asks for
        it, so each call is greeted exactly once. A placed call waiting to hear who answered asks for
        it then. A Live one is only connected: it starts with its call (`LiveCall`)."""
        config = config or self.call_config
        if api == "live":
            return await self.open_upstream(api=api)
        greet = asyncio.ensure_future(self.greets_ahead())
        try:
            session = await self.open_upstream()
        except BaseException:
            greet.cancel()
            raise
        try:
            prefetch = await greet and config.greets_at_once
            for event in config.opening_events(session.codec, greet=prefetch):
                await session.socket.send(session.codec.encode(event))
        except BaseException:
            # Dropped while it was being configured (its stream started elsewhere), or it failed.
            with contextlib.suppress(Exception):
                await session.socket.close()
            raise
        session.configured, session.greeted = True, prefetch
        return session

    async def greets_ahead(self) -> bool:
        """PREFETCH_GREETING: true, false, or (auto) while this process is the only one sharing the
        call log. A new process claims its lease before it listens, so a stream cannot reach a
        sibling this check has not seen. When the database cannot say, the answer is no: a greeting
        made for a stream that lands elsewhere is paid for and never heard."""
        mode = self.settings.prefetch_greeting
        if mode != "auto":
            return bool(mode)
        if self.settings.worker_count > 1:
            return False
        if self.owners is None:
            return True  # no shared call log: nothing else can take this call's stream
        try:
            async with asyncio.timeout(ALONE_CHECK_TIMEOUT_S):
                return await self.owners.others_alive() == 0
        except Exception as exc:
            log.warning(
                "greeting not prefetched: the call log cannot say if other processes run", error=repr(exc)
            )
            return False

    @property
    def twilio_token(self) -> str:
        token = self.settings.twilio_auth_token
        return token.get_secret_value() if token is not None else ""

    def shared_key(self, purpose: bytes) -> bytes:
        """A key for `purpose` that every replica derives alike from a secret they share
        (STREAM_TOKEN_SECRET, else TWILIO_AUTH_TOKEN, else the admin token), never the secret itself."""
        settings = self.settings
        secret = settings.stream_token_secret.get_secret_value() if settings.stream_token_secret else ""
        base = secret or self.twilio_token or self.admin_token
        if not base:
            return secrets.token_bytes(32)  # no server: nothing to share
        return hmac.new(base.encode(), purpose, hashlib.sha256).digest()

    def stream_context(self, authorize: Callable[[CallStarted], bool] | None) -> StreamContext:
        """What a media stream's call needs; `authorize` checks its start (None: trusted already)."""
        return StreamContext(
            call_config=self.call_config,
            open_upstream=self.open_upstream,
            claim_prepared=self.claim_prepared,
            call_log=self.call_log,
            active_calls=self.active_calls,
            metrics=self.metrics,
            apology=self.apology,
            stream_failed=self.stream_failed,
            authorize=authorize,
            tools=self.toolbox,
            placed_calls=self.outbound,
            recordings=self.recordings,
        )

    def turned_away(self, call_id: str, carrier: str) -> bool:
        """A new call must be refused (draining or full); logged here, answered by the carrier's route."""
        if not (self.draining or self.at_capacity):
            return False
        log.warning(
            "call turned away",
            call_sid=call_id,
            carrier=carrier,
            draining=self.draining,
            active_calls=len(self.active_calls),
        )
        return True

    @property
    def at_capacity(self) -> bool:
        # Calls whose webhook was answered count too: their media streams are on the way (a stream that
        # started holds its prepared session until its call is on record: it counts once); and so do
        # calls this process placed, until their answer comes.
        prepared, active = self.prepared, self.active_calls
        arriving = len(prepared) - sum(1 for call_id in active if call_id in prepared)
        placed = self.outbound.reserved if self.outbound is not None else 0
        return len(active) + arriving + placed >= self.settings.max_calls

    def begin_stop(self, *, at_once: bool = False) -> StopClock:
        """The stop's deadlines (bridge.stop_budget), set by the first call: a signal's, or the
        server's shutdown (`at_once`: no drain, no goodbyes) when it stops without one."""
        if self.stop is None:
            self.stop = StopClock(self.settings.shutdown_budget, self.settings.drain_seconds)
            if at_once:
                self.stop.hurry()
        return self.stop

    async def drain(self) -> None:
        """Take no new calls; let calls in progress go on for DRAIN_SECONDS, then say goodbye, within
        the stop's budget (the calls still up after that are ended by the server's shutdown)."""
        clock = self.begin_stop()
        self.draining = True
        log.warning(
            "draining: new calls are turned away",
            active_calls=len(self.active_calls),
            drain_seconds=self.settings.drain_seconds,
            stop_budget_s=self.settings.shutdown_budget,
        )
        await self.active_calls.wait_empty(clock.drain_left())
        for pump in list(self.active_calls.values()):
            pump.say_goodbye("shutdown")
        await self.active_calls.wait_empty(clock.goodbye_left())
