"""Level-based reconcilers for kcp's object model, filling in status where kcp does.

Each `reconcile_*` reads the current objects and writes what they imply; running one twice, or
after a restart, converges to the same state. See kcp-reference.md sections 3, 4 and 6.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Awaitable, Callable

from vwproxy.control.objects import (
    API_BINDINGS, API_EXPORTS, ENDPOINT_SLICES, LOGICAL_CLUSTERS, NAMESPACES, SCHEMAS, SECRETS, WORKSPACE_TYPES, WORKSPACES,
    ControlStore, Obj, condition,
)
from vwproxy.kube import errors, kcp, vwpaths
from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME, PATH_ANNOTATION

log = logging.getLogger(__name__)

BACKEND_ANNOTATION = "vwproxy.dev/backend"  # on a Workspace: which backend holds its content
EMBEDDED_BACKEND = "embedded"
BOUND_BY_ANNOTATION = "vwproxy.dev/bound-by"  # on an installed CRD: the APIBinding that put it there

# Installs, replaces or removes a CRD in a workspace's backend: (cluster, crd or None to remove, name).
CRDWriter = Callable[[str, str, "Obj | None"], Awaitable[None]]
CRDReader = Callable[[str, str], Awaitable["Obj | None"]]


def export_schema_names(export: Obj) -> list[str]:
    """The APIResourceSchema names an APIExport references (v1alpha2 `resources` or v1alpha1 `latestResourceSchemas`)."""
    spec = export.get("spec") or {}
    names = [str(r.get("schema")) for r in spec.get("resources") or [] if isinstance(r, dict) and r.get("schema")]
    names += [str(n) for n in spec.get("latestResourceSchemas") or [] if isinstance(n, str)]
    return names


def crd_from_schema(schema: Obj, identity: str, binding: str) -> Obj:
    """The CRD a bound APIResourceSchema becomes in the consumer's backend."""
    spec = schema.get("spec") or {}
    names = spec.get("names") or {}
    versions = []
    for version in spec.get("versions") or []:
        entry: Obj = {
            "name": version.get("name"),
            "served": version.get("served", True),
            "storage": version.get("storage", False),
            "schema": {"openAPIV3Schema": version.get("schema") or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }
        for key in ("subresources", "additionalPrinterColumns", "deprecated", "deprecationWarning", "selectableFields"):
            if version.get(key) is not None:
                entry[key] = version[key]
        versions.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.get('plural')}.{spec.get('group')}",
            "annotations": {kcp.IDENTITY_ANNOTATION: identity, BOUND_BY_ANNOTATION: binding, "apis.kcp.io/schema": str((schema.get("metadata") or {}).get("name", ""))},
        },
        "spec": {"group": spec.get("group"), "names": names, "scope": spec.get("scope", "Namespaced"), "versions": versions},
    }


