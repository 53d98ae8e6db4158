"""Reading and writing kcp's control-plane objects in the embedded shard, as the reconcilers do.

The reconcilers are the system: they write directly to the shard (no HTTP), as kcp's own
controllers write to their shard's storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vwproxy.kube import errors, managedfields
from vwproxy.kube.meta import now_rfc3339
from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME, PATH_ANNOTATION, ROOT_CLUSTER, is_logical_cluster_name
from vwproxy.kube.resources import ResourceInfo
from vwproxy.core.objects import StoredObject
from vwproxy.store.shard import Shard

Obj = dict[str, Any]

SYSTEM_MANAGER = "vwproxy"


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    resource: str


WORKSPACES = Kind("tenancy.kcp.io", "v1alpha1", "workspaces")
WORKSPACE_TYPES = Kind("tenancy.kcp.io", "v1alpha1", "workspacetypes")
LOGICAL_CLUSTERS = Kind("core.kcp.io", "v1alpha1", "logicalclusters")
SHARDS = Kind("core.kcp.io", "v1alpha1", "shards")
API_EXPORTS = Kind("apis.kcp.io", "v1alpha2", "apiexports")
API_EXPORTS_V1 = Kind("apis.kcp.io", "v1alpha1", "apiexports")
API_BINDINGS = Kind("apis.kcp.io", "v1alpha2", "apibindings")
API_BINDINGS_V1 = Kind("apis.kcp.io", "v1alpha1", "apibindings")
ENDPOINT_SLICES = Kind("apis.kcp.io", "v1alpha1", "apiexportendpointslices")
SCHEMAS = Kind("apis.kcp.io", "v1alpha1", "apiresourceschemas")
SECRETS = Kind("", "v1", "secrets")
NAMESPACES = Kind("", "v1", "namespaces")
CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions")
CLUSTER_ROLE_BINDINGS = Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings")


class ControlStore:
    """Typed access to the shard for reconcilers."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def info(self, kind: Kind, cluster: str | None = ROOT_CLUSTER) -> ResourceInfo:
        return self.shard.resolve(cluster, kind.group, kind.version, kind.resource)

    def get(self, kind: Kind, cluster: str, name: str, namespace: str = "") -> Obj | None:
        found = self.shard.table(self.info(kind).storage_key).get(cluster, namespace, name)
        return found.decode() if found is not None else None

    def stored(self, kind: Kind, cluster: str, name: str, namespace: str = "") -> StoredObject | None:
        return self.shard.table(self.info(kind).storage_key).get(cluster, namespace, name)

    def all(self, kind: Kind, cluster: str | None = None) -> list[tuple[str, Obj]]:
        """(logical cluster, object) of every object of `kind` (in `cluster`, or everywhere)."""
        table = self.shard.table(self.info(kind).storage_key)
        return [(o.cluster, o.decode()) for o in table.ordered(cluster)]

    def each(self, kind: Kind, cluster: str | None = None) -> Iterator[tuple[str, Obj]]:
        """`all`, decoding one object at a time: at thousands of objects the decoded list would
        be many times their JSON at once. Nothing may write to the shard while it is iterated."""
        for o in self.shard.table(self.info(kind).storage_key).ordered(cluster):
            yield o.cluster, o.decode()

    def each_stored(self, kind: Kind, cluster: str | None = None) -> Iterator[StoredObject]:
        """Every object of `kind` as stored (not decoded), in `cluster` or everywhere."""
        return self.shard.table(self.info(kind).storage_key).ordered(cluster)

    def create(self, kind: Kind, cluster: str, obj: Obj, namespace: str = "") -> Obj:
        info = self.info(kind, cluster)
        obj = managedfields.track(info, None, {"apiVersion": info.api_version, "kind": info.kind, **obj}, SYSTEM_MANAGER)
        return self.shard.create(info, cluster, namespace, obj).decode()

    def update(self, kind: Kind, cluster: str, obj: Obj, subresource: str = "") -> Obj:
        """Write `obj` (as read, changed) back; a stale read is a 409 the caller retries later."""
        info = self.info(kind, cluster)
        md = obj["metadata"]
        old = self.get(kind, cluster, md["name"], md.get("namespace", ""))
        obj = managedfields.track(info, old, obj, SYSTEM_MANAGER, subresource)
        return self.shard.update(info, cluster, md.get("namespace", ""), md["name"], obj, subresource).decode()

    def delete(self, kind: Kind, cluster: str, name: str, namespace: str = "") -> None:
        try:
            self.shard.delete(self.info(kind, cluster), cluster, namespace, name, {})
        except errors.StatusError as exc:
            if exc.code != 404:
                raise

    def set_status(self, kind: Kind, cluster: str, obj: Obj, status: Obj) -> Obj:
        """Write `status` if it differs from what `obj` has."""
        if obj.get("status") == status:
            return obj
        return self.update(kind, cluster, {**obj, "status": status}, subresource="status")

    def set_finalizer(self, kind: Kind, cluster: str, obj: Obj, finalizer: str, present: bool) -> Obj | None:
        """Add or remove one finalizer; returns the object as stored, None if that let it go."""
        md = obj["metadata"]
        have = list(md.get("finalizers") or [])
        if (finalizer in have) == present:
            return obj
        md["finalizers"] = have + [finalizer] if present else [f for f in have if f != finalizer]
        if not md["finalizers"]:
            del md["finalizers"]
        self.update(kind, cluster, obj)
        return self.get(kind, cluster, md["name"], md.get("namespace", ""))

    # -- workspace paths ---------------------------------------------------------------------

    def path_of(self, cluster: str) -> str:
        """The workspace path of a logical cluster (its `kcp.io/path`), or its name."""
        lc = self.stored(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        if lc is not None:
            path = lc.fields.get(PATH_ANNOTATION, "")
            if path:
                return path
        return cluster

    def resolve_path(self, path_or_name: str) -> str | None:
        """A workspace path (`root:org:ws`) or logical cluster name → the logical cluster name."""
        if is_logical_cluster_name(path_or_name):
            return path_or_name if self.shard.cluster_exists(path_or_name) else None
        return self.shard.cluster_for_path(path_or_name)


# How soon a reconciler that waits on something sending no events (objects with finalizers on a
# kube backend) looks again: short enough for a prompt deletion, long enough not to poll hard.
RECHECK_SECONDS = 1.0


class Waiting(Exception):
    """A reconciler is not done and nothing it watches will say when to look again (a backend's
    objects, a finalizer someone else holds): the plane requeues the key after `retry_after`."""

    def __init__(self, message: str, retry_after: float = RECHECK_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def condition(kind: str, ok: bool, reason: str = "", message: str = "", previous: list[Obj] | None = None, severity: str = "Error") -> Obj:
    """A Kubernetes condition; its lastTransitionTime stays while the status does not change."""
    status = "True" if ok else "False"
    for old in previous or []:
        if old.get("type") == kind and old.get("status") == status and old.get("reason", "") == reason and old.get("message", "") == message:
            return old
    out: Obj = {"type": kind, "status": status, "lastTransitionTime": now_rfc3339()}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    if not ok:
        out["severity"] = severity
    return out
