"""llama.cpp's side of the loop: its own converter, and its logits, to check what Ollama runs.

Ollama runs GGUF models in llama.cpp. The check converts the base model with llama.cpp's
``convert_hf_to_gguf.py``, loads it with the adapter GGUF in llama.cpp (llama-cpp-python), and
compares the logits with PEFT's on the same tokens. Both sides run in float32 on the CPU (the
KV cache too), so what is left is the difference between the two engines, not a rounding choice.

With ``merge`` it converts the base model with the adapter merged in (``merge_and_unload``)
twice: to float32, whose logits are compared with the merged model's, and to the f16 file that
is deployed, which is checked to hold exactly the f16 rounding of every float32 tensor. The f16
file's own logits differ from PEFT's by that rounding (reported, a few hundredths on the test
model); its layout is the float32 file's, proved by the comparison.

The converter is not part of any wheel: it is found in ``SPANWATCH_LLAMA_CPP`` (a llama.cpp
checkout, or the ``vendor/llama.cpp`` folder of the llama-cpp-python source), else under
``<venv>/share/llama.cpp`` where ``make`` puts the copy that comes with the pinned
llama-cpp-python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._data import TrainingError

CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_ENV = "SPANWATCH_LLAMA_CPP"
# max abs logit difference under which llama.cpp and PEFT count as computing the same thing
TOLERANCE = 1e-3
# the type of the merged model.gguf: f16 keeps the weights as they were trained (bf16/f32
# rounded to 11 bits), is what current Ollama imports without converting, and can still be
# quantised with llama.cpp's llama-quantize; Ollama 0.34.1 and later no longer quantise on create
MERGED_OUTTYPE = "f16"
_GGML_TYPE_F32 = 0


def find_converter(explicit: Path | None = None) -> Path:
    """The folder holding llama.cpp's ``convert_hf_to_gguf.py`` (and its ``conversion/``).

    ``explicit`` (``--llama-cpp``) when given, else ``$SPANWATCH_LLAMA_CPP``, else
    ``<venv>/share/llama.cpp``.
    """
    env = os.environ.get(CONVERTER_ENV)
    if explicit is not None:
        candidates = [explicit]
    else:
        candidates = [Path(env)] if env else []
        candidates.append(Path(sys.prefix) / "share" / "llama.cpp")
    for folder in candidates:
        if (folder / CONVERTER).is_file():
            return folder
    raise TrainingError(
        f"llama.cpp's {CONVERTER} was not found in {', '.join(map(str, candidates))}: "
        "`make test` (the train setup in the Makefile) puts it in <venv>/share/llama.cpp; "
        f"or set {CONVERTER_ENV} to a llama.cpp checkout"
    )


def llama_cpp_version() -> str | None:
    """llama-cpp-python's version, or None when it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return str(getattr(llama_cpp, "__version__", "unknown"))


