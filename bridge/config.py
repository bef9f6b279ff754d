"""The one settings object, read from the environment at start-up and passed down explicitly.

No other module reads `os.environ`. Every bad value fails start-up with one clear line per problem.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.call_config import LIVE_LEAD_MS, UPSTREAM_APIS, UpstreamApi
from bridge.carrier.registry import CARRIERS
from bridge.phone_numbers import valid_e164
from bridge.stop_budget import DEFAULT_GOODBYE_S, FINAL_S, MIN_GOODBYE_S

# The caller's words in the call log, by default: OpenAI's small transcription model, about $0.003 a
# minute of caller speech (README, "Configuration", gives the sources).
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
TRANSCRIPTION_OFF = ("", "off", "none")

MAX_NOTICE_S = 30  # RECORDING_NOTICE: a notice, not a message on hold
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
# The Live API's built-in voices (openai.types.live.BuiltInVoice, docs/protocols.md §L2).
LIVE_VOICES = (
    "alloy", "ash", "ballad", "beacon", "bossa", "cedar", "cinder", "coral", "delta", "echo", "gleam",
    "marin", "meridian", "quartz", "ripple", "sage", "shida", "shimmer", "stone", "tempo", "verse",
    "vesper", "willow",
)  # fmt: skip
ROUTES_EXAMPLE = '{"+14155550123": "live"}'
DEMO_BACKEND_MODEL = "emulated-backend"  # demo mode's Live calls delegate to the emulator's backend

# docs/protocols.md §R2: the models the openai SDK (3.63) marks deprecated, with their announced
# shutdown dates. tests/test_config.py checks this against the installed SDK.
DEPRECATED_MODELS = {
    "gpt-realtime": "2027-01-20",
    "gpt-realtime-2025-08-28": "2027-01-20",
    "gpt-realtime-mini": "2027-01-20",
    "gpt-realtime-mini-2025-12-15": "2027-01-20",
    "gpt-audio-mini": "2027-01-20",
    "gpt-audio-mini-2025-12-15": "2027-01-20",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Upstream Realtime service
    openai_api_key: SecretStr | None = None
    realtime_url: str = "wss://api.openai.com/v1/realtime"
    realtime_model: str = "gpt-realtime-2.1"
    realtime_dialect: Literal["ga", "beta"] = "ga"
    realtime_voice: str = "marin"
    realtime_instructions: str = (
        "You are a helpful, friendly voice assistant on a phone call. Keep answers short and natural."
    )
    realtime_instructions_file: Path | None = None
    realtime_prompt_id: str | None = None
    realtime_prompt_version: str | None = None
    realtime_prompt_variables: Annotated[dict[str, Any] | None, NoDecode] = None
    realtime_connect_timeout: float = Field(default=5.0, gt=0)

    # Which voice API answers a call (README, "Realtime or Live"), and the Live API's session
    upstream_api: UpstreamApi = "realtime"
    upstream_api_by_number: Annotated[dict[str, UpstreamApi] | None, NoDecode] = None  # {"+1555...": "live"}
    live_url: str = "wss://api.openai.com/v1/live/sessions"
    live_model: str = "gpt-live-1"
    live_voice: str = "marin"
    live_instructions: str = ""  # empty: REALTIME_INSTRUCTIONS
    live_instructions_file: Path | None = None
    live_delegation: Literal["auto", "client", "responses"] = "auto"  # auto: responses when tools exist
    live_backend_model: str = ""  # the Responses model tools run on; required for tools on Live calls
    live_backend_instructions: str = ""
    live_backend_instructions_file: Path | None = None
    live_reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    live_lead_ms: int = Field(default=LIVE_LEAD_MS, ge=0, le=1000)  # measured: bench/live_lead.py

    # Turn taking
    turn_detection: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    vad_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    vad_prefix_padding_ms: int = Field(default=300, ge=0)
    vad_silence_duration_ms: int = Field(default=500, ge=0)
    vad_eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    vad_interrupt_response: bool = True
    # Unset: DEFAULT_TRANSCRIPTION_MODEL (off on Azure, which needs a deployment's name); off / none: off.
    input_transcription_model: str | None = None
    noise_reduction: Literal["near_field", "far_field", "off"] = "near_field"
    greeting: str = ""
    tools_file: Path | None = None  # HTTP webhook tools (JSON or YAML); see README
    response_mode: Literal["auto", "manual"] = "auto"  # manual: BEFORE_RESPONSE_URL sees each turn first
    before_response_url: str = ""
    post_call_summary: bool = True  # ask the model for a summary once the caller has gone
    dispositions: str = "resolved,follow_up_needed,transferred,escalated,unresolved,spam"
    end_call_tool: bool = True  # the assistant may end the call (after its goodbye was heard)
    transfer_number: str = ""  # enables transfer_call; the default destination (E.164)
    transfer_allowlist: str = ""  # other numbers transfer_call may dial, comma-separated
    twilio_api_base: str = ""  # Twilio REST base URL override (a stand-in); empty = api.twilio.com
    tools_secret: SecretStr | None = None  # signs every tool request (X-Bridge-Signature)
    # Ask for the greeting while the webhook is answered: auto = only while this process is the only
    # one sharing the call log (bridge.session_pool), so no greeting is made where no stream arrives.
    prefetch_greeting: bool | Literal["auto"] = "auto"

    # HTTP server
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = ""
    http_request_timeout: float = Field(default=10.0, gt=0)  # seconds to send a whole request
    http_keepalive_timeout: float = Field(default=75.0, gt=0)  # idle seconds between two requests
    http_max_waiting_connections: int = Field(default=256, ge=1)  # beyond: the longest-waiting closes

    # Call log and admin access
    call_log_url: str = "sqlite+aiosqlite:///data/calls.db"
    call_log_retention_days: int = Field(default=90, ge=0)
    call_log_prices: str = ""  # JSON price table, or a path to one; empty = built-in estimates
    admin_token: SecretStr | None = None
    operator_tokens: SecretStr | None = None  # "alice:<token>,bob:<token>": operators besides the admin

    # Call recordings (see README, "Recordings")
    recording: Literal["off", "all", "requested"] = "off"
    recording_dir: Path | None = None  # default: "recordings" beside the SQLite file, else data/recordings
    recording_url: str = ""  # s3://bucket/prefix: store there instead of RECORDING_DIR
    recording_endpoint_url: str = ""  # an S3-compatible service; empty: AWS (or AWS_ENDPOINT_URL_S3)
    # A WAV the bridge plays to the caller before anything else on a recorded call (README, "Recordings")
    recording_notice: Path | None = None

    # Carriers: which media-stream endpoints are mounted, and each one's credentials
    carriers: str = "twilio"  # comma-separated names from bridge.carrier.registry.CARRIERS
    stream_token_secret: SecretStr | None = None  # keys one-time stream tokens; shared by replicas
    twilio_auth_token: SecretStr | None = None
    twilio_account_sid: str = ""  # places calls (REST); unset outside production: the simulated callee
    twilio_from_number: str = ""  # the caller id of calls we place when the request names none
    signalwire_signing_key: SecretStr | None = None
    telnyx_public_key: str = ""  # base64 Ed25519 key from the Telnyx portal (webhook signatures)
    telnyx_api_key: SecretStr | None = None  # Call Control REST (transfer)
    telnyx_api_base: str = ""  # Telnyx REST base URL override (a stand-in); empty = api.telnyx.com
    plivo_auth_id: str = ""
    plivo_auth_token: SecretStr | None = None
    plivo_api_base: str = ""  # Plivo REST base URL override (a stand-in); empty = api.plivo.com
    vonage_signature_secret: SecretStr | None = None  # signed webhooks (JWT, HS256)

    # Calls we place (POST /api/calls, `bridge call`; see README "Place a call")
    outbound_carrier: str = "twilio"  # the carrier that places them (its routes must be served: CARRIERS)
    outbound_max_concurrent: int = Field(default=10, ge=1)  # placed calls in progress, all replicas
    outbound_calls_per_minute: int = Field(default=30, ge=1)  # placements in any minute, all replicas
    outbound_allowed_prefixes: str = ""  # comma-separated E.164 prefixes calls may go to; empty: any
    outbound_machine_detection: Literal["off", "hang_up", "leave_message"] = "leave_message"
    outbound_answer_wait: float = Field(default=5.0, gt=0, le=60)  # seconds to wait for the verdict
    outbound_ring_timeout: int = Field(default=30, ge=5, le=600)  # seconds it rings before no_answer

    # Direct SIP (off unless SIP_LISTEN is set)
    sip_listen: str = ""  # host:port for SIP over UDP, e.g. 0.0.0.0:5060
    sip_public_address: str = ""  # the address put in Contact and SDP; default: the listen host
    rtp_port_range: str = "10000-10999"
    sip_username: str = ""  # digest authentication; with no username, SIP_ALLOWED_IPS must admit the peer
    sip_password: SecretStr | None = None
    sip_realm: str = "bridge"
    sip_allowed_ips: str = ""  # comma-separated addresses or CIDR blocks allowed without a password

    # Limits and lifecycle
    bridge_env: Literal["development", "production"] = "development"
    max_calls: int = Field(default=50, ge=1)  # per worker: the measured sweep, README "Capacity"
    max_call_seconds: int = Field(default=3600, ge=0)  # 0 = no limit
    drain_seconds: int = Field(default=30, ge=0)
    # SIGTERM to exit, at most: the drain, the goodbyes, ending calls and writing the call log.
    # None: DRAIN_SECONDS + 15 (bridge.stop_budget).
    shutdown_budget_seconds: float | None = Field(default=None, gt=0)
    fallback_number: str = ""
    fallback_audio: Path | None = None  # WAV heard when the model cannot be reached; default: shipped
    audio_passthrough: bool = False
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0 = /metrics on PORT, behind ADMIN_TOKEN

    # Processes: workers on this host, and this process among the replicas sharing the call log
    workers: int | Literal["auto"] = 1  # processes sharing PORT; auto = one per core this process may use
    replica_id: str = Field(default="", max_length=100)  # default: hostname:PORT; a worker adds /w<index>
    # Where sibling processes reach this one's internal listener: default http://POD_IP-or-host:INTERNAL_PORT
    internal_url: str = ""
    pod_ip: str = ""  # Kubernetes Downward API (status.podIP): the default host of INTERNAL_URL
    internal_port: int = Field(default=0, ge=0, le=65535)  # worker i listens on INTERNAL_PORT+i; 0 = any
    # Signs the requests processes forward to one another (bridge.cluster_auth); default: from ADMIN_TOKEN
    cluster_secret: SecretStr | None = None
    lease_seconds: float = Field(default=15.0, gt=0)  # a replica silent this long has its calls closed
    lease_renew_seconds: float = Field(default=5.0, gt=0)  # heartbeat, and how often orphans are looked for

    # Logs
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("carriers")
    @classmethod
    def _carriers(cls, value: str) -> str:
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in CARRIERS]
        if unknown:
            raise ValueError(f"unknown carrier {', '.join(unknown)}; known: {', '.join(CARRIERS)}")
        return ",".join(names)

    @field_validator("rtp_port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.strip().isdigit() and high.strip().isdigit()):
            raise ValueError("must be two ports like 10000-10999")
        lo, hi = int(low), int(high)
        if not (1024 <= lo < hi <= 65535) or lo % 2:
            raise ValueError("must be an even first port from 1024 up, below the last port, at most 65535")
        return f"{lo}-{hi}"

    @field_validator("sip_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("must be host:port, e.g. 0.0.0.0:5060")
        return value

    @field_validator("prefetch_greeting", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: object) -> object:
        if isinstance(value, str):
            word = value.strip().lower()
            if word == "auto":
                return "auto"
            if word in ("true", "1", "yes", "on"):
                return True
            if word in ("false", "0", "no", "off"):
                return False
            raise ValueError("must be auto, true or false")
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value != "auto" and not value.isdigit():
                raise ValueError("must be a number of processes (1 or more) or auto")
        return value

    @field_validator("workers")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a number of processes (1 or more) or auto")
        return value

    @field_validator("internal_url")
    @classmethod
    def _internal_url(cls, value: str) -> str:
        if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
            raise ValueError("must be the http(s) base URL sibling replicas reach this one at")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _processes(self) -> Settings:
        if self.worker_count > 1 and self.port == 0:
            raise ValueError("PORT must be a fixed port when WORKERS is above 1: they share it")
        if self.lease_seconds < 2 * self.lease_renew_seconds:
            # One late heartbeat must not let the siblings close this replica's live calls.
            raise ValueError("LEASE_SECONDS must be at least twice LEASE_RENEW_SECONDS")
        if self.internal_port and self.internal_port + self.worker_count - 1 > 65535:
            raise ValueError("INTERNAL_PORT leaves no room for a port per worker below 65536")
        if self.internal_port and self.internal_port <= self.port < self.internal_port + self.worker_count:
            raise ValueError(
                "INTERNAL_PORT must differ from PORT: the internal listener is a port of its own"
            )
        if self.internal_url and self.worker_count == 1 and not self.internal_port:
            # The URL is advertised as given, so the listener must be on a port known in advance.
            raise ValueError("INTERNAL_URL needs INTERNAL_PORT, the port it reaches this process on")
        least = self.drain_seconds + MIN_GOODBYE_S + FINAL_S
        if self.shutdown_budget_seconds is not None and self.shutdown_budget_seconds < least:
            raise ValueError(
                f"SHUTDOWN_BUDGET_SECONDS must be at least DRAIN_SECONDS + {MIN_GOODBYE_S + FINAL_S:g} "
                f"({MIN_GOODBYE_S:g} s for the goodbyes, {FINAL_S:g} s to end the calls and write "
                "the call log)"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("realtime_voice")
    @classmethod
    def _voice(cls, value: str) -> str:
        # Custom voices are referenced by id ("voice_..."); built-in ones by name.
        if value not in VOICES and not value.startswith("voice_"):
            raise ValueError(f"must be one of {', '.join(VOICES)} or a custom voice id (voice_...)")
        return value

    @field_validator("live_voice")
    @classmethod
    def _live_voice(cls, value: str) -> str:
        if value not in LIVE_VOICES and not value.startswith("voice_"):
            raise ValueError(f"must be one of {', '.join(LIVE_VOICES)} or a custom voice id (voice_...)")
        return value

    @field_validator("upstream_api", "live_delegation", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("upstream_api_by_number", mode="before")
    @classmethod
    def _number_routes(cls, value: object) -> object:
        value = json_object(value, f"a JSON object like {ROUTES_EXAMPLE}")
        if value is None:
            return None
        routes = {}
        for number, api in value.items():
            name = str(api).strip().lower() if isinstance(api, str) else api
            if name not in UPSTREAM_APIS:
                raise ValueError(f"{number}: must be realtime or live, not {api!r}")
            if not str(number).strip():
                raise ValueError("a number must not be empty")
            routes[str(number).strip()] = name
        return routes

    @field_validator("realtime_url", "live_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be the http(s) base URL the carrier reaches this server at")
        return value.rstrip("/")

    @field_validator("outbound_carrier")
    @classmethod
    def _outbound_carrier(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in CARRIERS:
            raise ValueError(f"unknown carrier {value}; known: {', '.join(CARRIERS)}")
        return value

    @field_validator("outbound_allowed_prefixes")
    @classmethod
    def _prefixes(cls, value: str) -> str:
        prefixes = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.startswith("+") and p[1:].isdigit() and 1 < len(p) <= 16 for p in prefixes):
            raise ValueError("must be E.164 prefixes like +1,+4420 (a + and digits, comma-separated)")
        return ",".join(prefixes)

    @field_validator("transfer_number", "fallback_number", "transfer_allowlist", "twilio_from_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not all(valid_e164(n.strip()) for n in value.split(",") if n.strip()):
            raise ValueError("must be E.164 numbers like +14155550123 (comma-separated for a list)")
        return value

    @model_validator(mode="after")
    def _manual_needs_a_hook(self) -> Settings:
        if self.response_mode == "manual" and urlsplit(self.before_response_url).scheme not in (
            "http",
            "https",
        ):
            raise ValueError("RESPONSE_MODE=manual needs BEFORE_RESPONSE_URL, an http(s) URL")
        return self

    @field_validator("fallback_audio")
    @classmethod
    def _wav_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"is not a file: {value}")
        return value

    @field_validator("recording_notice", mode="before")
    @classmethod
    def _notice_wav(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if value is None:
            return None
        path = Path(str(value)).expanduser()
        if not path.is_file():
            raise ValueError(
                f"must be the path of a WAV file, not {str(value)[:60]!r}: the notice is played as recorded "
                "audio, the same words every time (make one with any text-to-speech; README, 'Recordings')"
            )
        from bridge.wavfile import read_wav_mono

        seconds = len(read_wav_mono(path, 8000)) / 16000  # ValueError says what is wrong with the file
        if not 0 < seconds <= MAX_NOTICE_S:
            raise ValueError(f"{path} lasts {seconds:.1f} s: a notice must last at most {MAX_NOTICE_S} s")
        return path

    @field_validator("call_log_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("recording_url")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        from bridge.recording.archive import parse_s3_url

        if value:
            parse_s3_url(value)
        return value.rstrip("/")

    @field_validator("recording_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str) -> str:
        if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
            raise ValueError(
                "must be the http(s) URL of the S3-compatible service, e.g. https://s3.example.com"
            )
        return value

    @field_validator("recording", mode="before")
    @classmethod
    def _lower_mode(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("call_log_prices")
    @classmethod
    def _prices(cls, value: str) -> str:
        from bridge.calllog.pricing import PriceTable

        try:
            PriceTable.from_setting(value)
        except (OSError, ValueError) as exc:
            raise ValueError(f"is not a usable price table: {exc}") from None
        return value

    @field_validator("realtime_prompt_variables", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        return json_object(value)

    @model_validator(mode="after")
    def _instructions_file(self) -> Settings:
        if self.realtime_instructions_file is not None:
            path = self.realtime_instructions_file
            try:
                self.realtime_instructions = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"REALTIME_INSTRUCTIONS_FILE: cannot read {path}: {exc.strerror}") from None
        return self

    @field_validator("operator_tokens")
    @classmethod
    def _operator_tokens(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        from bridge.calllog.auth import parse_operator_tokens

        if value is not None:
            admin = info.data.get("admin_token")
            # The messages name entries and labels, never a token.
            parse_operator_tokens(value.get_secret_value(), admin.get_secret_value() if admin else "")
        return value

    @model_validator(mode="after")
    def _live_files(self) -> Settings:
        for name in ("live_instructions", "live_backend_instructions"):
            path = getattr(self, f"{name}_file")
            if path is not None:
                try:
                    setattr(self, name, path.read_text(encoding="utf-8").strip())
                except OSError as exc:
                    raise ValueError(f"{name.upper()}_FILE: cannot read {path}: {exc.strerror}") from None
        return self

    @model_validator(mode="after")
    def _live_calls_can_run(self) -> Settings:
        """Calls routed to Live (UPSTREAM_API, UPSTREAM_API_BY_NUMBER) must be able to run as configured;
        a webhook's `?upstream=live` on a configuration that cannot is answered by Realtime instead."""
        if self.live_routed and (problem := self.live_unavailable):
            raise ValueError(f"calls routed to Live ({self.live_routes}): {problem}")
        return self

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.bridge_env == "production":
            missing = [name for name, present in self.credentials_needed() if not present]
            if missing:
                raise ValueError(f"BRIDGE_ENV=production requires {' and '.join(missing)}")
        return self

    def credentials_needed(self) -> list[tuple[str, bool]]:
        """(setting, is it set) for each secret a production server must have with this configuration."""

        def has(value: SecretStr | str | None) -> bool:
            return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)

        signing_keys = (CARRIERS[name].signing_key for name in self.carrier_list)
        checks = [(setting.upper(), has(getattr(self, setting))) for setting in signing_keys]
        if self.sip_listen:
            checks.append(
                ("SIP_PASSWORD or SIP_ALLOWED_IPS", has(self.sip_password) or has(self.sip_allowed_ips))
            )
        if any(name != "twilio" for name in self.carrier_list):
            # Their stream tokens must verify on every replica: a random per-process key would not.
            shared = has(self.stream_token_secret) or has(self.twilio_auth_token)
            checks.append(("STREAM_TOKEN_SECRET", shared))
        checks.append(("ADMIN_TOKEN", has(self.admin_token)))
        return checks

    # Derived facts: computed, never configured twice.
    @property
    def demo_mode(self) -> bool:
        """No API key: relay to the in-process Realtime emulator instead of OpenAI."""
        return self.openai_api_key is None or not self.openai_api_key.get_secret_value()

    @property
    def shutdown_budget(self) -> float:
        """SIGTERM to exit, at most (SHUTDOWN_BUDGET_SECONDS, else DRAIN_SECONDS + 15)."""
        if self.shutdown_budget_seconds is not None:
            return self.shutdown_budget_seconds
        return self.drain_seconds + DEFAULT_GOODBYE_S + FINAL_S

    @property
    def operators(self) -> dict[str, str]:
        """OPERATOR_TOKENS as {label: token}: the operators besides the admin (ADMIN_TOKEN)."""
        from bridge.calllog.auth import parse_operator_tokens

        if self.operator_tokens is None:
            return {}
        return parse_operator_tokens(self.operator_tokens.get_secret_value())

    @property
    def transcription_model(self) -> str:
        """The caller's speech is transcribed with this model; "" when it is not."""
        value = self.input_transcription_model
        if value is None:
            return "" if self.is_azure else DEFAULT_TRANSCRIPTION_MODEL
        return "" if value.strip().lower() in TRANSCRIPTION_OFF else value.strip()

    @property
    def worker_count(self) -> int:
        """WORKERS as a number: `auto` is the cores this process may run on (taskset, cpusets)."""
        if self.workers != "auto":
            return int(self.workers)
        if hasattr(os, "sched_getaffinity"):
            return max(len(os.sched_getaffinity(0)), 1)
        return os.cpu_count() or 1

    @property
    def carrier_list(self) -> tuple[str, ...]:
        return tuple(n for n in self.carriers.split(",") if n)

    @property
    def rtp_ports(self) -> tuple[int, int]:
        low, high = self.rtp_port_range.split("-")
        return int(low), int(high)

    @property
    def allowed_prefixes(self) -> tuple[str, ...]:
        return tuple(p for p in self.outbound_allowed_prefixes.split(",") if p)

    @property
    def simulated_callee(self) -> bool:
        """Outside production, with no Twilio account to place calls through, calls we place go to
        the package's own simulated callee (bridge.sim), so placing one works on a fresh machine."""
        no_account = self.outbound_carrier == "twilio" and not self.twilio_account_sid
        return self.bridge_env != "production" and no_account

    @property
    def disposition_list(self) -> tuple[str, ...]:
        return tuple(d.strip() for d in self.dispositions.split(",") if d.strip())

    @property
    def transfer_numbers(self) -> tuple[str, ...]:
        """Every number transfer_call may dial, the default first."""
        listed = (n.strip() for n in self.transfer_allowlist.split(",") if n.strip())
        return tuple(dict.fromkeys(n for n in (self.transfer_number, *listed) if n))

    @property
    def data_directory(self) -> Path:
        """Where this bridge keeps its files: beside the SQLite call log, else data/ (PostgreSQL, or an
        in-memory SQLite)."""
        from sqlalchemy.engine import make_url

        url = make_url(self.call_log_url)
        database = url.database or ""
        on_disk = database not in ("", ":memory:") and url.query.get("mode") != "memory"
        if url.get_backend_name() == "sqlite" and on_disk:
            return Path(database.removeprefix("file:")).expanduser().parent
        return Path("data")

    @property
    def admin_token_file(self) -> Path:
        """Where a run without ADMIN_TOKEN keeps the token it made, readable by its user alone, so
        `bridge call` on the same machine finds it."""
        return self.data_directory / "admin-token"

    @property
    def recording_directory(self) -> Path:
        """RECORDING_DIR, or "recordings" beside the SQLite call log, or data/recordings (PostgreSQL,
        or an in-memory SQLite): where recordings go without RECORDING_URL, and where they are spooled."""
        if self.recording_dir is not None:
            return self.recording_dir
        return self.data_directory / "recordings"

    @property
    def is_azure(self) -> bool:
        return is_azure_url(self.realtime_url)

    @property
    def has_tools(self) -> bool:
        return self.end_call_tool or bool(self.transfer_numbers) or self.tools_file is not None

    @property
    def live_delegation_mode(self) -> Literal["client", "responses"]:
        if self.live_delegation != "auto":
            return self.live_delegation
        return "responses" if self.has_tools else "client"

    @property
    def live_backend(self) -> str:
        """LIVE_BACKEND_MODEL; in demo mode, when unset, the emulator's stand-in for one."""
        if not self.live_backend_model and self.demo_mode and self.live_delegation_mode == "responses":
            return DEMO_BACKEND_MODEL
        return self.live_backend_model

    @property
    def live_unavailable(self) -> str:
        """Why a Live call cannot run with these settings ("" when it can)."""
        if self.response_mode == "manual":
            return "RESPONSE_MODE=manual waits to ask for each answer; Live models take their own turns"
        if self.has_tools and self.live_delegation_mode == "client":
            return (
                "tools (END_CALL_TOOL, TRANSFER_NUMBER, TOOLS_FILE) run on a Responses backend on Live: "
                "LIVE_DELEGATION=client has none"
            )
        if self.live_delegation_mode == "responses" and not self.live_backend:
            return (
                "tools (END_CALL_TOOL, TRANSFER_NUMBER, TOOLS_FILE) run on a Responses backend on Live: "
                "set LIVE_BACKEND_MODEL (a Responses model, e.g. gpt-5-mini), or turn the tools off"
            )
        return ""

    @property
    def live_routed(self) -> bool:
        """Some calls are routed to Live by the settings (a webhook may still ask for it per call)."""
        return self.upstream_api == "live" or "live" in (self.upstream_api_by_number or {}).values()

    @property
    def live_routes(self) -> str:
        if self.upstream_api == "live":
            return "UPSTREAM_API=live"
        return "UPSTREAM_API_BY_NUMBER"

    @property
    def model_shutdown_date(self) -> str | None:
        return DEPRECATED_MODELS.get(self.realtime_model)


