"""The sanitizer job's own checks (``make sanitize``): the build under test really is the
ASan+UBSan one, and the committed fuzz corpora pass the harnesses' properties.

Outside that job (no ``SPANWATCH_SANITIZED=1``) the first test skips; the corpus test runs
wherever atheris is installed (the ``fuzz`` extra).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SANITIZED = os.environ.get("SPANWATCH_SANITIZED") == "1"


@pytest.mark.skipif(not SANITIZED, reason="not the sanitizer job")
def test_the_sanitizers_are_loaded_and_the_build_under_test_is_theirs() -> None:
    process = ctypes.CDLL(None)
    assert hasattr(process, "__asan_init"), "AddressSanitizer is not loaded (LD_PRELOAD)"
    for name in ("spanwatch.otlp._wire", "spanwatch.detect._kernel"):
        module = importlib.import_module(name)
        assert "sanitize" in Path(module.__file__ or "").parts, module.__file__
        library = ctypes.CDLL(module.__file__)
        assert hasattr(library, "__ubsan_handle_add_overflow") or hasattr(
            process, "__ubsan_handle_add_overflow"
        ), f"{name} was not built with UndefinedBehaviorSanitizer"


@pytest.mark.parametrize("harness", ["decoders", "kernel"])
def test_the_committed_corpus_passes_the_harness(harness: str) -> None:
    """Each seed input of benchmarks/corpus/HARNESS through its harness: no failure."""
    pytest.importorskip("atheris", reason="the fuzz extra is not installed")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        module = importlib.import_module(f"atheris_{harness}")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    seeds = sorted((ROOT / "benchmarks" / "corpus" / harness).iterdir())
    assert seeds
    for seed in seeds:
        module.one_input(seed.read_bytes())
