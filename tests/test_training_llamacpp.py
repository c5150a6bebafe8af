"""What llama.cpp (the engine Ollama runs) computes with spanwatch's GGUF files is what PEFT does.

A tiny Llama whose attention is far from uniform (initializer range 0.2) and that has fewer KV
heads than attention heads, so that a wrong order of Q's or K's rows shows in the logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the train extra is not installed")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

import numpy as np  # noqa: E402

from spanwatch import training  # noqa: E402
from spanwatch.training import _gguf, _llamacpp  # noqa: E402

from .test_training import CHAT_TEMPLATE, SETTINGS, SYSTEM, _examples, build_tiny_llama  # noqa: E402

# the module's run (train 80 steps, convert, check) is set up inside the first test's time
pytestmark = pytest.mark.timeout(600)

# tokens no example starts with, so the comparison is not the one train() made itself
PROBE = "Incident 1 of 1: SEV1 latency_spike at checkout. Root cause: checkout lost its cache."


@pytest.fixture(scope="module")
def converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py, as the train setup in the Makefile installs it."""
    try:
        return training.find_converter()
    except training.TrainingError as exc:
        pytest.fail(f"llama-cpp-python is installed but its converter is not: {exc}")


@pytest.fixture(scope="module")
def peaked_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(
        tmp_path_factory.mktemp("peaked-llama"), byte_fallback=True, initializer_range=0.2
    )


@pytest.fixture(scope="module")
def run(peaked_model: Path, converter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spanwatch train --merge on the tiny model (80 steps)."""
    work = tmp_path_factory.mktemp("run")
    data = work / "seed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _examples()))
    out = work / "out"
    training.train(
        str(peaked_model), data, out, SETTINGS, val_split=0.25, run_ollama=False, merge=True
    )
    return out


def _peft(model: Path, adapter: Path, ids: list[int]) -> tuple[Any, Any, Any]:
    """PEFT's logits for ids: the base model, with the adapter, and with it merged in."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    tokens = torch.tensor([ids])
    with torch.no_grad():
        before = base(tokens).logits[0].numpy()
        adapted_model = PeftModel.from_pretrained(base, adapter).eval()
        adapted = adapted_model(tokens).logits[0].numpy()
        merged = adapted_model.merge_and_unload()(tokens).logits[0].numpy()
    return before, adapted, merged


def _ids(model: Path) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(model)(PROBE)["input_ids"])


def _max(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def test_llama_cpp_applies_the_adapter_as_peft_does(
    run: Path, peaked_model: Path, converter: Path, tmp_path: Path
) -> None:
    """llama.cpp's base (its converter) + adapter.gguf: PEFT's logits within 1e-3."""
    base_gguf = tmp_path / "base.gguf"
    _llamacpp.convert(peaked_model, base_gguf, "f32", converter)
    ids = _ids(peaked_model)
    before, adapted, _ = _peft(peaked_model, run / "adapter", ids)
    cpp_before = _llamacpp.llama_logits(base_gguf, ids)
    cpp_adapted = _llamacpp.llama_logits(base_gguf, ids, lora=run / "adapter.gguf")

    effect = _max(adapted, before)
    diff = _max(cpp_adapted, adapted)
    assert _max(cpp_before, before) < training.TOLERANCE  # the base model itself agrees
    assert diff < training.TOLERANCE
    assert effect > 1.0 and effect > 100 * diff  # the adapter does something, and it is that


def test_the_unpermuted_adapter_is_caught(
    run: Path, peaked_model: Path, converter: Path, tmp_path: Path
) -> None:
    """The adapter written in PEFT's row order (the old bug) differs in llama.cpp, in q/k only."""
    from safetensors.torch import load_file

    state = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    old = tmp_path / "old.gguf"
    original = _gguf.rope_permute
    try:
        _gguf.rope_permute = lambda rows, n_head: rows  # type: ignore[assignment]
        _gguf.write_adapter_gguf(state, SETTINGS.alpha, old, "old", 4, 2)
    finally:
        _gguf.rope_permute = original

    base_gguf = tmp_path / "base.gguf"
    _llamacpp.convert(peaked_model, base_gguf, "f32", converter)
    ids = _ids(peaked_model)
    _, adapted, _ = _peft(peaked_model, run / "adapter", ids)
    wrong = _max(_llamacpp.llama_logits(base_gguf, ids, lora=old), adapted)
    assert wrong > 100 * training.TOLERANCE

    import gguf

    fixed = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(run / "adapter.gguf")).tensors}
    unfixed = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(old)).tensors}
    differ = sorted(n for n in fixed if not np.array_equal(fixed[n], unfixed[n]))
    assert differ == [f"blk.{i}.attn_{w}.weight.lora_b" for i in (0, 1) for w in ("k", "q")]


