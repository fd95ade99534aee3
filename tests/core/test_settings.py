"""Settings: read from SENTIMENT_* variables, documented, and refusing values that cannot work."""

from __future__ import annotations

import pytest

from sentiment_api.core.devices import stream_layout
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.settings import DEVICE_DEFAULTS, GROUPS, Settings, default_model_dir, load_settings

KEY = "0123456789abcdef-key"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SENTIMENT_"):
            monkeypatch.delenv(name)


def test_defaults_serve_the_shipped_model_on_port_8000() -> None:
    settings = load_settings()

    assert settings.packages == {"default": default_model_dir()} and settings.default_name == "default"
    assert settings.port == 8000
    assert settings.api_keys == [] and settings.cors_origins == []
    assert settings.log_text is False and settings.otlp_endpoint is None


def test_every_setting_comes_from_a_sentiment_variable(monkeypatch) -> None:
    monkeypatch.setenv("SENTIMENT_PORT", "9001")
    monkeypatch.setenv("SENTIMENT_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SENTIMENT_API_KEYS", f"{KEY}, {KEY}-2")
    monkeypatch.setenv("SENTIMENT_CORS_ORIGINS", "https://a.example,https://b.example")

    settings = load_settings()

    assert (settings.port, settings.max_batch_size) == (9001, 8)
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY, f"{KEY}-2"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert KEY not in repr(settings)


def test_options_win_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SENTIMENT_PORT", "9001")

    assert load_settings(port=9002).port == 9002


def test_keys_can_come_from_a_file(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\n{KEY}\n\n")

    settings = load_settings(api_keys_file=keys)

    assert [k.get_secret_value() for k in settings.api_keys] == [KEY]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"api_keys": ["short"]}, "SENTIMENT_API_KEYS"),
        ({"queue_size": 10, "max_batch_texts": 64}, "queue_size"),
        ({"cors_origins": ["*"], "api_keys": [KEY]}, "leaked key"),
        ({"cors_origins": ["example.org"]}, "http"),
        ({"otlp_endpoint": "collector:4318"}, "SENTIMENT_OTLP_ENDPOINT"),
        ({"port": 0}, "SENTIMENT_PORT"),
        ({"max_body_bytes": 10}, "SENTIMENT_MAX_BODY_BYTES"),
        ({"request_timeout_s": 0}, "SENTIMENT_REQUEST_TIMEOUT_S"),
        ({"api_keys_file": "/nonexistent/keys"}, "cannot read"),
        ({"log_level": "verbose"}, "SENTIMENT_LOG_LEVEL"),
        ({"forwarded_allow_ips": ["proxy.local"]}, "SENTIMENT_FORWARDED_ALLOW_IPS"),
        ({"metrics_port": 8000}, "must differ from port"),
        ({"read_timeout_s": 0}, "SENTIMENT_READ_TIMEOUT_S"),
        ({"auth_failure_limit": 0}, "SENTIMENT_AUTH_FAILURE_LIMIT"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_unsafe_or_impossible_values_are_refused_by_name(overrides, words) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(**overrides)


def test_every_field_is_documented() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]

    assert undocumented == []


def test_every_field_is_in_a_known_group() -> None:
    from sentiment_api.core.settings_doc import group_of

    ungrouped = {name: group_of(field) for name, field in Settings.model_fields.items()}

    assert {name: group for name, group in ungrouped.items() if group not in GROUPS} == {}


def test_descriptions_carry_no_measurements() -> None:
    for name, field in Settings.model_fields.items():
        text = field.description or ""
        assert "measured" not in text and "BENCHMARKS" not in text and "->" not in text, name


@pytest.mark.parametrize("removed", ["REUSE_PORT", "EVENT_LOOP", "SPIN", "SOLO_THREADS", "TOKENIZER_THREADS"])
def test_a_variable_that_names_no_setting_is_refused_by_name(monkeypatch, removed) -> None:
    monkeypatch.setenv(f"SENTIMENT_{removed}", "1")

    with pytest.raises(ConfigError, match=f"SENTIMENT_{removed}: not a setting"):
        load_settings()


def test_every_worker_gets_a_single_threaded_stream_per_core_by_default(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)

    def plan(**settings):
        on_cpu = load_settings(**settings).for_device("cpu")
        return on_cpu.streams, on_cpu.threads

    assert plan() == (8, 1)
    assert plan(workers=2) == (8, 1)  # not a share: a worker may get most of the connections
    assert plan(streams=1) == (1, 8)
    assert plan(threads=2) == (4, 2)
    assert plan(streams=2, threads=3) == (2, 3)


def test_the_stream_layout_is_the_same_for_the_server_and_batch_prediction(monkeypatch) -> None:
    from sentiment_api.batch.options import PredictOptions

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    for streams, threads in [(None, None), (1, None), (None, 2), (2, 3)]:
        on_cpu = load_settings(streams=streams, threads=threads).for_device("cpu")
        options = PredictOptions(streams=streams, threads=threads)
        assert (on_cpu.streams, on_cpu.threads) == options.stream_layout() == stream_layout(streams, threads)


def test_a_lone_batch_gets_every_core_when_the_cpu_runs_several_streams(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)

    assert load_settings().for_device("cpu").solo_threads == 8
    assert load_settings(threads=2).for_device("cpu").solo_threads == 8
    assert load_settings(streams=1).for_device("cpu").solo_threads == 0  # its one stream has every core
    assert load_settings(streams=2, threads=8).for_device("cpu").solo_threads == 0  # nothing to gain
    assert load_settings().for_device("cuda").solo_threads == 0


def test_the_device_is_the_cpu_unless_set_and_anything_else_is_refused_by_name(monkeypatch) -> None:
    assert load_settings().device == "cpu"
    monkeypatch.setenv("SENTIMENT_DEVICE", "auto")
    assert load_settings().device == "auto"
    monkeypatch.setenv("SENTIMENT_DEVICE", "gpu")
    with pytest.raises(ConfigError, match="SENTIMENT_DEVICE: Input should be 'cpu', 'cuda' or 'auto'"):
        load_settings()


def test_unset_batching_settings_take_their_device_defaults(monkeypatch) -> None:
    monkeypatch.setenv("SENTIMENT_TOKEN_BUDGET", "4096")
    settings = load_settings(max_batch_size=48)
    gpu, cpu = DEVICE_DEFAULTS["cuda"], DEVICE_DEFAULTS["cpu"]

    on_gpu = settings.for_device("cuda")
    on_cpu = settings.for_device("cpu")

    assert settings.bucket_size is None and settings.streams is None  # unset: the device's default
    assert (on_gpu.device, on_cpu.device) == ("cuda", "cpu")
    assert (on_gpu.max_batch_size, on_gpu.token_budget) == (48, 4096)  # given: kept
    assert (on_cpu.max_batch_size, on_cpu.token_budget) == (48, 4096)
    assert on_gpu.bucket_size == gpu.bucket_size != cpu.bucket_size == on_cpu.bucket_size
    assert on_gpu.streams == gpu.streams
    assert on_gpu.tokeniser_threads == gpu.tokeniser_threads > 0
    assert on_cpu.tokeniser_threads == cpu.tokeniser_threads == 0
