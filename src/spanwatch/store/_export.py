"""Training data from rated analyses, in four formats.

- ``seed``: ``prompt``, ``completion`` (the correction for bad ratings, the model's text for good
  ones), ``original_completion`` (the model's text), ``rating``; plus ``system``, ``analysis_id``
- ``chat``: ``messages`` (system, user, assistant) for chat-template supervised fine-tuning
- ``alpaca``: ``instruction`` (the system prompt), ``input`` (the incidents), ``output``
- ``dpo``: ``prompt``, ``chosen`` (the correction), ``rejected`` (the model's text); plus
  ``system``

Rules: an analysis counts with its latest rating only. A bad rating without a correction has no
better answer to teach: it is left out of every format (it still counts in the stats). ``dpo``
takes only bad ratings with a correction. Records with the same prompt are deduplicated, the
most recently rated one kept. A facts-only summary (not written by a model) is exported only
when an operator corrected it: the prompt the model would have been given, with the correction
as the answer, marked ``"fallback": true`` (never in ``dpo``: no model wrote the rejected text).
``seed`` records also carry the ``incidents`` the analysis explained, for ``spanwatch eval llm``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ._sqlite import RatedAnalysis

FORMATS = ("seed", "chat", "alpaca", "dpo")
Records = list[dict[str, Any]]


def export_records(rated: list[RatedAnalysis], fmt: str) -> Records:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    latest: dict[tuple[str, str], RatedAnalysis] = {}
    for record in rated:  # oldest rating first: later ones replace earlier ones
        latest[(record.system, record.user)] = record
    out: Records = []
    for r in sorted(latest.values(), key=lambda r: (r.rated_at_ns, r.analysis_id)):
        corrected = r.rating == "bad" and bool(r.correction.strip())
        if r.rating == "bad" and not corrected:
            continue
        if r.fallback and (not corrected or fmt == "dpo"):
            continue
        completion = r.correction if corrected else r.text
        mark: dict[str, Any] = {"fallback": True} if r.fallback else {}
        if fmt == "seed":
            out.append(
                {
                    "prompt": r.user,
                    "completion": completion,
                    "original_completion": r.text,
                    "rating": r.rating,
                    "system": r.system,
                    "analysis_id": r.analysis_id,
                    "incidents": list(r.incidents),
                }
                | mark
            )
        elif fmt == "chat":
            out.append(
                {
                    "messages": [
                        {"role": "system", "content": r.system},
                        {"role": "user", "content": r.user},
                        {"role": "assistant", "content": completion},
                    ]
                }
                | mark
            )
        elif fmt == "alpaca":
            out.append({"instruction": r.system, "input": r.user, "output": completion} | mark)
        elif corrected:  # dpo
            out.append(
                {"prompt": r.user, "chosen": r.correction, "rejected": r.text, "system": r.system}
            )
    return out


def split(records: Records, val_fraction: float) -> tuple[Records, Records]:
    """(train, validation), by a hash of each record: the same records split the same way."""
    if not 0 <= val_fraction < 1:
        raise ValueError("the validation split must be at least 0 and below 1")
    train: Records = []
    val: Records = []
    for record in records:
        digest = hashlib.sha256(repr(sorted(record.items())).encode()).digest()
        (val if digest[0] / 256 < val_fraction else train).append(record)
    return train, val