def convert(model_dir: Path, outfile: Path, outtype: str, converter: Path) -> None:
    """A Hugging Face model directory → one GGUF file, by llama.cpp's converter."""
    done = subprocess.run(
        [
            sys.executable,
            str(converter / CONVERTER),
            str(model_dir),
            "--outfile",
            str(outfile),
            "--outtype",
            outtype,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not outfile.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise TrainingError(f"llama.cpp's converter could not convert {model_dir}: {tail}")


def llama_logits(model: Path, tokens: list[int], lora: Path | None = None) -> Any:
    """llama.cpp's logits (tokens × vocabulary, float32) for ``tokens``, with ``lora`` applied."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model),
        lora_path=str(lora) if lora is not None else None,
        n_ctx=max(64, len(tokens)),
        n_batch=max(64, len(tokens)),
        n_ubatch=max(64, len(tokens)),
        n_threads=max(1, min(4, os.cpu_count() or 1)),
        logits_all=True,
        type_k=_GGML_TYPE_F32,
        type_v=_GGML_TYPE_F32,
        seed=0,
        verbose=False,
    )
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32, copy=True)
    finally:
        llm.close()


@dataclass(frozen=True, slots=True)
class CheckInputs:
    base_model: str
    adapter_dir: Path
    adapter_gguf: Path
    tokens: list[int]
    work: Path
    merged_gguf: Path | None = None


def check(inputs: CheckInputs, converter: Path | None) -> dict[str, Any]:
    """Convert, load in llama.cpp, compare with PEFT; the report's ``llama_cpp_check``.

    Writes ``inputs.merged_gguf`` when it is set (even when llama-cpp-python is missing, in
    which case the comparison is skipped). Raises TrainingError when a file it was asked to
    write cannot be made; a comparison that cannot run is reported, not raised.
    """
    version = llama_cpp_version()
    result: dict[str, Any] = {
        "engine": f"llama-cpp-python {version}" if version else None,
        "tolerance": TOLERANCE,
        "tokens": len(inputs.tokens),
    }
    if version is None and inputs.merged_gguf is None:
        return result | {
            "status": "skipped",
            "reason": "llama-cpp-python is not installed (pip install 'spanwatch[train]')",
        }
    if converter is None:
        try:
            converter = find_converter()
        except TrainingError as exc:
            if inputs.merged_gguf is not None:
                raise
            return result | {"status": "skipped", "reason": str(exc)}
    inputs.work.mkdir(parents=True, exist_ok=True)
    try:
        return result | _compare(inputs, converter, version is not None)
    finally:
        shutil.rmtree(inputs.work, ignore_errors=True)


def _compare(inputs: CheckInputs, converter: Path, run_llama: bool) -> dict[str, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(inputs.base_model).exists()
    tokenizer = AutoTokenizer.from_pretrained(inputs.base_model, local_files_only=local)
    base: Any = AutoModelForCausalLM.from_pretrained(
        inputs.base_model, local_files_only=local, dtype=torch.float32
    )
    base.eval()
    ids = torch.tensor([inputs.tokens])
    found: dict[str, Any] = {}
    with torch.no_grad():
        base_logits = base(ids).logits[0].numpy()
    if run_llama:
        # the base model as llama.cpp's converter writes it, in float32
        base_dir, base_gguf = inputs.work / "base", inputs.work / "base.gguf"
        base.save_pretrained(str(base_dir))
        tokenizer.save_pretrained(str(base_dir))
        try:
            convert(base_dir, base_gguf, "f32", converter)
        except TrainingError as exc:
            if inputs.merged_gguf is None:
                return {"status": "error", "reason": str(exc)}
            found["adapter"] = {"status": "error", "reason": str(exc)}
        shutil.rmtree(base_dir, ignore_errors=True)
    peft = PeftModel.from_pretrained(base, str(inputs.adapter_dir))
    peft.eval()
    with torch.no_grad():
        adapted = peft(ids).logits[0].numpy()
    effect = _max_diff(adapted, base_logits)
    if run_llama and "adapter" not in found:
        cpp_base = llama_logits(base_gguf, inputs.tokens)
        cpp_adapted = llama_logits(base_gguf, inputs.tokens, lora=inputs.adapter_gguf)
        base_gguf.unlink()
        found["adapter"] = {
            "max_abs_logit_diff": _max_diff(cpp_adapted, adapted),
            "adapter_effect": effect,
            "base_max_abs_logit_diff": _max_diff(cpp_base, base_logits),
            "llama_cpp_adapter_effect": _max_diff(cpp_adapted, cpp_base),
        }
    if inputs.merged_gguf is not None:
        merged = peft.merge_and_unload()
        with torch.no_grad():
            merged_logits = merged(ids).logits[0].numpy()
        merged_dir = inputs.work / "merged"
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        merged_f32 = inputs.work / "merged-f32.gguf"
        convert(merged_dir, merged_f32, "f32", converter)
        convert(merged_dir, inputs.merged_gguf, MERGED_OUTTYPE, converter)
        shutil.rmtree(merged_dir, ignore_errors=True)
        found["merged"] = {
            "file": inputs.merged_gguf.name,
            "outtype": MERGED_OUTTYPE,
            "is_rounded_f32": rounded_from(inputs.merged_gguf, merged_f32),
            "adapter_effect": _max_diff(merged_logits, base_logits),
        }
        if run_llama:
            found["merged"] |= {
                "max_abs_logit_diff": _max_diff(
                    llama_logits(merged_f32, inputs.tokens), merged_logits
                ),
                "deployed_max_abs_logit_diff": _max_diff(
                    llama_logits(inputs.merged_gguf, inputs.tokens), merged_logits
                ),
            }
        merged_f32.unlink()
    if not run_llama:
        return found | {
            "status": "skipped",
            "reason": "llama-cpp-python is not installed (pip install 'spanwatch[train]')",
        }
    return found | {"status": _status(found)}


def rounded_from(rounded: Path, exact: Path) -> bool:
    """Whether GGUF ``rounded`` holds every tensor of ``exact``, each rounded to its own type."""
    import gguf
    import numpy as np

    exact_tensors = {t.name: t for t in gguf.GGUFReader(str(exact)).tensors}
    seen = 0
    for tensor in gguf.GGUFReader(str(rounded)).tensors:
        other = exact_tensors.get(tensor.name)
        mine = np.asarray(tensor.data)
        if other is None or tensor.shape.tolist() != other.shape.tolist():
            return False
        if not np.array_equal(mine, np.asarray(other.data).astype(mine.dtype)):
            return False
        seen += 1
    return seen == len(exact_tensors)


def _status(found: dict[str, Any]) -> str:
    if any(part.get("status") == "error" for part in found.values()):
        return "error"
    diffs = [part["max_abs_logit_diff"] for part in found.values() if "max_abs_logit_diff" in part]
    rounded = all(part.get("is_rounded_f32", True) for part in found.values())
    return "passed" if diffs and rounded and all(d < TOLERANCE for d in diffs) else "failed"


def _max_diff(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
