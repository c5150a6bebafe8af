"""The streaming detector: pure (no I/O, no threads, no wall clock).

``Detector.process(batch) -> list[Event]`` and ``Detector.advance(watermark) -> list[Event]``.
"""

from ._detector import Detector
from ._keys import Key, template
from ._settings import Settings

__all__ = ["Detector", "Key", "Settings", "template"]
