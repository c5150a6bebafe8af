"""SQLite storage of incidents, analyses and ratings, and the training exports."""

from ._export import FORMATS, export_records, split
from ._sqlite import RatedAnalysis, Store, StoreError

__all__ = [
    "FORMATS",
    "RatedAnalysis",
    "Store",
    "StoreError",
    "export_records",
    "split",
]
