"""The in-memory form of stored objects and change events, and the per-resource tables.

An object is decoded once when it is written (or loaded) to pull out what selectors need, and
kept as the bytes every reader gets; an event refers to the objects before and after and
caches its watch frames, so one encoding serves every watcher. A resource's history keeps an
ADDED event as its object alone (`ChangeHistory`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
import zstandard

from vwproxy.core.history import EventHistory
from vwproxy.kube import watch as wire

ObjectKey = str  # `object_key(namespace, name)`: an object's key within one logical cluster
_NAME_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


def object_key(namespace: str, name: str) -> ObjectKey:
    """The key of the object `namespace`/`name` in its bucket: one string, `namespace`, NUL, `name`.

    A (namespace, name) tuple held a tuple and a name string per object (112 B for a widget, this
    string 64 B; and a dict of string keys keeps no hash per entry, 13 B less). NUL sorts before
    any character a namespace may hold (none holds NUL), so keys sort in (namespace, name) order:
    "a" NUL "z" before "a-b" NUL "a", as ("a", "z") < ("a-b", "a").
    """
    return f"{namespace}\0{name}"


_RV_KEY = b'"resourceVersion":"'


def _split_at_rv(raw: bytes, rv: int) -> tuple[bytes, bytes | None]:
    """`raw` cut around the digits of its `"resourceVersion":"<rv>"`: (before, after).

    Cut only where that text occurs exactly once (it is then metadata's, which was stamped with
    `rv`); otherwise (None for `after`) the bytes are kept whole and a new RV means a new encoding.
    """
    marker = b"%b%d\"" % (_RV_KEY, rv)
    at = raw.find(marker)
    if at < 0 or raw.find(marker, at + 1) >= 0:
        return raw, None
    digits = at + len(_RV_KEY)
    return raw[:digits], raw[digits + len(marker) - len(_RV_KEY) - 1:]


class StoredObject:
    """One object as stored: its place, its revision, its JSON and its selectable attributes.

    The JSON is kept in two pieces around the digits of `metadata.resourceVersion` (`head`, then
    the RV, then `tail`), so an object that differs from another only by its RV shares the other's
    bytes: a view's copy of a shard object, a DELETED event's last state. `tail` is None when the
    RV could not be located; `head` is then the whole encoding, with this object's RV in it.
    Writers of list bodies and frames append `head`, the RV's digits and `tail` (`append_encoded`).
    """

    __slots__ = ("cluster", "key", "rv", "head", "tail", "labels", "_extra_fields", "_rare")

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
        # Cluster names repeat across thousands of objects: one string each.
        self.cluster = _intern(cluster)
        # The object's key in its bucket (`object_key`), its namespace and name in one string,
        # shared by every copy at another RV: a table and the views of it hold one per object.
        self.key: ObjectKey = f"{namespace}\0{name}"
        self.rv = rv
        self.head, self.tail = _split_at_rv(raw, rv)
        self.labels = _shared_labels(labels)
        # Only the fields beyond name and namespace are kept (most kinds have none): at many
        # thousands of objects a dict each is a measurable share of memory.
        extra = {k: v for k, v in fields.items() if k not in _NAME_FIELDS}
        self._extra_fields: dict[str, str] | None = extra or None
        # Most objects are neither marked for deletion nor owned, and their uid is in their bytes
        # where `uid` reads it: then one slot holds None (`_rare_of`).
        self._rare = _rare_of(deleting, owners, uid, self.head)

    @property
    def namespace(self) -> str:
        key = self.key
        return key[:key.index("\0")]

    @property
    def name(self) -> str:
        key = self.key
        return key[key.index("\0") + 1:]

    @property
    def uid(self) -> str:
        """`metadata.uid`, read from the bytes (`uid_in`) unless the object keeps it (`_rare_of`)."""
        rare = self._rare
        if rare is None or rare[2] is None:
            return uid_in(self.head)
        return rare[2]

    @property
    def deleting(self) -> bool:
        """Whether the object is marked for deletion (has a `deletionTimestamp`)."""
        rare = self._rare
        return rare is not None and rare[0]

    @property
    def owners(self) -> tuple[str, ...]:
        """The uids in `metadata.ownerReferences`, for garbage collection."""
        rare = self._rare
        return rare[1] if rare is not None else ()

    @property
    def raw(self) -> bytes:
        """The object's JSON, with `metadata.resourceVersion` = `rv`."""
        if self.tail is None:
            return self.head
        return b"%b%d%b" % (self.head, self.rv, self.tail)

    def decode(self) -> dict[str, Any]:
        obj: dict[str, Any] = orjson.loads(self.raw)
        return obj

    def at_rv(self, rv: int) -> StoredObject:
        """The same object at another RV, sharing this one's bytes where they could be cut."""
        if self.tail is None:
            obj = self.decode()
            obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
            return self.with_bytes(rv, encode_json(obj))
        copy = StoredObject.__new__(StoredObject)
        copy.cluster, copy.key, copy.rv = self.cluster, self.key, rv
        copy.head, copy.tail = self.head, self.tail
        copy.labels, copy._extra_fields, copy._rare = self.labels, self._extra_fields, self._rare
        return copy

    def with_bytes(self, rv: int, raw: bytes) -> StoredObject:
        """This object's place and attributes with another encoding at `rv`."""
        copy = StoredObject.__new__(StoredObject)
        copy.cluster, copy.key, copy.rv = self.cluster, self.key, rv
        copy.head, copy.tail = _split_at_rv(raw, rv)
        copy.labels, copy._extra_fields = self.labels, self._extra_fields
        copy._rare = _rare_of(self.deleting, self.owners, self.uid, copy.head)  # (other bytes: look for the uid again)
        return copy

    def same_bytes(self, other: StoredObject) -> bool:
        """Whether the two encodings are equal apart from the RV."""
        if self.tail is None or other.tail is None:
            return self.decoded_without_rv() == other.decoded_without_rv()
        return (self.head is other.head and self.tail is other.tail) or (self.head == other.head and self.tail == other.tail)

    def decoded_without_rv(self) -> dict[str, Any]:
        obj = self.decode()
        (obj.get("metadata") or {}).pop("resourceVersion", None)
        return obj

    @property
    def sort_key(self) -> tuple[str, str, str]:
        namespace, _, name = self.key.partition("\0")
        return (self.cluster, namespace, name)

    @property
    def fields(self) -> dict[str, str]:
        """The field-selector attributes (kube's GetAttrs): name, namespace, and kind-specific ones."""
        namespace, _, name = self.key.partition("\0")
        out = {"metadata.name": name, "metadata.namespace": namespace}
        if self._extra_fields:
            out.update(self._extra_fields)
        return out


