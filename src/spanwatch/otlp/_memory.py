"""A soft memory limit for the receivers, like the Collector's memory_limiter.

Above the limit, requests are refused with a retryable status (the sender backs off and tries
again) instead of the process growing until the kernel kills it. Resident memory is read from
``/proc/self/statm`` at most every ``interval`` seconds, so the check costs next to nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable


def resident_bytes() -> int:
    """This process's resident set size; 0 where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_free_memory() -> bool:
    """Hand memory the C allocator holds free back to the OS (glibc's ``malloc_trim``); False
    where there is no such call. Freed blocks between live ones (a batch's columns, say) stay
    resident otherwise; this takes a millisecond or two."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class MemoryGuard:
    def __init__(self, limit_bytes: int, interval: float = 0.1) -> None:
        self.limit = limit_bytes
        self._interval = interval
        self._checked = 0.0
        self._over = False
        self.rss = 0

    def over(self) -> bool:
        """True while resident memory is above the limit (0 turns the limit off)."""
        if not self.limit:
            return False
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            self.rss = resident_bytes()
            self._over = self.rss > self.limit
        return self._over
