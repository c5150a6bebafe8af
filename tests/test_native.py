"""The C fast paths: built, fresh and loaded where they are required, and the pure-Python
references they stand in for still working on their own.

``SPANWATCH_REQUIRE_NATIVE=1`` (CI exports it) turns a missing, unimportable or stale
extension into a failure instead of a slower daemon; ``SPANWATCH_SANITIZED=1`` (``make
sanitize``) checks that the sanitizer build is the one under test.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spanwatch.detect import _filing
from spanwatch.otlp import _decode

REQUIRED = os.environ.get("SPANWATCH_REQUIRE_NATIVE") == "1"
SANITIZED = os.environ.get("SPANWATCH_SANITIZED") == "1"
ROOT = Path(__file__).resolve().parent.parent
MODULES = {
    "spanwatch.otlp._wire": "_wire.c",
    "spanwatch.detect._kernel": "_kernel.c",
}


@pytest.mark.parametrize("name", list(MODULES))
def test_each_extension_imports_and_is_newer_than_its_source(name: str) -> None:
    """Where required, the module imports; wherever it is built, it is not older than its .c
    (``make native`` rebuilds it on a change), so the tests never run an old build."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip(f"{name} was not built (set SPANWATCH_REQUIRE_NATIVE=1 to require it)")
    built = Path(module.__file__ or "")
    source = built.parent / MODULES[name]
    assert built.stat().st_mtime >= source.stat().st_mtime, (
        f"{built.name} is older than {source.name}: run make native"
    )
    if SANITIZED:
        assert "sanitize" in built.parts, f"{built} is not the sanitizer build"


def test_the_fast_paths_are_in_use_where_required() -> None:
    """The decoder and the detector take the C paths, not their references."""
    if not REQUIRED:
        pytest.skip("SPANWATCH_REQUIRE_NATIVE is not set")
    assert _decode.NATIVE and _decode._wire is not None
    assert _filing.NATIVE and _filing._kernel is not None


_PURE = """
import sys
sys.modules["spanwatch.otlp._wire"] = None  # import fails: as on an install without a compiler
sys.modules["spanwatch.detect._kernel"] = None
from spanwatch.detect import _filing
from spanwatch.otlp import _decode
assert not _decode.NATIVE and not _filing.NATIVE, "the C paths were not left out"
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_python_references_pass_on_their_own() -> None:
    """With both extensions made unimportable, the decoders' tests and the detector's run
    through the pure-Python paths: an install without a compiler still works."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPANWATCH_REQUIRE_NATIVE",)}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _PURE,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:cov",
            "tests/test_decode.py",
            "tests/test_detect.py",
            "-k",
            "not whole_day and not million_distinct",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
