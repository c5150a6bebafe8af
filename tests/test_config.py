from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spanwatch.config import BearerToken, ConfigError, ListenAddress, load, parse_duration

REFERENCE = Path(__file__).parent.parent / "config" / "spanwatch.toml"


def test_defaults_run_on_one_machine() -> None:
    """With nothing set, the daemon listens on loopback on the documented ports."""
    cfg = load(env={})
    assert cfg.receiver.grpc_listen == ListenAddress("127.0.0.1", 4317)
    assert cfg.receiver.http_listen == ListenAddress("127.0.0.1", 4318)
    assert cfg.publish.ws_listen == ListenAddress("127.0.0.1", 8765)
    assert cfg.receiver.max_request_size == 64 * 1024 * 1024
    assert cfg.analysis.batch_window == 30.0
    assert cfg.analysis.min_severity == 3
    assert cfg.llm.model == "llama3.2:1b"
    assert cfg.llm.repeat_penalty == 1.3
    assert cfg.storage.data_dir == Path("spanwatch-data")


def test_reference_file_is_valid_and_matches_defaults() -> None:
    """config/spanwatch.toml loads and documents exactly the defaults."""
    assert load(REFERENCE, env={}) == load(env={})


def test_reference_file_documents_every_key() -> None:
    """Every key of every section appears in the reference file."""
    text = REFERENCE.read_text()
    cfg = load(env={})
    for section, fields in cfg.model_dump().items():
        assert f"[{section}]" in text
        for key in type(getattr(cfg, section)).model_fields:
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{section}.{key}"
        assert fields is not None


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file."""
    path = tmp_path / "s.toml"
    path.write_text('[analysis]\nbatch_window = "10s"\nmin_severity = 2\n[llm]\nmodel = "a"\n')
    env = {"SPANWATCH_ANALYSIS__BATCH_WINDOW": "2s", "SPANWATCH_LLM__MODEL": "b"}
    cfg = load(path, env=env, overrides={"llm.model": "c"})
    assert cfg.analysis.batch_window == 2.0
    assert cfg.analysis.min_severity == 2
    assert cfg.llm.model == "c"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    """Durations accept ms, s, m, h and plain seconds."""
    assert parse_duration(text) == seconds


def test_env_variables_of_other_tools_are_ignored() -> None:
    """SPANWATCH_API (the CLI's) and unrelated variables do not reach the daemon's config."""
    cfg = load(env={"SPANWATCH_API": "http://x", "HOME": "/root"})
    assert cfg == load(env={})


def test_llm_host_falls_back_to_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """llm.host defaults to OLLAMA_HOST, and an explicit setting wins over it."""
    monkeypatch.setenv("OLLAMA_HOST", "http://gpu-box:11434")
    assert load(env={}).llm.host == "http://gpu-box:11434"
    assert load(env={"SPANWATCH_LLM__HOST": "http://h:1"}).llm.host == "http://h:1"
    monkeypatch.delenv("OLLAMA_HOST")
    assert load(env={}).llm.host == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SPANWATCH_ANALYSIS__BATCH_WINDW": "2s"},
            "analysis.batch_windw: unknown key; accepted: batch_window, enabled, max_batch, "
            "min_severity, prompt_tokens, queue_batches, redact_ip_addresses",
        ),
        (
            {"SPANWATCH_ANALYSIS__BATCH_WINDOW": "soon"},
            "analysis.batch_window: 'soon' is not a duration: use 500ms, 2s, 5m or 1h",
        ),
        (
            {"SPANWATCH_RECEIVER__GRPC_LISTEN": "localhost"},
            "receiver.grpc_listen: 'localhost' is not HOST:PORT",
        ),
        ({"SPANWATCH_RECEIVER__HTTP_LISTEN": "h:99999"}, "port must be a number from 0 to 65535"),
        ({"SPANWATCH_NOPE__X": "1"}, "nope: unknown key; accepted: alerts, analysis, auth"),
        ({"SPANWATCH_ANALYSIS__MIN_SEVERITY": "9"}, "analysis.min_severity: Input should be less"),
        ({"SPANWATCH_LOG__LEVEL": "loud"}, "log.level: Input should be 'debug', 'info'"),
        ({"SPANWATCH_AUTH__TOKEN": "a", "SPANWATCH_AUTH__TOKEN_FILE": "/f"}, "not both"),
    ],
)
def test_invalid_settings_name_the_key_and_what_it_accepts(
    env: dict[str, str], expected: str
) -> None:
    """Each invalid setting is reported with its key and the values it accepts."""
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert expected in str(info.value)


def test_bad_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    """A file that is not TOML is named in the error."""
    path = tmp_path / "bad.toml"
    path.write_text("[receiver\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load(path, env={})


def test_daemon_exits_2_on_invalid_configuration(tmp_path: Path) -> None:
    """spanwatchd refuses to start on a bad key, with exit code 2 and the key on stderr."""
    path = tmp_path / "s.toml"
    path.write_text('[receiver]\ngrpc_listen = "127.0.0.1:4317"\nbogus = 1\n')
    proc = subprocess.run(
        [sys.executable, "-m", "spanwatch.daemon", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "receiver.bogus: unknown key" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "spanwatch.daemon", "--http-listen", "nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "receiver.http_listen" in proc.stderr


def test_bearer_token_compares_and_reloads_from_file(tmp_path: Path) -> None:
    """The token file is read again on reload, so a token can be rotated in place."""
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    token = BearerToken(load(env={"SPANWATCH_AUTH__TOKEN_FILE": str(token_file)}).auth)
    assert token.allows("Bearer first")
    assert token.allows("bearer first")
    assert not token.allows("Bearer second")
    assert not token.allows("Basic first")
    assert not token.allows(None)
    token_file.write_text("second")
    token.reload()
    assert token.allows("Bearer second") and not token.allows("Bearer first")


def test_no_token_allows_everything() -> None:
    """Without auth.token every request passes."""
    assert BearerToken(load(env={}).auth).allows(None)


def test_token_never_appears_in_dumps_or_repr() -> None:
    """The secret stays out of repr() and of the printed configuration."""
    cfg = load(env={"SPANWATCH_AUTH__TOKEN": "s3cret-value"})
    assert "s3cret-value" not in repr(cfg)
    assert "s3cret-value" not in str(cfg.model_dump())


def test_detector_defaults_are_the_detector_s_own() -> None:
    """config states the detector's defaults again (it may not import detect): they agree."""
    from spanwatch.detect import Settings

    det, own = load(env={}).detector, Settings()
    assert tuple(det.probe_paths) == own.probe_paths
    assert tuple(det.identity) == own.identity
    assert (det.window, det.lateness, det.max_lag, det.max_ahead) == (
        own.window_s,
        own.lateness_s,
        own.max_lag_s,
        own.max_ahead_s,
    )
    assert (det.warmup_windows, det.quiet_windows, det.max_keys, det.max_traces) == (
        own.warmup_windows,
        own.quiet_windows,
        own.max_keys,
        own.max_traces,
    )
