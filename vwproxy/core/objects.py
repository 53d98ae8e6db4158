"""The in-memory form of stored objects and change events, and the per-resource tables.

An object is decoded once when it is written (or loaded) to pull out what selectors need, and
kept as the bytes every reader gets; an event refers to the objects before and after and
caches its watch frames, so one encoding serves every watcher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from vwproxy.kube import watch as wire

ObjectKey = tuple[str, str]  # (namespace, name) within one logical cluster
_NAME_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


class StoredObject:
    """One object as stored: its place, its revision, its JSON and its selectable attributes."""

    __slots__ = ("cluster", "namespace", "name", "rv", "raw", "labels", "_extra_fields", "deleting", "uid", "owners")

    def __init__(
        self,
        cluster: str,
        namespace: str,
        name: str,
        rv: int,
        raw: bytes,
        labels: dict[str, str],
        fields: dict[str, str],
        deleting: bool,
        uid: str = "",
        owners: tuple[str, ...] = (),
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.rv = rv
        self.raw = raw
        self.labels = labels
        # Only the fields beyond name and namespace are kept (most kinds have none): at many
        # thousands of objects a dict each is a measurable share of memory.
        extra = {k: v for k, v in fields.items() if k not in _NAME_FIELDS}
        self._extra_fields: dict[str, str] | None = extra or None
        self.deleting = deleting
        self.uid = uid
        self.owners = owners  # uids from metadata.ownerReferences, for garbage collection

    def decode(self) -> dict[str, Any]:
        obj: dict[str, Any] = orjson.loads(self.raw)
        return obj

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.cluster, self.namespace, self.name)

    @property
    def fields(self) -> dict[str, str]:
        """The field-selector attributes (kube's GetAttrs): name, namespace, and kind-specific ones."""
        out = {"metadata.name": self.name, "metadata.namespace": self.namespace}
        if self._extra_fields:
            out.update(self._extra_fields)
        return out


Encoder = Callable[[StoredObject], bytes]


def encode_json(obj: Any) -> bytes:
    """orjson's encoding, in a bytes object of exactly its size.

    orjson hands back its whole growth buffer (measured: ~8 KiB held for a 650-byte object);
    what is kept for the object's lifetime must not carry that slack.
    """
    return bytes(memoryview(orjson.dumps(obj)))


def owner_uids(metadata: dict[str, Any]) -> tuple[str, ...]:
    refs = metadata.get("ownerReferences")
    if not isinstance(refs, list):
        return ()
    return tuple(str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid"))


@dataclass
class ChangeEvent:
    """One committed change of one object; `prev` is the state before (None for ADDED)."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: StoredObject  # the new state; for DELETED, the last state stamped with the deletion RV
    prev: StoredObject | None
    storage_key: str
    _frames: dict[tuple[str, bool, str], bytes] = field(default_factory=dict, repr=False)

    def frame(self, event_type: str, use_prev: bool, encoding: str, encode: Encoder) -> bytes:
        """The watch frame for this event as one watcher sees it, encoded once per shape."""
        key = (event_type, use_prev, encoding)
        cached = self._frames.get(key)
        if cached is None:
            if use_prev:
                assert self.prev is not None
                # An object that stopped matching leaves as its previous state at this event's RV.
                prev = self.prev.decode()
                prev.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
                restamped = StoredObject(
                    self.prev.cluster, self.prev.namespace, self.prev.name, self.rv, encode_json(prev),
                    self.prev.labels, self.prev.fields, self.prev.deleting, self.prev.uid, self.prev.owners,
                )
                body = encode(restamped)
            else:
                body = encode(self.obj)
            cached = wire.frame(event_type, body)
            self._frames[key] = cached
        return cached


class ClusterBucket:
    """The objects of one resource in one logical cluster, with a cached name order."""

    __slots__ = ("objects", "_order")

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, StoredObject] = {}
        self._order: list[ObjectKey] | None = None

    def put(self, obj: StoredObject) -> None:
        key = (obj.namespace, obj.name)
        if key not in self.objects:
            self._order = None
        self.objects[key] = obj

    def remove(self, key: ObjectKey) -> None:
        if self.objects.pop(key, None) is not None:
            self._order = None

    def ordered(self, namespace: str = "") -> Iterator[StoredObject]:
        if self._order is None:
            self._order = sorted(self.objects)
        objects = self.objects
        if namespace:
            for key in self._order:
                if key[0] == namespace:
                    yield objects[key]
        else:
            for key in self._order:
                yield objects[key]


class ResourceTable:
    """All objects of one storage key, by logical cluster."""

    __slots__ = ("clusters", "_cluster_order")

    def __init__(self) -> None:
        self.clusters: dict[str, ClusterBucket] = {}
        self._cluster_order: list[str] | None = None

    def bucket(self, cluster: str) -> ClusterBucket:
        bucket = self.clusters.get(cluster)
        if bucket is None:
            bucket = ClusterBucket()
            self.clusters[cluster] = bucket
            self._cluster_order = None
        return bucket

    def get(self, cluster: str, namespace: str, name: str) -> StoredObject | None:
        bucket = self.clusters.get(cluster)
        return bucket.objects.get((namespace, name)) if bucket else None

    def drop_cluster(self, cluster: str) -> list[StoredObject]:
        bucket = self.clusters.pop(cluster, None)
        self._cluster_order = None
        return list(bucket.objects.values()) if bucket else []

    def ordered(self, cluster: str | None, namespace: str = "") -> Iterator[StoredObject]:
        """Objects in (cluster, namespace, name) order; `cluster=None` means every cluster."""
        if cluster is not None:
            bucket = self.clusters.get(cluster)
            if bucket:
                yield from bucket.ordered(namespace)
            return
        if self._cluster_order is None:
            self._cluster_order = sorted(self.clusters)
        for name in self._cluster_order:
            bucket = self.clusters.get(name)
            if bucket:
                yield from bucket.ordered(namespace)

    def count(self) -> int:
        return sum(len(b.objects) for b in self.clusters.values())
