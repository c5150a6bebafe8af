"""The learning loop on a tiny Llama built here (random weights, a tokenizer trained on the fly)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the train extra is not installed")
transformers = pytest.importorskip("transformers")

from spanwatch import training  # noqa: E402
from spanwatch.training import LoraSettings, TrainingError  # noqa: E402

# training on 2 shared cores, then converting and loading in llama.cpp: more than the default
pytestmark = pytest.mark.timeout(300)

SYSTEM = "You are spanwatch's incident analyst. Use only the facts given."
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SERVICES = ["payments", "checkout", "inventory", "catalog", "cart", "email", "search", "auth"]
CAUSES = [
    "ran out of database connections",
    "hit a slow query on orders",
    "lost its cache",
    "was deployed with a bad config",
]


def _examples() -> list[dict[str, str]]:
    records = []
    for n in range(24):
        service = SERVICES[n % len(SERVICES)]
        cause = CAUSES[n % len(CAUSES)]
        prompt = (
            f"Incident 1 of 1: SEV2 error_burst at {service}. Evidence: error_rate "
            f"observed 0.{40 + n} against a baseline of 0.01."
        )
        correction = (
            f"Root cause: {service} {cause}. Next: check {service} and its "
            "dependencies, then roll back the last change."
        )
        bad = n % 4 != 0
        records.append(
            {
                "prompt": prompt,
                "completion": correction if bad else f"{service} is failing.",
                "original_completion": f"Everything looks fine with {service}.",
                "rating": "bad" if bad else "good",
                "system": SYSTEM,
                "analysis_id": f"an-{n}",
            }
        )
    return records


def build_tiny_llama(
    path: Path, *, byte_fallback: bool = False, initializer_range: float = 0.02
) -> Path:
    """A 2-layer Llama (4 heads, 2 KV heads) with a BPE vocabulary trained here, saved to path.

    ``byte_fallback`` makes the tokenizer Llama-2 style (byte tokens, "▁" for spaces), a kind
    llama.cpp's converter knows; the default byte-level one (400 tokens) it does not.
    A larger ``initializer_range`` gives attention that is far from uniform.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    corpus = [SYSTEM] + [
        r["prompt"] + " " + r["completion"] + " " + r["original_completion"] for r in _examples()
    ]
    if byte_fallback:
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=700, special_tokens=specials + [f"<0x{b:02X}>" for b in range(256)]
        )
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=initializer_range,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a 400-token byte-level BPE vocabulary, saved as a Hugging Face model."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _examples()))
    return path


# A random-weight model adapts slowly (its output head stays random and frozen): 80 steps
# lower the loss by about a fifth, deterministically for the seed.
SETTINGS = LoraSettings(max_steps=80, batch_size=4, learning_rate=5e-3, max_length=256)


def test_lora_trains_converts_and_helps(tiny_model: Path, export: Path, tmp_path: Path) -> None:
    """Loss falls, the adapter changes the model, the GGUF reads back, the Modelfile is valid."""
    out = tmp_path / "run"
    report = training.train(
        str(tiny_model), export, out, SETTINGS, val_split=0.25, run_ollama=False
    )
    assert report["steps"] == 80
    assert report["final_loss"] < 0.9 * report["initial_loss"]
    helped = report["did_it_help"]
    assert helped["held_out_examples"] == 6 and helped["corrected_held_out"] == 6
    assert helped["adapted_loss"] < helped["base_loss"]
    assert helped["adapted_perplexity"] < helped["base_perplexity"]
    on_disk = json.loads((out / "train_report.json").read_text())
    for key in ("initial_loss", "final_loss", "eval_loss", "steps", "examples"):
        assert key in on_disk
    assert on_disk["examples"] == {"train": 18, "validation": 6, "corrected": 18}

    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (16, 32, 0.05)
    assert set(config["target_modules"]) == set(training.LLAMA_MODULES)

    metadata, shapes = training.read_adapter_gguf(out / "adapter.gguf")
    assert metadata["general.architecture"] == "llama"
    assert metadata["general.type"] == "adapter" and metadata["adapter.type"] == "lora"
    assert metadata["adapter.lora.alpha"] == 32.0
    assert len(shapes) == 2 * 7 * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == (16, 64)
    assert shapes["blk.0.attn_q.weight.lora_b"] == (64, 16)
    assert shapes["blk.1.attn_k.weight.lora_b"] == (32, 16)  # 2 KV heads of 16
    assert shapes["blk.1.ffn_down.weight.lora_a"] == (16, 128)

    lines = (out / "Modelfile").read_text().splitlines()
    assert lines[:3] == [
        "FROM llama3.2:1b",
        "ADAPTER ./adapter.gguf",
        "PARAMETER repeat_penalty 1.3",
    ]
    assert lines[3] == f'SYSTEM """{SYSTEM}"""'
    assert report["ollama_create"] == "ollama create spanwatch-analyst -f Modelfile"
    # llama.cpp's converter knows no byte-level BPE like this one: the check says so, and
    # the run still succeeds (test_training_llamacpp.py runs the check on a model it knows)
    check = on_disk["llama_cpp_check"]
    if check["engine"] is None:
        assert check["status"] == "skipped" and "not installed" in check["reason"]
    else:  # "skipped" where the converter is not installed
        assert check["status"] in ("error", "skipped") and "convert" in check["reason"], check

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer("Root cause: payments", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, out / "adapter")
        after = adapted(ids).logits
    assert (after - before).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no examples"),
        ("{not json\n", "not valid JSON"),
        ('{"something": "else"}\n', "not a spanwatch export record"),
        (
            json.dumps(
                {
                    "prompt": "p",
                    "completion": "c",
                    "original_completion": "c",
                    "rating": "good",
                    "system": "s",
                }
            )
            + "\n",
            "has a correction",
        ),
    ],
    ids=["empty", "malformed", "foreign", "no-corrections"],
)
def test_bad_exports_are_refused_before_anything_is_written(
    tiny_model: Path, tmp_path: Path, content: str, message: str
) -> None:
    """A clear error, and no output directory or leftovers."""
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=message):
        training.train(str(tiny_model), data, out, SETTINGS, run_ollama=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]


