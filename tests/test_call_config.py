"""The one path from the settings to a call: every setting a call uses arrives, none is half-added."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bridge.answer_detection import DetectionPlan, MachineDetection
from bridge.call_config import DEMO_GREETING, CallConfig
from bridge.config import load_settings
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


def test_every_call_rule_comes_from_a_setting() -> None:
    config = CallConfig.from_settings(load_settings(EVERYTHING))
    defaults = CallConfig(session=config.session)
    for option in dataclasses.fields(CallConfig):
        # `detection` belongs to one placed call (for_placed_call), never to every call.
        if option.name not in ("session", "detection"):
            assert getattr(config, option.name) != getattr(defaults, option.name), option.name
    assert config.transfer_numbers == ("+15550001111", "+15550002222")
    assert config.dispositions == ("resolved", "spam") and config.max_call_seconds == 600


def test_no_summary_when_it_is_turned_off() -> None:
    config = CallConfig.from_settings(load_settings({**EVERYTHING, "POST_CALL_SUMMARY": "false"}))
    assert config.dispositions == ()


def test_demo_mode_greets_unless_told_otherwise() -> None:
    assert CallConfig.from_settings(load_settings({})).greeting == DEMO_GREETING
    assert CallConfig.from_settings(load_settings({"GREETING": "Hi."})).greeting == "Hi."
    assert CallConfig.from_settings(load_settings({"OPENAI_API_KEY": "sk-test"})).greeting == ""


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
