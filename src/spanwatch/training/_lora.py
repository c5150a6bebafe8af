"""LoRA supervised fine-tuning (transformers + PEFT) on rated analyses.

The loss is taken on the answer only (the corrected or approved write-up), never on the prompt.
The same code serves a tiny test model on a CPU and Llama-3.2-1B-Instruct on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ._data import Example, TrainingError

LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True, slots=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LLAMA_MODULES
    learning_rate: float = 2e-4
    max_steps: int = 200
    batch_size: int = 4
    max_length: int = 2048
    seed: int = 0


@dataclass
class Trained:
    model: Any
    tokenizer: Any
    device: str
    initial_loss: float
    final_loss: float
    base_eval_loss: float | None
    eval_loss: float | None
    steps: int
    log: list[dict[str, float]] = field(default_factory=list)


def load_base(base_model: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, device) from a local directory or a Hugging Face id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    local = Path(base_model).exists()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            base_model,
            local_files_only=local,
            dtype=torch.bfloat16 if device == "cuda" else torch.float32,
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"cannot load the base model {base_model!r}: give a local directory with a "
            f"Hugging Face model, or a hub id this machine can download ({exc})"
        ) from exc
    if tokenizer.chat_template is None:
        raise TrainingError(f"the base model {base_model!r} has no chat template to train with")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return cast(Any, model).to(device), tokenizer, device


def _ids(encoded: Any) -> list[int]:
    return list(encoded["input_ids"] if not isinstance(encoded, list) else encoded)


def tokenize(example: Example, tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """input_ids with labels on the answer only (-100 elsewhere)."""
    prompt = _ids(
        tokenizer.apply_chat_template(
            example.messages(with_answer=False), add_generation_prompt=True, tokenize=True
        )
    )
    full = _ids(tokenizer.apply_chat_template(example.messages(), tokenize=True))
    if full[: len(prompt)] != prompt:
        raise TrainingError(
            "the chat template does not keep the prompt as a prefix of the "
            "conversation: cannot tell the answer's tokens apart"
        )
    labels = [-100] * len(prompt) + full[len(prompt) :]
    return {
        "input_ids": full[:max_length],
        "attention_mask": [1] * min(len(full), max_length),
        "labels": labels[:max_length],
    }


def mean_loss(model: Any, rows: list[dict[str, list[int]]], device: str) -> float:
    """The average per-token loss on the answers."""
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:
            counted = sum(1 for label in row["labels"][1:] if label != -100)
            if not counted:
                continue
            out = model(
                input_ids=torch.tensor([row["input_ids"]], device=device),
                labels=torch.tensor([row["labels"]], device=device),
            )
            total += float(out.loss) * counted
            tokens += counted
    return total / tokens if tokens else math.nan


def train_lora(
    base_model: str,
    train: list[Example],
    val: list[Example],
    settings: LoraSettings,
    work_dir: Path,
) -> Trained:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(settings.seed)
    model, tokenizer, device = load_base(base_model)
    train_rows = [tokenize(e, tokenizer, settings.max_length) for e in train]
    val_rows = [tokenize(e, tokenizer, settings.max_length) for e in val]
    base_eval = mean_loss(model, val_rows, device) if val_rows else None
    model = get_peft_model(
        model,
        LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    initial = mean_loss(model, train_rows, device)
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, settings.max_steps // 10),
        logging_steps=max(1, settings.max_steps // 10),
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=device == "cpu",
        eval_strategy="steps" if val_rows else "no",
        eval_steps=max(1, settings.max_steps // 4),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    )
    result = trainer.train()
    return Trained(
        model=model,
        tokenizer=tokenizer,
        device=device,
        initial_loss=initial,
        final_loss=mean_loss(model, train_rows, device),
        base_eval_loss=base_eval,
        eval_loss=mean_loss(model, val_rows, device) if val_rows else None,
        steps=int(result.global_step),
        log=[
            {k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
            for entry in trainer.state.log_history
        ],
    )


def train_dpo(
    trained: Trained,
    pairs: list[Example],
    settings: LoraSettings,
    steps: int,
    work_dir: Path,
    beta: float = 0.1,
) -> dict[str, Any]:
    """Preference optimisation of the same adapter: the correction over the model's text.

    The reference is the base model (the adapter switched off), as TRL does for PEFT models.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

    rows = [
        {
            "prompt": e.messages(with_answer=False),
            "chosen": [{"role": "assistant", "content": e.answer}],
            "rejected": [{"role": "assistant", "content": e.rejected}],
        }
        for e in pairs
    ]
    args = DPOConfig(
        output_dir=str(work_dir / "dpo"),
        max_steps=steps,
        beta=beta,
        per_device_train_batch_size=min(settings.batch_size, len(rows)),
        learning_rate=settings.learning_rate,
        max_length=settings.max_length,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        use_cpu=trained.device == "cpu",
    )
    trainer = DPOTrainer(
        model=trained.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=trained.tokenizer,
    )
    result = trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    first, last = (logged[0], logged[-1]) if logged else ({}, {})
    return {
        "pairs": len(rows),
        "steps": int(result.global_step),
        "beta": beta,
        "initial_loss": first.get("loss"),
        "final_loss": last.get("loss"),
        "final_reward_margin": last.get("rewards/margins"),
        "final_reward_accuracy": last.get("rewards/accuracies"),
    }
