"""A PEFT LoRA adapter as a GGUF file in llama.cpp's adapter layout, and the check of one.

Metadata: ``general.architecture = llama``, ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``. Tensors: ``blk.N.<tensor>.weight.lora_a`` (r × in) and ``.lora_b``
(out × r), the shapes PEFT trains, which is what llama.cpp checks when it loads an adapter.

llama.cpp's converter reorders the rows of Q and K within each head for its RoPE layout
(``LlamaModel.permute`` in ``convert_hf_to_gguf.py``): the base model's attn_q / attn_k weights in a
GGUF are not in Hugging Face's order. A LoRA delta ``B @ A`` on those weights has to be reordered
the same way, which for a product is a reorder of B's rows: ``lora_b`` of attn_q by the attention
heads, of attn_k by the KV heads; ``lora_a`` (which mixes the input) stays as PEFT trained it.
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


def rope_permute(rows: Any, n_head: int) -> Any:
    """Reorder the rows of a Q or K projection (or its lora_b) as llama.cpp's converter does.

    Within each of the ``n_head`` heads, Hugging Face keeps the two rotated halves apart
    (0 … d/2-1, then d/2 … d-1); llama.cpp wants them interleaved (0, d/2, 1, d/2+1, …).
    """
    out = rows.shape[0]
    if out % (2 * n_head):
        raise TrainingError(f"{out} rows do not split into {n_head} heads of rotated pairs")
    return (
        rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def write_adapter_gguf(
    state: dict[str, Any], alpha: float, path: Path, name: str, n_head: int, n_kv_head: int
) -> None:
    """Write the adapter's tensors (a PEFT state dict of torch tensors) as float32 GGUF.

    ``n_head`` and ``n_kv_head`` are the base model's attention and KV heads
    (``num_attention_heads``, ``num_key_value_heads``): attn_q's and attn_k's lora_b are
    reordered by them, as llama.cpp's converter reorders the base weights.
    """
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("general.name", name)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for key in sorted(state):
        array = state[key].detach().to("cpu").float().numpy()
        tensor = gguf_name(key)
        if tensor.endswith(".attn_q.weight.lora_b"):
            array = rope_permute(array, n_head)
        elif tensor.endswith(".attn_k.weight.lora_b"):
            array = rope_permute(array, n_kv_head)
        writer.add_tensor(tensor, np.ascontiguousarray(array, dtype=np.float32))
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
