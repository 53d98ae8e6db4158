"""Stamping relayed objects with `kcp.io/cluster`, and keeping clients from setting it.

Every object that leaves vwproxy names its logical cluster in `metadata.annotations["kcp.io/cluster"]`
(DESIGN.md decision 2, kcp-reference.md section 4). A backend does not know which logical cluster
it holds, so responses relayed from it are stamped here; request bodies have the annotation
removed, because clients send back the cached objects that carry it and the backend must never
store a value a client chose.

Pure functions over bytes: anything that is not what they expect passes through unchanged, and an
unchanged input is returned as the same bytes object.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from vwproxy.kube.kcp import CLUSTER_ANNOTATION

_BOOKMARK = "BOOKMARK"
_ERROR = "ERROR"
# The annotation as a JSON pointer segment ('/' escaped as '~1'), for JSON patch operations.
_POINTER = "/metadata/annotations/" + CLUSTER_ANNOTATION.replace("~", "~0").replace("/", "~1")
_PARENT_POINTERS = {"": 0, "/metadata": 1, "/metadata/annotations": 2}
# Byte patterns that can spell the annotation key in a body. A body with none of them and no
# escape character cannot carry it, which skips parsing for almost every request.
_NEEDLES = (CLUSTER_ANNOTATION.encode(), CLUSTER_ANNOTATION.replace("/", "~1").encode())


def _stamp_meta(obj: dict[str, Any], cluster: str) -> bool:
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = obj["metadata"] = {}
    if not isinstance(metadata, dict):
        return False
    annotations = metadata.get("annotations")
    if annotations is None:
        annotations = metadata["annotations"] = {}
    if not isinstance(annotations, dict):
        return False
    annotations[CLUSTER_ANNOTATION] = cluster
    return True


def _stamp_decoded(obj: dict[str, Any], cluster: str) -> bool:
    """Stamp an object, every item of a list, or every row object of a Table; False if nothing was."""
    kind = obj.get("kind")
    if kind == "Status":
        return False
    items = obj.get("items")
    if isinstance(items, list):
        changed = False
        for item in items:
            if isinstance(item, dict) and _stamp_meta(item, cluster):
                changed = True
        return changed
    if kind == "Table" and isinstance(obj.get("rows"), list):
        changed = False
        for row in obj["rows"]:
            inner = row.get("object") if isinstance(row, dict) else None
            if isinstance(inner, dict) and _stamp_meta(inner, cluster):
                changed = True
        return changed
    return _stamp_meta(obj, cluster)


def stamp_object(body: bytes, cluster: str) -> bytes:
    """`body` (a JSON object, a `…List` or a Table) with every object annotated `kcp.io/cluster: cluster`.

    A `Status`, a non-object or a body that is not JSON is returned unchanged.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(obj, dict) or not _stamp_decoded(obj, cluster):
        return body
    return orjson.dumps(obj)


def stamp_watch_line(line: bytes, cluster: str) -> bytes:
    """One watch event line with its object stamped; BOOKMARK, ERROR and garbage pass unchanged.

    A trailing newline is kept if the line had one.
    """
    newline = line.endswith(b"\n")
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(event, dict) or event.get("type") in (_BOOKMARK, _ERROR):
        return line
    inner = event.get("object")
    if not isinstance(inner, dict) or not _stamp_decoded(inner, cluster):
        return line
    return orjson.dumps(event) + (b"\n" if newline else b"")


# --- request bodies ----------------------------------------------------------------------------


def _strip_meta(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return False
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict) or CLUSTER_ANNOTATION not in annotations:
        return False
    del annotations[CLUSTER_ANNOTATION]
    return True


def _strip_object(obj: dict[str, Any]) -> bool:
    changed = _strip_meta(obj)
    items = obj.get("items")
    if isinstance(items, list):
        for item in items:
            changed = _strip_meta(item) or changed
    return changed


def _strip_json_patch(ops: list[Any]) -> tuple[list[Any], bool]:
    """Drop operations that write the annotation; strip it from values written to its parents."""
    kept: list[Any] = []
    changed = False
    for op in ops:
        if not isinstance(op, dict):
            kept.append(op)
            continue
        path = op.get("path")
        if path == _POINTER:
            changed = True  # add/replace/remove/test/copy/move onto the annotation itself
            continue
        value = op.get("value")
        if isinstance(path, str) and path in _PARENT_POINTERS and isinstance(value, dict):
            depth = _PARENT_POINTERS[path]
            if depth == 0:
                changed = _strip_object(value) or changed
            elif depth == 1:
                changed = _strip_meta({"metadata": value}) or changed
            elif CLUSTER_ANNOTATION in value:
                del value[CLUSTER_ANNOTATION]
                changed = True
        kept.append(op)
    return kept, changed


def strip_cluster_annotation(body: bytes) -> bytes:
    """A request body without `kcp.io/cluster` (objects, lists, merge/strategic/apply patches, JSON patches).

    JSON stays JSON; a YAML body that carries the annotation comes back as JSON, which every
    Kubernetes YAML decoder (apply patches included) accepts. Bodies that carry no such key, and
    bodies in other encodings (protobuf), are returned unchanged: a caller that accepts protobuf
    must decode it before relaying.
    """
    if b"\\" not in body and not any(needle in body for needle in _NEEDLES):
        return body
    try:
        decoded: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            decoded = yaml.safe_load(body)
        except (yaml.YAMLError, UnicodeDecodeError):
            return body
    if isinstance(decoded, dict):
        changed = _strip_object(decoded)
    elif isinstance(decoded, list):
        decoded, changed = _strip_json_patch(decoded)
    else:
        return body
    if not changed:
        return body
    # YAML may decode to timestamps or non-string keys; write them as the strings they were.
    return orjson.dumps(decoded, option=orjson.OPT_NON_STR_KEYS, default=str)
