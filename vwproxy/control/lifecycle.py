"""The workspace lifecycle as kcp runs it, from Workspace to LogicalCluster and back.

Creation: a Workspace gets the `core.kcp.io/logicalcluster` finalizer, a cluster name and URL,
and a LogicalCluster whose spec lists the initializers and terminators of its WorkspaceType and
the types that extends. The LogicalCluster goes Scheduling → Initializing (status copies the
spec's lists) → Ready once `status.initializers` is empty; labels carry the phase and one hash per
pending initializer/terminator; the Workspace mirrors phase, lists and conditions.

Deletion: the Workspace is marked and its LogicalCluster deleted. The LogicalCluster, held by its
finalizers, is Terminating while `status.terminators` is non-empty (then Deleting); meanwhile its
content is deleted (namespaces and cluster-scoped objects first, APIBindings last). It goes when
its content is gone and every terminator has removed itself; then the Workspace goes.
See kcp-reference.md sections 0, 1.3, 1.4 and 6.3.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import orjson

from vwproxy.auth.identity import MASTERS, OWNER_ANNOTATION
from vwproxy.auth.policy import WORKSPACE_OWNER_BINDING, workspace_owner_binding

from vwproxy.control import initialization
from vwproxy.control.backend_health import Reachability
from vwproxy.control.objects import API_BINDINGS, CLUSTER_ROLE_BINDINGS, LOGICAL_CLUSTERS, WORKSPACES, ControlStore, Obj, Waiting, condition
from vwproxy.control.workspacetypes import WorkspaceTypeError, find_type, initializers_of, terminators_of, with_extended
from vwproxy.kube import errors, kcp
from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME as LC_NAME
from vwproxy.kube.kcp import PATH_ANNOTATION

log = logging.getLogger(__name__)

BACKEND_ANNOTATION = "vwproxy.dev/backend"  # on a Workspace: which backend holds its content
# On a Workspace on a shard-like backend: its logical cluster's name there (default: its own).
BACKEND_CLUSTER_ANNOTATION = "vwproxy.dev/backend-cluster"
EMBEDDED_BACKEND = "embedded"
BOUND_BY_ANNOTATION = "vwproxy.dev/bound-by"  # on an installed CRD: the APIBinding that put it there

# Content a deleting logical cluster keeps: the trigger itself, and RBAC so people can still look.
_KEPT_CONTENT = frozenset({"core.kcp.io/logicalclusters", "rbac.authorization.k8s.io/clusterroles", "rbac.authorization.k8s.io/clusterrolebindings"})
_BINDINGS_KEY = "apis.kcp.io/apibindings"
_NAMESPACES_KEY = "/namespaces"
_CRDS_KEY = "apiextensions.k8s.io/customresourcedefinitions"
# A backend's latest probe verdict by name (None: not probed yet).
ReachabilityOf = Callable[[str], Reachability | None]
BACKEND_VALID = "BackendValid"
BACKEND_REACHABLE = "BackendReachable"

# Export defaults missing: the apibinder looks again (kcp retries until they show up).
EXPORT_RECHECK_SECONDS = 2.0


def _list_text(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"  # as Go prints a slice with %v


def _conditions_by_type(conditions: list[Obj]) -> dict[str, Obj]:
    return {str(c.get("type")): c for c in conditions if isinstance(c, dict)}


class WorkspaceLifecycle:
    """Reconciles Workspaces and LogicalClusters, creation to deletion."""

    def __init__(self, store: ControlStore, external_url: str, known_backends: frozenset[str],
                 reachability: ReachabilityOf = lambda backend: None, deterministic: bool = False) -> None:
        """`deterministic` names logical clusters after their workspace paths instead of at random."""
        self.store = store
        self.deterministic = deterministic
        self.external_url = external_url.rstrip("/")
        self.known_backends = known_backends
        self.reachability = reachability

    # -- Workspace ---------------------------------------------------------------------------------

    def reconcile_workspace(self, parent: str, name: str, last_state: Obj | None = None) -> None:
        ws = self.store.get(WORKSPACES, parent, name)
        if ws is None:
            # Gone without waiting for its finalizer (deleted before it had one, or it was
            # removed by hand): its logical cluster still goes, through the same deletion.
            cluster = str(((last_state or {}).get("spec") or {}).get("cluster") or "")
            if cluster:
                self._delete_logical_cluster(cluster)
            return
        if ws["metadata"].get("deletionTimestamp"):
            self._reconcile_deleting_workspace(parent, ws)
            return
        path = f"{self.store.path_of(parent)}:{name}"
        spec = ws.get("spec") or {}
        cluster = str(spec.get("cluster") or "")
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LC_NAME) if cluster else None
        type_ref: Obj | None = None
        initializers: list[str] = []
        terminators: list[str] = []
        if lc is None:
            try:
                type_ref, initializers, terminators = self._lifecycle_of(ws, self.store.path_of(parent))
            except WorkspaceTypeError as exc:
                previous = (ws.get("status") or {}).get("conditions") or []
                self.store.set_status(WORKSPACES, parent, ws, {
                    "phase": kcp.PHASE_SCHEDULING,
                    "conditions": [condition("WorkspaceScheduled", False, "WorkspaceTypeInvalid", str(exc), previous)],
                })
                return
        ws = self._schedule(parent, ws, path, type_ref)
        cluster = str(ws["spec"]["cluster"])
        backend = str((ws["metadata"].get("annotations") or {}).get(BACKEND_ANNOTATION) or EMBEDDED_BACKEND)
        if lc is None:
            lc = self._create_logical_cluster(parent, ws, cluster, path, backend, type_ref, initializers, terminators)
        annotations = lc["metadata"].get("annotations") or {}
        wanted = {PATH_ANNOTATION: path, BACKEND_ANNOTATION: backend, **_backend_cluster(ws)}
        if any(annotations.get(k) != v for k, v in wanted.items()):
            lc["metadata"]["annotations"] = {**annotations, **wanted}
            self.store.update(LOGICAL_CLUSTERS, cluster, lc)
        waiting: Waiting | None = None
        try:
            self.reconcile_logical_cluster(cluster)
        except Waiting as exc:
            waiting = exc  # mirror what there is, then look again
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LC_NAME) or lc
        self._mirror(parent, ws, lc, backend)
        if waiting is not None:
            raise waiting

    def _lifecycle_of(self, ws: Obj, parent_path: str) -> tuple[Obj | None, list[str], list[str]]:
        """The type reference (path filled in), initializers and terminators of a new workspace."""
        ref = (ws.get("spec") or {}).get("type")
        if not isinstance(ref, dict) or not ref.get("name"):
            return None, [], []
        leaf = find_type(self.store, ref, parent_path)
        types = with_extended(self.store, leaf)
        return {"name": leaf.name, "path": self.store.path_of(leaf.cluster)}, initializers_of(types), terminators_of(types)

    def _schedule(self, parent: str, ws: Obj, path: str, type_ref: Obj | None) -> Obj:
        """The finalizer, cluster name, URL (and resolved type path) on the Workspace."""
        md, spec = ws["metadata"], ws.setdefault("spec", {})
        url = f"{self.external_url}/clusters/{path}"
        changed = False
        if kcp.WORKSPACE_FINALIZER not in (md.get("finalizers") or []):
            md["finalizers"] = [*(md.get("finalizers") or []), kcp.WORKSPACE_FINALIZER]
            changed = True
        if not spec.get("cluster") or spec.get("URL") != url:
            spec["cluster"] = spec.get("cluster") or self._new_cluster_name(path)
            spec["URL"] = url
            changed = True
        if type_ref is not None and spec.get("type") != type_ref:
            spec["type"] = type_ref
            changed = True
        return self.store.update(WORKSPACES, parent, ws) if changed else ws

    def _new_cluster_name(self, path: str) -> str:
        if self.deterministic:
            return kcp.path_logical_cluster_name(path)
        return kcp.new_logical_cluster_name(secrets.token_bytes(32))

    def _create_logical_cluster(
        self, parent: str, ws: Obj, cluster: str, path: str, backend: str, type_ref: Obj | None, initializers: list[str], terminators: list[str],
    ) -> Obj:
        annotations = {PATH_ANNOTATION: path, BACKEND_ANNOTATION: backend, **_backend_cluster(ws)}
        if type_ref is not None:
            annotations[kcp.WORKSPACE_TYPE_ANNOTATION] = f"{type_ref['path']}:{type_ref['name']}"
        spec: Obj = {"owner": {
            "apiVersion": "tenancy.kcp.io/v1alpha1", "resource": "workspaces", "name": ws["metadata"]["name"], "cluster": parent,
            "uid": ws["metadata"].get("uid", ""),
        }}
        owner = (ws["metadata"].get("annotations") or {}).get(OWNER_ANNOTATION)
        if owner:
            # kcp: the creator recorded by admission becomes spec.createdBy (what the lifecycle VWs
            # act as without *Permissions) and, through the LogicalCluster, the workspace's admin.
            annotations[OWNER_ANNOTATION] = str(owner)
            try:
                created_by = orjson.loads(owner)
            except orjson.JSONDecodeError:
                created_by = None
            if isinstance(created_by, dict) and created_by.get("username"):
                spec["createdBy"] = created_by
        if initializers:
            spec["initializers"] = initializers
        if terminators:
            spec["terminators"] = terminators
        return self.store.create(LOGICAL_CLUSTERS, cluster, {
            "metadata": {"name": LC_NAME, "annotations": annotations, "finalizers": [kcp.CONTENT_DELETION_FINALIZER]},
            "spec": spec,
            "status": {"phase": kcp.PHASE_SCHEDULING},
        })

    def _bind_owner(self, cluster: str, spec: Obj) -> None:
        """kcp's `workspace-admin` ClusterRoleBinding of the creator to cluster-admin, kept as it
        should be (re-created if deleted, subjects and roleRef restored). Creators in
        system:masters need none."""
        created_by = spec.get("createdBy")
        if not isinstance(created_by, dict) or not created_by.get("username"):
            return
        if MASTERS in (created_by.get("groups") or []):
            return
        wanted = workspace_owner_binding(str(created_by["username"]))
        current = self.store.get(CLUSTER_ROLE_BINDINGS, cluster, WORKSPACE_OWNER_BINDING)
        if current is None:
            self.store.create(CLUSTER_ROLE_BINDINGS, cluster, wanted)
        elif (current.get("subjects"), current.get("roleRef")) != (wanted["subjects"], wanted["roleRef"]):
            self.store.update(CLUSTER_ROLE_BINDINGS, cluster, {**current, "subjects": wanted["subjects"], "roleRef": wanted["roleRef"]})

    def _mirror(self, parent: str, ws: Obj, lc: Obj, backend: str) -> None:
        """The Workspace's status follows its LogicalCluster's."""
        lc_status = lc.get("status") or {}
        phase = str(lc_status.get("phase") or kcp.PHASE_SCHEDULING)
        initializers = list(lc_status.get("initializers") or [])
        terminators = list(lc_status.get("terminators") or [])
        previous = (ws.get("status") or {}).get("conditions") or []
        conditions = [condition("WorkspaceScheduled", True, previous=previous)]
        if backend != EMBEDDED_BACKEND:
            backend_conditions, available = self._backend_conditions(backend, previous)
            conditions += backend_conditions
            if not available and phase == kcp.PHASE_READY:
                # As kcp does for a mounted workspace whose mount is not ready: only a Ready
                # workspace turns Unavailable (and back); Initializing and Terminating go on, since
                # the LogicalCluster (in the embedded shard) and its lifecycle are unaffected.
                phase = kcp.PHASE_UNAVAILABLE
        if phase in (kcp.PHASE_SCHEDULING, kcp.PHASE_INITIALIZING):
            message = f"Initializers still exist: {_list_text(initializers)}" if initializers else "LogicalCluster is not initializing yet"
            conditions.append(condition("WorkspaceInitialized", False, "InitializerExists", message, previous, "Info"))
        else:
            conditions.append(condition("WorkspaceInitialized", True, previous=previous))
        status: Obj = {"phase": phase, "conditions": conditions}
        if initializers:
            status["initializers"] = initializers
        if terminators:
            status["terminators"] = terminators
        self.store.set_status(WORKSPACES, parent, ws, status)

    def _backend_conditions(self, backend: str, previous: list[Obj]) -> tuple[list[Obj], bool]:
        """BackendValid (declared in backends.yaml) and BackendReachable (its latest probe; absent
        until the first), and whether the backend serves the workspace's content now."""
        if backend not in self.known_backends:
            message = f'backend "{backend}" is not declared in backends.yaml'
            return [condition(BACKEND_VALID, False, "BackendNotFound", message, previous)], False
        out = [condition(BACKEND_VALID, True, previous=previous)]
        verdict = self.reachability(backend)
        if verdict is None:
            return out, True
        if verdict.reachable:
            out.append(condition(BACKEND_REACHABLE, True, previous=previous))
        else:
            out.append(condition(BACKEND_REACHABLE, False, verdict.reason, verdict.message, previous))
        return out, verdict.reachable

    def _reconcile_deleting_workspace(self, parent: str, ws: Obj) -> None:
        cluster = str((ws.get("spec") or {}).get("cluster") or "")
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LC_NAME) if cluster else None
        if lc is not None and not lc["metadata"].get("deletionTimestamp"):
            self._delete_logical_cluster(cluster)
            lc = self.store.get(LOGICAL_CLUSTERS, cluster, LC_NAME)
        if lc is None:
            self.store.set_finalizer(WORKSPACES, parent, ws, kcp.WORKSPACE_FINALIZER, False)
            return
        lc_status = lc.get("status") or {}
        terminators = list(lc_status.get("terminators") or [])
        status = dict(ws.get("status") or {})
        status["phase"] = kcp.PHASE_TERMINATING if terminators else kcp.PHASE_DELETING
        if terminators:
            status["terminators"] = terminators
        else:
            status.pop("terminators", None)
        by_type = _conditions_by_type(status.get("conditions") or [])
        content = _conditions_by_type(lc_status.get("conditions") or []).get("WorkspaceContentDeleted")
        if content is not None:
            by_type["WorkspaceContentDeleted"] = content
        status["conditions"] = list(by_type.values())
        self.store.set_status(WORKSPACES, parent, ws, status)

    def _delete_logical_cluster(self, cluster: str) -> None:
        if cluster == kcp.ROOT_CLUSTER or not self.store.shard.cluster_exists(cluster):
            return
        self.store.delete(LOGICAL_CLUSTERS, cluster, LC_NAME)

    # -- LogicalCluster ----------------------------------------------------------------------------

    def reconcile_logical_cluster(self, cluster: str) -> None:
        """Phase, initializers, content deletion, labels and finalizers of one LogicalCluster."""
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LC_NAME)
        if lc is None:
            return
        md = lc["metadata"]
        spec = lc.get("spec") or {}
        status = dict(lc.get("status") or {})
        conditions = _conditions_by_type(status.get("conditions") or [])
        previous = list(conditions.values())
        deleting = bool(md.get("deletionTimestamp"))
        phase = str(status.get("phase") or "")
        content_deleted = False
        wait: Waiting | None = None
        if deleting:
            phase = kcp.PHASE_TERMINATING if status.get("terminators") else kcp.PHASE_DELETING
            if kcp.CONTENT_DELETION_FINALIZER in (md.get("finalizers") or []):
                remaining = self._delete_content(cluster)
                content_deleted = not remaining
                conditions["WorkspaceContentDeleted"] = condition(
                    "WorkspaceContentDeleted", content_deleted, "" if content_deleted else "SomeResourcesRemain", "; ".join(remaining), previous)
        else:
            self._bind_owner(cluster, spec)
            if phase in ("", kcp.PHASE_SCHEDULING):
                # The transition to Initializing copies the spec's lists (kcp's admission does it).
                phase = kcp.PHASE_INITIALIZING
                for field in ("initializers", "terminators"):
                    if spec.get(field):
                        status[field] = list(spec[field])
            if phase == kcp.PHASE_INITIALIZING and kcp.APIBINDINGS_INITIALIZER in (status.get("initializers") or []):
                progress = initialization.bind_defaults(self.store, cluster, lc)
                conditions["WorkspaceAPIBindingsInitialized"] = condition(
                    "WorkspaceAPIBindingsInitialized", progress.done, progress.reason, progress.message, previous, progress.severity)
                if progress.done:
                    status["initializers"] = [i for i in status["initializers"] if i != kcp.APIBINDINGS_INITIALIZER]
                elif progress.retry:
                    wait = Waiting(progress.message, EXPORT_RECHECK_SECONDS)
            if phase == kcp.PHASE_INITIALIZING:
                pending = list(status.get("initializers") or [])
                if pending:
                    conditions["WorkspaceInitialized"] = condition(
                        "WorkspaceInitialized", False, "InitializerExists", f"Initializers still exist: {_list_text(pending)}", previous, "Info")
                else:
                    phase = kcp.PHASE_READY
                    conditions["WorkspaceInitialized"] = condition("WorkspaceInitialized", True, previous=previous)
        for field in ("initializers", "terminators"):
            if field in status and not status[field]:
                del status[field]  # kcp omits empty lists
        status["phase"] = phase
        path = (md.get("annotations") or {}).get(PATH_ANNOTATION) or cluster
        status["URL"] = f"{self.external_url}/clusters/{path}"
        if conditions:
            status["conditions"] = list(conditions.values())
        # Status first: an object appears in a lifecycle view (by its labels) complete.
        lc = self.store.set_status(LOGICAL_CLUSTERS, cluster, lc, status)
        self._reconcile_metadata(cluster, lc, content_deleted)
        if wait is not None:
            raise wait

    def _reconcile_metadata(self, cluster: str, lc: Obj, content_deleted: bool) -> None:
        """Labels from the status; the finalizers that hold a deleting LogicalCluster."""
        md = lc["metadata"]
        status = lc.get("status") or {}
        deleting = bool(md.get("deletionTimestamp"))
        labels = {k: v for k, v in (md.get("labels") or {}).items()
                  if not k.startswith((kcp.INITIALIZER_LABEL_PREFIX, kcp.TERMINATOR_LABEL_PREFIX)) and k != kcp.PHASE_LABEL}
        labels[kcp.PHASE_LABEL] = str(status.get("phase") or "")
        for owner in status.get("initializers") or []:
            key, value = kcp.lifecycle_label(kcp.INITIALIZER_LABEL_PREFIX, str(owner))
            labels[key] = value
        for owner in status.get("terminators") or []:
            key, value = kcp.lifecycle_label(kcp.TERMINATOR_LABEL_PREFIX, str(owner))
            labels[key] = value
        finalizers = list(md.get("finalizers") or [])
        wanted = list(finalizers)
        has_terminators = bool(status.get("terminators"))
        if deleting and not has_terminators:
            # The last state keeps the labels it was terminating with, so the terminating virtual
            # workspace (which passes events by their object's labels) delivers the final DELETED.
            labels = dict(md.get("labels") or {})
        if has_terminators and not deleting and kcp.TERMINATORS_FINALIZER not in wanted:
            wanted.append(kcp.TERMINATORS_FINALIZER)
        if not has_terminators and kcp.TERMINATORS_FINALIZER in wanted:
            wanted.remove(kcp.TERMINATORS_FINALIZER)
        if (lc.get("spec") or {}).get("owner") and not deleting and kcp.CONTENT_DELETION_FINALIZER not in wanted:
            wanted.append(kcp.CONTENT_DELETION_FINALIZER)  # LogicalClusters made before there was one
        if content_deleted and kcp.CONTENT_DELETION_FINALIZER in wanted:
            wanted.remove(kcp.CONTENT_DELETION_FINALIZER)
        if labels == (md.get("labels") or {}) and wanted == finalizers:
            return
        md["labels"] = labels
        md["finalizers"] = wanted
        if not wanted:
            del md["finalizers"]
        self.store.update(LOGICAL_CLUSTERS, cluster, lc)  # the last finalizer gone: the LogicalCluster goes

    def _delete_content(self, cluster: str) -> list[str]:
        """Delete a terminating cluster's content; what remains, as messages (empty: all gone).

        Namespaces take their objects with them; cluster-scoped objects are deleted one by one;
        bound resources are left to their APIBinding's deletion, and APIBindings go last, once
        everything else is gone, so their schemas serve until their objects are deleted.
        """
        shard = self.store.shard
        bound_keys: set[str] = set()
        bound_crds: set[str] = set()
        crds = shard.table(_CRDS_KEY).clusters.get(cluster)
        for crd in list(crds.ordered()) if crds else []:
            if BOUND_BY_ANNOTATION in (crd.decode()["metadata"].get("annotations") or {}):
                bound_crds.add(crd.name)
                bound_keys |= shard.registry.crd_storage_keys(cluster, crd.name)
        remaining: dict[str, int] = {}
        held: dict[str, int] = {}
        for key, table in shard.tables():
            if key in _KEPT_CONTENT or key == _BINDINGS_KEY or key in bound_keys:
                continue
            bucket = table.clusters.get(cluster)
            if not bucket or not bucket.objects:
                continue
            info = shard.info_for_storage_key(key, cluster)
            if info is None or (info.namespaced and key != _NAMESPACES_KEY):
                continue  # namespaced objects go with their namespace
            for obj in list(bucket.ordered()):
                if key == _CRDS_KEY and obj.name in bound_crds:
                    continue
                if not obj.deleting:
                    try:
                        shard.delete(info, cluster, "", obj.name, {"propagationPolicy": "Background"})
                    except errors.StatusError as exc:
                        if exc.code != 404:
                            log.warning("deleting %s %s in %s: %s", key, obj.name, cluster, exc)
                left = table.get(cluster, "", obj.name)
                if left is not None:
                    remaining[info.group_resource] = remaining.get(info.group_resource, 0) + 1
                    for finalizer in left.decode()["metadata"].get("finalizers") or []:
                        held[finalizer] = held.get(finalizer, 0) + 1
        if not remaining:
            for _, binding in self.store.all(API_BINDINGS, cluster):
                name = binding["metadata"]["name"]
                if not binding["metadata"].get("deletionTimestamp"):
                    self.store.delete(API_BINDINGS, cluster, name)
                left = self.store.stored(API_BINDINGS, cluster, name)
                if left is not None:
                    remaining["apibindings.apis.kcp.io"] = remaining.get("apibindings.apis.kcp.io", 0) + 1
        messages = []
        if remaining:
            messages.append("Some resources are remaining: " + ", ".join(f"{gr} has {n} resource instances" for gr, n in sorted(remaining.items())))
        if held:
            messages.append("Some content in the logical cluster has finalizers remaining: " + ", ".join(f"{f} in {n} resource instances" for f, n in sorted(held.items())))
        return messages


def _backend_cluster(ws: Obj) -> dict[str, str]:
    """The workspace's logical cluster on a shard-like backend, when its Workspace names one."""
    name = (ws["metadata"].get("annotations") or {}).get(BACKEND_CLUSTER_ANNOTATION)
    return {BACKEND_CLUSTER_ANNOTATION: str(name)} if name else {}
