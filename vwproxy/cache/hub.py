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
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, SCHEMAS, ControlStore, Obj
from vwproxy.control.reconcilers import export_schema_names
from vwproxy.core.claims import ClaimRef, claim_group, export_claims
from vwproxy.core.objects import ChangeEvent
from vwproxy.core.rv import RVSequence
from vwproxy.core.view import DEFAULT_HISTORY, View
from vwproxy.kube import errors, kcp
from vwproxy.kube import watch as wire
from vwproxy.store.shard import Shard
from vwproxy.upstream.client import BackendClient
from vwproxy.upstream.reflector import Reflector

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
        client_for: Callable[[str], BackendClient | None] = lambda cluster: None,
    ) -> None:
        self.shard = shard
        self.client_for = client_for
        self._reflectors: dict[tuple[ViewKey, str], tuple[asyncio.Task[None], Reflector]] = {}
        self.stale: dict[str, str] = {}  # logical cluster → why its backend is not current
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
        for cluster, binding in store.all(API_BINDINGS):
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
            self._bound[key] = entries
        else:
            self._bound.pop(key, None)
        claims = frozenset(
            (export_cluster, export_name, ref.group, ref.resource, ref.identity)
            for ref in (ClaimRef.of(c) for c in (binding.get("spec") or {}).get("permissionClaims") or []
                        if isinstance(c, dict) and c.get("state") == "Accepted")
        )
        if claims:
            self._accepted[key] = claims
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
            view = View(self.seq, key.group, key.resource, self.history_size)
            self.views[key] = view
            self.engaged[key] = set()
            self._by_storage_key.setdefault(key.storage_key, set()).add(key)
            if key.resource == "apibindings" and key.group == "apis.kcp.io":
                for cluster, binding in self.store.all(API_BINDINGS):
                    if binds(binding, key.export_cluster, key.export_name):
                        view.upsert(cluster, binding, str((binding.get("metadata") or {}).get("resourceVersion", "")))
            else:
                self._engage(key)
        return view

    def _engage(self, key: ViewKey) -> None:
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
            if client is not None:
                self._start_reflector(key, cluster, client)
                continue
            bucket = table.clusters.get(cluster)
            events += view.replace_cluster_stored(cluster, list(bucket.ordered()) if bucket else [])
        for cluster in sorted(current - wanted):
            running = self._reflectors.pop((key, cluster), None)
            if running is not None:
                running[0].cancel()
                self.stale.pop(cluster, None)
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
            if binds(binding, key.export_cluster, key.export_name):
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

        def health(ok: bool, why: str) -> None:
            if ok:
                if self.stale.pop(cluster, None) is not None:
                    log.info("workspace %s is current again", cluster)
            else:
                if cluster not in self.stale:
                    log.warning("workspace %s is stale: %s", cluster, why)
                self.stale[cluster] = why

        reflector = Reflector(client, path, replace, change, health)
        task = asyncio.get_running_loop().create_task(reflector.run(), name=f"reflector {cluster} {path}")
        self._reflectors[(key, cluster)] = (task, reflector)

    async def wait_synced(self, key: ViewKey, timeout: float) -> None:
        """Wait (bounded) until every reflector of the view has listed once."""
        waits = [r.synced.wait() for (k, _), (_, r) in self._reflectors.items() if k == key and not r.synced.is_set()]
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
            "vwproxy_reflectors": len(self._reflectors),
            "vwproxy_stale_workspaces": len(self.stale),
            "vwproxy_resource_version": self.seq.current,
        }

    def stale_warnings(self, key: ViewKey) -> list[str]:
        engaged = self.engaged.get(key, set())
        return [f"workspace {c} is stale: {why}" for c, why in sorted(self.stale.items()) if c in engaged]

    async def aclose(self) -> None:
        for task, _ in self._reflectors.values():
            task.cancel()
        for task, _ in self._reflectors.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reflectors.clear()

    def _dispatch(self, key: ViewKey, events: list[ChangeEvent]) -> None:
        """Wake writers waiting to read their own write (the view has offered `events` to its watchers)."""
        if events:
            changed = self._changed.pop(key, None)
            if changed is not None:
                changed.set()

    def export_label(self, export_cluster: str, export_name: str) -> str:
        return kcp.export_label_value(export_cluster, export_name)
