from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _spanwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spanwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_config_prints_effective_settings_without_secrets(tmp_path: Path) -> None:
    """`spanwatch config` shows the merged settings as JSON and never the token."""
    path = tmp_path / "s.toml"
    path.write_text('[llm]\nmodel = "qwen2.5:0.5b"\n[auth]\ntoken = "hunter2"\n')
    proc = _spanwatch("config", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)
    assert settings["llm"]["model"] == "qwen2.5:0.5b"
    assert settings["receiver"]["grpc_listen"] == "127.0.0.1:4317"
    assert settings["analysis"]["batch_window"] == "30s"
    assert "hunter2" not in proc.stdout


def test_config_rejects_an_invalid_file_with_exit_2(tmp_path: Path) -> None:
    """An invalid file is reported with the key, exit code 2."""
    path = tmp_path / "s.toml"
    path.write_text('[analysis]\nbatch_window = "forever"\n')
    proc = _spanwatch("config", "--config", str(path))
    assert proc.returncode == 2
    assert "analysis.batch_window" in proc.stderr
