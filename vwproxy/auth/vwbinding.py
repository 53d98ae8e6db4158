"""The APIExport virtual workspace's binding authorizer (kcp-reference §7.1;
kcp `pkg/virtual/apiexport/authorizer/binding.go`): a per-cluster request through the VW needs
an APIBinding to the export in the target cluster, and then a bound resource, or an accepted
permission claim whose verbs (binding's ∩ export's) include the request's verb.

Pure over the objects: the caller hands in the target cluster's APIBindings and the export's
claims as dicts, as the control plane stores them (apis.kcp.io/v1alpha2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vwproxy.auth.authorizers import (
    Authorizer,
    ExportPolicy,
    RBACCheck,
    all_of,
    always_allow_groups,
    always_allow_paths,
    apiexport_content,
    first_opinion,
    maximal_permission_policy,
)
from vwproxy.auth.decision import Attributes, Decision, allow, deny
from vwproxy.auth.identity import User

WILDCARD_CLUSTER = "*"
READ_VERBS = frozenset({"get", "list", "watch"})


def _group_resource(group: str, resource: str) -> tuple[str, str]:
    # events.k8s.io events are the core events under another name (§7.1 step 3).
    return ("", "events") if (group, resource) == ("events.k8s.io", "events") else (group, resource)


def find_binding(bindings: Sequence[Mapping[str, Any]], export_cluster: str, export_name: str) -> Mapping[str, Any] | None:
    """The target cluster's APIBinding to this export: by status.apiExportClusterName, or while
    that is still empty, by spec.reference.export.path."""
    for binding in bindings:
        export = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        if export.get("name") != export_name:
            continue
        bound_cluster = (binding.get("status") or {}).get("apiExportClusterName") or ""
        if bound_cluster == export_cluster or (not bound_cluster and export.get("path") == export_cluster):
            return binding
    return None


def claim_verbs(binding_verbs: Sequence[str], export_verbs: Sequence[str]) -> frozenset[str]:
    """The verbs both sides grant; "*" on one side means the other side's verbs."""
    left, right = frozenset(binding_verbs), frozenset(export_verbs)
    if "*" in left:
        return right
    if "*" in right:
        return left
    return left & right


def _claim_decision(binding: Mapping[str, Any], export_claims: Sequence[Mapping[str, Any]],
                    key: tuple[str, str], verb: str) -> Decision | None:
    for claim in (binding.get("spec") or {}).get("permissionClaims") or ():
        if claim.get("state") != "Accepted":
            continue
        if _group_resource(claim.get("group", ""), claim.get("resource", "")) != key:
            continue
        identity = claim.get("identityHash", "")
        for offered in export_claims:
            if (_group_resource(offered.get("group", ""), offered.get("resource", "")) == key
                    and offered.get("identityHash", "") == identity):
                verbs = claim_verbs(claim.get("verbs") or (), offered.get("verbs") or ())
                if verb in verbs or "*" in verbs:
                    return allow(f"accepted permission claim on {key[1]} allows {verb}")
                return deny(f"accepted permission claim on {key[1]} does not allow {verb}")
    return None


def apiexport_binding(bindings: Sequence[Mapping[str, Any]], export_cluster: str, export_name: str,
                      export_claims: Sequence[Mapping[str, Any]]) -> Authorizer:
    """`bindings` are the APIBindings of the request's target cluster; `export_claims` the
    export's spec.permissionClaims."""
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        if cluster == WILDCARD_CLUSTER or not attributes.is_resource_request:
            return allow("delegating: not a per-cluster resource request")
        binding = find_binding(bindings, export_cluster, export_name)
        if binding is None:
            return deny("could not find suitable APIBinding in target logical cluster")
        key = _group_resource(attributes.api_group, attributes.resource)
        for bound in (binding.get("status") or {}).get("boundResources") or ():
            if (bound.get("group", ""), bound.get("resource")) == key:
                return allow("delegating: bound resource")
        claimed = _claim_decision(binding, export_claims, key, attributes.verb)
        if claimed is not None:
            return claimed
        if key == ("apis.kcp.io", "apibindings"):
            if attributes.verb in READ_VERBS:
                return allow("delegating: reading APIBindings")
            return deny("write access to APIBinding is not allowed from virtual workspace")
        return deny(f"{key[1]} is neither bound nor claimed by an accepted permission claim")
    return authorize


def apiexport_chain(rbac: RBACCheck, export_cluster: str, export_name: str,
                    bindings: Sequence[Mapping[str, Any]], export_claims: Sequence[Mapping[str, Any]],
                    claim_exports: Sequence[ExportPolicy] | None = None) -> Authorizer:
    """Everything a request through `/services/apiexport/<export_cluster>/<export_name>/clusters/<c>/…`
    must pass, outermost first: health paths and system:masters; else binding (§7.1), content
    (§7.2) and the maximal permission policy (§7.3)."""
    return first_opinion(
        always_allow_paths(), always_allow_groups(),
        all_of(apiexport_binding(bindings, export_cluster, export_name, export_claims),
               apiexport_content(rbac, export_cluster, export_name),
               maximal_permission_policy(rbac, claim_exports)),
    )
