"""Object metadata helpers: timestamps, uids, generated names, the server-managed fields."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import datetime, timezone
from typing import Any

# Kubernetes' generateName alphabet: no vowels (no words) and no look-alike characters.
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_SUFFIX_LENGTH = 5

Obj = dict[str, Any]


_last_second: list[Any] = [None, ""]  # (whole second, its text): every write stamps a time


def now_rfc3339() -> str:
    """Second precision, UTC, as metav1.Time serialises."""
    second = int(time.time())
    if second != _last_second[0]:
        _last_second[:] = [second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
    return str(_last_second[1])


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(GENERATED_SUFFIX_LENGTH))


def metadata(obj: Obj) -> Obj:
    """The object's metadata, created if missing (the caller owns `obj`)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def labels_of(obj: Obj) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


def set_annotation(obj: Obj, key: str, value: str) -> None:
    meta = metadata(obj)
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
        meta["annotations"] = annotations
    annotations[key] = value


def drop_annotation(obj: Obj, key: str) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(key, None)
            if not annotations:
                meta.pop("annotations", None)


def without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}
