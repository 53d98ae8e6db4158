"""The embedded shard: many logical clusters' objects, one revision sequence, SQLite underneath.

This is Kubernetes' generic registry for every resource at once. All objects are held in memory
(as kube-apiserver's watch cache holds them) and every write goes to SQLite first, in one
transaction with the new revision, before memory, history and watchers see it. Everything here
runs on one event loop thread without awaiting between a read and the write that depends on it,
so a write's preconditions cannot be invalidated half-way.
"""

from __future__ import annotations

import builtins
import gc as cyclic_gc
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from vwproxy.core.listing import Lister, ListResult, matching
from vwproxy.kube import errors, meta, validation
from vwproxy.kube import watch as wire
from vwproxy.kube.errors import Cause
from vwproxy.kube.kcp import CLUSTER_ANNOTATION, LOGICAL_CLUSTER_OBJECT_NAME, PATH_ANNOTATION, ROOT_CLUSTER
from vwproxy.kube.listoptions import NOT_OLDER_THAN, ListOptions
from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.kube.selectors import FieldSelector
from vwproxy.store import gc, strategy
from vwproxy.core.objects import (
    ChangeEvent, ChangeHistory, PackedObject, Packing, Reloader, ResourceTable, StoredObject, encode_json, owner_uids, stored_attributes,
)
from vwproxy.store.registry import CRD_STORAGE_KEY, ResourceRegistry
from vwproxy.store.sqlite import Change, Put, Remove, Row, SqliteStore, StorageError
from vwproxy.core.watch import Watcher

log = logging.getLogger(__name__)

# Events kept per resource for watch resumption; older RVs get 410 Expired and clients relist.
DEFAULT_HISTORY_SIZE = 10_000

LOGICAL_CLUSTERS_KEY = "core.kcp.io/logicalclusters"
NAMESPACES_KEY = "/namespaces"
WORKSPACES_KEY = "tenancy.kcp.io/workspaces"
# Kinds held packed (`PackedObject`): one or more per workspace, read by reconcilers and lists
# far less often than they are held. At 10,000 workspaces their JSON is a third of the shard's.
PACKED_KEYS = frozenset({CRD_STORAGE_KEY, LOGICAL_CLUSTERS_KEY, WORKSPACES_KEY})
DEFAULT_NAMESPACE = "default"

_BUILTIN_BY_KEY = {r.storage_key: r for r in BUILTIN_RESOURCES}

Obj = dict[str, Any]


@dataclass
class WriteChecks:
    """How a write treats fields its schema does not know (`fieldValidation`), and what it warns about."""

    field_validation: str = "Warn"  # Strict: 400; Warn: a Warning header; Ignore: silently pruned
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    """A change staged in a transaction, before it is committed."""

    storage_key: str
    event_type: str
    obj: StoredObject
    prev: StoredObject | None


def _decoded(storage_key: str, cluster: str, namespace: str, name: str, rv: int, body: bytes, obj: Obj) -> StoredObject:
    """The stored object of a row, from its decoded JSON `obj` (what `Reloader` does without it)."""
    md = obj.get("metadata") or {}
    fields = strategy.selectable_fields(storage_key, obj, namespace, name)
    return StoredObject(
        cluster, namespace, name, rv, body, md.get("labels") or {}, fields,
        bool(md.get("deletionTimestamp")), str(md.get("uid") or ""), owner_uids(md),
    )


def _attribute_rows(objects: Iterable[StoredObject], storage_keys: Iterable[str]) -> Iterator[tuple[int, bytes | None, str, str, str, str]]:
    """(rv_at, attrs, cluster, storage key, namespace, name) of `objects` for
    `SqliteStore.fill_attributes`, made one at a time as SQLite takes them."""
    for obj, storage_key in zip(objects, storage_keys):
        raw = obj.raw
        yield (*stored_attributes(obj, raw), obj.cluster, storage_key, obj.namespace, obj.name)


def _stamp(obj: Obj, cluster: str, rv: int) -> None:
    md = meta.metadata(obj)
    md["resourceVersion"] = str(rv)
    meta.set_annotation(obj, CLUSTER_ANNOTATION, cluster)


