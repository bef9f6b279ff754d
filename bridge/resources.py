"""What every call of this server shares (the `Bridge`); bridge.server assembles the app around it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bridge.audio import pcm16_to_ulaw
from bridge.call_config import CallConfig
from bridge.call_log_sink import CallLogSink, NoCallLog
from bridge.call_registry import CallRegistry
from bridge.calllog import CallStore
from bridge.calllog.health import CallLogHealth
from bridge.carrier.events import CallStarted
from bridge.carrier.stream_tokens import StreamTokens
from bridge.config import Settings
from bridge.logs import get_logger
from bridge.metrics import BridgeMetrics
from bridge.pump import StreamContext
from bridge.recording import Recordings
from bridge.session_pool import PreparedSessions
from bridge.tools.toolbox import Toolbox
from bridge.upstream import UpstreamSession, open_session_with_retry
from bridge.wavfile import read_wav_mono

log = get_logger("bridge.server")

BRIDGE_KEY: web.AppKey[Bridge] = web.AppKey("bridge")
APOLOGY_WAV = Path(__file__).parent / "assets" / "apology.wav"
FAILED_CALLS_REMEMBERED = 1000


@dataclass
class Bridge:
    """Resources every call shares, created at start-up."""

    settings: Settings
    admin_token: str = ""
    call_log: CallLogSink = field(default_factory=NoCallLog)
    store: CallStore | None = None
    recordings: Recordings | None = None  # None without a call log to report to
    call_log_health: CallLogHealth | None = None  # with `store`: is its database answering
    metrics: BridgeMetrics = field(default_factory=BridgeMetrics)
    failed_calls: OrderedDict[str, str] = field(default_factory=OrderedDict)  # call sid -> why
    stream_tokens: StreamTokens = field(default_factory=StreamTokens)  # bind a stream to its webhook
    toolbox: Toolbox = field(default_factory=Toolbox)
    upstream_url: str = ""  # where sessions are opened: REALTIME_URL, or the in-process emulator
    prepared: PreparedSessions = field(default_factory=PreparedSessions)
    active_calls: CallRegistry = field(default_factory=CallRegistry)
    ready: bool = False
    draining: bool = False

    def __post_init__(self) -> None:
        self.upstream_url = self.upstream_url or self.settings.realtime_url
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

    async def open_upstream(self) -> UpstreamSession:
        return await open_session_with_retry(self.settings, self.upstream_url)

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

    async def open_prepared(self) -> UpstreamSession:
        session = await self.open_upstream()
        prefetch = self.settings.prefetch_greeting
        # Without the prefetch the greeting is asked for once a stream claims the session.
        for event in self.call_config.opening_events(session.codec, greet=prefetch):
            await session.socket.send(session.codec.encode(event).decode())
        session.configured, session.greeted = True, prefetch
        return session

    @property
    def twilio_token(self) -> str:
        token = self.settings.twilio_auth_token
        return token.get_secret_value() if token is not None else ""

    def stream_context(self, authorize: Callable[[CallStarted], bool] | None) -> StreamContext:
        """What a media stream's call needs; `authorize` checks its start (None: trusted already)."""
        return StreamContext(
            call_config=self.call_config,
            open_upstream=self.open_upstream,
            claim_prepared=self.prepared.claim,
            call_log=self.call_log,
            active_calls=self.active_calls,
            metrics=self.metrics,
            apology=self.apology,
            stream_failed=self.stream_failed,
            authorize=authorize,
            tools=self.toolbox,
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
        # Calls whose webhook was answered count too: their media streams are on the way.
        return len(self.active_calls) + len(self.prepared) >= self.settings.max_calls

    async def drain(self, goodbye_wait_s: float = 25.0) -> None:
        """Take no new calls; let calls in progress go on for DRAIN_SECONDS, then say goodbye."""
        self.draining = True
        log.warning(
            "draining: new calls are turned away",
            active_calls=len(self.active_calls),
            drain_seconds=self.settings.drain_seconds,
        )
        await self.active_calls.wait_empty(self.settings.drain_seconds)
        for pump in list(self.active_calls.values()):
            pump.say_goodbye("shutdown")
        await self.active_calls.wait_empty(goodbye_wait_s)
