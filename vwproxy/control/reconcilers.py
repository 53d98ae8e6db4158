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

from vwproxy.control import claims, labeller, shards
from vwproxy.control.labeller import ClaimLabeller
from vwproxy.control.lifecycle import BACKEND_ANNOTATION, BOUND_BY_ANNOTATION, EMBEDDED_BACKEND, ReachabilityOf, WorkspaceLifecycle
from vwproxy.control.objects import (
    API_BINDINGS, API_EXPORTS, ENDPOINT_SLICES, NAMESPACES, SCHEMAS, SECRETS, WORKSPACE_TYPES,
    ControlStore, Obj, Waiting, condition,
)
from vwproxy.kube import errors, kcp, vwpaths

log = logging.getLogger(__name__)


# Installs, replaces or removes a CRD in a workspace's backend: (cluster, crd or None to remove, name).
CRDWriter = Callable[[str, str, "Obj | None"], Awaitable[None]]
CRDReader = Callable[[str, str], Awaitable["Obj | None"]]
# Deletes every object of a bound resource in a workspace's backend: (cluster, CRD) → what is left,
# as (objects remaining, finalizers holding them).
BoundObjectsDeleter = Callable[[str, "Obj"], Awaitable["tuple[int, dict[str, int]]"]]
# Brings the claim labels of every object of a storage key in a workspace up to date: (cluster,
# storage key, binding being reconciled) → failures.
Relabeller = Callable[[str, str, str], Awaitable["list[str]"]]


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

    def __init__(
        self, store: ControlStore, external_url: str, write_crd: CRDWriter, read_crd: CRDReader, backends: frozenset[str] = frozenset(),
        delete_bound: BoundObjectsDeleter | None = None, claim_labeller: ClaimLabeller | None = None,
        relabel: Relabeller | None = None, reachability: ReachabilityOf = lambda backend: None, deterministic: bool = False,
    ) -> None:
        self.store = store
        self.external_url = external_url.rstrip("/")
        self.write_crd = write_crd
        self.read_crd = read_crd
        self.delete_bound = delete_bound
        self.known_backends = backends
        self.lifecycle = WorkspaceLifecycle(store, external_url, backends, reachability, deterministic)
        self.labeller = claim_labeller or ClaimLabeller(store.shard, store)
        self.relabel: Relabeller = relabel or self.labeller.relabel_all

    # -- workspaces ------------------------------------------------------------------------------

    def reconcile_workspace(self, parent: str, name: str, last_state: Obj | None = None) -> None:
        self.lifecycle.reconcile_workspace(parent, name, last_state)

    def reconcile_logical_cluster(self, cluster: str) -> None:
        self.lifecycle.reconcile_logical_cluster(cluster)

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
            hosts = shards.hosting(self.store, shards.registered(self.store, self.external_url), export_cluster, export_name)
            if hosts:
                status["endpoints"] = [{"url": vwpaths.apiexport_url(s.virtual_workspace_url, export_cluster, export_name)} for s in hosts]
            else:
                status.pop("endpoints", None)
        self.store.set_status(ENDPOINT_SLICES, cluster, slice_obj, status)

    # -- bindings --------------------------------------------------------------------------------

    async def reconcile_binding(self, cluster: str, name: str, last_state: Obj | None = None) -> None:
        binding = self.store.get(API_BINDINGS, cluster, name)
        if binding is None:
            for storage_key in sorted(self.labeller.forget(cluster, name)):
                await self.relabel(cluster, storage_key, name)  # its claims' labels go with it
            if last_state is not None:
                await self._unbind(cluster, name, last_state)
            return
        if binding["metadata"].get("deletionTimestamp"):
            await self._finalize_binding(cluster, name, binding)
            return
        status = dict(binding.get("status") or {})
        previous = status.get("conditions") or []
        ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        export_path = str(ref.get("path") or self.store.path_of(cluster))
        export_name = str(ref.get("name") or "")
        export_cluster = self.store.resolve_path(export_path)
        export = self.store.get(API_EXPORTS, export_cluster, export_name) if export_cluster else None
        claim_conditions = [c for c in previous if c.get("type") in (claims.PERMISSION_CLAIMS_APPLIED, claims.PERMISSION_CLAIMS_VALID)]
        accepted: list[claims.AcceptedClaim] = []
        if export is not None and export_cluster is not None:
            accepted, invalid = claims.accepted_of_binding(cluster, binding, export_cluster, export)
            crd_identities = {labeller.claim_crd_name(c): await self._crd_identity(cluster, labeller.claim_crd_name(c)) for c in accepted if c.identity_hash}
            relabel, failed = self.labeller.index(cluster, name, accepted, crd_identities)
        else:
            relabel, failed = set(self.labeller.forget(cluster, name)), {}
        label = kcp.export_label_value(export_cluster or export_path, export_name)
        labels = binding["metadata"].get("labels") or {}
        wanted_labels = {**labels, kcp.EXPORT_LABEL: label}
        wanted_labels = self.labeller.own_labels(cluster, {**binding, "metadata": {**binding["metadata"], "labels": wanted_labels}}) or wanted_labels
        if labels != wanted_labels:
            binding["metadata"]["labels"] = wanted_labels
            binding = self.store.update(API_BINDINGS, cluster, binding)
        for storage_key in sorted(relabel):
            failures = await self.relabel(cluster, storage_key, name)
            for claim in self.labeller.claims_at(cluster, name, storage_key) if failures else ():
                failed.setdefault(claim.key, failures[0])
        if export is not None and export_cluster is not None:
            status["exportPermissionClaims"] = list((export.get("spec") or {}).get("permissionClaims") or [])
            applied, applied_condition = claims.applied_status(binding, accepted, failed, previous)
            if applied:
                status["appliedPermissionClaims"] = applied
            else:
                status.pop("appliedPermissionClaims", None)
            claim_conditions = [applied_condition, claims.valid_condition(binding, export, accepted, invalid, previous)]
            if not status["exportPermissionClaims"]:
                del status["exportPermissionClaims"]

        def fail(kind: str, reason: str, message: str) -> None:
            status["conditions"] = [condition(kind, False, reason, message, previous), *claim_conditions, condition("Ready", False, reason, message, previous)]
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
        status.update({"apiExportClusterName": export_cluster, "boundResources": bound, "phase": "Bound"})
        status["conditions"] = [
            condition("APIExportValid", True, previous=previous),
            condition("BindingUpToDate", True, previous=previous),
            condition("InitialBindingCompleted", True, previous=previous),
            *claim_conditions,
            condition("Ready", True, previous=previous),  # claims never make a binding un-Ready
        ]
        self.store.set_status(API_BINDINGS, cluster, binding, status)

    async def _crd_identity(self, cluster: str, crd_name: str) -> str | None:
        crd = await self.read_crd(cluster, crd_name)
        if crd is None or crd["metadata"].get("deletionTimestamp"):
            return None
        return str((crd["metadata"].get("annotations") or {}).get(kcp.IDENTITY_ANNOTATION) or "")

    def _conflicting_binding(self, cluster: str, name: str, group: str, resource: str, identity: str) -> str:
        for _, other in self.store.all(API_BINDINGS, cluster):
            if other["metadata"]["name"] == name:
                continue
            for res in (other.get("status") or {}).get("boundResources") or []:
                if res.get("group") == group and res.get("resource") == resource and (res.get("schema") or {}).get("identityHash") != identity:
                    return str(other["metadata"]["name"])
        return ""

    async def _finalize_binding(self, cluster: str, name: str, binding: Obj) -> None:
        """A deleting binding: the objects it bound go first (their finalizers honoured), then
        the CRDs it installed, then (its finalizer dropped) the binding itself."""
        if kcp.APIBINDING_FINALIZER not in (binding["metadata"].get("finalizers") or []):
            return  # deleted by another hand; its CRDs go when it is gone (`_unbind`)
        status = dict(binding.get("status") or {})
        previous = status.get("conditions") or []
        remaining = 0
        held: dict[str, int] = {}
        for res in status.get("boundResources") or []:
            crd_name = f"{res.get('resource')}.{res.get('group')}"
            existing = await self.read_crd(cluster, crd_name)
            if existing is None or (existing["metadata"].get("annotations") or {}).get(BOUND_BY_ANNOTATION) != name:
                continue
            if self._other_binding_of(cluster, name, res) or self.delete_bound is None:
                continue  # another binding keeps serving it, objects and all
            left, finalizers = await self.delete_bound(cluster, existing)
            remaining += left
            for finalizer, count in finalizers.items():
                held[finalizer] = held.get(finalizer, 0) + count
        others = [c for c in previous if c.get("type") != "BindingResourceDeleteSuccess"]
        if remaining:
            if held:
                reason = "SomeFinalizersRemain"
                message = "Some content in the workspace has finalizers remaining: " + ", ".join(f"{f} in {n} resource instances" for f, n in sorted(held.items()))
            else:
                reason, message = "SomeResourcesRemain", f"Some resources are remaining: {remaining} resource instances"
            status["conditions"] = others + [condition("BindingResourceDeleteSuccess", False, reason, message, previous)]
            self.store.set_status(API_BINDINGS, cluster, binding, status)
            raise Waiting(message)
        status["conditions"] = others + [condition("BindingResourceDeleteSuccess", True, previous=previous)]
        binding = self.store.set_status(API_BINDINGS, cluster, binding, status)
        await self._unbind(cluster, name, binding)
        self.store.set_finalizer(API_BINDINGS, cluster, binding, kcp.APIBINDING_FINALIZER, False)

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
    for cluster, binding in store.each(API_BINDINGS):
        status = binding.get("status") or {}
        ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        if status.get("apiExportClusterName") == export_cluster and ref.get("name") == export_name:
            out.append((cluster, binding))
    return out


__all__ = ["BACKEND_ANNOTATION", "EMBEDDED_BACKEND", "Reconcilers", "bindings_of_export", "crd_from_schema"]
