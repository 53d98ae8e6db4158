"""Permission claims as the control plane reads them: a binding's accepted claims, whether they
are valid against the export's, and the status conditions kcp gives them.

kcp: `pkg/reconciler/apis/permissionclaimlabel/permissionclaimlabel_reconcile.go`;
kcp-reference.md section 8. The labels themselves are `labeller.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, ControlStore, Obj, condition
from vwproxy.kube import errors, kcp
from vwproxy.kube.kcp import ClaimKey
from vwproxy.kube.selectors import LabelSelector

PERMISSION_CLAIMS_VALID = "PermissionClaimsValid"
PERMISSION_CLAIMS_APPLIED = "PermissionClaimsApplied"
INVALID_PERMISSION_CLAIMS = "InvalidPermissionClaims"
PERMISSION_CLAIMS_MISMATCH = "PermissionClaimsMismatch"
INTERNAL_ERROR = "InternalError"
# kcp shows this many problems in a condition message.
MAX_INVALID_SHOWN = 10
MAX_MISMATCHES_SHOWN = 5


@dataclass(frozen=True)
class AcceptedClaim:
    """One accepted claim of one APIBinding: what the labeller labels and the VW serves.

    `verbs` are the binding's, `export_verbs` the export claim's (empty when the export does
    not claim it: kcp still labels for it, the VW serves nothing); `allowed_verbs` is what a
    per-cluster request may do (kcp-reference.md section 7.1).
    """

    cluster: str  # the consumer's logical cluster
    binding: str
    export_cluster: str
    export_name: str
    group: str
    resource: str
    identity_hash: str
    verbs: tuple[str, ...]
    export_verbs: tuple[str, ...]
    selector: Obj = field(hash=False)  # {"matchAll": true} | {matchLabels, matchExpressions}
    label_key: str = ""
    label_value: str = ""
    matcher: LabelSelector = field(default_factory=LabelSelector.everything, compare=False, hash=False)

    @property
    def key(self) -> ClaimKey:
        return (self.group, self.resource, self.identity_hash)

    @property
    def exported(self) -> bool:
        return bool(self.export_verbs)

    @property
    def allowed_verbs(self) -> frozenset[str]:
        """Binding verbs ∩ export verbs, `*` standing for every verb on either side."""
        mine, theirs = set(self.verbs), set(self.export_verbs)
        if "*" in mine:
            return frozenset(theirs)
        if "*" in theirs:
            return frozenset(mine)
        return frozenset(mine & theirs)

    def selects(self, labels: dict[str, str] | None) -> bool:
        return bool(self.selector.get("matchAll")) or self.matcher.matches(labels or {})


def export_reference(store: ControlStore, cluster: str, binding: Obj) -> tuple[str | None, str]:
    """(export's logical cluster or None if unresolved, export name) a binding points at."""
    ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
    path = str(ref.get("path") or store.path_of(cluster))
    return store.resolve_path(path), str(ref.get("name") or "")


def _verbs(claim: Obj) -> tuple[str, ...]:
    verbs = claim.get("verbs")
    return tuple(str(v) for v in verbs) if isinstance(verbs, list) else ()


def export_claims(export: Obj | None) -> dict[ClaimKey, Obj]:
    if export is None:
        return {}
    claims = (export.get("spec") or {}).get("permissionClaims") or []
    return {kcp.claim_key(c): c for c in claims if isinstance(c, dict)}


def _problem(claim: Obj) -> str:
    """Why an accepted claim cannot be used as written ("" if it can)."""
    if not claim.get("resource"):
        return "no resource"
    if not _verbs(claim):
        return "no verbs"
    selector = claim.get("selector")
    if not isinstance(selector, dict) or not selector:
        return "no selector"
    if selector.get("matchAll") and (selector.get("matchLabels") or selector.get("matchExpressions")):
        return "matchAll together with matchLabels/matchExpressions"
    if not selector.get("matchAll"):
        try:
            LabelSelector.from_dict(selector)
        except errors.StatusError as exc:
            return exc.message
    return ""


def accepted_of_binding(cluster: str, binding: Obj, export_cluster: str, export: Obj) -> tuple[list[AcceptedClaim], list[str]]:
    """The binding's usable accepted claims, and messages for the malformed ones."""
    exported = export_claims(export)
    export_name = str(export["metadata"]["name"])
    out: list[AcceptedClaim] = []
    invalid: list[str] = []
    for claim in (binding.get("spec") or {}).get("permissionClaims") or []:
        if not isinstance(claim, dict) or claim.get("state") != kcp.CLAIM_ACCEPTED:
            continue
        group, resource, identity = kcp.claim_key(claim)
        why = _problem(claim)
        if why:
            invalid.append(f"invalid claim for {resource}.{group} (identity {identity!r}): {why}")
            continue
        selector = dict(claim["selector"])
        label_key, label_value = kcp.claim_label(export_cluster, export_name, claim)
        out.append(AcceptedClaim(
            cluster=cluster, binding=str(binding["metadata"]["name"]), export_cluster=export_cluster, export_name=export_name,
            group=group, resource=resource, identity_hash=identity, verbs=_verbs(claim),
            export_verbs=_verbs(exported.get((group, resource, identity)) or {}), selector=selector,
            label_key=label_key, label_value=label_value,
            matcher=LabelSelector.everything() if selector.get("matchAll") else LabelSelector.from_dict(selector),
        ))
    return out, invalid


def _go_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + " ".join(values) + "]"


def _aggregate(messages: list[str]) -> str:
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


def _normal_selector(selector: object) -> Obj:
    selector = selector if isinstance(selector, dict) else {}
    return {k: v for k, v in selector.items() if v not in (None, False, {}, [])}


def valid_condition(binding: Obj, export: Obj, accepted: list[AcceptedClaim], invalid: list[str], previous: list[Obj]) -> Obj:
    """PermissionClaimsValid: claims the export does not make (or malformed ones) are an error;
    accepted verbs or selector other than the export's are a warning (the later wins, as in kcp)."""
    exported = export_claims(export)
    problems = list(invalid)
    problems += [
        f"unexpected/invalid claim for {c.resource}.{c.group} (identity {c.identity_hash!r})"
        for c in sorted(accepted, key=lambda c: f"{c.resource}/{c.group}/{c.identity_hash}") if not c.exported
    ]
    mismatches: list[str] = []
    for c in sorted(accepted, key=lambda c: f"{c.resource}/{c.group}/{c.identity_hash}"):
        theirs = exported.get(c.key)
        if theirs is None:
            continue
        parts = []
        if "*" not in c.verbs and "*" not in c.export_verbs and set(c.verbs) != set(c.export_verbs):
            parts.append(f"verbs: accepted {_go_list(c.verbs)}, exported {_go_list(c.export_verbs)}")
        default = theirs.get("defaultSelector")
        if default is not None and _normal_selector(default) != _normal_selector(c.selector):
            parts.append("selector differs from defaultSelector")
        if parts:
            mismatches.append(f"{c.resource}.{c.group} ({'; '.join(parts)})")
    if mismatches:
        shown = mismatches[:MAX_MISMATCHES_SHOWN]
        message = f"{len(mismatches)} permission claim(s) have mismatched verbs or selectors (showing first {len(shown)}): {', '.join(shown)}"
        return condition(PERMISSION_CLAIMS_VALID, False, PERMISSION_CLAIMS_MISMATCH, message, previous, severity="Warning")
    if problems:
        shown = problems[:MAX_INVALID_SHOWN]
        message = f"{len(problems)} unexpected and/or invalid permission claims (showing first {len(shown)}): {_aggregate(shown)}"
        return condition(PERMISSION_CLAIMS_VALID, False, INVALID_PERMISSION_CLAIMS, message, previous)
    return condition(PERMISSION_CLAIMS_VALID, True, previous=previous)


def applied_status(binding: Obj, accepted: list[AcceptedClaim], failed: dict[ClaimKey, str], previous: list[Obj]) -> tuple[list[Obj], Obj]:
    """(status.appliedPermissionClaims, PermissionClaimsApplied): the exported accepted claims whose
    labels are in place, as the binding wrote them (without `state`)."""
    written = {kcp.claim_key(c): c for c in (binding.get("spec") or {}).get("permissionClaims") or [] if isinstance(c, dict)}
    applied = [
        {k: v for k, v in written[c.key].items() if k != "state"}
        for c in sorted(accepted, key=lambda c: f"{c.resource}/{c.group}/{c.identity_hash}")
        if c.exported and c.key not in failed
    ]
    if failed:
        shown = sorted(failed.values())[:MAX_INVALID_SHOWN]
        return applied, condition(PERMISSION_CLAIMS_APPLIED, False, INTERNAL_ERROR, f"Permission claims have not been fully applied: {_aggregate(shown)}", previous)
    return applied, condition(PERMISSION_CLAIMS_APPLIED, True, previous=previous)


def accepted_claims(store: ControlStore, export_cluster: str, export_name: str) -> dict[str, list[AcceptedClaim]]:
    """consumer cluster → the accepted claims its bindings to this export make that the export
    also claims (read from the shard; `ClaimLabeller.claims_of_export` answers from its index)."""
    export = store.get(API_EXPORTS, export_cluster, export_name)
    if export is None:
        return {}
    out: dict[str, list[AcceptedClaim]] = {}
    for cluster, binding in store.all(API_BINDINGS):
        if binding["metadata"].get("deletionTimestamp") is not None and not binding["metadata"].get("finalizers"):
            continue
        found_cluster, name = export_reference(store, cluster, binding)
        if found_cluster != export_cluster or name != export_name:
            continue
        accepted, _ = accepted_of_binding(cluster, binding, export_cluster, export)
        claims = [c for c in accepted if c.exported]
        if claims:
            out.setdefault(cluster, []).extend(claims)
    return out