def json_object(value: object, what: str = "a JSON object") -> dict[str, Any] | None:
    """A setting holding a JSON object, as text (decoded here) or already decoded; empty: None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be {what} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be {what}")
    return value


def is_azure_url(url: str) -> bool:
    return (urlsplit(url).hostname or "").endswith(".openai.azure.com")


class ConfigError(Exception):
    """Start-up configuration is invalid; str() is one line per problem, naming the variable."""


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: the process environment)."""
    try:
        if env is None:
            return Settings()
        return _settings_from(env)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _settings_from(env: dict[str, str]) -> Settings:
    # pydantic-settings reads os.environ; for an explicit mapping feed the same names as init kwargs,
    # decoded the same way, so tests and the CLI share one path.
    fields = Settings.model_fields
    values = {name: env[name.upper()] for name in fields if name.upper() in env}
    return Settings.model_validate(values)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = "_".join(str(p) for p in err["loc"]).upper() or "settings"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            message = "must be " + message.removeprefix("Input should be ")
        lines.append(f"{where} {message}")
    return "\n".join(lines)


def admin_token_for(settings: Settings) -> str:
    """ADMIN_TOKEN, or one made for this run (once: the workers of a host share the one their
    supervisor made) and shown on the terminal."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    token = secrets.token_urlsafe(24)
    # Shown once, on the terminal, never through the logger: the operator needs it to sign in. Kept
    # for this user alone beside the call log (which holds every transcript anyway), for `bridge call`.
    path = settings.admin_token_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an earlier run keeps no wider mode
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        kept = f" (kept in {path} for `bridge call`)"
    except OSError:
        kept = ""
    print(
        f"ADMIN_TOKEN is not set; this run's admin token (call log at /calls, softphone at /phone): "
        f"{token}{kept}",
        file=sys.stderr,
        flush=True,
    )
    return token