class Packing:
    """How the objects of one kind are packed: zstd against a dictionary, an encoding of another
    object of the kind, which shares most of their bytes. The dictionary is digested once for
    every object it packs, where deflate against a preset dictionary reads it again for each
    object: half the CPU per object packed (`benchmarks/pack_bench.py`: 6.4 µs against 12.2 µs
    for a logical cluster), for about the same size."""

    __slots__ = ("_compressor", "_decompressor")

    def __init__(self, dictionary: bytes) -> None:
        digested = zstandard.ZstdCompressionDict(dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        digested.precompute_compress(level=1)
        self._compressor = zstandard.ZstdCompressor(dict_data=digested, write_checksum=False, write_content_size=True, write_dict_id=False)
        self._decompressor = zstandard.ZstdDecompressor(dict_data=digested)

    def pack(self, raw: bytes) -> bytes:
        # A copy: the compressor's bytes keep the allocation of the worst case (the input's size
        # and more), ten times what they hold; 30,000 of them held 50 MB too much.
        return memoryview(self._compressor.compress(raw)).tobytes()

    def unpack(self, packed: bytes) -> bytes:
        raw: bytes = self._decompressor.decompress(packed)
        return raw


class PackedObject(StoredObject):
    """A stored object whose JSON is kept packed against its kind's dictionary (`Packing`: at
    10,000 workspaces, their logical clusters, workspaces and bound CRDs pack to a tenth).
    Reading `head`, `tail` or `raw` unpacks it (a few µs), so only kinds that are read far less
    often than they are held are packed; everything else about it is a `StoredObject`'s, and
    copies at another RV are plain."""

    __slots__ = ("_packed", "_packing")
    _packed: bytes
    _packing: Packing

    @classmethod
    def of(cls, obj: StoredObject, packing: Packing) -> StoredObject:
        """`obj` packed with `packing` (`obj` itself when that would not save anything)."""
        raw = obj.raw
        packed = packing.pack(raw)
        if len(packed) * 2 > len(raw):
            return obj
        out = cls.__new__(cls)
        out.cluster, out.key, out.rv = obj.cluster, obj.key, obj.rv
        out.labels, out._extra_fields = obj.labels, obj._extra_fields
        out._rare = obj._rare  # (`uid` reads the same `head`, unpacked)
        out._packed, out._packing = packed, packing
        return out

    @property
    def raw(self) -> bytes:
        return self._packing.unpack(self._packed)

    @property
    def head(self) -> bytes:  # type: ignore[override]
        return _split_at_rv(self.raw, self.rv)[0]

    @property
    def tail(self) -> bytes | None:  # type: ignore[override]
        return _split_at_rv(self.raw, self.rv)[1]

    def at_rv(self, rv: int) -> StoredObject:
        return self.with_bytes(self.rv, self.raw).at_rv(rv)


def stored_attributes(obj: StoredObject, raw: bytes) -> tuple[int, bytes | None]:
    """What loading `obj` again takes besides its JSON `raw` (`Reloader`), to be stored beside it:
    where its RV's digits start in `raw` (-1: the bytes are not cut, `tail` is None), and its
    labels, kind-specific fields and rare slot as JSON, which a load would otherwise decode the
    object to find. None for the JSON when it cannot be encoded: a load then decodes the object."""
    if isinstance(obj, PackedObject):
        head, tail = _split_at_rv(raw, obj.rv)  # (its `head` would unpack it again)
    else:
        head, tail = obj.head, obj.tail
    try:
        # Exact-size bytes (`encode_json`), however long a caller holds them.
        attributes = encode_json([obj.labels or None, obj._extra_fields, obj._rare])
    except orjson.JSONEncodeError:
        attributes = None
    return (len(head) if tail is not None else -1), attributes


# Distinct attributes `Reloader` remembers before it starts over: most objects of a kind share a
# few (labels set by one controller, no extra fields, nothing rare), some kinds have one each.
_RELOADED_LIMIT = 50_000


class Reloader:
    """Makes the objects of a loading shard from their bytes and their `stored_attributes`,
    without decoding them (at 10,000 workspaces decoding and deriving was most of a restart).

    Objects with equal attributes share what they are decoded to (labels, fields, rare slot; none
    is changed in place), so each distinct set is decoded once. The object comes out as
    `StoredObject` would have made it from the decoded JSON; the cut is checked against the RV's
    text, and attributes that do not fit give None: the caller decodes that object.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[bytes, tuple[dict[str, str], dict[str, str] | None, _Rare | None]] = {}

    def __call__(self, cluster: str, namespace: str, name: str, rv: int, raw: bytes, rv_at: int, attributes: bytes) -> StoredObject | None:
        seen = self._seen.get(attributes)
        if seen is None:
            try:
                labels, extra, rare = orjson.loads(attributes)
                seen = (_shared_labels(labels or {}), extra or None, None if rare is None else (bool(rare[0]), tuple(rare[1]), rare[2]))
            except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, AttributeError):
                return None
            if len(self._seen) >= _RELOADED_LIMIT:
                self._seen.clear()
            self._seen[attributes] = seen
        obj = StoredObject.__new__(StoredObject)
        if rv_at < 0:
            obj.head, obj.tail = raw, None
        else:
            quoted = b'%d"' % rv
            if not (raw.startswith(quoted, rv_at) and rv_at >= len(_RV_KEY) and raw.startswith(_RV_KEY, rv_at - len(_RV_KEY))):
                return None
            obj.head, obj.tail = raw[:rv_at], raw[rv_at + len(quoted) - 1:]
        obj.cluster, obj.key, obj.rv = _intern(cluster), f"{namespace}\0{name}", rv
        obj.labels, obj._extra_fields, obj._rare = seen
        return obj


def append_encoded(parts: list[bytes], objects: Iterable[StoredObject], separator: bytes = b",") -> None:
    """Append each object's JSON (its pieces), followed by `separator`, to `parts` for one `b"".join`."""
    extend = parts.extend
    for obj in objects:
        tail = obj.tail
        if tail is None:
            extend((obj.head, separator))
        else:
            extend((obj.head, b"%d" % obj.rv, tail, separator))


_interned: dict[str, str] = {}


def _intern(text: str) -> str:
    found = _interned.get(text)
    if found is None:
        if len(_interned) > 100_000:  # names of clusters that came and went: start over
            _interned.clear()
        _interned[text] = found = text
    return found


_NO_LABELS: dict[str, str] = {}


_label_sets: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
_LABEL_SETS_LIMIT = 50_000


def _shared_labels(labels: dict[str, str]) -> dict[str, str]:
    """One dict for every object with the same labels (most objects of a kind share a few sets),
    with keys and values interned; empty labels share one dict. Label maps of stored objects are
    read, never changed in place."""
    if not labels:
        return _NO_LABELS
    key = tuple(labels.items())
    shared = _label_sets.get(key)
    if shared is None:
        if len(_label_sets) >= _LABEL_SETS_LIMIT:  # mostly unique sets: start over
            _label_sets.clear()
        shared = _label_sets[key] = {_intern(k): _intern(v) if len(v) <= 63 else v for k, v in labels.items()}
    return shared


Encoder = Callable[[StoredObject], bytes]


def encode_json(obj: Any) -> bytes:
    """orjson's encoding, in a bytes object of exactly its size.

    orjson hands back its whole growth buffer (measured: ~8 KiB held for a 650-byte object);
    what is kept for the object's lifetime must not carry that slack.
    """
    return bytes(memoryview(orjson.dumps(obj)))


_UID_AT = b'"uid":"'


def uid_in(head: bytes) -> str:
    """The text of the last `"uid":"<text>"` in `head` ("" if there is none): where
    `StoredObject.uid` reads an object's uid, in the JSON before its RV's digits.

    An encoding keeps `metadata.uid` as such text, and in both orders objects come in it is the
    last before the RV: the shard adds uid, creationTimestamp, generation and resourceVersion at
    the end of metadata (after a client's labels, managedFields and ownerReferences), an API
    server writes name, namespace, uid, resourceVersion first (ownerReferences after). Where this
    does not find the object's uid (a label or a field named "uid" in between, an escaped uid, no
    uid in the bytes), the object keeps it itself: `_rare_of` checks when the object is made, and
    its bytes do not change. Holding no uid saves each object 52 B (a 128-bit number and its slot);
    reading one searches its JSON back from the RV."""
    at = head.rfind(_UID_AT)
    if at < 0:
        return ""
    start = at + len(_UID_AT)
    end = head.find(b'"', start)
    return head[start:end].decode(errors="surrogateescape") if end >= 0 else ""


_Rare = tuple[bool, tuple[str, ...], str | None]


def _rare_of(deleting: bool, owners: tuple[str, ...], uid: str, head: bytes) -> _Rare | None:
    """What an object keeps in its `_rare` slot: None for most objects, neither marked for deletion
    nor owned and with `uid` where `uid_in` reads it in `head`; otherwise (deleting, owners, the
    uid when `uid_in` does not read it, else None)."""
    kept = None if uid_in(head) == uid else uid
    return (deleting, owners, kept) if deleting or owners or kept is not None else None


def owned_by(objects: Iterable[StoredObject], uid: str) -> Iterator[StoredObject]:
    """Those of `objects` with `uid` among their owners: garbage collection's pass over a logical
    cluster's objects, which reads the slot (a property read per object doubled its time)."""
    for obj in objects:
        rare = obj._rare
        if rare is not None and uid in rare[1]:
            yield obj


def owner_uids(metadata: dict[str, Any]) -> tuple[str, ...]:
    refs = metadata.get("ownerReferences")
    if not isinstance(refs, list):
        return ()
    return tuple(str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid"))


class ChangeEvent:
    """One committed change of one object; `prev` is the state before (None for ADDED)."""

    __slots__ = ("type", "obj", "prev", "storage_key", "_frames")

    def __init__(self, type: str, obj: StoredObject, prev: StoredObject | None, storage_key: str) -> None:
        self.type = type  # ADDED, MODIFIED, DELETED
        self.obj = obj  # the new state; for DELETED, the last state stamped with the deletion RV
        self.prev = prev
        self.storage_key = _intern(storage_key)  # one string for the thousands of events of a resource
        self._frames: dict[tuple[str, bool, str], bytes] | None = None

    @property
    def rv(self) -> int:
        """The object's: a history holds an event per write, and a slot of its own cost each 8 bytes."""
        return self.obj.rv

    def __repr__(self) -> str:
        return f"ChangeEvent(rv={self.rv}, type={self.type!r}, obj={self.obj.sort_key}, storage_key={self.storage_key!r})"

    def frame(self, event_type: str, use_prev: bool, encoding: str, encode: Encoder) -> bytes:
        """The watch frame for this event as one watcher sees it, encoded once per shape."""
        key = (event_type, use_prev, encoding)
        frames = self._frames
        if frames is None:
            frames = self._frames = {}
        cached = frames.get(key)
        if cached is None:
            if use_prev:
                assert self.prev is not None
                # An object that stopped matching leaves as its previous state at this event's RV.
                body = encode(self.prev.at_rv(self.rv))
            else:
                body = encode(self.obj)
            cached = wire.frame(event_type, body)
            frames[key] = cached
        return cached


class ChangeHistory:
    """A resource's history of changes, for resuming watches and exact lists (`EventHistory`),
    holding an ADDED event as its object alone.

    Histories fill with ADDED events when many objects are created (a start, a bulk load), and an
    event object beside each stored one cost 72 bytes. `since` builds them again: a replay of
    ADDED events encodes their frames for itself rather than sharing the live event's cache.
    """

    __slots__ = ("_entries", "storage_key")

    def __init__(self, capacity: int, start_rv: int, storage_key: str) -> None:
        self._entries: EventHistory[ChangeEvent | StoredObject] = EventHistory(capacity, start_rv)
        self.storage_key = _intern(storage_key)

    @property
    def compacted(self) -> int:
        return self._entries.compacted

    @property
    def newest_rv(self) -> int:
        return self._entries.newest_rv

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, event: ChangeEvent) -> None:
        added = event.type == wire.ADDED and event.prev is None and event.storage_key == self.storage_key
        self._entries.append(event.obj if added else event)

    def start_at(self, rv: int) -> None:
        self._entries.start_at(rv)

    def since(self, rv: int) -> list[ChangeEvent]:
        """Every kept event with an RV greater than `rv`; TooOld if some may have been forgotten."""
        return [
            entry if isinstance(entry, ChangeEvent) else ChangeEvent(wire.ADDED, entry, None, self.storage_key)
            for entry in self._entries.since(rv)
        ]


class EncodedRun:
    """A bucket's whole listing (`objects`, in order), its items' stored JSON as the pieces a list
    body joins (`pieces`: each object's, then a comma) and their size without the last comma: a
    list body's length is known before it copies a byte, and an unchanged bucket is listed again
    without touching an object. The pieces are the objects' own bytes and each RV's digits; for
    a packed kind they are not kept (`pieces` None), so that its objects stay packed. Kept until
    the bucket changes."""

    __slots__ = ("objects", "pieces", "size")

    def __init__(self, objects: list[StoredObject]) -> None:
        self.objects = objects
        pieces: list[bytes] = []
        append_encoded(pieces, objects)
        self.size = sum(map(len, pieces)) - 1 if pieces else 0
        self.pieces = pieces if all(type(obj) is StoredObject for obj in objects) else None


class ClusterBucket:
    """The objects of one resource in one logical cluster, with a cached name order and, once
    listed whole, the cached listing (`listed("")`, `encoded()`), dropped by any change."""

    __slots__ = ("objects", "_order", "_listing", "_encoded")

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, StoredObject] = {}
        self._order: list[ObjectKey] | None = None
        self._listing: list[StoredObject] | None = None
        self._encoded: EncodedRun | None = None

    def put(self, obj: StoredObject) -> None:
        key = obj.key
        if key not in self.objects:
            self._order = None
        self.objects[key] = obj
        self._listing = self._encoded = None

    def remove(self, key: ObjectKey) -> None:
        if self.objects.pop(key, None) is not None:
            self._order = None
            self._listing = self._encoded = None

    def ordered(self, namespace: str = "") -> Iterator[StoredObject]:
        objects = self.objects
        prefix = f"{namespace}\0"  # the keys of `namespace`'s objects start so (`object_key`)
        if len(objects) <= 1:  # most clusters hold one object of most kinds: no order worth keeping
            for obj in list(objects.values()):
                if not namespace or obj.key.startswith(prefix):
                    yield obj
            return
        if self._order is None:
            self._order = sorted(objects)
        if namespace:
            for key in self._order:
                if key.startswith(prefix):
                    yield objects[key]
        else:
            for key in self._order:
                yield objects[key]

    def listed(self, namespace: str = "") -> list[StoredObject]:
        """`ordered` as a list, built at C speed (a list is the hot path of every LIST). The
        whole bucket's is kept until a change: callers extend their own lists from it."""
        objects = self.objects
        if namespace:
            prefix = f"{namespace}\0"
            if len(objects) <= 1:
                return [obj for obj in objects.values() if obj.key.startswith(prefix)]
            if self._order is None:
                self._order = sorted(objects)
            return [objects[key] for key in self._order if key.startswith(prefix)]
        if len(objects) <= 1:  # nothing worth keeping
            return list(objects.values())
        listing = self._listing
        if listing is None:
            if self._order is None:
                self._order = sorted(objects)
            listing = self._listing = list(map(objects.__getitem__, self._order))
        return listing

    def encoded(self) -> EncodedRun:
        """The whole bucket's list items as stored (`EncodedRun`), kept until a change."""
        run = self._encoded
        if run is None:
            run = self._encoded = EncodedRun(self.listed())
        return run


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
        return bucket.objects.get(f"{namespace}\0{name}") if bucket else None  # (`object_key`)

    def get_key(self, cluster: str, key: ObjectKey) -> StoredObject | None:
        bucket = self.clusters.get(cluster)
        return bucket.objects.get(key) if bucket else None

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

    def listed(self, cluster: str | None, namespace: str = "") -> list[StoredObject]:
        """`ordered` as a new list."""
        if cluster is not None:
            bucket = self.clusters.get(cluster)
            return bucket.listed(namespace)[:] if bucket else []  # the bucket keeps its own
        if self._cluster_order is None:
            self._cluster_order = sorted(self.clusters)
        out: list[StoredObject] = []
        for name in self._cluster_order:
            bucket = self.clusters.get(name)
            if bucket:
                out += bucket.listed(namespace)
        return out

    def encoded(self, cluster: str | None) -> list[EncodedRun]:
        """The runs of `listed(cluster)`, in its order (empty buckets left out)."""
        if cluster is not None:
            bucket = self.clusters.get(cluster)
            return [bucket.encoded()] if bucket and bucket.objects else []
        if self._cluster_order is None:
            self._cluster_order = sorted(self.clusters)
        runs = []
        for name in self._cluster_order:
            bucket = self.clusters.get(name)
            if bucket and bucket.objects:
                runs.append(bucket.encoded())
        return runs

    def count(self) -> int:
        return sum(len(b.objects) for b in self.clusters.values())
