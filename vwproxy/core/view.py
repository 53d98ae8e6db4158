"""A view: the merged watch cache of one resource over many logical clusters and backends.

Reflectors (one per backend and resource) feed a view what the backends say: single changes
from their watches (`upsert`, `delete`), a whole cluster's list after a 410 or on engagement
(`replace_cluster`), and disengagement (`drop_cluster`). The view turns each into ChangeEvents
stamped with the next proxy RV from the process-wide `RVSequence` (DESIGN.md decision 2), keeps
the current objects and a bounded history of events, and serves lists (selectors, paging over
consistent snapshots, `resourceVersion` semantics), watch replay and RV translation for writes
with the same semantics as the embedded shard (`vwproxy.store.shard`).

Every object is held as bytes with `metadata.resourceVersion` = its proxy RV and
`annotations["kcp.io/cluster"]` = its logical cluster, encoded once when it is ingested; list
items and watch frames reuse those bytes (decision 3). Pure: no I/O, no asyncio, no threads. A
view is used from one thread (the server's event loop), so there is no locking.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator
from typing import Any


from vwproxy.core.listing import SNAPSHOT_CACHE_SIZE, SNAPSHOT_TTL_SECONDS, Lister, ListResult
from vwproxy.core.watch import Watcher, WatcherSet
from vwproxy.core.objects import ChangeEvent, ChangeHistory, ObjectKey, ResourceTable, StoredObject, encode_json, object_key, owner_uids
from vwproxy.core.rv import RVSequence
from vwproxy.kube import errors
from vwproxy.kube import watch as wire
from vwproxy.kube.kcp import CLUSTER_ANNOTATION
from vwproxy.kube.listoptions import ListOptions
from vwproxy.kube.selectors import FieldSelector

Obj = dict[str, Any]

# Events kept per view for watch resumption, as the embedded shard keeps per resource: at a few
# hundred bytes of shared references each, ~10k events cost a few MB and cover minutes of churn
# across thousands of workspaces; a watcher that falls further behind relists (410 Expired).
DEFAULT_HISTORY = 10_000
# The field labels a field selector may name on a view's objects (kube's generic GetAttrs):
# exported resources are custom resources, which support only these two.
SUPPORTED_FIELDS = frozenset({"metadata.name", "metadata.namespace"})

_CONFLICT_STALE = "the object has been modified; please apply your changes to the latest version and try again"
_CONFLICT_UNKNOWN = "the object is not known (it may have been deleted); please read it again and retry"


class View:
    """The merged cache of ONE resource (e.g. widgets.example.dev of one export identity)."""

    def __init__(
        self,
        seq: RVSequence,
        group: str,
        resource: str,
        history_size: int = DEFAULT_HISTORY,
        *,
        clock: Callable[[], float] = time.monotonic,
        snapshot_cache_size: int = SNAPSHOT_CACHE_SIZE,
        snapshot_ttl: float = SNAPSHOT_TTL_SECONDS,
    ) -> None:
        self.seq = seq
        self.group = group
        self.resource = resource
        self.storage_key = f"{group}/{resource}"
        self._table = ResourceTable()
        # Backend RVs of the held objects, per cluster so a disengagement drops them in one go.
        # An embedded shard's object keeps its RV as the shard's int (shared with the shard's object), a backend's as its text.
        self._backend_rvs: dict[str, dict[ObjectKey, str | int]] = {}
        self._engaged: set[str] = set()
        # Starting the history at the sequence's current RV makes every older RV "too old":
        # this view cannot say what happened before it existed.
        self._history = ChangeHistory(history_size, seq.current, self.storage_key)
        self._watchers = WatcherSet()
        self._lister = Lister(self._table, lambda: self._history, clock=clock, snapshot_cache_size=snapshot_cache_size, snapshot_ttl=snapshot_ttl)

    # -- reading ---------------------------------------------------------------------------

    @property
    def clusters(self) -> set[str]:
        """The logical clusters the view covers (engaged by a relist or holding objects)."""
        return set(self._engaged)

    @property
    def current_rv(self) -> int:
        """The newest proxy RV this view issued, or the sequence's current when it was created."""
        return self._history.newest_rv

    @property
    def compacted_rv(self) -> int:
        """RVs below this are too old to replay or to list exactly (410)."""
        return self._history.compacted

    def __len__(self) -> int:
        return self._table.count()

    def get(self, cluster: str, namespace: str, name: str) -> StoredObject | None:
        return self._table.get(cluster, namespace, name)

    def backend_rv(self, cluster: str, namespace: str, name: str) -> str | None:
        """The backend's resourceVersion of the object as held, for translating preconditions."""
        found = self._backend_rvs.get(cluster, {}).get(object_key(namespace, name))
        return None if found is None else str(found)

    def translate_precondition(self, cluster: str, namespace: str, name: str, proxy_rv: str) -> str:
        """The backend RV to send for a client's precondition on `proxy_rv`.

        Only the held version's proxy RV translates; any other RV is stale (or was never
        issued for this object), so the write would fail at the backend anyway: answer 409
        here without the round trip.
        """
        held = self.get(cluster, namespace, name)
        backend = self.backend_rv(cluster, namespace, name)
        if held is None or backend is None:
            raise errors.conflict(self.resource, name, self.group, _CONFLICT_UNKNOWN)
        if proxy_rv != str(held.rv):
            raise errors.conflict(self.resource, name, self.group, _CONFLICT_STALE)
        return backend

    def since(self, rv: int) -> builtins.list[ChangeEvent]:
        """The events after `rv`, for a watch resuming there; `TooOld` if some were forgotten."""
        return self._history.since(rv)

    def check_fields(self, fields: FieldSelector) -> None:
        for name in sorted(fields.field_names()):
            if name not in SUPPORTED_FIELDS:
                raise errors.bad_request(f"field label not supported: {name}")

    def ordered(self, cluster: str | None, namespace: str) -> Iterator[StoredObject]:
        return self._table.ordered(cluster, namespace)

    def add_watcher(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def list(self, cluster: str | None, namespace: str, opts: ListOptions) -> ListResult:
        """One page of a list, with the embedded shard's semantics (`core.listing`).

        The view is complete up to the sequence's current RV: every event of this view with a
        lower RV has been ingested, since ingestion draws and appends in one step. So an RV
        another view issued since this one's last event is not "too large" here.
        """
        self.check_fields(opts.fields)
        return self._lister.list(cluster, namespace, opts, self.current_rv, self.seq.current)

    # -- ingesting -------------------------------------------------------------------------

    def upsert(self, cluster: str, obj: Obj, backend_rv: str) -> builtins.list[ChangeEvent]:
        """A backend's object as of `backend_rv`: ADDED, MODIFIED, or nothing if unchanged.

        Unchanged means byte-identical to the held object apart from the RVs; its backend RV is
        still recorded, so preconditions translate to what the backend now holds. An object
        that comes back with another uid was deleted and re-created behind the view's back:
        that is DELETED then ADDED, as a watcher of the backend would have seen it.
        """
        self._engaged.add(cluster)
        return self._upsert(cluster, obj, backend_rv, [])

    def upsert_stored(self, source: StoredObject) -> builtins.list[ChangeEvent]:
        """`upsert` of an embedded shard's object (its RV is the backend RV), sharing its bytes.

        The shard stores objects stamped with `kcp.io/cluster` already, so the view's copy
        differs from the shard's only by its RV: it keeps the shard's encoding (`at_rv`) instead
        of decoding and encoding again.
        """
        self._engaged.add(source.cluster)
        return self._upsert_stored(source, [])

    def delete(self, cluster: str, namespace: str, name: str, backend_rv: str) -> builtins.list[ChangeEvent]:
        """The backend deleted an object: DELETED with its last state at the new proxy RV.

        The object's backend RV is forgotten with it (a deleted object has no precondition to
        translate); `backend_rv` is taken so that reflectors hand over every change alike. An
        object the view does not hold (already deleted, or never engaged) produces nothing.
        """
        events: builtins.list[ChangeEvent] = []
        held = self._table.get(cluster, namespace, name)
        if held is not None:
            self._remove(held, events)
        return events

    def replace_cluster(self, cluster: str, objects: builtins.list[tuple[Obj, str]]) -> builtins.list[ChangeEvent]:
        """A fresh list of one cluster (after a 410, or on engagement) replaces what is held.

        The difference becomes events in (namespace, name) order: DELETED for what is gone,
        ADDED/MODIFIED for what is new or changed, nothing for what is unchanged. Several
        backend changes the view missed collapse into one state change per object.
        """
        self._engaged.add(cluster)
        incoming: dict[ObjectKey, tuple[Obj, str]] = {}
        for obj, backend_rv in objects:
            incoming[object_key(*_key_of(obj))] = (obj, backend_rv)  # a duplicate key: the later one wins
        held_keys = set(self._backend_rvs.get(cluster, {}))
        events: builtins.list[ChangeEvent] = []
        for key in sorted(held_keys | set(incoming)):  # (keys sort in (namespace, name) order)
            if key in incoming:
                obj, backend_rv = incoming[key]
                self._upsert(cluster, obj, backend_rv, events)
            else:
                held = self._table.get_key(cluster, key)
                assert held is not None, "backend RVs are kept for exactly the held objects"
                self._remove(held, events)
        return events

    def replace_cluster_stored(self, cluster: str, objects: builtins.list[StoredObject]) -> builtins.list[ChangeEvent]:
        """`replace_cluster` with an embedded shard's objects of `cluster` (see `upsert_stored`)."""
        self._engaged.add(cluster)
        incoming = {o.key: o for o in objects}
        held_keys = self._backend_rvs.get(cluster, {}).keys()
        events: builtins.list[ChangeEvent] = []
        keys = sorted(held_keys | incoming.keys()) if held_keys else sorted(incoming)
        for key in keys:
            source = incoming.get(key)
            if source is not None:
                self._upsert_stored(source, events)
            else:
                held = self._table.get_key(cluster, key)
                assert held is not None, "backend RVs are kept for exactly the held objects"
                self._remove(held, events)
        return events

    def fill_stored(self, cluster: str, objects: builtins.list[StoredObject]) -> builtins.list[ChangeEvent]:
        """`replace_cluster_stored` for a view nobody has read yet: while it holds no event and
        has no watcher, the objects go in without an ADDED event each (at 100,000 objects those
        are most of a first fill's work, and a history of 10,000 would keep a tenth of them),
        and the history starts after them: nobody can resume from an RV inside the fill."""
        if self._watchers or len(self._history) or self._backend_rvs.get(cluster):
            return self.replace_cluster_stored(cluster, objects)
        self._engaged.add(cluster)
        if objects:
            bucket = self._table.bucket(cluster)
            backend_rvs = self._backend_rvs.setdefault(cluster, {})
            next_rv = self.seq.next
            for source in objects:
                bucket.put(source.at_rv(next_rv()))
                backend_rvs[source.key] = source.rv
            self._history.start_at(self.seq.current)
        return []

    def drop_cluster(self, cluster: str) -> builtins.list[ChangeEvent]:
        """Disengage a cluster: DELETED for each of its objects, in (namespace, name) order."""
        events: builtins.list[ChangeEvent] = []
        for held in builtins.list(self._table.ordered(cluster)):
            self._remove(held, events)
        self._table.drop_cluster(cluster)
        self._backend_rvs.pop(cluster, None)
        self._engaged.discard(cluster)
        return events

    def _upsert(self, cluster: str, obj: Obj, backend_rv: str, events: builtins.list[ChangeEvent]) -> builtins.list[ChangeEvent]:
        namespace, name = _key_of(obj)
        held = self._table.get(cluster, namespace, name)
        if held is not None:
            uid, held_uid = _text(_metadata(obj).get("uid")), held.uid
            if held_uid and uid and held_uid != uid:
                self._remove(held, events)
                held = None
            elif _stamped_bytes(obj, cluster, held.rv) == held.raw:
                # Unchanged apart from the RVs (a relist, a re-delivered event): no event, but the
                # backend RV may have moved and is what a precondition must now carry. Comparing
                # costs one throwaway encoding; the bytes kept are still encoded once, below.
                self._backend_rvs[cluster][held.key] = backend_rv
                return events
        rv = self.seq.next()
        stored = _stored(cluster, namespace, name, rv, _stamped_bytes(obj, cluster, rv), obj)
        self._table.bucket(cluster).put(stored)
        self._backend_rvs.setdefault(cluster, {})[stored.key] = backend_rv  # (the object's own key string)
        self._append(ChangeEvent(wire.MODIFIED if held else wire.ADDED, stored, held, self.storage_key), events)
        return events

    def _upsert_stored(self, source: StoredObject, events: builtins.list[ChangeEvent]) -> builtins.list[ChangeEvent]:
        if source.tail is None:  # its RV could not be located in its bytes: stamp a decoded copy
            return self._upsert(source.cluster, source.decode(), str(source.rv), events)
        cluster = source.cluster
        held = self._table.get_key(cluster, source.key)
        if held is not None:
            if held.head is source.head and held.tail is source.tail and held._rare is source._rare:
                # A copy of the source's bytes (a relist of what the view took): nothing changed,
                # and no uid to compare.
                self._backend_rvs[cluster][source.key] = source.rv
                return events
            held_uid, uid = held.uid, source.uid
            if held_uid and uid and held_uid != uid:
                self._remove(held, events)
                held = None
            elif held.same_bytes(source):
                self._backend_rvs[cluster][source.key] = source.rv
                return events
        rv = self.seq.next()
        stored = source.at_rv(rv)
        self._table.bucket(cluster).put(stored)
        self._backend_rvs.setdefault(cluster, {})[source.key] = source.rv
        self._append(ChangeEvent(wire.MODIFIED if held else wire.ADDED, stored, held, self.storage_key), events)
        return events

    def _remove(self, held: StoredObject, events: builtins.list[ChangeEvent]) -> None:
        rv = self.seq.next()
        gone = held.at_rv(rv)  # its last state at the deletion's RV
        bucket = self._table.clusters.get(held.cluster)
        if bucket is not None:
            bucket.remove(held.key)
        self._backend_rvs.get(held.cluster, {}).pop(held.key, None)
        self._append(ChangeEvent(wire.DELETED, gone, held, self.storage_key), events)

    def _append(self, event: ChangeEvent, events: builtins.list[ChangeEvent]) -> None:
        self._history.append(event)
        events.append(event)
        if self._watchers:
            self._watchers.offer(event)



def _metadata(obj: Obj) -> Obj:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _key_of(obj: Obj) -> tuple[str, str]:
    md = _metadata(obj)
    name = md.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a backend object without metadata.name cannot be cached")
    return (_text(md.get("namespace")), name)


def _stamped_bytes(obj: Obj, cluster: str, rv: int) -> bytes:
    """`obj` as the proxy shows it: proxy RV and `kcp.io/cluster`, encoded; `obj` is not changed."""
    md = dict(_metadata(obj))
    md["resourceVersion"] = str(rv)
    annotations = md.get("annotations")
    annotations = dict(annotations) if isinstance(annotations, dict) else {}
    annotations[CLUSTER_ANNOTATION] = cluster
    md["annotations"] = annotations
    out = dict(obj)
    out["metadata"] = md
    return encode_json(out)


def _stored(cluster: str, namespace: str, name: str, rv: int, raw: bytes, obj: Obj) -> StoredObject:
    md = _metadata(obj)
    labels = md.get("labels")
    label_map = {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(labels, dict) else {}
    fields = {"metadata.name": name, "metadata.namespace": namespace}
    return StoredObject(cluster, namespace, name, rv, raw, label_map, fields, bool(md.get("deletionTimestamp")), _text(md.get("uid")), owner_uids(md))


__all__ = ["View", "ListResult", "DEFAULT_HISTORY", "SNAPSHOT_CACHE_SIZE", "SNAPSHOT_TTL_SECONDS", "SUPPORTED_FIELDS"]
