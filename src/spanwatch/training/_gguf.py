"""A PEFT LoRA adapter as a GGUF file in llama.cpp's adapter layout, and the check of one.

Metadata: ``general.architecture = llama``, ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``. Tensors: ``blk.N.<tensor>.weight.lora_a`` (r × in) and ``.lora_b``
(out × r), the shapes PEFT trains, which is what llama.cpp checks when it loads an adapter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ._data import TrainingError

# Hugging Face Llama module → llama.cpp tensor name
LLAMA_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_PEFT_KEY = re.compile(r"layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])(?:\.default)?\.weight$")


def gguf_name(peft_key: str) -> str:
    """``…layers.3.self_attn.q_proj.lora_A.weight`` → ``blk.3.attn_q.weight.lora_a``."""
    match = _PEFT_KEY.search(peft_key)
    if match is None or match.group(2) not in LLAMA_TENSORS:
        raise TrainingError(f"adapter tensor {peft_key!r} has no llama.cpp equivalent")
    layer, module, which = match.groups()
    return f"blk.{layer}.{LLAMA_TENSORS[module]}.weight.lora_{which.lower()}"


def write_adapter_gguf(state: dict[str, Any], alpha: float, path: Path, name: str) -> None:
    """Write the adapter's tensors (a PEFT state dict of torch tensors) as float32 GGUF."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("general.name", name)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for key in sorted(state):
        array = state[key].detach().to("cpu").float().numpy()
        writer.add_tensor(gguf_name(key), np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_adapter_gguf(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """(metadata, tensor name → shape as PyTorch writes it) of a GGUF adapter file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    metadata: dict[str, Any] = {}
    for field in reader.fields.values():
        if field.name.startswith(("general.", "adapter.")):
            metadata[field.name] = field.contents()
    # GGUF stores dimensions innermost first; reversed, they read like the PyTorch shapes.
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    return metadata, shapes


def check_adapter_gguf(path: Path, expected: dict[str, tuple[int, ...]], alpha: float) -> None:
    """Read the file back: llama.cpp's metadata, every tensor, consistent LoRA shapes."""
    metadata, shapes = read_adapter_gguf(path)
    wanted = {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"}
    for key, value in wanted.items():
        if metadata.get(key) != value:
            raise TrainingError(f"{path}: {key} is {metadata.get(key)!r}, expected {value!r}")
    if abs(float(metadata.get("adapter.lora.alpha", -1)) - alpha) > 1e-6:
        raise TrainingError(f"{path}: adapter.lora.alpha is not {alpha}")
    if shapes != expected:
        missing = sorted(set(expected) - set(shapes))
        raise TrainingError(f"{path}: tensors differ from the adapter's (missing: {missing[:5]})")
    for name, (rank, _) in ((n, s) for n, s in shapes.items() if n.endswith("lora_a")):
        b = shapes[name[:-1] + "b"]
        if b[1] != rank:
            raise TrainingError(f"{path}: {name} and its lora_b disagree on the rank")