class Reconcilers:
    """What kcp's controllers do, for the kinds vwproxy models."""

    def __init__(self, store: ControlStore, external_url: str, write_crd: CRDWriter, read_crd: CRDReader, backends: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.external_url = external_url.rstrip("/")
        self.write_crd = write_crd
        self.read_crd = read_crd
        self.known_backends = backends

    # -- workspaces ------------------------------------------------------------------------------

    def reconcile_workspace(self, parent: str, name: str, last_state: Obj | None = None) -> None:
        ws = self.store.get(WORKSPACES, parent, name)
        if ws is None:
            # Deleted: its logical cluster (and with it everything in the workspace) goes too.
            cluster = ((last_state or {}).get("spec") or {}).get("cluster")
            if cluster and self.store.shard.cluster_exists(str(cluster)):
                self.store.delete(LOGICAL_CLUSTERS, str(cluster), LOGICAL_CLUSTER_OBJECT_NAME)
            return
        md = ws["metadata"]
        path = f"{self.store.path_of(parent)}:{name}"
        spec = ws.setdefault("spec", {})
        cluster = spec.get("cluster")
        if md.get("deletionTimestamp"):
            if cluster and self.store.shard.cluster_exists(cluster):
                self.store.delete(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
            return
        url = f"{self.external_url}/clusters/{path}"
        if not cluster or spec.get("URL") != url:
            spec["cluster"] = cluster or kcp.new_logical_cluster_name(secrets.token_bytes(32))
            spec["URL"] = url
            ws = self.store.update(WORKSPACES, parent, ws)
            cluster = ws["spec"]["cluster"]
        backend = str((md.get("annotations") or {}).get(BACKEND_ANNOTATION) or EMBEDDED_BACKEND)
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        initializers, terminators = self._lifecycle_of(ws)
        if lc is None:
            lc = self.store.create(LOGICAL_CLUSTERS, cluster, {
                "metadata": {"name": LOGICAL_CLUSTER_OBJECT_NAME, "annotations": {PATH_ANNOTATION: path, BACKEND_ANNOTATION: backend}},
                "spec": {
                    "owner": {"apiVersion": "tenancy.kcp.io/v1alpha1", "resource": "workspaces", "name": name, "cluster": parent, "uid": md.get("uid", "")},
                    "initializers": initializers,
                    "terminators": terminators,
                },
            })
        annotations = lc["metadata"].get("annotations") or {}
        if annotations.get(PATH_ANNOTATION) != path or annotations.get(BACKEND_ANNOTATION) != backend:
            lc["metadata"]["annotations"] = {**annotations, PATH_ANNOTATION: path, BACKEND_ANNOTATION: backend}
            lc = self.store.update(LOGICAL_CLUSTERS, cluster, lc)
        self.reconcile_logical_cluster(cluster)
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME) or lc
        phase = (lc.get("status") or {}).get("phase", "Scheduling")
        previous = (ws.get("status") or {}).get("conditions") or []
        conditions = [condition("WorkspaceScheduled", True, previous=previous)]
        if backend != EMBEDDED_BACKEND and not self._backend_known(backend):
            conditions.append(condition("BackendValid", False, "BackendNotFound", f'backend "{backend}" is not declared in backends.yaml', previous))
            phase = "Unavailable"
        conditions.append(condition("WorkspaceInitialized", phase not in ("Scheduling", "Initializing"), "" if phase != "Initializing" else "InitializerExists", previous=previous))
        self.store.set_status(WORKSPACES, parent, ws, {"phase": phase, "conditions": conditions})

    def _backend_known(self, backend: str) -> bool:
        return backend in self.known_backends

    def _lifecycle_of(self, ws: Obj) -> tuple[list[str], list[str]]:
        """Initializers and terminators from the Workspace's type (none when it names no type)."""
        ref = (ws.get("spec") or {}).get("type")
        if not isinstance(ref, dict) or not ref.get("name"):
            return [], []
        type_cluster = self.store.resolve_path(str(ref.get("path") or kcp.ROOT_CLUSTER))
        wst = self.store.get(WORKSPACE_TYPES, type_cluster, str(ref["name"])) if type_cluster else None
        if wst is None:
            return [], []
        owner = f"{type_cluster}:{ref['name']}"
        spec = wst.get("spec") or {}
        return ([owner] if spec.get("initializer") else []), ([owner] if spec.get("terminator") else [])

    def reconcile_logical_cluster(self, cluster: str) -> None:
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        if lc is None:
            return
        spec = lc.get("spec") or {}
        status = dict(lc.get("status") or {})
        status.setdefault("initializers", list(spec.get("initializers") or []))
        if lc["metadata"].get("deletionTimestamp"):
            status.setdefault("terminators", list(spec.get("terminators") or []))
            status["phase"] = "Terminating" if status.get("terminators") else "Deleting"
        else:
            status["phase"] = "Initializing" if status.get("initializers") else "Ready"
        path = (lc["metadata"].get("annotations") or {}).get(PATH_ANNOTATION) or cluster
        status["URL"] = f"{self.external_url}/clusters/{path}"
        labels = {k: v for k, v in (lc["metadata"].get("labels") or {}).items()
                  if not k.startswith((kcp.INITIALIZER_LABEL_PREFIX, kcp.TERMINATOR_LABEL_PREFIX)) and k != kcp.PHASE_LABEL}
        labels[kcp.PHASE_LABEL] = status["phase"]
        for owner in status.get("initializers") or []:
            key, value = kcp.lifecycle_label(kcp.INITIALIZER_LABEL_PREFIX, owner)
            labels[key] = value
        for owner in status.get("terminators") or []:
            key, value = kcp.lifecycle_label(kcp.TERMINATOR_LABEL_PREFIX, owner)
            labels[key] = value
        # Status first: whoever the new labels bring the object to (a lifecycle VW) sees its phase and entries.
        lc = self.store.set_status(LOGICAL_CLUSTERS, cluster, lc, status)
        if labels != (lc["metadata"].get("labels") or {}):
            lc["metadata"]["labels"] = labels
            self.store.update(LOGICAL_CLUSTERS, cluster, lc)

    def reconcile_workspace_type(self, cluster: str, name: str) -> None:
        wst = self.store.get(WORKSPACE_TYPES, cluster, name)
        if wst is None or wst["metadata"].get("deletionTimestamp"):
            return
        status = dict(wst.get("status") or {})
        status["virtualWorkspaces"] = [
            {"url": vwpaths.lifecycle_url(self.external_url, kind, cluster, name), "type": vwpaths.LIFECYCLE_TYPE[kind]}
            for kind in vwpaths.LIFECYCLE_KINDS
        ]
        status["conditions"] = [condition("VirtualWorkspaceURLsReady", True, previous=status.get("conditions"))]
        self.store.set_status(WORKSPACE_TYPES, cluster, wst, status)

    # -- exports ---------------------------------------------------------------------------------

    def _identity_secret(self, cluster: str, export: Obj) -> tuple[str, str]:
        ref = ((export.get("spec") or {}).get("identity") or {}).get("secretRef") or {}
        return str(ref.get("namespace") or kcp.IDENTITY_SECRET_NAMESPACE), str(ref.get("name") or export["metadata"]["name"])

    def _identity_key(self, cluster: str, export: Obj) -> tuple[str | None, str]:
        """The identity key text, creating the default secret when missing; (None, why) if unusable."""
        namespace, name = self._identity_secret(cluster, export)
        secret = self.store.get(SECRETS, cluster, name, namespace)
        explicit = bool(((export.get("spec") or {}).get("identity") or {}).get("secretRef"))
        if secret is None:
            if explicit:
                return None, f'identity secret {namespace}/{name} not found'
            if self.store.get(NAMESPACES, cluster, namespace) is None:
                self.store.create(NAMESPACES, cluster, {"metadata": {"name": namespace}})
            key = kcp.new_identity_key(secrets.token_bytes(32))
            secret = self.store.create(SECRETS, cluster, {
                "metadata": {"name": name, "namespace": namespace},
                "data": {kcp.IDENTITY_SECRET_KEY: base64.b64encode(key.encode()).decode()},
            }, namespace)
        raw = (secret.get("data") or {}).get(kcp.IDENTITY_SECRET_KEY)
        try:
            return base64.b64decode(str(raw), validate=True).decode(), ""
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None, f'identity secret {namespace}/{name} has no valid "{kcp.IDENTITY_SECRET_KEY}"'

    def reconcile_export(self, cluster: str, name: str) -> None:
        export = self.store.get(API_EXPORTS, cluster, name)
        if export is None or export["metadata"].get("deletionTimestamp"):
            return
        status = dict(export.get("status") or {})
        previous = status.get("conditions") or []
        key, why = self._identity_key(cluster, export)
        if key is None:
            status["conditions"] = [condition("IdentityValid", False, "IdentityNotFound", why, previous)]
        else:
            computed = kcp.identity_hash(key)
            if not status.get("identityHash"):
                status["identityHash"] = computed
            if status["identityHash"] == computed:
                status["conditions"] = [condition("IdentityValid", True, previous=previous)]
            else:
                status["conditions"] = [condition("IdentityValid", False, "IdentityVerificationFailed", "the identity secret does not match status.identityHash", previous)]
        status["conditions"].append(condition("VirtualWorkspaceURLsReady", True, previous=previous))
        self.store.set_status(API_EXPORTS, cluster, export, status)
        annotations = export["metadata"].get("annotations") or {}
        if kcp.SKIP_ENDPOINT_SLICE_ANNOTATION not in annotations and self.store.get(ENDPOINT_SLICES, cluster, name) is None:
            self.store.create(ENDPOINT_SLICES, cluster, {
                "metadata": {"name": name, "ownerReferences": [{"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "name": name, "uid": export["metadata"]["uid"]}]},
                "spec": {"export": {"path": self.store.path_of(cluster), "name": name}},
            })
        for slice_cluster, slice_obj in self.store.all(ENDPOINT_SLICES):
            self.reconcile_endpoint_slice(slice_cluster, slice_obj["metadata"]["name"])

    def export_is_bound(self, export_cluster: str, export_name: str) -> bool:
        """Whether any APIBinding on this shard binds the export (endpoint URLs are published then)."""
        for _, binding in self.store.all(API_BINDINGS):
            status = binding.get("status") or {}
            ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
            if ref.get("name") == export_name and status.get("apiExportClusterName") == export_cluster:
                return True
        return False

    def reconcile_endpoint_slice(self, cluster: str, name: str) -> None:
        slice_obj = self.store.get(ENDPOINT_SLICES, cluster, name)
        if slice_obj is None or slice_obj["metadata"].get("deletionTimestamp"):
            return
        ref = (slice_obj.get("spec") or {}).get("export") or {}
        export_cluster = self.store.resolve_path(str(ref.get("path") or self.store.path_of(cluster)))
        export_name = str(ref.get("name") or "")
        export = self.store.get(API_EXPORTS, export_cluster, export_name) if export_cluster else None
        status = dict(slice_obj.get("status") or {})
        previous = status.get("conditions") or []
        if export is None:
            status["conditions"] = [condition("APIExportValid", False, "APIExportNotFound", f'APIExport {ref.get("path", "")}:{export_name} not found', previous)]
        else:
            status["conditions"] = [condition("APIExportValid", True, previous=previous), condition("PartitionValid", True, previous=previous)]
            assert export_cluster is not None
            if self.export_is_bound(export_cluster, export_name):
                status["endpoints"] = [{"url": vwpaths.apiexport_url(self.external_url, export_cluster, export_name)}]
            else:
                status.pop("endpoints", None)
        self.store.set_status(ENDPOINT_SLICES, cluster, slice_obj, status)

    # -- bindings --------------------------------------------------------------------------------

    async def reconcile_binding(self, cluster: str, name: str, last_state: Obj | None = None) -> None:
        binding = self.store.get(API_BINDINGS, cluster, name)
        if binding is None:
            if last_state is not None:
                await self._unbind(cluster, name, last_state)
            return
        if binding["metadata"].get("deletionTimestamp"):
            return
        status = dict(binding.get("status") or {})
        previous = status.get("conditions") or []
        ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        export_path = str(ref.get("path") or self.store.path_of(cluster))
        export_name = str(ref.get("name") or "")
        export_cluster = self.store.resolve_path(export_path)
        export = self.store.get(API_EXPORTS, export_cluster, export_name) if export_cluster else None
        label = kcp.export_label_value(export_cluster or export_path, export_name)
        labels = binding["metadata"].get("labels") or {}
        if labels.get(kcp.EXPORT_LABEL) != label:
            binding["metadata"]["labels"] = {**labels, kcp.EXPORT_LABEL: label}
            binding = self.store.update(API_BINDINGS, cluster, binding)

        def fail(kind: str, reason: str, message: str) -> None:
            status["conditions"] = [condition(kind, False, reason, message, previous), condition("Ready", False, reason, message, previous)]
            self.store.set_status(API_BINDINGS, cluster, binding, status)

        if export is None or export_cluster is None:
            fail("APIExportValid", "APIExportNotFound", f"APIExport {export_path}:{export_name} not found")
            return
        identity = str((export.get("status") or {}).get("identityHash") or "")
        if not identity:
            fail("APIExportValid", "APIExportIdentityMissing", f"APIExport {export_path}:{export_name} has no identity yet")
            return
        bound: list[Obj] = []
        crds: list[Obj] = []
        for schema_name in export_schema_names(export):
            schema = self.store.get(SCHEMAS, export_cluster, schema_name)
            if schema is None:
                fail("APIExportValid", "APIResourceSchemaNotFound", f"APIResourceSchema {export_path}:{schema_name} not found")
                return
            spec = schema.get("spec") or {}
            group, resource = str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or "")
            conflict = self._conflicting_binding(cluster, name, group, resource, identity)
            if conflict:
                fail("BindingUpToDate", "NamingConflicts", f"{resource}.{group} is already bound by APIBinding {conflict} with a different identity")
                return
            crd = crd_from_schema(schema, identity, name)
            existing = await self.read_crd(cluster, crd["metadata"]["name"])
            if existing is not None and (existing["metadata"].get("annotations") or {}).get(BOUND_BY_ANNOTATION) not in (name, None) and \
                    (existing["metadata"].get("annotations") or {}).get(kcp.IDENTITY_ANNOTATION) != identity:
                fail("BindingUpToDate", "NamingConflicts", f"{resource}.{group} is already served in this workspace by another binding")
                return
            if existing is not None and BOUND_BY_ANNOTATION not in (existing["metadata"].get("annotations") or {}):
                fail("BindingUpToDate", "NamingConflicts", f"a CustomResourceDefinition {crd['metadata']['name']} already exists in this workspace")
                return
            if existing is not None and (existing["metadata"].get("annotations") or {}).get(kcp.IDENTITY_ANNOTATION) == identity:
                # Another binding of the same identity installed it: share it, do not take it over
                # (two bindings rewriting the owner annotation would chase each other forever).
                crd["metadata"]["annotations"][BOUND_BY_ANNOTATION] = (existing["metadata"].get("annotations") or {}).get(BOUND_BY_ANNOTATION, name)
            crds.append(crd)
            storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
            bound.append({
                "group": group, "resource": resource,
                "schema": {"name": schema_name, "UID": str(schema["metadata"].get("uid", "")), "identityHash": identity},
                "storageVersions": storage,
            })
        for crd in crds:
            try:
                await self.write_crd(cluster, crd["metadata"]["name"], crd)
            except errors.StatusError as exc:
                fail("BindingUpToDate", "InstallFailed", f"installing {crd['metadata']['name']} failed: {exc.message}")
                return
        status.update({
            "apiExportClusterName": export_cluster,
            "boundResources": bound,
            "exportPermissionClaims": list((export.get("spec") or {}).get("permissionClaims") or []),
            "phase": "Bound",
        })
        status["conditions"] = [
            condition("APIExportValid", True, previous=previous),
            condition("BindingUpToDate", True, previous=previous),
            condition("InitialBindingCompleted", True, previous=previous),
            condition("PermissionClaimsValid", True, previous=previous),
            condition("Ready", True, previous=previous),
        ]
        self.store.set_status(API_BINDINGS, cluster, binding, status)

    def _conflicting_binding(self, cluster: str, name: str, group: str, resource: str, identity: str) -> str:
        for _, other in self.store.all(API_BINDINGS, cluster):
            if other["metadata"]["name"] == name:
                continue
            for res in (other.get("status") or {}).get("boundResources") or []:
                if res.get("group") == group and res.get("resource") == resource and (res.get("schema") or {}).get("identityHash") != identity:
                    return str(other["metadata"]["name"])
        return ""

    async def _unbind(self, cluster: str, name: str, last_state: Obj) -> None:
        """A deleted binding takes the CRDs it installed (and so their objects) with it."""
        for res in (last_state.get("status") or {}).get("boundResources") or []:
            crd_name = f"{res.get('resource')}.{res.get('group')}"
            existing = await self.read_crd(cluster, crd_name)
            if existing is None or (existing["metadata"].get("annotations") or {}).get(BOUND_BY_ANNOTATION) != name:
                continue
            heir = self._other_binding_of(cluster, name, res)
            if heir:
                # Another binding still binds it with the same identity: hand the CRD over.
                annotations = {**(existing["metadata"].get("annotations") or {}), BOUND_BY_ANNOTATION: heir}
                await self.write_crd(cluster, crd_name, {**existing, "metadata": {**existing["metadata"], "annotations": annotations}})
            else:
                await self.write_crd(cluster, crd_name, None)

    def _other_binding_of(self, cluster: str, name: str, bound: Obj) -> str:
        identity = (bound.get("schema") or {}).get("identityHash")
        for _, other in self.store.all(API_BINDINGS, cluster):
            if other["metadata"]["name"] == name:
                continue
            for res in (other.get("status") or {}).get("boundResources") or []:
                if res.get("group") == bound.get("group") and res.get("resource") == bound.get("resource") and (res.get("schema") or {}).get("identityHash") == identity:
                    return str(other["metadata"]["name"])
        return ""


def bindings_of_export(store: ControlStore, export_cluster: str, export_name: str) -> list[tuple[str, Obj]]:
    """(consumer cluster, binding) for every Ready binding to the export (by its status)."""
    out = []
    for cluster, binding in store.all(API_BINDINGS):
        status = binding.get("status") or {}
        ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        if status.get("apiExportClusterName") == export_cluster and ref.get("name") == export_name:
            out.append((cluster, binding))
    return out


__all__ = ["Reconcilers", "bindings_of_export", "crd_from_schema", "BACKEND_ANNOTATION", "EMBEDDED_BACKEND"]
