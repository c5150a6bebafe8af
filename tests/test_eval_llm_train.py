"""``spanwatch train`` reports base against adapted on the held-out examples, in llama.cpp, and
``spanwatch eval llm --gguf --adapter`` scores the same GGUFs: on the tiny test model, so the
figures mean nothing but are real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the train extra is not installed")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from spanwatch import training
from spanwatch.cli import main
from spanwatch.training import LoraSettings, _llamacpp
from tests.test_training import _examples, build_tiny_llama

# training, converting and generating on 2 shared cores
pytestmark = pytest.mark.timeout(600)
SETTINGS = LoraSettings(max_steps=40, batch_size=4, learning_rate=5e-3, max_length=256)
KEYS = ("structure_valid", "grounding_pass_rate", "root_cause_accuracy", "agreement_rouge_l")


def test_train_reports_eval_llm_and_the_cli_scores_the_same_ggufs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train_report.json has eval_llm (base, adapted); eval llm --gguf --adapter adds its own."""
    try:
        converter = training.find_converter()
    except training.TrainingError as exc:
        pytest.skip(str(exc))
    model = build_tiny_llama(tmp_path / "model", byte_fallback=True, initializer_range=0.2)
    data = tmp_path / "seed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _examples()))
    out = tmp_path / "out"
    report = training.train(str(model), data, out, SETTINGS, val_split=0.25, run_ollama=False)
    scored = report["eval_llm"]
    assert scored["status"] == "done", scored
    assert scored["cases"] == 6
    for role in ("base", "adapted"):
        assert scored[role]["cases"] == 6 and scored[role]["errors"] == 0
        assert all(scored[role][k] is not None for k in KEYS)
        assert 0 <= scored[role]["agreement_rouge_l"] <= 1
    on_disk = json.loads((out / "train_report.json").read_text())
    assert on_disk["eval_llm"] == json.loads(json.dumps(scored))
    assert any(line.startswith("eval llm on 6 held-out") for line in training.summary(report))
    assert not (out / ".eval").exists()  # the converted base is not left behind

    base_gguf = tmp_path / "base.gguf"
    _llamacpp.convert(model, base_gguf, "f32", converter)
    code = main(
        [
            "eval",
            "llm",
            "--gguf",
            str(base_gguf),
            "--adapter",
            str(out / "adapter.gguf"),
            "--rated",
            str(data),
            "--sim",
            "0",
            "--max-tokens",
            "64",
            "--report",
            str(out / "train_report.json"),
        ]
    )
    assert code == 0
    assert "base.gguf+adapter.gguf" in capsys.readouterr().out
    models = json.loads((out / "train_report.json").read_text())["eval_llm"]["models"]
    assert set(models) == {"base.gguf", "base.gguf+adapter.gguf"}
    assert models["base.gguf"]["role"] == "base"
    assert models["base.gguf+adapter.gguf"]["role"] == "adapted"
    assert all(m["cases"] == 24 and m["errors"] == 0 for m in models.values())
