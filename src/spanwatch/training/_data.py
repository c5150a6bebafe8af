"""Training examples from a ratings export (any of its formats), checked before any training.

Every format becomes chat examples (system, user, assistant = the answer to learn) and, where a
correction exists, preference pairs (chosen = the correction, rejected = the model's text).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanwatch.errors import SpanwatchError


class TrainingError(SpanwatchError):
    """A problem with the inputs, reported as ``spanwatch: <message>`` with a non-zero exit."""


@dataclass(frozen=True, slots=True)
class Example:
    system: str
    user: str
    answer: str
    rejected: str = ""  # the model's own text, when the answer is a correction

    @property
    def corrected(self) -> bool:
        return bool(self.rejected) and self.rejected != self.answer

    def messages(self, with_answer: bool = True) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]
        if with_answer:
            out.append({"role": "assistant", "content": self.answer})
        return out


def _from_record(record: Any, where: str) -> Example:
    if not isinstance(record, dict):
        raise TrainingError(f"{where}: a record must be a JSON object")
    if "messages" in record:  # chat
        roles = {
            m.get("role"): m.get("content", "") for m in record["messages"] if isinstance(m, dict)
        }
        if not roles.get("user") or not roles.get("assistant"):
            raise TrainingError(f"{where}: chat records need a user and an assistant message")
        return Example(roles.get("system", ""), roles["user"], roles["assistant"])
    if "chosen" in record and "rejected" in record:  # dpo
        return Example(
            record.get("system", ""),
            _text(record, "prompt", where),
            _text(record, "chosen", where),
            _text(record, "rejected", where),
        )
    if "completion" in record:  # seed
        original = record.get("original_completion", "")
        return Example(
            record.get("system", ""),
            _text(record, "prompt", where),
            _text(record, "completion", where),
            original if record.get("rating") == "bad" else "",
        )
    if "output" in record:  # alpaca
        return Example(
            record.get("instruction", ""),
            _text(record, "input", where),
            _text(record, "output", where),
        )
    raise TrainingError(f"{where}: not a spanwatch export record (seed, chat, alpaca or dpo)")


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TrainingError(f"{where}: {key!r} must be a non-empty string")
    return value


def load_examples(path: Path) -> list[Example]:
    """Read and check an export file; a clear TrainingError for anything unusable."""
    if not path.is_file():
        raise TrainingError(f"{path}: no such export file (make one with spanwatch export)")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise TrainingError(f"{path}:{number}: not valid JSON ({exc})") from None
            examples.append(_from_record(record, f"{path}:{number}"))
    if not examples:
        raise TrainingError(f"{path} holds no examples: rate some analyses, then export again")
    return examples


def split_examples(
    examples: list[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded split; corrected examples go to validation first, since "did it help?" is
    measured on corrected answers."""
    if len(examples) < 2 or val_fraction <= 0:
        return examples, []
    rng = random.Random(seed)
    shuffled = examples[:]
    rng.shuffle(shuffled)
    count = max(1, round(len(shuffled) * val_fraction))
    shuffled.sort(key=lambda e: not e.corrected)  # stable: corrected ones first
    return shuffled[count:], shuffled[:count]
