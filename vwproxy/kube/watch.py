"""Watch event framing: newline-delimited JSON `{"type": …, "object": …}` built from bytes.

Objects arrive already encoded; a frame is a concatenation, so one encoding serves every
watcher. See kcp-reference.md section 5 for the bookmark and 410 shapes.
"""

from __future__ import annotations

from typing import Any

import orjson

from vwproxy.kube.kcp import INITIAL_EVENTS_END_ANNOTATION

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"

_PREFIX = {t: b'{"type":"' + t.encode() + b'","object":' for t in (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR)}


def frame(event_type: str, object_bytes: bytes) -> bytes:
    return _PREFIX[event_type] + object_bytes + b"}\n"


def bookmark_frame(api_version: str, kind: str, resource_version: int, initial_events_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if initial_events_end:
        meta["annotations"] = {INITIAL_EVENTS_END_ANNOTATION: "true"}
    return frame(BOOKMARK, orjson.dumps({"kind": kind, "apiVersion": api_version, "metadata": meta}))


def error_frame(status: dict[str, Any]) -> bytes:
    return frame(ERROR, orjson.dumps(status))
