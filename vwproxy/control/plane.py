"""The control plane: a work queue of objects to reconcile, fed by every shard commit.

Commits enqueue the keys they affect; one task drains the queue and runs the reconcilers, which
write back to the shard (their own commits enqueue more, until nothing changes). A reconciler
that fails is retried with backoff; the rest of the queue goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from vwproxy.control.backend_claims import BACKEND_RELABEL_SECONDS, relabel_backend
from vwproxy.control.backend_health import BackendHealth, Reachability, what_is_wrong
from vwproxy.control.labeller import OBJECTS_PER_YIELD, ClaimLabeller
from vwproxy.control.objects import API_BINDINGS, CRDS, ENDPOINT_SLICES, LOGICAL_CLUSTERS, WORKSPACES, ControlStore, Obj, Waiting
from vwproxy.control.lifecycle import BACKEND_CLUSTER_ANNOTATION
from vwproxy.control.reconcilers import BACKEND_ANNOTATION, EMBEDDED_BACKEND, Reconcilers
from vwproxy.core.objects import ChangeEvent, StoredObject
from vwproxy.kube import errors, kcp
from vwproxy.kube import watch as wire
from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME
from vwproxy.store.shard import Shard
from vwproxy.upstream.client import BackendClient

log = logging.getLogger(__name__)

# Backoff for a reconciler that failed (a backend down, a conflict): long enough not to spin,
# short enough that a returning backend is picked up quickly.
RETRY_DELAY_SECONDS = 2.0
# A commit storm (a seed, a deletecollection) settles before the queue is drained.
MAX_ROUNDS_PER_CONVERGE = 50
# Kept in the data dir at a clean stop: the shard revision at which the control plane had nothing
# left to do, and what it reconciled with (`ControlPlane.inputs_digest`). A start that finds the
# revision unchanged and the same inputs skips reconciling what was settled (`enqueue_start`).
SETTLED_MARKER = "control-settled"
SETTLED_INPUTS_MARKER = "control-settled-inputs"
# Raw bytes that mark a stored object as one the settled start still reconciles.
_BACKEND_BYTES = f'"{BACKEND_ANNOTATION}":"'.encode()
_EMBEDDED_BYTES = f'{EMBEDDED_BACKEND}"'.encode()
_CLAIMS_BYTES = b'"permissionClaims"'

Key = tuple[str, ...]

_KEYS_BY_STORAGE = {
    "tenancy.kcp.io/workspaces": "workspace",
    "tenancy.kcp.io/workspacetypes": "workspacetype",
    "core.kcp.io/logicalclusters": "logicalcluster",
    "apis.kcp.io/apiexports": "export",
    "apis.kcp.io/apiexportendpointslices": "slice",
    "apis.kcp.io/apibindings": "binding",
    "apis.kcp.io/apiresourceschemas": "schema",
    "/secrets": "secret",
    "apiextensions.k8s.io/customresourcedefinitions": "crd",
    "core.kcp.io/shards": "shard",
}


class ControlPlane:
    """Runs the reconcilers for everything in the embedded shard."""

    def __init__(
        self, shard: Shard, external_url: str, clients: Mapping[str, BackendClient] | None = None, *, deterministic: bool = False,
        embedded_client: BackendClient | None = None,
    ) -> None:
        """`embedded_client` makes this a proxy shard's passive copy (DESIGN §7): the kcp objects
        are the control plane's, mirrored into `shard`, nothing is reconciled here, and the
        workspaces on the embedded shard are reached through the control plane with that client."""
        self.shard = shard
        self.store = ControlStore(shard)
        self.clients = dict(clients or {})
        # Logical cluster → (its LogicalCluster as last read, the backend it names): every request
        # through the front asks, and a stored object never changes (a write stores a new one).
        self._backends: dict[str, tuple[StoredObject, str]] = {}
        self.embedded_client = embedded_client
        self.claims = ClaimLabeller(shard, self.store)
        self.health = BackendHealth(self.clients, self._backend_changed)
        self.reconcilers = Reconcilers(
            self.store, external_url, self._write_crd, self._read_crd, frozenset(self.clients), self._delete_bound, self.claims, self._relabel,
            self.health.state.get, deterministic,
        )
        self.external_url = external_url
        self.deterministic = deterministic
        self._pending: dict[Key, Obj | None] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._draining = False
        self._interrupted = False
        # Of the code this process runs, whatever the files say by the time it stops.
        self._inputs_digest = self.inputs_digest() if embedded_client is None else 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        if embedded_client is None:
            shard.on_commit.append(self._on_commit)

    # -- what a commit affects -----------------------------------------------------------------

    def enqueue(self, key: Key, last_state: Obj | None = None) -> None:
        if key not in self._pending or last_state is not None:
            self._pending[key] = last_state
        self._idle.clear()
        self._wakeup.set()

    def enqueue_all(self) -> None:
        for storage_key, kind in _KEYS_BY_STORAGE.items():
            if kind in ("secret", "crd", "schema", "shard"):
                continue
            # Each object's own key only: what `_enqueue_for` adds besides (a binding's export,
            # an export's bindings, a type's workspaces) is all queued here anyway, and finding
            # it decodes every binding once per export.
            for obj in self.shard.table(storage_key).ordered(None):
                self.enqueue(("logicalcluster", obj.cluster) if kind == "logicalcluster" else (kind, obj.cluster, obj.name))
        # After the bindings (the queue keeps order): claim labels that nothing claims any more.
        self.enqueue(("claimsweep",))

    # -- starting where the last run settled -----------------------------------------------------

    def inputs_digest(self) -> int:
        """What the reconcilers' results depend on besides the shard's objects: the external URL,
        deterministic mode, the declared backends and vwproxy's own code (another version may
        reconcile differently). As a marker value."""
        digest = hashlib.sha256()
        digest.update(orjson.dumps([self.external_url, self.deterministic, sorted((n, c.backend.url) for n, c in self.clients.items())]))
        for source in sorted(Path(__file__).parent.parent.rglob("*.py")):
            digest.update(source.read_bytes())
        return int.from_bytes(digest.digest()[:7], "big")

    @property
    def settled(self) -> bool:
        """Nothing queued, being reconciled, failed or waiting on a timer."""
        return not self._pending and not self._timers and not self._draining and not self._interrupted

    def record_settled(self) -> None:
        """At a clean stop with nothing left to do, note the revision and inputs for the next start."""
        if self.embedded_client is None and self.settled:
            self.shard.mark(SETTLED_INPUTS_MARKER, self._inputs_digest)
            self.shard.mark(SETTLED_MARKER, self.shard.revision)

    def enqueue_start(self) -> bool:
        """What a start on a seeded data dir reconciles. Everything (`enqueue_all`), unless the last
        run stopped cleanly with the control plane settled at this very revision and the same
        inputs: then nothing changed since every object was reconciled, and only what keeps state in
        this process or waits on the world is: workspace types, exports and endpoint slices (few),
        objects being deleted, logical clusters initializing, workspaces and clusters on backends
        (which may have changed meanwhile), and bindings with permission claims (the claim index
        is in memory). Returns whether it was that settled start."""
        revision = self.shard.marker(SETTLED_MARKER)
        if revision != self.shard.revision or self.shard.marker(SETTLED_INPUTS_MARKER) != self._inputs_digest:
            self.enqueue_all()
            return False
        for kind in ("workspacetype", "export", "slice"):
            storage_key = next(k for k, v in _KEYS_BY_STORAGE.items() if v == kind)
            for obj in self.shard.table(storage_key).ordered(None):
                self.enqueue((kind, obj.cluster, obj.name))
        on_backends: set[str] = set()
        lcs = self.shard.table(self.store.info(LOGICAL_CLUSTERS).storage_key)
        for lc in lcs.ordered(None):
            if _on_backend(lc):
                on_backends.add(lc.cluster)
            if lc.cluster in on_backends or lc.deleting or lc.labels.get(kcp.PHASE_LABEL) == kcp.PHASE_INITIALIZING:
                self.enqueue(("logicalcluster", lc.cluster))
        for ws in self.shard.table(self.store.info(WORKSPACES).storage_key).ordered(None):
            if ws.deleting or _on_backend(ws):
                self.enqueue(("workspace", ws.cluster, ws.name))
        for binding in self.shard.table(self.store.info(API_BINDINGS).storage_key).ordered(None):
            if binding.deleting or binding.cluster in on_backends or _mentions(binding, _CLAIMS_BYTES):
                self.enqueue(("binding", binding.cluster, binding.name))
        # No claim-label sweep: nothing was written while no process ran, and a running one keeps
        # the labels current as commits come.
        return True

    def later(self, key: Key, last_state: Obj | None, delay: float) -> None:
        """Enqueue `key` after `delay` (once, however often asked meanwhile)."""
        if key in self._timers:
            return

        def fire() -> None:
            del self._timers[key]
            self.enqueue(key, last_state)

        self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)

    def _on_commit(self, events: list[ChangeEvent]) -> None:
        for event in events:
            kind = _KEYS_BY_STORAGE.get(event.storage_key)
            if event.type != wire.DELETED and kind != "binding" and not self.claims.writing and self.claims.concerns(event):
                self.enqueue(("claimobj", event.obj.cluster, event.storage_key, event.obj.namespace, event.obj.name))
            if kind is None:
                if event.type == wire.DELETED or event.obj.deleting:
                    self._enqueue_deletions_in(event.obj.cluster)
                continue
            last = event.obj.decode() if event.type == wire.DELETED and kind in ("binding", "workspace") else None
            self._enqueue_for(kind, event.obj.cluster, event.obj.namespace, event.obj.name, last)
            if kind == "logicalcluster":
                owner = (event.obj.decode().get("spec") or {}).get("owner") or {}
                if owner.get("resource") == "workspaces" and owner.get("cluster") and owner.get("name"):
                    self.enqueue(("workspace", str(owner["cluster"]), str(owner["name"])))
            elif kind == "binding":
                self._enqueue_lifecycle_of(event.obj.cluster)

    def _enqueue_deletions_in(self, cluster: str) -> None:
        """Something in `cluster` went (or is going): deletions waiting on it look again."""
        self._enqueue_lifecycle_of(cluster)
        for binding in self.shard.table(self.store.info(API_BINDINGS).storage_key).ordered(cluster):
            if binding.deleting:
                self.enqueue(("binding", cluster, binding.name))

    def _enqueue_lifecycle_of(self, cluster: str) -> None:
        """The LogicalCluster of `cluster`, if it is initializing (default bindings) or deleting."""
        lc = self.store.stored(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        if lc is not None and (lc.deleting or lc.labels.get(kcp.PHASE_LABEL) == kcp.PHASE_INITIALIZING):
            self.enqueue(("logicalcluster", cluster))

    def _enqueue_for(self, kind: str, cluster: str, namespace: str, name: str, last_state: Obj | None) -> None:
        if kind == "workspace":
            self.enqueue((kind, cluster, name), last_state)
        elif kind in ("workspacetype", "export", "slice"):
            self.enqueue((kind, cluster, name))
        elif kind == "logicalcluster":
            self.enqueue(("logicalcluster", cluster))
        elif kind == "binding":
            self.enqueue(("binding", cluster, name), last_state)
            state = last_state or self.store.get(API_BINDINGS, cluster, name) or {}
            export_cluster = (state.get("status") or {}).get("apiExportClusterName")
            export_name = (((state.get("spec") or {}).get("reference") or {}).get("export") or {}).get("name")
            if export_cluster and export_name:
                self.enqueue(("export", str(export_cluster), str(export_name)))
        elif kind == "secret" and namespace == kcp.IDENTITY_SECRET_NAMESPACE:
            self.enqueue(("export", cluster, name))
        elif kind in ("schema", "crd"):
            for stored in self.store.each_stored(API_BINDINGS, None if kind == "schema" else cluster):
                self.enqueue(("binding", stored.cluster, stored.name))  # names only: nothing to decode
        elif kind == "shard":
            # A shard came, went or changed its URL or partition: every endpoint slice looks again.
            for slice_obj in self.shard.table(self.store.info(ENDPOINT_SLICES).storage_key).ordered(None):
                self.enqueue(("slice", slice_obj.cluster, slice_obj.name))
        if kind == "workspacetype":
            # A workspace waits in Scheduling until its type (and what that extends) resolves.
            for ws in self.shard.table(self.store.info(WORKSPACES).storage_key).ordered(None):
                if ws.cluster and not self._scheduled(ws.decode()):
                    self.enqueue(("workspace", ws.cluster, ws.name))
        if kind == "export":
            for lc in self.shard.table(self.store.info(LOGICAL_CLUSTERS).storage_key).ordered(None):
                if lc.labels.get(kcp.PHASE_LABEL) == kcp.PHASE_INITIALIZING:
                    self.enqueue(("logicalcluster", lc.cluster))  # default bindings may wait for it
            for binding_cluster, binding in self.store.each(API_BINDINGS):
                ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
                if ref.get("name") == name:
                    self.enqueue(("binding", binding_cluster, binding["metadata"]["name"]))

    def _scheduled(self, ws: Obj) -> bool:
        cluster = str((ws.get("spec") or {}).get("cluster") or "")
        return bool(cluster) and self.shard.cluster_exists(cluster)

    # -- running ---------------------------------------------------------------------------------

    async def _reconcile(self, key: Key, last_state: Obj | None) -> None:
        r = self.reconcilers
        kind = key[0]
        if kind == "workspace":
            r.reconcile_workspace(key[1], key[2], last_state)
        elif kind == "workspacetype":
            r.reconcile_workspace_type(key[1], key[2])
        elif kind == "logicalcluster":
            r.reconcile_logical_cluster(key[1])
        elif kind == "export":
            r.reconcile_export(key[1], key[2])
        elif kind == "slice":
            r.reconcile_endpoint_slice(key[1], key[2])
        elif kind == "binding":
            await r.reconcile_binding(key[1], key[2], last_state)
            if self.claims.storage_keys_of(key[1], key[2]) and self.client_for(key[1]) is not None:
                self.later(("claimbackend", key[1], key[2]), None, BACKEND_RELABEL_SECONDS)
        elif kind == "claimbackend":
            keys = self.claims.storage_keys_of(key[1], key[2])
            for storage_key in sorted(keys):
                for failure in await self._relabel(key[1], storage_key, key[2]):
                    log.info("claim labels in %s: %s (will retry)", key[1], failure)
            if keys:
                self.later(key, None, BACKEND_RELABEL_SECONDS)
        elif kind == "claimobj":
            if self.client_for(key[1]) is None:
                self.claims.relabel_object(key[1], key[2], key[3], key[4])
        elif kind == "claimsweep":
            await self._sweep_claim_labels()

    async def drain(self, only: frozenset[str] | None = None) -> int:
        """Reconcile until the queue is empty (or a bounded number of rounds); returns failures
        left. With `only`, just the queued keys of those kinds (the rest stays queued)."""
        failed: dict[Key, Obj | None] = {}
        self._draining = True
        try:
            await self._drain_rounds(failed, only)
        except BaseException:
            self._interrupted = True  # a batch was cut short (the server stopping): never settled
            raise
        finally:
            self._draining = False
        for key, last in failed.items():
            self._pending.setdefault(key, last)
        return len(failed)

    async def _drain_rounds(self, failed: dict[Key, Obj | None], only: frozenset[str] | None) -> None:
        for _ in range(MAX_ROUNDS_PER_CONVERGE):
            if only is None:
                batch, self._pending = self._pending, {}
            else:
                batch = {key: self._pending.pop(key) for key in [k for k in self._pending if k[0] in only]}
            if not batch:
                break
            for key, last in batch.items():
                await asyncio.sleep(0)  # reconcilers on the embedded shard never block: let requests in between
                try:
                    await self._reconcile(key, last)
                except Waiting as wait:
                    log.debug("reconciling %s: %s (will look again)", "/".join(key), wait)
                    self.later(key, last, wait.retry_after)
                except errors.StatusError as exc:
                    log.info("reconciling %s: %s (will retry)", "/".join(key), exc)
                    failed[key] = last
                except Exception:
                    log.exception("reconciling %s failed (will retry)", "/".join(key))
                    failed[key] = last

    async def run(self) -> None:
        """The control loop: drain on every wake-up, retry failures after a delay; the backends
        are probed alongside, for as long as the loop runs."""
        probing = asyncio.create_task(self.health.run(), name="vwproxy-backend-probes")
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                failures = await self.drain()
                if failures:
                    await asyncio.sleep(RETRY_DELAY_SECONDS)
                    self._wakeup.set()
                elif not self._pending:
                    self._idle.set()
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing

    @property
    def idle(self) -> bool:
        """Nothing left to reconcile right now (what `/readyz` reports as settled)."""
        return self._idle.is_set() and not self._pending

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # -- claim labels ----------------------------------------------------------------------------

    async def _relabel(self, cluster: str, storage_key: str, binding: str) -> list[str]:
        client = self.client_for(cluster)
        if client is None:
            return await self.claims.relabel_all(cluster, storage_key, binding)
        return await relabel_backend(self.claims, client, cluster, storage_key, await self._storage_crd(cluster, storage_key))

    async def _storage_crd(self, cluster: str, storage_key: str) -> Obj | None:
        group, _, resource = storage_key.partition("/")
        return await self._read_crd(cluster, f"{resource}.{group}") if group and group not in kcp.KCP_GROUPS else None

    async def _sweep_claim_labels(self) -> None:
        """Objects with claim labels where no accepted claim is indexed (a binding gone while the
        process was down, a label written by hand) get theirs taken off."""
        claimed = self.claims.claimed_targets()
        for storage_key, table in self.shard.tables():
            if storage_key == self.store.info(API_BINDINGS).storage_key:
                continue  # each binding's reconcile sets its own
            for count, obj in enumerate(list(table.ordered(None)), 1):
                if (obj.cluster, storage_key) not in claimed and any(k.startswith(kcp.CLAIMED_LABEL_PREFIX) for k in obj.labels):
                    self.claims.relabel_object(obj.cluster, storage_key, obj.namespace, obj.name)
                if count % OBJECTS_PER_YIELD == 0:
                    await asyncio.sleep(0)

    # -- backends --------------------------------------------------------------------------------

    def backend_of(self, cluster: str) -> str:
        lc = self.store.stored(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        if lc is None:
            self._backends.pop(cluster, None)
            return EMBEDDED_BACKEND
        known = self._backends.get(cluster)
        if known is not None and known[0] is lc:
            return known[1]
        annotations = (lc.decode()["metadata"].get("annotations") or {})
        backend = str(annotations.get(BACKEND_ANNOTATION) or EMBEDDED_BACKEND)
        self._backends[cluster] = (lc, backend)
        return backend

    def client_for(self, cluster: str) -> BackendClient | None:
        backend = self.backend_of(cluster)
        if backend == EMBEDDED_BACKEND:
            return self.embedded_client.scoped(cluster) if self.embedded_client is not None else None
        client = self.clients.get(backend)
        if client is None:
            raise errors.service_unavailable(undeclared_backend_message(self.store.path_of(cluster), backend))
        if client.backend.shard:
            return client.scoped(self._backend_cluster(cluster))
        return client

    def _backend_cluster(self, cluster: str) -> str:
        """The logical cluster's name on its shard-like backend (its own unless annotated)."""
        lc = self.store.stored(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        annotations = (lc.decode()["metadata"].get("annotations") or {}) if lc is not None else {}
        return str(annotations.get(BACKEND_CLUSTER_ANNOTATION) or cluster)

    def _workspaces_on(self, backend: str) -> list[tuple[str, Obj]]:
        """(parent cluster, Workspace) of every workspace whose content lives on `backend`."""
        return [(parent, ws) for parent, ws in self.store.all(WORKSPACES)
                if (ws["metadata"].get("annotations") or {}).get(BACKEND_ANNOTATION) == backend]

    def _backend_changed(self, backend: str) -> None:
        """A backend became reachable or not: its workspaces' conditions say so."""
        for parent, ws in self._workspaces_on(backend):
            self.enqueue(("workspace", parent, str(ws["metadata"]["name"])))

    def backend_problems(self) -> list[tuple[str, str, str]]:
        """(workspace path, backend, what is wrong) for each workspace whose backend is undeclared
        or does not answer, sorted: what `/readyz` lists."""
        problems = []
        for parent, ws in self.store.all(WORKSPACES):
            backend = str((ws["metadata"].get("annotations") or {}).get(BACKEND_ANNOTATION) or EMBEDDED_BACKEND)
            if backend == EMBEDDED_BACKEND:
                continue
            path = f"{self.store.path_of(parent)}:{ws['metadata']['name']}"
            if backend not in self.clients:
                problems.append((path, backend, "is not declared in backends.yaml"))
                continue
            reachability: Reachability | None = self.health.state.get(backend)
            if reachability is not None and not reachability.reachable:
                problems.append((path, backend, what_is_wrong(backend, reachability.message)))
        return sorted(problems)

    async def _delete_bound(self, cluster: str, crd: Obj) -> tuple[int, dict[str, int]]:
        """Delete every object of a bound CRD's resource in the workspace; (left, finalizers holding them)."""
        client = self.client_for(cluster)
        if client is None:
            return self._delete_bound_embedded(cluster, str(crd["metadata"]["name"]))
        spec = crd.get("spec") or {}
        versions = [v for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served", True)]
        version = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"] if versions else "")
        plural = str((spec.get("names") or {}).get("plural") or "")
        base = f"/apis/{spec.get('group')}/{version}"
        headers = {"Accept": "application/json"}

        async def listed() -> list[Obj]:
            resp = await client.request("GET", f"{base}/{plural}", [], headers, b"")
            if resp.status == 404:
                return []
            if resp.status != 200:
                raise errors.service_unavailable(f"listing {plural}.{spec.get('group')} on the backend failed: HTTP {resp.status}")
            items: list[Obj] = orjson.loads(resp.body).get("items") or []
            return items

        for item in await listed():
            md = item.get("metadata") or {}
            if md.get("deletionTimestamp"):
                continue
            where = f"{base}/namespaces/{md['namespace']}/{plural}/{md['name']}" if md.get("namespace") else f"{base}/{plural}/{md['name']}"
            resp = await client.request("DELETE", where, [], {**headers, "Content-Type": "application/json"}, b'{"propagationPolicy":"Background"}')
            if resp.status not in (200, 202, 404):
                raise errors.service_unavailable(f"deleting {plural}.{spec.get('group')} {md.get('name')} on the backend failed: HTTP {resp.status}")
        left = await listed()
        return len(left), _finalizer_counts(item.get("metadata") or {} for item in left)

    def _delete_bound_embedded(self, cluster: str, crd_name: str) -> tuple[int, dict[str, int]]:
        left: list[Obj] = []
        for key in sorted(self.shard.registry.crd_storage_keys(cluster, crd_name)):
            info = self.shard.info_for_storage_key(key, cluster)
            table = self.shard.table(key)
            for obj in list(table.ordered(cluster)):
                if info is not None and not obj.deleting:
                    try:
                        self.shard.delete(info, cluster, obj.namespace, obj.name, {"propagationPolicy": "Background"})
                    except errors.StatusError as exc:
                        if exc.code != 404:
                            raise
            left += [o.decode()["metadata"] for o in table.ordered(cluster)]
        return len(left), _finalizer_counts(left)

    async def _read_crd(self, cluster: str, name: str) -> Obj | None:
        client = self.client_for(cluster)
        if client is None:
            return self.store.get(CRDS, cluster, name)
        resp = await client.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", [], {}, b"")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise errors.service_unavailable(f"reading CRD {name} from the backend failed: HTTP {resp.status}")
        found: Obj = orjson.loads(resp.body)
        return found

    async def _write_crd(self, cluster: str, name: str, crd: Obj | None) -> None:
        client = self.client_for(cluster)
        existing = await self._read_crd(cluster, name)
        if client is None:
            if crd is None:
                if existing is not None:
                    self.store.delete(CRDS, cluster, name)
            elif existing is None:
                self.store.create(CRDS, cluster, crd)
            elif _differs(existing, crd):
                self.store.update(CRDS, cluster, {**existing, "metadata": {**existing["metadata"], **_merged_annotations(existing, crd)}, "spec": crd["spec"]})
            return
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if crd is None:
            if existing is not None:
                resp = await client.request("DELETE", f"{path}/{name}", [], headers, b"")
                if resp.status not in (200, 202, 404):
                    raise errors.service_unavailable(f"removing CRD {name} from the backend failed: HTTP {resp.status}")
            return
        if existing is None:
            resp = await client.request("POST", path, [], headers, orjson.dumps(crd))
        elif _differs(existing, crd):
            body = {**existing, "metadata": {**existing["metadata"], **_merged_annotations(existing, crd)}, "spec": crd["spec"]}
            resp = await client.request("PUT", f"{path}/{name}", [], headers, orjson.dumps(body))
        else:
            return
        if resp.status not in (200, 201):
            raise errors.service_unavailable(f"installing CRD {name} in the backend failed: HTTP {resp.status}: {resp.body[:200]!r}")


def _mentions(obj: StoredObject, text: bytes) -> bool:
    """Whether `text` occurs in the stored JSON, without decoding it."""
    return text in obj.raw


def _on_backend(obj: StoredObject) -> bool:
    """Whether the object's backend annotation names a backend other than the embedded shard,
    read from the stored JSON without decoding it."""
    raw = obj.raw  # one read: a packed object inflates at each
    at = raw.find(_BACKEND_BYTES)
    while at >= 0:
        if not raw.startswith(_EMBEDDED_BYTES, at + len(_BACKEND_BYTES)):
            return True
        at = raw.find(_BACKEND_BYTES, at + 1)
    return False


def undeclared_backend_message(workspace: str, backend: str) -> str:
    """What a request to a workspace on a backend that backends.yaml does not declare is told."""
    return (f'workspace {workspace} is on backend "{backend}" (its {BACKEND_ANNOTATION} annotation), '
            f"which is not declared in backends.yaml in the config folder; declare it there and restart, or change the annotation")


def _finalizer_counts(metadatas: Iterable[Obj]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for md in metadatas:
        for finalizer in md.get("finalizers") or []:
            counts[str(finalizer)] = counts.get(str(finalizer), 0) + 1
    return counts


def _merged_annotations(existing: Obj, wanted: Obj) -> dict[str, Any]:
    return {"annotations": {**(existing["metadata"].get("annotations") or {}), **(wanted["metadata"].get("annotations") or {})}}


def _differs(existing: Obj, wanted: Obj) -> bool:
    annotations = existing["metadata"].get("annotations") or {}
    if any(annotations.get(k) != v for k, v in (wanted["metadata"].get("annotations") or {}).items()):
        return True
    have, want = existing.get("spec") or {}, wanted.get("spec") or {}
    return any(have.get(k) != v for k, v in want.items())
