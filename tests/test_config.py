"""Settings from the environment: defaults, validation messages, and the README's table."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from bridge.config import DEPRECATED_MODELS, ConfigError, Settings, load_settings
from bridge.upstream import session_headers, session_url


def test_defaults_are_a_working_demo() -> None:
    settings = load_settings({})
    assert settings.port == 8080
    assert settings.realtime_model == "gpt-realtime-2.1"
    assert settings.demo_mode
    assert settings.model_shutdown_date is None


def test_the_callers_words_are_transcribed_unless_turned_off() -> None:
    from bridge.call_config import CallConfig

    default = load_settings({})
    assert default.transcription_model == "gpt-4o-mini-transcribe"
    assert CallConfig.from_settings(default).session.transcription_model == "gpt-4o-mini-transcribe"
    assert CallConfig.from_settings(default).transcribed
    for off in ("off", "none", "", " OFF "):
        settings = load_settings({"INPUT_TRANSCRIPTION_MODEL": off})
        assert settings.transcription_model == ""
        assert not CallConfig.from_settings(settings).transcribed
    chosen = load_settings({"INPUT_TRANSCRIPTION_MODEL": "gpt-transcribe"})
    assert chosen.transcription_model == "gpt-transcribe"
    # Azure needs the name of a transcription deployment: nothing is assumed there.
    azure = {"REALTIME_URL": "wss://acme.openai.azure.com/openai/realtime"}
    assert load_settings(azure).transcription_model == ""
    assert load_settings({**azure, "INPUT_TRANSCRIPTION_MODEL": "stt"}).transcription_model == "stt"


def test_every_bad_value_is_named_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {"REALTIME_VOICE": "bob", "TURN_DETECTION": "x", "PORT": "abc", "CALL_LOG_URL": "mysql://"}
        )
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert {line.split()[0] for line in lines} == {"REALTIME_VOICE", "TURN_DETECTION", "PORT", "CALL_LOG_URL"}
    assert any("must be 'server_vad', 'semantic_vad' or 'none'" in line for line in lines)


def test_prompt_variables_must_be_a_json_object() -> None:
    assert load_settings({"REALTIME_PROMPT_VARIABLES": '{"city": "Oslo"}'}).realtime_prompt_variables == {
        "city": "Oslo"
    }
    with pytest.raises(ConfigError, match="REALTIME_PROMPT_VARIABLES must be a JSON object"):
        load_settings({"REALTIME_PROMPT_VARIABLES": "[1]"})


def test_instructions_file(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("Be a pirate.\n")
    assert load_settings({"REALTIME_INSTRUCTIONS_FILE": str(path)}).realtime_instructions == "Be a pirate."
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"REALTIME_INSTRUCTIONS_FILE": str(tmp_path / "missing.txt")})


def test_deprecated_model_is_flagged() -> None:
    assert load_settings({"REALTIME_MODEL": "gpt-realtime"}).model_shutdown_date == "2027-01-20"


def sdk_deprecated_models() -> dict[str, str]:
    """The Realtime models the installed openai SDK marks deprecated, with their announced shutdown
    dates: the `model` field's docstring (docs/protocols.md §R2)."""
    from openai.types.realtime import realtime_session_create_request

    source = inspect.getsource(realtime_session_create_request)
    listing = source.split("Deprecated values:", 1)[1].split('"""', 1)[0]
    deprecated = {}
    for entry in re.split(r"\n\s*- ", listing):
        if (date := re.search(r"shutdown date: (\d{4}-\d{2}-\d{2})", entry)) is not None:
            deprecated.update(dict.fromkeys(re.findall(r'"([^"]+)"', entry), date[1]))
    return deprecated


def test_the_deprecated_models_are_the_sdks() -> None:
    assert sdk_deprecated_models()  # the docstring still has the shape read above
    assert sdk_deprecated_models() == DEPRECATED_MODELS


def test_openai_and_azure_auth_headers() -> None:
    openai = load_settings({"OPENAI_API_KEY": "sk-1"})
    assert session_headers(openai) == {"Authorization": "Bearer sk-1"}
    assert session_url(openai) == "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
    azure = load_settings(
        {
            "OPENAI_API_KEY": "az-1",
            "REALTIME_URL": "wss://acme.openai.azure.com/openai/v1/realtime",
            "REALTIME_MODEL": "my-deployment",
        }
    )
    assert session_headers(azure) == {"api-key": "az-1"}
    assert session_url(azure).endswith("/openai/v1/realtime?model=my-deployment")
    beta = load_settings({"OPENAI_API_KEY": "sk-1", "REALTIME_DIALECT": "beta"})
    assert session_headers(beta)["OpenAI-Beta"] == "realtime=v1"


def test_the_api_key_never_appears_in_the_settings_repr() -> None:
    assert "sk-secret" not in repr(load_settings({"OPENAI_API_KEY": "sk-secret"}))


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = {
        name for row in re.findall(r"^\| (.+?) \|", readme, re.M) for name in re.findall(r"`([A-Z_]+)`", row)
    }
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - table == set(), "settings missing from the README table"
    assert table - fields == set(), "README documents settings that do not exist"


def test_production_refuses_to_start_without_its_secrets() -> None:
    with pytest.raises(ConfigError, match="BRIDGE_ENV=production requires TWILIO_AUTH_TOKEN and ADMIN_TOKEN"):
        load_settings({"BRIDGE_ENV": "production"})
    assert load_settings({"BRIDGE_ENV": "production", "TWILIO_AUTH_TOKEN": "t", "ADMIN_TOKEN": "a"})


def test_serve_prints_the_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.cli import main

    monkeypatch.setenv("BRIDGE_ENV", "production")
    assert main(["serve"]) == 2
    assert "BRIDGE_ENV=production requires" in capsys.readouterr().err
