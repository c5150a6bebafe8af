from __future__ import annotations

import pytest

from spanwatch.model import SpanBatch


def test_filled_gives_empty_columns_for_what_is_not_given() -> None:
    """SpanBatch.filled: given columns as they are, the rest b"", 0 or "" per span."""
    batch = SpanBatch.filled(2, name=["a", "b"], start_ns=[1, 2], end_ns=[3, 4])
    (first, second) = batch.rows()
    assert (first.name, second.end_ns) == ("a", 4)
    assert (first.trace_id, first.kind, first.service, first.http_status_code) == (b"", 0, "", 0)
    batch.service_version[0] = "changed"
    assert batch.status_message == ["", ""]  # every column is its own list


def test_filled_refuses_unknown_or_short_columns() -> None:
    """A column that does not exist, or of the wrong length, is an error."""
    with pytest.raises(TypeError, match="no such columns: nmae"):
        SpanBatch.filled(1, nmae=["x"])
    with pytest.raises(ValueError, match="column name has 2 values, not 3"):
        SpanBatch.filled(3, name=["a", "b"])
