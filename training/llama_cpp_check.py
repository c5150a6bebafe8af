"""The figures in training/README.md: spanwatch train --merge on the tests' tiny Llama, checked
in llama.cpp against PEFT. ``--unpermuted`` writes the adapter in PEFT's row order instead (what
spanwatch wrote before the fix), to show what the check catches.

    .venv/bin/python training/llama_cpp_check.py [--unpermuted]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_training import SETTINGS, _examples, build_tiny_llama

from spanwatch import training
from spanwatch.training import _gguf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unpermuted", action="store_true", help="the adapter without the fix")
    args = parser.parse_args()
    if args.unpermuted:

        def unpermuted(rows: Any, n_head: int) -> Any:
            return rows

        _gguf.rope_permute = unpermuted
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        model = build_tiny_llama(root / "model", byte_fallback=True, initializer_range=0.2)
        data = root / "seed.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _examples()))
        report = training.train(
            str(model), data, root / "run", SETTINGS, val_split=0.25, run_ollama=False, merge=True
        )
    print(json.dumps(report["llama_cpp_check"], indent=2))
    print("\n".join(training.summary(report)))
    return 0 if report["llama_cpp_check"]["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