def _same_but_metadata(obj: Obj, old: Obj) -> bool:
    """Whether `obj` holds what `old` holds outside `metadata`, with the same JSON: true is not 1,
    1.0 is not 1, members in the same order (a merge patch keeps the order it found), and the
    same metadata name and generateName, the only metadata a CRD schema may constrain."""
    md, old_md = obj.get("metadata") or {}, old.get("metadata") or {}
    if md.get("name") != old_md.get("name") or md.get("generateName") != old_md.get("generateName") or len(obj) != len(old):
        return False
    try:
        return all(
            key in old and (key == "metadata" or value is old[key] or orjson.dumps(value) == orjson.dumps(old[key])) for key, value in obj.items()
        )
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits: validated
        return False


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Transaction:
    """Changes committed together: one SQLite transaction, one revision each."""

    def __init__(self, shard: Shard, dry_run: bool = False) -> None:
        self._shard = shard
        self._dry_run = dry_run
        self._next_rv = shard.revision
        self.pending: list[_Pending] = []

    def _stored(self, storage_key: str, cluster: str, obj: Obj, rv: int) -> StoredObject:
        md = obj["metadata"]
        namespace, name = md.get("namespace", "") or "", md["name"]
        fields = strategy.selectable_fields(storage_key, obj, namespace, name)
        return self._shard.packed(storage_key, StoredObject(
            cluster, namespace, name, rv, encode_json(obj), dict(md.get("labels") or {}), fields, bool(md.get("deletionTimestamp")),
            str(md.get("uid") or ""), owner_uids(md),
        ))

    def put(self, storage_key: str, cluster: str, obj: Obj, prev: StoredObject | None) -> StoredObject:
        if self._dry_run:
            # A dry run hands out no revision: a create has none yet, an update keeps the current one.
            _stamp(obj, cluster, prev.rv if prev else 0)
            if prev is None:
                del obj["metadata"]["resourceVersion"]
            return self._stored(storage_key, cluster, obj, prev.rv if prev else 0)
        self._next_rv += 1
        _stamp(obj, cluster, self._next_rv)
        stored = self._stored(storage_key, cluster, obj, self._next_rv)
        self.pending.append(_Pending(storage_key, wire.MODIFIED if prev else wire.ADDED, stored, prev))
        return stored

    def remove(self, storage_key: str, prev: StoredObject, final: Obj | None = None) -> StoredObject:
        """Delete `prev`; watchers see `final` (default: `prev`) at the deletion's revision."""
        if self._dry_run:
            return prev
        self._next_rv += 1
        obj = final if final is not None else prev.decode()
        _stamp(obj, prev.cluster, self._next_rv)
        stored = self._stored(storage_key, prev.cluster, obj, self._next_rv)
        self.pending.append(_Pending(storage_key, wire.DELETED, stored, prev))
        return stored

    def commit(self) -> None:
        if self._dry_run or not self.pending:
            return
        self._shard._apply(self._next_rv, self.pending)


SEEDED_MARKER = "seeded"