def test_a_base_model_that_does_not_exist(export: Path, tmp_path: Path) -> None:
    """A missing model fails clearly through the CLI, with a non-zero exit and nothing written."""
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanwatch.cli",
            "train",
            "--base-model",
            str(tmp_path / "no-such-model"),
            "--data",
            str(export),
            "--output",
            str(out),
            "--max-steps",
            "1",
            "--no-ollama",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "cannot load the base model" in done.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".run.partial-*"))


def test_the_committed_axolotl_config_is_what_the_cli_emits(tmp_path: Path) -> None:
    """training/axolotl.yaml is the output of spanwatch train --emit-axolotl with defaults."""
    emitted = tmp_path / "axolotl.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanwatch.cli",
            "train",
            "--emit-axolotl",
            str(emitted),
            "--data",
            "train.chat.jsonl",
            "--output",
            "./axolotl-out",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = emitted.read_text()
    assert "lora_r: 16" in text and "lora_alpha: 32" in text and "lora_dropout: 0.05" in text
    assert "base_model: meta-llama/Llama-3.2-1B-Instruct" in text
    committed = Path(__file__).parent.parent / "training" / "axolotl.yaml"
    assert committed.read_text() == text


def test_dpo_stage_prefers_the_corrections(tiny_model: Path, export: Path, tmp_path: Path) -> None:
    """--dpo: the adapter learns to prefer the correction over the model's own text."""
    report = training.train(
        str(tiny_model),
        export,
        tmp_path / "run",
        SETTINGS,
        val_split=0.25,
        run_ollama=False,
        dpo_steps=20,
    )
    dpo = report["dpo"]
    assert (dpo["pairs"], dpo["steps"]) == (12, 20)
    assert dpo["final_loss"] < dpo["initial_loss"]
    assert dpo["final_reward_margin"] > 0
    assert (tmp_path / "run" / "adapter.gguf").exists()


def test_without_llama_cpp_the_check_is_skipped_and_said_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No llama-cpp-python: the report and the summary say the check was skipped, and why."""
    from spanwatch.training import _llamacpp

    monkeypatch.setattr(_llamacpp, "llama_cpp_version", lambda: None)
    check = _llamacpp.check(
        _llamacpp.CheckInputs(
            base_model="unused",
            adapter_dir=tmp_path,
            adapter_gguf=tmp_path / "adapter.gguf",
            tokens=[1, 2, 3],
            work=tmp_path / "work",
        ),
        None,
    )
    assert check["status"] == "skipped"
    assert "llama-cpp-python is not installed" in check["reason"]
    report = {
        "steps": 1,
        "examples": {"train": 2},
        "device": "cpu",
        "initial_loss": 2.0,
        "final_loss": 1.0,
        "did_it_help": {"held_out_examples": 0},
        "llama_cpp_check": check,
    }
    assert training.summary(report)[-1] == (
        "llama.cpp check skipped: llama-cpp-python is not installed "
        "(pip install 'spanwatch[train]')"
    )


LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim"
    " + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def test_a_llama_3_chat_template_becomes_ollama_s_template(tiny_model: Path) -> None:
    """Llama 3's header/eot format is cut into the Go TEMPLATE Ollama uses for llama3.2."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = LLAMA3_TEMPLATE
    fmt = training.chat_format(tokenizer)
    assert fmt is not None
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    assert fmt.go_template() == (
        f"{{{{ if .System }}}}{header.format('system')}{{{{ .System }}}}<|eot_id|>{{{{ end }}}}"
        f'{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{header.format("user")}'
        "{{ .Content }}<|eot_id|>"
        f'{{{{ else if eq .Role "assistant" }}}}{header.format("assistant")}'
        "{{ .Content }}<|eot_id|>{{ end }}{{ end }}"
        f"{header.format('assistant')}"
    )
    assert fmt.stops() == ["<|eot_id|>"]


def test_a_template_that_cannot_be_cut_leaves_the_gguf_s_own(tiny_model: Path) -> None:
    """A chat template that refuses a system prompt: no TEMPLATE, Ollama takes the GGUF's."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}" + CHAT_TEMPLATE
    )
    assert training.chat_format(tokenizer) is None
    assert training.merged_modelfile(None, SYSTEM).splitlines() == [
        "FROM ./model.gguf",
        "# no TEMPLATE: Ollama takes the chat template stored in the GGUF",
        "PARAMETER repeat_penalty 1.3",
        f'SYSTEM """{SYSTEM}"""',
    ]


def test_merge_without_llama_cpp_s_converter_stops_before_training(
    tiny_model: Path, export: Path, tmp_path: Path
) -> None:
    """--merge needs llama.cpp's converter: a clear error at once, and nothing written."""
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"convert_hf_to_gguf\.py was not found"):
        training.train(
            str(tiny_model),
            export,
            out,
            SETTINGS,
            run_ollama=False,
            merge=True,
            llama_cpp=tmp_path / "no-llama.cpp",
        )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.jsonl"]