def test_the_merged_gguf_is_peft_s_merged_model(run: Path, peaked_model: Path) -> None:
    """model.gguf (llama.cpp's converter, f16) is the merged model: checked in llama.cpp."""
    report = json.loads((run / "train_report.json").read_text())
    check = report["llama_cpp_check"]
    assert check["status"] == "passed", check
    assert check["engine"] == "llama-cpp-python 0.3.36"
    assert check["adapter"]["max_abs_logit_diff"] < training.TOLERANCE
    assert check["adapter"]["adapter_effect"] > 100 * check["adapter"]["max_abs_logit_diff"]
    merged = check["merged"]
    assert merged["outtype"] == "f16" and merged["is_rounded_f32"] is True
    assert merged["max_abs_logit_diff"] < training.TOLERANCE
    # the f16 file's own difference is its rounding: small next to what the adapter does
    assert merged["deployed_max_abs_logit_diff"] < merged["adapter_effect"] / 20

    ids = _ids(peaked_model)
    before, _, merged_logits = _peft(peaked_model, run / "adapter", ids)
    cpp = _llamacpp.llama_logits(run / "model.gguf", ids)
    assert _max(cpp, merged_logits) < _max(merged_logits, before) / 20

    import gguf

    reader = gguf.GGUFReader(str(run / "model.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "tokenizer.chat_template" in reader.fields


def test_merge_writes_a_modelfile_from_the_gguf(run: Path) -> None:
    """Modelfile: FROM ./model.gguf, the chat template as TEMPLATE, stop, penalty, system."""
    assert sorted(p.name for p in run.iterdir()) == [
        "Modelfile",
        "Modelfile.adapter",
        "adapter",
        "adapter.gguf",
        "model.gguf",
        "train_report.json",
    ]
    text = (run / "Modelfile").read_text()
    template = (
        "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ range .Messages }}"
        '{{ if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>\n'
        '{{ else if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}<|end|>\n'
        "{{ end }}{{ end }}<|assistant|>\n"
    )
    assert text == (
        "FROM ./model.gguf\n"
        f'TEMPLATE """{template}"""\n'
        'PARAMETER stop "<|end|>"\n'
        "PARAMETER repeat_penalty 1.3\n"
        f'SYSTEM """{SYSTEM}"""\n'
    )
    assert (run / "Modelfile.adapter").read_text().splitlines()[:2] == [
        "FROM llama3.2:1b",
        "ADAPTER ./adapter.gguf",
    ]
    report = json.loads((run / "train_report.json").read_text())
    assert report["outputs"]["merged_gguf"] == "model.gguf"
    assert report["ollama_create"] == "ollama create spanwatch-analyst -f Modelfile"
    lines = training.summary(report)
    assert any("perplexity" in line for line in lines)
    assert any("llama.cpp check" in line and "same as PEFT" in line for line in lines)
    assert any("adapter.gguf: max logit difference" in line for line in lines)


def test_the_template_renders_like_the_model_s_own(peaked_model: Path) -> None:
    """The Go TEMPLATE's pieces, put together, give what the HF chat template gives."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(peaked_model)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    fmt = training.chat_format(tokenizer)
    assert fmt is not None
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ours = (
        fmt.system_prefix
        + "S"
        + fmt.system_suffix
        + fmt.user_prefix
        + "U1"
        + fmt.user_suffix
        + fmt.assistant_prefix
        + "A1"
        + fmt.assistant_suffix
        + fmt.user_prefix
        + "U2"
        + fmt.user_suffix
        + fmt.generation_prompt
    )
    assert tokenizer.bos_token + ours == expected


def test_the_adapter_is_what_llama_cpp_s_own_lora_converter_writes(
    run: Path, peaked_model: Path, converter: Path, tmp_path: Path
) -> None:
    """adapter.gguf holds the tensors convert_lora_to_gguf.py makes of the PEFT adapter."""
    import subprocess
    import sys

    import gguf

    script = converter / "convert_lora_to_gguf.py"
    assert script.is_file(), f"{script} missing: rerun make (rm .venv/.installed-train)"
    reference = tmp_path / "reference.gguf"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(run / "adapter"),
            "--base",
            str(peaked_model),
            "--outtype",
            "f32",
            "--outfile",
            str(reference),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(reference)).tensors}
    ours = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(run / "adapter.gguf")).tensors}
    assert sorted(ours) == sorted(theirs) and len(ours) == 28
    for name, data in ours.items():
        assert data.shape == theirs[name].shape, name
        assert np.array_equal(data, theirs[name]), name
