"""The objects kopf keeps, without `metadata.managedFields`.

kopf holds the latest body of every object it has run a daemon for, also after the daemon
stopped because its `when=` filter no longer matches (it may start again), so a settled
closed job costs its whole body for as long as the operator runs. Server-side apply
bookkeeping is the largest part of that body — one nested mapping per field each manager
set, status included — and neither kopf nor this operator reads it. The watch drops it
before kopf sees the event, which also saves its parsing on every event.
"""

from __future__ import annotations

from typing import Any


def without_managed_fields(item: Any) -> Any:
    """A watch event with `object.metadata.managedFields` removed (other items as they are)."""
    if isinstance(item, dict):
        obj = item.get("object")
        if isinstance(obj, dict):
            metadata = obj.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("managedFields", None)
    return item
