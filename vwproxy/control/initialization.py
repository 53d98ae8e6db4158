"""The built-in `system:apibindings` initializer: a WorkspaceType's defaultAPIBindings.

For each `{path, export}` of the workspace's type and the types it extends, an APIBinding named
`<export>-<suffix>` is created in the new workspace, every permission claim of the export
Accepted with the claim's defaultSelector (else matchAll). The initializer is done once each is
bound. kcp: `pkg/reconciler/tenancy/initialization`; kcp-reference.md sections 0 and 6.3.
"""

from __future__ import annotations

from dataclasses import dataclass

from vwproxy.control import claims
from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, ControlStore, Obj
from vwproxy.control.workspacetypes import WorkspaceTypeError, find_type, with_extended
from vwproxy.kube import kcp


@dataclass(frozen=True)
class Progress:
    done: bool
    reason: str = ""
    message: str = ""
    severity: str = "Info"
    retry: bool = False  # nothing will say when to look again (an export may still appear)


def _is_true(obj: Obj, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def default_claims(export: Obj) -> list[Obj]:
    """The export's permission claims as a default binding accepts them (kcp copies each claim
    whole, its defaultSelector included, and selects with that, else matchAll)."""
    out = []
    for claim in (export.get("spec") or {}).get("permissionClaims") or []:
        if not isinstance(claim, dict):
            continue
        selector = claim.get("defaultSelector") or {"matchAll": True}
        out.append({**claim, "selector": selector, "state": "Accepted"})
    return out


def bind_defaults(store: ControlStore, cluster: str, lc: Obj) -> Progress:
    """Create the missing default bindings; done when every one is bound."""
    type_ref = str((lc["metadata"].get("annotations") or {}).get(kcp.WORKSPACE_TYPE_ANNOTATION) or "")
    type_path, _, type_name = type_ref.rpartition(":")
    try:
        types = with_extended(store, find_type(store, {"name": type_name, "path": type_path}, type_path or kcp.ROOT_CLUSTER))
    except WorkspaceTypeError as exc:
        return Progress(False, "WorkspaceTypeInvalid", f"error resolving the workspace type {type_ref}: {exc}", "Error", retry=True)
    existing: dict[tuple[str, str], Obj] = {}
    for _, binding in store.all(API_BINDINGS, cluster):
        ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        existing[(str(ref.get("path") or ""), str(ref.get("name") or ""))] = binding
    required: list[tuple[str, str]] = []
    missing = False
    for wst in types:
        for entry in wst.spec.get("defaultAPIBindings") or []:
            if not isinstance(entry, dict) or not entry.get("export"):
                continue
            path, export_name = str(entry.get("path") or wst.cluster), str(entry["export"])
            export_cluster = store.resolve_path(path)
            export = store.get(API_EXPORTS, export_cluster, export_name) if export_cluster else None
            if export is None:
                missing = True
                continue
            required.append((path, export_name))
            if (path, export_name) in existing:
                continue
            name = kcp.default_binding_name(cluster, path, export_name)
            if store.get(API_BINDINGS, cluster, name) is None:
                spec: Obj = {"reference": {"export": {"path": path, "name": export_name}}}
                defaults = default_claims(export)
                if defaults:
                    spec["permissionClaims"] = defaults
                existing[(path, export_name)] = store.create(API_BINDINGS, cluster, {"metadata": {"name": name}, "spec": spec})
    if missing:
        return Progress(False, "APIBindingErrors", "encountered errors: unable to complete initialization: unable to find at least 1 APIExport", "Error", retry=True)
    incomplete = []
    for path, export_name in required:
        found = existing.get((path, export_name))
        if found is None:
            incomplete.append(f"for APIExport {path}|{export_name}")
        elif not _is_true(found, "InitialBindingCompleted"):
            incomplete.append(str(found["metadata"]["name"]))
        elif any(c.get("state") == kcp.CLAIM_ACCEPTED for c in (found.get("spec") or {}).get("permissionClaims") or []) and \
                not _is_true(found, claims.PERMISSION_CLAIMS_APPLIED):
            # kcp waits until the claim labeller says the accepted claims are applied.
            incomplete.append(f"{found['metadata']['name']} waiting for permission claims to be applied")
    if incomplete:
        return Progress(False, "WaitingOnAPIBindings", "APIBinding(s) not yet fully bound: " + ", ".join(sorted(set(incomplete))))
    return Progress(True)
