"""The one path from the settings to a call: every setting a call uses arrives, none is half-added."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bridge.answer_detection import DetectionPlan, MachineDetection
from bridge.audio import L16_16K, L16_24K, PCMA_8K, PCMU_8K
from bridge.call_config import DEMO_GREETING, CallConfig, LiveConfig
from bridge.config import ConfigError, load_settings
from bridge.realtime.codec import SessionOptions

# A value other than CallConfig's and SessionOptions' defaults for every setting a call uses.
EVERYTHING = {
    "OPENAI_API_KEY": "sk-test",
    "REALTIME_MODEL": "gpt-realtime-mini",
    "REALTIME_VOICE": "cedar",
    "REALTIME_INSTRUCTIONS": "Be brief.",
    "REALTIME_PROMPT_ID": "pmpt_1",
    "REALTIME_PROMPT_VERSION": "3",
    "REALTIME_PROMPT_VARIABLES": '{"shop": "Acme"}',
    "TURN_DETECTION": "semantic_vad",
    "VAD_THRESHOLD": "0.7",
    "VAD_PREFIX_PADDING_MS": "200",
    "VAD_SILENCE_DURATION_MS": "700",
    "VAD_EAGERNESS": "high",
    "VAD_INTERRUPT_RESPONSE": "false",
    "INPUT_TRANSCRIPTION_MODEL": "gpt-4o-mini-transcribe",
    "NOISE_REDUCTION": "far_field",
    "AUDIO_PASSTHROUGH": "true",
    "RESPONSE_MODE": "manual",
    "BEFORE_RESPONSE_URL": "https://crm.example/turn",
    "GREETING": "Say hello.",
    "END_CALL_TOOL": "true",
    "TRANSFER_NUMBER": "+15550001111",
    "TRANSFER_ALLOWLIST": "+15550002222",
    "MAX_CALL_SECONDS": "600",
    "DISPOSITIONS": "resolved,spam",
    "RECORDING_NOTICE": str(Path(__file__).parents[1] / "bridge" / "sim" / "assets" / "caller.wav"),
}


def test_every_session_option_comes_from_a_setting() -> None:
    """A session option added to SessionOptions but not to from_settings keeps its default here."""
    config = CallConfig.from_settings(load_settings(EVERYTHING), tools=({"type": "function", "name": "x"},))
    defaults = SessionOptions(instructions="", voice="")
    for option in dataclasses.fields(SessionOptions):
        assert getattr(config.session, option.name) != getattr(defaults, option.name), option.name
    assert config.session.audio_format == "pcmu" and config.session.create_response is False
    assert [tool["name"] for tool in config.session.tools] == ["end_call", "transfer_call", "x"]


# The Live session's settings, and the routing; no RESPONSE_MODE=manual (no Live call could run).
LIVE = {
    **{k: v for k, v in EVERYTHING.items() if k not in ("RESPONSE_MODE", "BEFORE_RESPONSE_URL")},
    "UPSTREAM_API": "live",
    "UPSTREAM_API_BY_NUMBER": '{"+15550003333": "realtime"}',
    "LIVE_MODEL": "gpt-live-1.1",
    "LIVE_VOICE": "vesper",
    "LIVE_INSTRUCTIONS": "Be warm.",
    "LIVE_DELEGATION": "responses",
    "LIVE_BACKEND_MODEL": "gpt-5-mini",
    "LIVE_BACKEND_INSTRUCTIONS": "Look things up.",
    "LIVE_REASONING_EFFORT": "low",
    "LIVE_LEAD_MS": "140",
}
LIVE_ONLY = ("upstream_api", "upstream_by_number", "live", "live_unavailable")


def test_every_call_rule_comes_from_a_setting() -> None:
    config = CallConfig.from_settings(load_settings(EVERYTHING))
    defaults = CallConfig(session=config.session)
    for option in dataclasses.fields(CallConfig):
        # `detection` belongs to one placed call (for_placed_call), never to every call.
        if option.name not in ("session", "detection", *LIVE_ONLY):
            assert getattr(config, option.name) != getattr(defaults, option.name), option.name
    assert config.live is None and "RESPONSE_MODE=manual" in config.live_unavailable
    assert config.transfer_numbers == ("+15550001111", "+15550002222")
    assert config.dispositions == ("resolved", "spam") and config.max_call_seconds == 600


def test_no_summary_when_it_is_turned_off() -> None:
    config = CallConfig.from_settings(load_settings({**EVERYTHING, "POST_CALL_SUMMARY": "false"}))
    assert config.dispositions == ()


def test_demo_mode_greets_unless_told_otherwise() -> None:
    assert CallConfig.from_settings(load_settings({})).greeting == DEMO_GREETING
    assert CallConfig.from_settings(load_settings({"GREETING": "Hi."})).greeting == "Hi."
    assert CallConfig.from_settings(load_settings({"OPENAI_API_KEY": "sk-test"})).greeting == ""


def test_every_live_option_comes_from_a_setting() -> None:
    config = CallConfig.from_settings(load_settings(LIVE), tools=({"type": "function", "name": "x"},))
    defaults = CallConfig(session=config.session)
    for name in ("upstream_api", "upstream_by_number", "live"):
        assert getattr(config, name) != getattr(defaults, name), name
    live = config.live
    assert live is not None
    bare = LiveConfig(instructions="")
    for option in dataclasses.fields(LiveConfig):
        assert getattr(live, option.name) != getattr(bare, option.name), option.name
    assert [tool["name"] for tool in live.tools] == ["end_call", "transfer_call", "x"]
    assert config.model_for("live") == "gpt-live-1.1" and config.model_for("realtime") == "gpt-realtime-mini"


def test_a_live_session_takes_the_lines_own_audio() -> None:
    live = CallConfig.from_settings(load_settings(LIVE)).live
    assert live is not None
    assert live.session(PCMU_8K).audio_format == PCMU_8K  # µ-law in and out untouched
    assert live.session(PCMA_8K).audio_format == PCMA_8K
    assert live.session(L16_16K).audio_format == L16_16K
    assert live.session(L16_24K).audio_format == L16_24K


def test_the_webhook_then_the_number_then_the_default_choose_the_api() -> None:
    config = CallConfig.from_settings(load_settings(LIVE))
    assert config.upstream_for("+15550001234") == ("live", "")  # UPSTREAM_API
    assert config.upstream_for("+15550003333") == ("realtime", "")  # the number's
    assert config.upstream_for("+15550003333", "live") == ("live", "")  # the webhook's parameter
    assert config.upstream_for("+15550001234", "realtime") == ("realtime", "")
    api, problem = config.upstream_for("+15550003333", "lvie")
    assert api == "realtime" and "unknown upstream 'lvie'" in problem


def test_a_webhook_asking_for_live_where_it_cannot_run_gets_realtime_and_a_reason() -> None:
    # Tools on, no backend model, a real key: routing calls to Live is refused at start-up ...
    with pytest.raises(ConfigError, match="LIVE_BACKEND_MODEL"):
        load_settings({"OPENAI_API_KEY": "sk-test", "UPSTREAM_API": "live"})
    # ... and a webhook asking for Live on such a configuration is answered by Realtime.
    config = CallConfig.from_settings(load_settings({"OPENAI_API_KEY": "sk-test"}))
    api, problem = config.upstream_for("+15550001234", "live")
    assert api == "realtime" and "LIVE_BACKEND_MODEL" in problem
    # No tools: a prompt-only Live agent needs no backend.
    bare = CallConfig.from_settings(load_settings({"OPENAI_API_KEY": "sk-test", "END_CALL_TOOL": "false"}))
    assert bare.live is not None and bare.live.delegation == "client" and bare.live.tools == ()
    assert bare.upstream_for("+15550001234", "live") == ("live", "")


def test_demo_mode_runs_live_tools_on_the_emulators_backend() -> None:
    live = CallConfig.from_settings(load_settings({"UPSTREAM_API": "live"})).live
    assert live is not None and live.delegation == "responses" and live.backend_model
    assert [tool["name"] for tool in live.tools] == ["end_call"]


def test_a_placed_call_brings_its_own_instructions_greeting_and_detection() -> None:
    base = CallConfig.from_settings(load_settings(EVERYTHING))
    plan = DetectionPlan(MachineDetection.LEAVE_MESSAGE, "Call us back.", wait_ms=3000)
    placed = base.for_placed_call(
        instructions="Remind Ann of her 3 pm visit.", greeting="Greet Ann.", detection=plan
    )
    assert placed.session.instructions == "Remind Ann of her 3 pm visit." and placed.greeting == "Greet Ann."
    assert placed.detection == plan and not placed.greets_at_once
    assert dataclasses.replace(placed.session, instructions=base.session.instructions) == base.session
    # Nothing given: the server's own; an empty greeting: the model waits for the callee to speak.
    assert base.for_placed_call() == base and base.greets_at_once
    assert base.for_placed_call(greeting="").greeting == ""


def test_a_recorded_call_that_must_hear_the_notice_is_answered_by_realtime() -> None:
    with_notice = CallConfig.from_settings(load_settings(LIVE))
    assert with_notice.recording_notice and with_notice.upstream_for("+15550001234") == ("live", "")
    api, problem = with_notice.upstream_for("+15550001234", "live", recorded=True)
    assert api == "realtime" and "recording notice" in problem
    unannounced = {k: v for k, v in LIVE.items() if k != "RECORDING_NOTICE"}
    without = CallConfig.from_settings(load_settings(unannounced))
    assert without.upstream_for("+15550001234", recorded=True) == ("live", "")


def test_a_call_we_place_is_answered_by_realtime_whatever_the_default() -> None:
    placed = CallConfig.from_settings(load_settings(LIVE)).for_placed_call(greeting="")
    assert placed.upstream_for("+15550001234") == ("realtime", "")
    assert placed.upstream_for("+15550003333", "realtime") == ("realtime", "")
