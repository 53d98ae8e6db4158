"""The views behind the APIExport virtual workspace, kept in step with the embedded shard.

One `View` per (export, group, resource) the export serves, plus one of the export's APIBindings.
Engagement follows the bindings: a logical cluster is in a resource's view exactly while one of
its APIBindings binds that resource with the export's identity hash. Changes reach the views
synchronously from shard commits, so a write through the virtual workspace is in its view before
the write's response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from vwproxy.cache.faults import WorkspaceFaults
from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, SCHEMAS, ControlStore, Obj
from vwproxy.control.reconcilers import export_schema_names
from vwproxy.core.claims import ClaimRef, claim_group, export_claims
from vwproxy.core.objects import ChangeEvent
from vwproxy.core.partition import EVERYTHING, Partition
from vwproxy.core.rv import RVSequence
from vwproxy.core.view import DEFAULT_HISTORY, View
from vwproxy.kube import errors, kcp
from vwproxy.kube import watch as wire
from vwproxy.store.shard import Shard
from vwproxy.upstream.client import BackendClient
from vwproxy.upstream.reflector import MAX_BACKOFF_SECONDS, Reflector, list_all, stale_tracker

log = logging.getLogger(__name__)

BINDINGS_KEY = "apis.kcp.io/apibindings"
EXPORTS_KEY = "apis.kcp.io/apiexports"


@dataclass(frozen=True)
class ViewKey:
    export_cluster: str
    export_name: str
    group: str
    resource: str

    @property
    def storage_key(self) -> str:
        return f"{self.group}/{self.resource}"


def exported_resources(store: ControlStore, export_cluster: str, export: Obj) -> set[tuple[str, str]]:
    """(group, resource) of every schema the export exports."""
    found = set()
    for name in export_schema_names(export):
        spec = (store.get(SCHEMAS, export_cluster, name) or {}).get("spec") or {}
        found.add((str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or "")))
    return found


def binds(binding: Obj, export_cluster: str, export_name: str) -> bool:
    """Whether `binding` is a binding to the export (by its status, or by path while that is empty)."""
    ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
    if ref.get("name") != export_name:
        return False
    status_cluster = (binding.get("status") or {}).get("apiExportClusterName")
    return status_cluster == export_cluster if status_cluster else ref.get("path") == export_cluster


class ViewHub:
    """Every view of every export, and the watchers of each."""

    def __init__(
        self, shard: Shard, store: ControlStore, seq: RVSequence | None = None, history_size: int = DEFAULT_HISTORY,
        client_for: Callable[[str], BackendClient | None] = lambda cluster: None, partition: Partition = EVERYTHING,
    ) -> None:
        self.shard = shard
        self.client_for = client_for
        # The logical clusters this process serves (DESIGN §7); the others are another shard's.
        self.partition = partition
        self._reflectors: dict[tuple[ViewKey, str], tuple[asyncio.Task[None], Reflector]] = {}
        # One wildcard list+watch per (view, shard-like backend), feeding all its engaged clusters.
        self._feeds: dict[tuple[ViewKey, str], _Feed] = {}
        self.stale: dict[str, str] = {}  # logical cluster → why its backend is not current
        # Faults a test sets per workspace; they gate what enters the views (`cache/faults.py`).
        self.faults = WorkspaceFaults()
        self._changed: dict[ViewKey, asyncio.Event] = {}
        self.store = store
        self.seq = seq or RVSequence()
        self.history_size = history_size
        self.views: dict[ViewKey, View] = {}
        self.engaged: dict[ViewKey, set[str]] = {}
        self._by_storage_key: dict[str, set[ViewKey]] = {}
        # What each APIBinding binds, by its status: (cluster, binding) → {(export cluster, export, group, resource, identity)}.
        # Kept up to date from commits, so engagement never re-reads every binding.
        self._bound: dict[tuple[str, str], frozenset[tuple[str, str, str, str, str]]] = {}
        # What each APIBinding accepted of its export's permission claims, the same way:
        # (cluster, binding) → {(export cluster, export, group, resource, identity)}.
        self._accepted: dict[tuple[str, str], frozenset[tuple[str, str, str, str, str]]] = {}
        self._distinct: dict[frozenset[tuple[str, str, str, str, str]], frozenset[tuple[str, str, str, str, str]]] = {}
        for cluster, binding in store.each(API_BINDINGS):
            self._index_binding(cluster, binding)
        shard.on_commit.append(self._on_commit)

    def _index_binding(self, cluster: str, binding: Obj | None, name: str = "") -> None:
        key = (cluster, name or str((binding or {}).get("metadata", {}).get("name", "")))
        if binding is None:
            self._bound.pop(key, None)
            self._accepted.pop(key, None)
            return
        status = binding.get("status") or {}
        export_cluster = str(status.get("apiExportClusterName") or "")
        export_name = str((((binding.get("spec") or {}).get("reference") or {}).get("export") or {}).get("name") or "")
        entries = frozenset(
            (export_cluster, export_name, str(b.get("group", "")), str(b.get("resource", "")), str((b.get("schema") or {}).get("identityHash", "")))
            for b in status.get("boundResources") or [] if isinstance(b, dict)
        )
        if entries:
            self._bound[key] = self._distinct.setdefault(entries, entries)  # thousands of bindings, few distinct sets
        else:
            self._bound.pop(key, None)
        claims = frozenset(
            (export_cluster, export_name, ref.group, ref.resource, ref.identity)
            for ref in (ClaimRef.of(c) for c in (binding.get("spec") or {}).get("permissionClaims") or []
                        if isinstance(c, dict) and c.get("state") == "Accepted")
        )
        if claims:
            self._accepted[key] = self._distinct.setdefault(claims, claims)
        else:
            self._accepted.pop(key, None)

    # -- engagement ------------------------------------------------------------------------------

    def identity_of(self, export_cluster: str, export_name: str) -> str:
        export = self.store.get(API_EXPORTS, export_cluster, export_name)
        return str(((export or {}).get("status") or {}).get("identityHash") or "")

    def claim_of(self, key: ViewKey) -> ClaimRef | None:
        """The export's claim a view serves, or None when it serves an exported resource."""
        export = self.store.get(API_EXPORTS, key.export_cluster, key.export_name) or {}
        if (key.group, key.resource) in exported_resources(self.store, key.export_cluster, export):
            return None  # a claim shadowed by the export's own resource is not served
        group = claim_group(key.group, key.resource)
        return next((ref for ref in export_claims(export) if (ref.group, ref.resource) == (group, key.resource)), None)

    def wanted_clusters(self, key: ViewKey) -> set[str]:
        """Exported: the clusters binding the resource with the export's identity. Claimed: the
        clusters that accepted the claim (and, for another export's resource, bind it with the
        claimed identity, where its objects live)."""
        identity = self.identity_of(key.export_cluster, key.export_name)
        if not identity:
            return set()
        if not self.partition.everything:
            return {c for c in self._wanted(key, identity) if self.partition.owns(c, self.store.path_of(c))}
        return self._wanted(key, identity)

    def owns(self, cluster: str) -> bool:
        """Whether the logical cluster is in this process's partition."""
        return self.partition.everything or self.partition.owns(cluster, self.store.path_of(cluster))

    def _wanted(self, key: ViewKey, identity: str) -> set[str]:
        entry = (key.export_cluster, key.export_name, key.group, key.resource, identity)
        ref = self.claim_of(key)
        if ref is None:
            return {cluster for (cluster, _), entries in self._bound.items() if entry in entries}
        wanted = (key.export_cluster, key.export_name, ref.group, ref.resource, ref.identity)
        clusters = {cluster for (cluster, _), entries in self._accepted.items() if wanted in entries}
        if ref.identity:
            holding = {c for (c, _), entries in self._bound.items() for e in entries if (e[2], e[3], e[4]) == (key.group, key.resource, ref.identity)}
            clusters &= holding
        return clusters

    def view(self, key: ViewKey) -> View:
        """The view for `key`, created (and filled from the shard) on first use."""
        view = self.views.get(key)
        if view is None:
            view = self.faults.view(functools.partial(self._dispatch, key), self.seq, key.group, key.resource, self.history_size)
            self.views[key] = view
            self.engaged[key] = set()
            self._by_storage_key.setdefault(key.storage_key, set()).add(key)
            if key.resource == "apibindings" and key.group == "apis.kcp.io":
                for cluster, binding in self.store.each(API_BINDINGS):
                    if binds(binding, key.export_cluster, key.export_name) and self.owns(cluster):
                        view.upsert(cluster, binding, str((binding.get("metadata") or {}).get("resourceVersion", "")))
            else:
                self._engage(key, first=True)
        return view

    def _engage(self, key: ViewKey, first: bool = False) -> None:
        """Engage the clusters `key` should cover and drop the rest; `first`: the view was just
        created, and the embedded shard's clusters fill it without events (`View.fill_stored`)."""
        view = self.views[key]
        wanted = self.wanted_clusters(key)
        current = self.engaged[key]
        events: list[ChangeEvent] = []
        table = self.shard.table(key.storage_key)
        for cluster in sorted(wanted - current):
            try:
                client = self.client_for(cluster)
            except errors.StatusError as exc:
                self.stale[cluster] = exc.message  # an undeclared backend: engaged, but nothing to show
                continue
            if client is not None and client.shard is not None:
                self._feed(key, client.shard).engage(cluster, client.cluster)
                continue
            if client is not None:
                self._start_reflector(key, cluster, client)
                continue
            bucket = table.clusters.get(cluster)
            objects = list(bucket.ordered()) if bucket else []
            events += view.fill_stored(cluster, objects) if first else view.replace_cluster_stored(cluster, objects)
        for cluster in sorted(current - wanted):
            running = self._reflectors.pop((key, cluster), None)
            if running is not None:
                running[0].cancel()
                self.stale.pop(cluster, None)
            for feed_key, feed in list(self._feeds.items()):
                if feed_key[0] == key and feed.disengage(cluster):
                    self.stale.pop(cluster, None)
                    if not feed.clusters:
                        feed.cancel()
                        del self._feeds[feed_key]
            events += view.drop_cluster(cluster)
        self.engaged[key] = wanted
        self._dispatch(key, events)

    # -- following the shard ---------------------------------------------------------------------

    def _on_commit(self, events: list[ChangeEvent]) -> None:
        topology_changed = False
        for event in events:
            if event.storage_key == BINDINGS_KEY:
                self._index_binding(event.obj.cluster, None if event.type == wire.DELETED else event.obj.decode(), event.obj.name)
                topology_changed = True
            elif event.storage_key == EXPORTS_KEY:
                topology_changed = True
            for key in self._by_storage_key.get(event.storage_key, ()):
                if key.resource == "apibindings" and key.group == "apis.kcp.io":
                    self._follow_binding(key, event)
                elif event.obj.cluster in self.engaged[key]:
                    self._follow(key, event)
        if topology_changed:
            for key in list(self.views):
                if not (key.resource == "apibindings" and key.group == "apis.kcp.io"):
                    self._engage(key)

    def _follow(self, key: ViewKey, event: ChangeEvent) -> None:
        view = self.views[key]
        obj = event.obj
        if event.type == wire.DELETED:
            produced = view.delete(obj.cluster, obj.namespace, obj.name, str(obj.rv))
        else:
            produced = view.upsert_stored(obj)
        self._dispatch(key, produced)

    def _follow_binding(self, key: ViewKey, event: ChangeEvent) -> None:
        view = self.views[key]
        obj = event.obj
        held = view.get(obj.cluster, obj.namespace, obj.name) is not None
        if event.type != wire.DELETED:
            binding = obj.decode()
            if binds(binding, key.export_cluster, key.export_name) and self.owns(obj.cluster):
                self._dispatch(key, view.upsert(obj.cluster, binding, str(obj.rv)))
                return
        if held:
            self._dispatch(key, view.delete(obj.cluster, obj.namespace, obj.name, str(obj.rv)))

    # -- kube backends ---------------------------------------------------------------------------

    def _bound_version(self, key: ViewKey, cluster: str) -> str:
        for _, binding in self.store.all(API_BINDINGS, cluster):
            for bound in (binding.get("status") or {}).get("boundResources") or []:
                if bound.get("group") == key.group and bound.get("resource") == key.resource and bound.get("storageVersions"):
                    return str(bound["storageVersions"][0])
        return "v1"

    def _start_reflector(self, key: ViewKey, cluster: str, client: BackendClient) -> None:
        """One reflector per (view, kube-backed workspace): list+watch of the resource on its backend."""
        view = self.views[key]
        path = f"/apis/{key.group}/{self._bound_version(key, cluster)}/{key.resource}" if key.group else f"/api/v1/{key.resource}"

        def replace(items: list[tuple[Obj, str]]) -> None:
            self._dispatch(key, view.replace_cluster(cluster, items))

        def change(kind: str, obj: Obj, rv: str) -> None:
            md = obj.get("metadata") or {}
            if kind == wire.DELETED:
                self._dispatch(key, view.delete(cluster, str(md.get("namespace") or ""), str(md.get("name") or ""), rv))
            else:
                self._dispatch(key, view.upsert(cluster, obj, rv))

        reflector = Reflector(client, path, replace, change, stale_tracker(self.stale, cluster, f"workspace {cluster}"))
        task = asyncio.get_running_loop().create_task(reflector.run(), name=f"reflector {cluster} {path}")
        self._reflectors[(key, cluster)] = (task, reflector)

    def _feed(self, key: ViewKey, backend: BackendClient) -> _Feed:
        """The wildcard feed of the view on a shard-like backend, started on first use."""
        feed = self._feeds.get((key, backend.name))
        if feed is None:
            feed = _Feed(self, key, backend)
            self._feeds[(key, backend.name)] = feed
        return feed

    async def wait_synced(self, key: ViewKey, timeout: float) -> None:
        """Wait (bounded) until every reflector of the view has listed once."""
        waits = [r.synced.wait() for (k, _), (_, r) in self._reflectors.items() if k == key and not r.synced.is_set()]
        waits += [f.synced.wait() for (k, _), f in self._feeds.items() if k == key and not f.synced.is_set()]
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
            except TimeoutError:
                pass

    async def wait_for(self, key: ViewKey, cluster: str, namespace: str, name: str, backend_rv: str, gone: bool, timeout: float) -> bool:
        """Wait until the view holds the object at `backend_rv` (or no longer holds it): read your writes."""
        view = self.views[key]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            held = view.get(cluster, namespace, name)
            if (held is None) if gone else (held is not None and view.backend_rv(cluster, namespace, name) == backend_rv):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = self._changed.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False

    def metrics(self) -> dict[str, int]:
        return {
            "vwproxy_views": len(self.views),
            "vwproxy_view_objects": sum(len(v) for v in self.views.values()),
            "vwproxy_watchers": sum(v.watcher_count for v in self.views.values()),
            "vwproxy_reflectors": len(self._reflectors) + len(self._feeds),
            "vwproxy_stale_workspaces": len(self.stale_workspaces()),
            "vwproxy_resource_version": self.seq.current,
        }

    def stale_workspaces(self) -> dict[str, str]:
        """Logical cluster → why it is not current: its backend's reflector or feed, or a fault
        set on it (which says so for as long as it is set, whatever the backend does)."""
        if not self.faults.stale:
            return self.stale
        return {**self.stale, **self.faults.stale}

    def stale_warnings(self, key: ViewKey) -> list[str]:
        engaged = self.engaged.get(key, set())
        return [f"workspace {c} is stale: {why}" for c, why in sorted(self.stale_workspaces().items()) if c in engaged]

    async def aclose(self) -> None:
        tasks = [task for task, _ in self._reflectors.values()] + [t for f in self._feeds.values() for t in f.tasks()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reflectors.clear()
        self._feeds.clear()

    def _dispatch(self, key: ViewKey, events: list[ChangeEvent]) -> None:
        """Wake writers waiting to read their own write (the view has offered `events` to its watchers)."""
        if events:
            changed = self._changed.pop(key, None)
            if changed is not None:
                changed.set()

    def export_label(self, export_cluster: str, export_name: str) -> str:
        return kcp.export_label_value(export_cluster, export_name)


class _Feed:
    """One wildcard list+watch of a view's resource on a shard-like backend (`/clusters/*/…`, as
    kcp runs one informer per shard), feeding every engaged logical cluster of that backend.

    Objects are told apart by their `kcp.io/cluster` annotation; those of clusters the view has
    not engaged (another export's identity, another shard's partition) are dropped on arrival. A
    cluster engaged while the watch runs is listed on its own once; the watch events for it that
    arrive meanwhile are held and applied on top of that list (one resourceVersion space: the
    backend's), so nothing is missed and nothing goes back in time.
    """

    def __init__(self, hub: ViewHub, key: ViewKey, backend: BackendClient) -> None:
        self.hub = hub
        self.key = key
        self.backend = backend
        self.clusters: set[str] = set()
        # The backend's name of each engaged logical cluster (a shard-like declared backend may
        # hold a workspace under another name), and back.
        self._remote: dict[str, str] = {}
        self._local: dict[str, str] = {}
        self._held: dict[str, list[tuple[str, Obj, str]]] = {}  # cluster → events while its own list runs
        self._backfills: dict[str, asyncio.Task[None]] = {}
        self._generation = 0  # bumped by every full relist: a backfill older than it is dropped
        self.path = ""
        self.reflector: Reflector | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> asyncio.Event:
        assert self.reflector is not None, "a feed is made to engage a cluster"
        return self.reflector.synced

    def tasks(self) -> list[asyncio.Task[None]]:
        return [*([self.task] if self.task is not None else []), *self._backfills.values()]

    def cancel(self) -> None:
        for task in self.tasks():
            task.cancel()

    def engage(self, cluster: str, remote: str = "") -> None:
        remote = remote or cluster
        self.clusters.add(cluster)
        self._remote[cluster] = remote
        self._local[remote] = cluster
        if self.reflector is None:
            self.path = self._resource_path(cluster)
            self.reflector = Reflector(self.backend, f"/clusters/*{self.path}", self._replace, self._change, self._health)
            self.task = asyncio.get_running_loop().create_task(self.reflector.run(), name=f"feed {self.backend.name} {self.path}")
        elif self.reflector.synced.is_set():
            self._held[cluster] = []
            self._backfills[cluster] = asyncio.get_running_loop().create_task(self._backfill(cluster), name=f"backfill {cluster} {self.path}")

    def disengage(self, cluster: str) -> bool:
        if cluster not in self.clusters:
            return False
        self.clusters.discard(cluster)
        self._local.pop(self._remote.pop(cluster, cluster), None)
        self._held.pop(cluster, None)
        running = self._backfills.pop(cluster, None)
        if running is not None:
            running.cancel()
        return True

    def _resource_path(self, cluster: str) -> str:
        key = self.key
        return f"/apis/{key.group}/{self.hub._bound_version(key, cluster)}/{key.resource}" if key.group else f"/api/v1/{key.resource}"

    def _cluster_of(self, obj: Obj) -> str:
        """The engaged logical cluster an object of the backend belongs to ("" for none)."""
        remote = str(((obj.get("metadata") or {}).get("annotations") or {}).get(kcp.CLUSTER_ANNOTATION) or "")
        return self._local.get(remote, "")

    def _replace(self, items: list[tuple[Obj, str]]) -> None:
        self._generation += 1
        grouped: dict[str, list[tuple[Obj, str]]] = {}
        for obj, rv in items:
            cluster = self._cluster_of(obj)
            if cluster in self.clusters:
                grouped.setdefault(cluster, []).append((obj, rv))
        view = self.hub.views[self.key]
        for cluster in sorted(self.clusters):
            self._held.pop(cluster, None)  # this list covers it: an older backfill's result is void
            self.hub._dispatch(self.key, view.replace_cluster(cluster, grouped.get(cluster, [])))

    def _change(self, kind: str, obj: Obj, rv: str) -> None:
        cluster = self._cluster_of(obj)
        if cluster not in self.clusters:
            return
        held = self._held.get(cluster)
        if held is not None:
            held.append((kind, obj, rv))
            return
        self._apply(cluster, kind, obj, rv)

    def _apply(self, cluster: str, kind: str, obj: Obj, rv: str) -> None:
        view = self.hub.views[self.key]
        md = obj.get("metadata") or {}
        if kind == wire.DELETED:
            self.hub._dispatch(self.key, view.delete(cluster, str(md.get("namespace") or ""), str(md.get("name") or ""), rv))
        else:
            self.hub._dispatch(self.key, view.upsert(cluster, obj, rv))

    def _health(self, ok: bool, why: str) -> None:
        for cluster in self.clusters:
            if ok:
                self.hub.stale.pop(cluster, None)
            else:
                self.hub.stale[cluster] = why
        if not ok:
            log.warning("shard-like backend %s: %s stale: %s", self.backend.name, self.path, why)

    async def _backfill(self, cluster: str) -> None:
        """List one newly engaged cluster, then apply the events held for it meanwhile."""
        generation = self._generation
        backoff = 0.2
        while True:
            try:
                items, list_rv = await self._list_one(cluster)
                break
            except (errors.StatusError, ValueError, orjson.JSONDecodeError) as exc:
                self.hub.stale[cluster] = f"listing it on {self.backend.name} failed: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._backfills.pop(cluster, None)
        held = self._held.pop(cluster, None)
        if held is None or generation != self._generation or cluster not in self.clusters:
            return  # a full relist (or a disengagement) came first and covered it
        self.hub.stale.pop(cluster, None)
        view = self.hub.views[self.key]
        self.hub._dispatch(self.key, view.replace_cluster(cluster, items))
        for kind, obj, rv in held:
            if not rv.isdigit() or not list_rv.isdigit() or int(rv) > int(list_rv):
                self._apply(cluster, kind, obj, rv)

    async def _list_one(self, cluster: str) -> tuple[list[tuple[Obj, str]], str]:
        listed = await list_all(self.backend.scoped(self._remote.get(cluster, cluster)), self.path)
        return listed if listed is not None else ([], "")