class Shard:
    """The storage engine of the embedded shard."""

    def __init__(self, data_dir: Path, *, history_size: int = DEFAULT_HISTORY_SIZE, durable: bool = False) -> None:
        self.data_dir = data_dir
        self._db = SqliteStore(data_dir, durable=durable)
        self.revision = self._db.revision()
        self.start_revision = self.revision
        self.history_size = history_size
        self.registry = ResourceRegistry()
        self._tables: dict[str, ResourceTable] = {}
        self._histories: dict[str, ChangeHistory] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._listers: dict[str, Lister] = {}
        self.on_commit: builtins.list[Callable[[builtins.list[ChangeEvent]], None]] = []
        self._closed = False
        # Objects marked for deletion (a deletionTimestamp), by cluster and uid: garbage collection
        # looks an owner up by uid only to let a waiting foreground owner go, and that one is
        # marked. (An index of every object's uid cost each object ~46 bytes.)
        self._marked: dict[str, dict[str, tuple[str, StoredObject]]] = {}
        self._paths: dict[str, str] = {}  # workspace path → logical cluster
        self._packings: dict[str, Packing] = {}  # storage key → how its objects are packed (against its first one)
        self._path_of: dict[str, str] = {}  # and back
        self._load()
        self._bootstrap()

    # -- loading --------------------------------------------------------------------------

    def _load(self) -> None:
        # Every object loaded stays: the cyclic garbage collector, which would walk the growing
        # heap again and again while it fills, has nothing to find until the load is done.
        paused = cyclic_gc.isenabled()
        cyclic_gc.disable()
        try:
            self._load_rows()
        finally:
            if paused:
                cyclic_gc.enable()

    def _load_rows(self) -> None:
        # Rows come ordered by (cluster, storage key): consecutive rows share a bucket.
        where: tuple[str, str] | None = None
        bucket = None
        reload = Reloader()
        # The objects of rows stored without what `reload` needs (written before the shard kept
        # it, schema 1) or with attributes that do not fit their bytes, in row order, and their
        # storage keys (one string each): only what stays. At 150,000 rows, a tuple and strings
        # each, freed after the load among the objects kept, left the process 40 MiB larger.
        unfilled: builtins.list[StoredObject] = []
        unfilled_keys: builtins.list[str] = []
        storage_keys: dict[str, str] = {}
        for cluster, storage_key, namespace, name, rv, body, rv_at, attrs in self._db.row_tuples():
            obj = None
            stored = None if attrs is None or rv_at is None else reload(cluster, namespace, name, rv, body, rv_at, attrs)
            if stored is None:
                obj = orjson.loads(body)
                stored = _decoded(storage_key, cluster, namespace, name, rv, body, obj)
            if storage_key in PACKED_KEYS:
                stored = self.packed(storage_key, stored)
            if obj is not None:  # decoded: its row gets its attributes
                unfilled.append(stored)
                unfilled_keys.append(storage_keys.setdefault(storage_key, storage_key))
            if where != (cluster, storage_key):
                where = (cluster, storage_key)
                bucket = self.table(storage_key).bucket(stored.cluster)  # the interned name, not the row's
            assert bucket is not None
            bucket.put(stored)
            self._index_marked(storage_key, stored, None)
            if storage_key == LOGICAL_CLUSTERS_KEY:
                self._index_path(storage_key, stored, False)
            elif storage_key == CRD_STORAGE_KEY:
                self.registry.set_crd(cluster, name, obj if obj is not None else orjson.loads(body))
        if unfilled:
            try:
                self._db.fill_attributes(_attribute_rows(unfilled, unfilled_keys))
            except StorageError as exc:  # the objects are loaded all the same; the next start tries again
                log.warning("could not keep the attributes of %d loaded objects: %s", len(unfilled), exc)

    def packed(self, storage_key: str, obj: StoredObject) -> StoredObject:
        """`obj` as held: packed when its kind is, against the first object of its kind
        this process held (which stays plain)."""
        if storage_key not in PACKED_KEYS:
            return obj
        packing = self._packings.get(storage_key)
        if packing is None:
            self._packings[storage_key] = Packing(obj.raw)
            return obj
        return PackedObject.of(obj, packing)

    def _bootstrap(self) -> None:
        """`root` exists from the start, like kcp's root workspace; every cluster has `default`."""
        if self.table(LOGICAL_CLUSTERS_KEY).get(ROOT_CLUSTER, "", LOGICAL_CLUSTER_OBJECT_NAME) is None:
            self.create_logical_cluster(ROOT_CLUSTER, path=ROOT_CLUSTER)
        for cluster in self.logical_clusters():
            if self.namespace_of(cluster, DEFAULT_NAMESPACE) is None:
                # Databases written before cluster and namespace were one transaction.
                tx = self.transaction()
                tx.put(NAMESPACES_KEY, cluster, _new_namespace(DEFAULT_NAMESPACE), None)
                tx.commit()

    @property
    def seeded(self) -> bool:
        """Whether a config folder was applied to this data dir (it is applied once, not at every start)."""
        return self._db.marker(SEEDED_MARKER) > 0

    def mark_seeded(self) -> None:
        self._db.set_marker(SEEDED_MARKER, self.revision)

    def marker(self, key: str) -> int:
        """A number kept in the data dir beside the objects (0 when never set)."""
        return self._db.marker(key)

    def mark(self, key: str, value: int) -> None:
        self._db.set_marker(key, value)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.close("server shutting down")
        self._db.close()

    # -- reading ---------------------------------------------------------------------------

    def table(self, storage_key: str) -> ResourceTable:
        table = self._tables.get(storage_key)
        if table is None:
            table = ResourceTable()
            self._tables[storage_key] = table
        return table

    def logical_clusters(self) -> builtins.list[str]:
        table = self._tables.get(LOGICAL_CLUSTERS_KEY)
        return sorted(table.clusters) if table else []

    def cluster_exists(self, cluster: str) -> bool:
        return self.table(LOGICAL_CLUSTERS_KEY).get(cluster, "", LOGICAL_CLUSTER_OBJECT_NAME) is not None

    def cluster_for_path(self, path: str) -> str | None:
        """The logical cluster whose `LogicalCluster` carries `kcp.io/path: <path>`, if any."""
        return self._paths.get(path)

    def require_cluster(self, cluster: str) -> None:
        if not self.cluster_exists(cluster):
            raise errors.logical_cluster_not_found(cluster)

    def resources(self, cluster: str | None) -> builtins.list[ResourceInfo]:
        return self.registry.resources(cluster)

    def resolve(self, cluster: str | None, group: str, version: str, resource: str) -> ResourceInfo:
        info = self.registry.lookup(cluster, group, version, resource)
        if info is None:
            raise errors.path_not_found()
        return info

    def get(self, info: ResourceInfo, cluster: str, namespace: str, name: str) -> StoredObject:
        found = self.table(info.storage_key).get(cluster, namespace, name)
        if found is None:
            raise errors.not_found(info.resource, name, info.group)
        return found

    def namespace_of(self, cluster: str, namespace: str) -> StoredObject | None:
        return self.table(NAMESPACES_KEY).get(cluster, "", namespace)

    def _history(self, storage_key: str) -> ChangeHistory:
        history = self._histories.get(storage_key)
        if history is None:
            history = ChangeHistory(self.history_size, self.start_revision, storage_key)
            self._histories[storage_key] = history
        return history


    def check_fields(self, info: ResourceInfo, fields: FieldSelector) -> None:
        supported = strategy.supported_fields(info)
        for name in fields.field_names():
            if name not in supported:
                raise errors.bad_request(f'field label not supported: {name}')

    def list(self, info: ResourceInfo, cluster: str | None, namespace: str, opts: ListOptions) -> ListResult:
        self.check_fields(info, opts.fields)
        return self._lister(info.storage_key).list(cluster, namespace, opts, self.revision, self.revision)

    def _lister(self, storage_key: str) -> Lister:
        lister = self._listers.get(storage_key)
        if lister is None:
            lister = Lister(self.table(storage_key), lambda: self._history(storage_key))
            self._listers[storage_key] = lister
        return lister

    def forget_snapshots(self) -> None:
        """Drop every paging snapshot (what their TTL does after five minutes)."""
        for lister in self._listers.values():
            lister.forget_snapshots()

    # -- watching --------------------------------------------------------------------------

    def reader(self, info: ResourceInfo) -> ShardReader:
        """`info`'s objects for the REST read handler (get, list, watch)."""
        return ShardReader(self, info)

    def remove_watcher(self, storage_key: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(storage_key)
        if watchers is not None:
            watchers.discard(watcher)

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    # -- committing ------------------------------------------------------------------------

    def transaction(self, dry_run: bool = False) -> Transaction:
        return Transaction(self, dry_run)

    def _apply(self, revision: int, pending: builtins.list[_Pending]) -> None:
        changes: builtins.list[Change] = []
        for p in pending:
            if p.event_type == wire.DELETED:
                changes.append(Remove(p.obj.cluster, p.storage_key, p.obj.namespace, p.obj.name))
            else:
                o = p.obj
                raw = o.raw
                changes.append(Put(Row(o.cluster, p.storage_key, o.namespace, o.name, o.rv, raw, *stored_attributes(o, raw))))
        try:
            self._db.commit(revision, changes)
        except StorageError as exc:
            log.error("%s", exc)
            raise errors.internal_error("the write could not be stored; see the server log") from None
        self.revision = revision
        events = []
        for p in pending:
            bucket = self.table(p.storage_key).bucket(p.obj.cluster)
            if p.event_type == wire.DELETED:
                bucket.remove(p.obj.key)
            else:
                bucket.put(p.obj)
            self._index_marked(p.storage_key, None if p.event_type == wire.DELETED else p.obj, p.prev)
            self._index_path(p.storage_key, p.obj, p.event_type == wire.DELETED)
            event = ChangeEvent(p.event_type, p.obj, p.prev, p.storage_key)
            events.append(event)
            self._history(p.storage_key).append(event)
            for watcher in list(self._watchers.get(p.storage_key, ())):
                watcher.offer(event)
        for hook in self.on_commit:
            hook(events)
        self._after_commit(events)

    def _index_path(self, storage_key: str, obj: StoredObject, gone: bool) -> None:
        """Workspace path → logical cluster, from each LogicalCluster's `kcp.io/path`."""
        if storage_key != LOGICAL_CLUSTERS_KEY or obj.name != LOGICAL_CLUSTER_OBJECT_NAME:
            return
        old = self._path_of.pop(obj.cluster, None)
        if old is not None and self._paths.get(old) == obj.cluster:
            del self._paths[old]
        path = obj.fields.get(PATH_ANNOTATION, "")
        if path and not gone:
            self._paths[path] = obj.cluster
            self._path_of[obj.cluster] = path

    def _index_marked(self, storage_key: str, current: StoredObject | None, prev: StoredObject | None) -> None:
        """Keep `_marked` up to date with a write: `current` is what is now stored (None: gone)."""
        if current is not None and current.deleting and (uid := current.uid):
            self._marked.setdefault(current.cluster, {})[uid] = (storage_key, current)
        elif prev is not None and prev.deleting:
            marked = self._marked.get(prev.cluster, {})
            marked.pop(prev.uid, None)
            if not marked:
                self._marked.pop(prev.cluster, None)

    def marked_for_deletion(self, cluster: str, uid: str) -> tuple[str, StoredObject] | None:
        """(storage key, object) of the object with `uid` in `cluster`, if it is marked for deletion."""
        return self._marked.get(cluster, {}).get(uid)

    def tables(self) -> builtins.list[tuple[str, ResourceTable]]:
        return builtins.list(self._tables.items())

    def info_for_storage_key(self, storage_key: str, cluster: str) -> ResourceInfo | None:
        return _info_for_key(storage_key, self.registry, cluster)

    def _after_commit(self, events: builtins.list[ChangeEvent]) -> None:
        """What a commit sets off: CRDs start or stop serving, clusters and namespaces finish."""
        for event in events:
            if event.storage_key == CRD_STORAGE_KEY:
                gone = event.type == wire.DELETED
                keys = self.registry.crd_storage_keys(event.obj.cluster, event.obj.name)
                self.registry.set_crd(event.obj.cluster, event.obj.name, None if gone else event.obj.decode())
                if gone:
                    self._purge(event.obj.cluster, keys)
            elif event.storage_key == LOGICAL_CLUSTERS_KEY:
                if event.type == wire.DELETED:
                    self._purge(event.obj.cluster, set(self._tables) - {LOGICAL_CLUSTERS_KEY})
                    self.registry.drop_cluster(event.obj.cluster)
            if event.type == wire.DELETED and self.cluster_exists(event.obj.cluster):
                gc.after_delete(self, event.obj)
                if event.obj.namespace:
                    self._maybe_finish_namespace(event.obj.cluster, event.obj.namespace)

    def _purge(self, cluster: str, storage_keys: Iterable[str]) -> None:
        tx = self.transaction()
        for key in sorted(storage_keys):
            table = self._tables.get(key)
            bucket = table.clusters.get(cluster) if table else None
            if bucket:
                for obj in list(bucket.ordered()):
                    tx.remove(key, obj)
        tx.commit()

    def create_logical_cluster(self, cluster: str, path: str = "", spec: Obj | None = None) -> StoredObject:
        """Bring a logical cluster into existence (its `LogicalCluster` named `cluster`)."""
        info = _BUILTIN_BY_KEY[LOGICAL_CLUSTERS_KEY]
        annotations = {PATH_ANNOTATION: path} if path else {}
        body: Obj = {
            "apiVersion": "core.kcp.io/v1alpha1",
            "kind": "LogicalCluster",
            "metadata": {"name": LOGICAL_CLUSTER_OBJECT_NAME, "annotations": annotations},
            "spec": spec or {},
            "status": {"phase": "Ready"},
        }
        return self.create(info, cluster, "", body)

    # -- the generic write rules -------------------------------------------------------------

    def _admit(self, info: ResourceInfo, cluster: str, namespace: str, creating: bool) -> None:
        if info.storage_key == LOGICAL_CLUSTERS_KEY and creating:
            return  # creating its LogicalCluster is how a logical cluster comes to exist
        self.require_cluster(cluster)
        if info.namespaced:
            ns = self.namespace_of(cluster, namespace)
            if ns is None:
                raise errors.not_found("namespaces", namespace)
            if creating and ns.deleting:
                raise errors.forbidden(
                    f'{info.group_resource} is forbidden: unable to create new content in namespace {namespace} because it is being terminated',
                    info.resource, info.group,
                )

    def _validate(self, info: ResourceInfo, obj: Obj, name: str, checks: WriteChecks | None = None, old: Obj | None = None) -> None:
        if info.crd:  # a built-in was pruned in its served form, before conversion to storage
            self.drop_unknown_fields(info, obj, checks or WriteChecks())
        causes = validation.validate_metadata(obj["metadata"], strategy.name_rule(info), info.namespaced)
        causes += strategy.validate(info, obj)
        if info.crd:
            causes += self._schema_checks(info, obj, old)
        if causes:
            raise errors.invalid(info.kind, name, causes, info.group)

    def drop_unknown_fields(self, info: ResourceInfo, obj: Obj, checks: WriteChecks) -> None:
        """Drop what the kind does not know, as kube-apiserver's decoding does: a custom resource
        is pruned by its CRD schema, a built-in loses unknown top-level fields. `Strict` refuses
        them (400), `Warn` names them in a Warning header."""
        if info.crd:
            schema = self.registry.schema_for(info)
            removed = schema.prune(obj) if schema.enabled else []
        else:
            removed = strategy.drop_unknown_top_level(info, obj)
        if removed:
            unknown = [f'unknown field "{path}"' for path in removed]
            if checks.field_validation == "Strict":
                raise errors.bad_request("strict decoding error: " + ", ".join(unknown))
            if checks.field_validation != "Ignore":
                checks.warnings.extend(unknown)

    def _schema_checks(self, info: ResourceInfo, obj: Obj, old: Obj | None = None) -> builtins.list[Cause]:
        """A custom resource against its CRD schema (already pruned): default, validate. On an
        update (`old`) a problem with a value the write did not change is tolerated, as kube-
        apiserver ratchets validation (since 1.30; `CRSchema.validate`); an update that leaves
        all but the metadata as it was is not validated at all. The metadata is checked on its
        own (`validation.validate_metadata`); a schema may constrain only its name."""
        schema = self.registry.schema_for(info)
        if not schema.enabled:
            return []
        schema.default(obj)
        if old is not None and _same_but_metadata(obj, old):
            return []  # nothing it could ratchet changed: no need to look
        return schema.validate(obj, old)

    def create(self, info: ResourceInfo, cluster: str, namespace: str, obj: Obj, dry_run: bool = False, checks: WriteChecks | None = None) -> StoredObject:
        self._admit(info, cluster, namespace, creating=True)
        md = meta.metadata(obj)
        if not md.get("name") and isinstance(md.get("generateName"), str) and md["generateName"]:
            table = self.table(info.storage_key)
            for _ in range(8):
                md["name"] = meta.generated_name(md["generateName"])
                if table.get(cluster, namespace, md["name"]) is None:
                    break
        name = md["name"] if isinstance(md.get("name"), str) else ""
        if info.namespaced:
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        for managed in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            md.pop(managed, None)
        md["uid"] = meta.new_uid()
        md["creationTimestamp"] = meta.now_rfc3339()
        if info.generation:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        meta.drop_annotation(obj, CLUSTER_ANNOTATION)
        if info.status and info.crd:
            obj.pop("status", None)
        strategy.prepare_create(info, obj)
        self._validate(info, obj, name or "", checks)
        if self.table(info.storage_key).get(cluster, namespace, name) is not None:
            raise errors.already_exists(info.resource, name, info.group)
        tx = self.transaction(dry_run)
        stored = tx.put(info.storage_key, cluster, obj, None)
        if info.storage_key == LOGICAL_CLUSTERS_KEY and self.namespace_of(cluster, DEFAULT_NAMESPACE) is None:
            # A new logical cluster and its `default` namespace are one commit: no crash leaves one alone.
            tx.put(NAMESPACES_KEY, cluster, _new_namespace(DEFAULT_NAMESPACE), None)
        tx.commit()
        return stored

    def update(
        self, info: ResourceInfo, cluster: str, namespace: str, name: str, obj: Obj, subresource: str = "", dry_run: bool = False,
        checks: WriteChecks | None = None,
    ) -> StoredObject:
        self._admit(info, cluster, namespace, creating=False)
        current = self.get(info, cluster, namespace, name)
        old = current.decode()
        md = meta.metadata(obj)
        wanted_rv = md.get("resourceVersion")
        if wanted_rv not in (None, ""):
            if str(wanted_rv) != str(current.rv):
                raise errors.conflict(info.resource, name, info.group)
        wanted_uid = md.get("uid")
        old_md = old["metadata"]
        if wanted_uid and wanted_uid != old_md.get("uid"):
            raise errors.conflict(info.resource, name, info.group, f"Precondition failed: UID in precondition: {wanted_uid}, UID in object meta: {old_md.get('uid')}")
        if subresource == "status":
            status = obj.get("status")
            managed = md.get("managedFields")
            obj = dict(old)
            obj["metadata"] = dict(old_md)
            if managed is not None:
                obj["metadata"]["managedFields"] = managed
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
            md = obj["metadata"]
        elif info.status:
            if "status" in old:
                obj["status"] = old["status"]
            else:
                obj.pop("status", None)
        for kept in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if kept in old_md:
                md[kept] = old_md[kept]
            else:
                md.pop(kept, None)
        md["name"] = name
        if info.namespaced:
            md["namespace"] = namespace
        md.pop("selfLink", None)
        meta.drop_annotation(obj, CLUSTER_ANNOTATION)
        if info.generation:
            generation = int(old_md.get("generation") or 1)
            if subresource != "status" and _spec_part(obj) != _spec_part(old):
                generation += 1
            md["generation"] = generation
        else:
            md.pop("generation", None)
        if subresource != "status":
            strategy.prepare_update(info, obj, old)
        if current.deleting:
            added = set(md.get("finalizers") or []) - set(old_md.get("finalizers") or [])
            if added:
                raise errors.invalid(info.kind, name, [Cause("FieldValueForbidden", "Forbidden: no new finalizers can be added if the object is being deleted", "metadata.finalizers")], info.group)
        self._validate(info, obj, name, checks, old)
        if _comparable(obj) == _comparable(old):
            return current  # a no-op update writes nothing, as in Kubernetes
        tx = self.transaction(dry_run)
        if current.deleting and not md.get("finalizers") and not self._holds_content(info, cluster, name):
            stored = tx.remove(info.storage_key, current, obj)
            tx.commit()
            return stored
        stored = tx.put(info.storage_key, cluster, obj, current)
        tx.commit()
        return stored

    def _holds_content(self, info: ResourceInfo, cluster: str, name: str) -> bool:
        """A terminating namespace stays while it still contains objects."""
        if info.storage_key != NAMESPACES_KEY:
            return False
        prefix = f"{name}\0"  # the keys of the namespace's objects start so (`object_key`)
        for key, table in self._tables.items():
            bucket = table.clusters.get(cluster)
            if bucket and key != NAMESPACES_KEY and any(k.startswith(prefix) for k in bucket.objects):
                return True
        return False

    def delete(self, info: ResourceInfo, cluster: str, namespace: str, name: str, options: Obj, dry_run: bool = False) -> tuple[StoredObject, bool]:
        """Delete or mark for deletion; returns the object and whether it is gone now."""
        self._admit(info, cluster, namespace, creating=False)
        current = self.get(info, cluster, namespace, name)
        preconditions = options.get("preconditions") or {}
        old = current.decode()
        old_md = old["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != old_md.get("uid"):
            raise errors.conflict(info.resource, name, info.group, f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {old_md.get('uid')}")
        if preconditions.get("resourceVersion") and str(preconditions["resourceVersion"]) != str(current.rv):
            raise errors.conflict(info.resource, name, info.group, f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, ResourceVersion in object meta: {current.rv}")
        tx = self.transaction(dry_run)
        is_namespace = info.storage_key == NAMESPACES_KEY
        policy = gc.policy_of(options)
        policy_finalizer = gc.finalizer_for(policy) if not current.deleting and not is_namespace else None
        if policy_finalizer and policy_finalizer not in (old_md.get("finalizers") or []):
            old_md["finalizers"] = [*(old_md.get("finalizers") or []), policy_finalizer]
        if old_md.get("finalizers") or (is_namespace and not dry_run):
            # Finalizers (and a namespace's content) keep the object, marked, until they are gone.
            if not current.deleting:
                old_md["deletionTimestamp"] = meta.now_rfc3339()
                old_md["deletionGracePeriodSeconds"] = 0
                if isinstance(old_md.get("generation"), int) and old_md["generation"] > 0:
                    old_md["generation"] += 1  # kube-apiserver's markAsDeleting: a deletion is a change of intent
                if is_namespace:
                    old.setdefault("status", {})["phase"] = "Terminating"
                current = tx.put(info.storage_key, cluster, old, current)
                tx.commit()
            if is_namespace:
                self._empty_namespace(cluster, name)
                remaining = self.table(NAMESPACES_KEY).get(cluster, "", name)
                return (remaining or current), remaining is None
            if policy_finalizer and not dry_run:
                (gc.orphan if policy == gc.ORPHAN else gc.foreground)(self, info.storage_key, current)
                remaining = self.table(info.storage_key).get(cluster, namespace, name)
                return (remaining or current), remaining is None
            return current, False
        stored = tx.remove(info.storage_key, current)
        tx.commit()
        return stored, True

    def _empty_namespace(self, cluster: str, namespace: str) -> None:
        """Delete everything in a terminating namespace; it goes once nothing is left."""
        for key in sorted(self._tables):
            if key == NAMESPACES_KEY:
                continue
            bucket = self._tables[key].clusters.get(cluster)
            if not bucket:
                continue
            doomed = [o for o in bucket.ordered(namespace)]
            for obj in doomed:
                info = _info_for_key(key, self.registry, cluster)
                if info is None:
                    continue
                try:
                    self.delete(info, cluster, namespace, obj.name, {})
                except errors.StatusError as exc:
                    log.warning("could not delete %s %s/%s in %s: %s", key, namespace, obj.name, cluster, exc)
        self._maybe_finish_namespace(cluster, namespace)

    def _maybe_finish_namespace(self, cluster: str, namespace: str) -> None:
        ns = self.namespace_of(cluster, namespace)
        if ns is None or not ns.deleting:
            return
        info = _BUILTIN_BY_KEY[NAMESPACES_KEY]
        if self._holds_content(info, cluster, namespace):
            return
        if (ns.decode().get("metadata") or {}).get("finalizers"):
            return
        tx = self.transaction()
        tx.remove(NAMESPACES_KEY, ns)
        tx.commit()

    def delete_collection(self, info: ResourceInfo, cluster: str, namespace: str, opts: ListOptions, options: Obj, dry_run: bool = False) -> builtins.list[StoredObject]:
        self.check_fields(info, opts.fields)
        self._admit(info, cluster, namespace, creating=False)
        doomed = matching(self.table(info.storage_key).ordered(cluster, namespace), opts.labels, opts.fields)
        out = []
        for obj in doomed:
            try:
                stored, _ = self.delete(info, cluster, obj.namespace, obj.name, options, dry_run)
                out.append(stored)
            except errors.StatusError as exc:
                if exc.code != 404:
                    raise
        return out


def _new_namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": meta.new_uid(), "creationTimestamp": meta.now_rfc3339()},
        "spec": {"finalizers": [strategy.NAMESPACE_FINALIZER]},
        "status": {"phase": "Active"},
    }


def _comparable(obj: Obj) -> Obj:
    md = dict(obj.get("metadata") or {})
    md.pop("resourceVersion", None)
    md.pop("managedFields", None)
    annotations = dict(md.get("annotations") or {})
    annotations.pop(CLUSTER_ANNOTATION, None)
    if annotations:
        md["annotations"] = annotations
    else:
        md.pop("annotations", None)
    out = dict(obj)
    out["metadata"] = md
    return out


def _info_for_key(storage_key: str, registry: ResourceRegistry, cluster: str) -> ResourceInfo | None:
    builtin = _BUILTIN_BY_KEY.get(storage_key)
    if builtin is not None:
        return builtin
    for info in registry.resources(cluster):
        if info.storage_key == storage_key and info.version == info.stored_in:
            return info
    return None


__all__ = ["Shard", "ListResult", "Transaction", "DEFAULT_HISTORY_SIZE", "NOT_OLDER_THAN"]


class ShardReader:
    """One resource of the shard as a `core.watch.ResourceReader`."""

    def __init__(self, shard: Shard, info: ResourceInfo) -> None:
        self._shard = shard
        self._info = info
        self._key = info.storage_key

    @property
    def current_rv(self) -> int:
        return self._shard.revision

    def check_fields(self, fields: FieldSelector) -> None:
        self._shard.check_fields(self._info, fields)

    def get(self, cluster: str, namespace: str, name: str) -> StoredObject | None:
        return self._shard.table(self._key).get(cluster, namespace, name)

    def list(self, cluster: str | None, namespace: str, opts: ListOptions) -> ListResult:
        return self._shard.list(self._info, cluster, namespace, opts)

    def ordered(self, cluster: str | None, namespace: str) -> Iterable[StoredObject]:
        return self._shard.table(self._key).ordered(cluster, namespace)

    def since(self, rv: int) -> builtins.list[ChangeEvent]:
        return self._shard._history(self._key).since(rv)

    def add_watcher(self, watcher: Watcher) -> None:
        self._shard._watchers.setdefault(self._key, set()).add(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        self._shard.remove_watcher(self._key, watcher)
