"""The recording settings: validated at start-up with one clear line each, and their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_settings
from bridge.wavfile import write_wav
from tests.e2e import silence


def test_recording_is_off_unless_asked_for() -> None:
    settings = load_settings({})
    assert settings.recording == "off" and settings.recording_url == "" and settings.recording_notice is None
    assert load_settings({"RECORDING": "Requested"}).recording == "requested"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECORDING": "sometimes"}, "RECORDING must be 'off', 'all' or 'requested'"),
        (
            {"RECORDING_URL": "https://bucket.example.com/x"},
            "RECORDING_URL must be s3://bucket or s3://bucket/prefix",
        ),
        ({"RECORDING_URL": "s3:///prefix"}, "RECORDING_URL must be s3://bucket or s3://bucket/prefix"),
        ({"RECORDING_ENDPOINT_URL": "minio:9000"}, "RECORDING_ENDPOINT_URL must be the http(s) URL"),
        # The notice is audio the bridge plays, not words for the model to say.
        (
            {"RECORDING_NOTICE": "This call is recorded."},
            "RECORDING_NOTICE must be the path of a WAV file, not 'This call is recorded.'",
        ),
    ],
)
def test_bad_recording_settings_stop_start_up_with_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("call_log_url", "directory"),
    [
        ("sqlite+aiosqlite:///data/calls.db", Path("data/recordings")),
        ("sqlite+aiosqlite:////var/lib/bridge/calls.db", Path("/var/lib/bridge/recordings")),
        ("sqlite+aiosqlite:///:memory:", Path("data/recordings")),
        ("postgresql+asyncpg://bridge@db.internal/calls", Path("data/recordings")),
    ],
)
def test_recordings_go_beside_the_call_log_by_default(call_log_url: str, directory: Path) -> None:
    assert load_settings({"CALL_LOG_URL": call_log_url}).recording_directory == directory
    explicit = load_settings({"CALL_LOG_URL": call_log_url, "RECORDING_DIR": "/srv/rec"})
    assert explicit.recording_directory == Path("/srv/rec")


def test_an_s3_url_keeps_its_prefix_without_a_trailing_slash() -> None:
    settings = load_settings({"RECORDING_URL": "s3://calls-bucket/bridge/prod/", "RECORDING": "all"})
    assert settings.recording_url == "s3://calls-bucket/bridge/prod"


def test_a_notice_is_a_wav_of_at_most_30_seconds(tmp_path: Path) -> None:
    notice, long_one, not_audio = tmp_path / "notice.wav", tmp_path / "long.wav", tmp_path / "notice.txt"
    write_wav(notice, silence(2000), 8000)
    write_wav(long_one, silence(31_000), 8000)
    not_audio.write_text("This call is recorded.")
    assert load_settings({"RECORDING_NOTICE": str(notice)}).recording_notice == notice
    assert load_settings({"RECORDING_NOTICE": " "}).recording_notice is None
    for path, message in ((long_one, "lasts 31.0 s"), (not_audio, "not a RIFF/WAVE file")):
        with pytest.raises(ConfigError) as error:
            load_settings({"RECORDING_NOTICE": str(path)})
        assert message in str(error.value) and "\n" not in str(error.value)
