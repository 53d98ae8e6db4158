"""Permission claims as the APIExport virtual workspace applies them (kcp-reference.md §7.1, §8):
which claims a binding accepted, the verbs a provider may use, the claim label that marks the
objects it may see, and the selector rules for writes. Pure: plain dicts in, decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vwproxy.kube import errors, kcp
from vwproxy.kube.selectors import LabelSelector

Obj = dict[str, Any]

# The events of `events.k8s.io` are the core events, one storage: a claim on either covers both.
_SAME_CLAIM_GROUP = {"events.k8s.io": ""}


def claim_group(group: str, resource: str) -> str:
    """The group a claim on `group/resource` is written with."""
    return _SAME_CLAIM_GROUP.get(group, group) if resource == "events" else group


@dataclass(frozen=True)
class ClaimRef:
    """What identifies a claim: kcp keys claims by (group, resource, identityHash)."""

    group: str
    resource: str
    identity: str = ""

    @staticmethod
    def of(claim: Obj) -> ClaimRef:
        return ClaimRef(str(claim.get("group") or ""), str(claim.get("resource") or ""), str(claim.get("identityHash") or ""))


def claim_label(export_cluster: str, export_name: str, ref: ClaimRef) -> tuple[str, str]:
    """kcp's claim label (key from the export, value from the claim's group, resource and identity)."""
    return kcp.claim_label(export_cluster, export_name, {"group": ref.group, "resource": ref.resource, "identityHash": ref.identity})


def export_claims(export: Obj) -> dict[ClaimRef, Obj]:
    """The export's claims by reference (v1alpha2 storage shape)."""
    claims = (export.get("spec") or {}).get("permissionClaims") or []
    return {ClaimRef.of(c): c for c in claims if isinstance(c, dict) and c.get("resource")}


def binding_claim(binding: Obj, ref: ClaimRef) -> Obj | None:
    """The binding's answer to the claim `ref`, if it has one."""
    for claim in (binding.get("spec") or {}).get("permissionClaims") or []:
        if isinstance(claim, dict) and ClaimRef.of(claim) == ref:
            return claim
    return None


def accepted(binding: Obj, ref: ClaimRef) -> Obj | None:
    claim = binding_claim(binding, ref)
    return claim if claim is not None and claim.get("state") == "Accepted" else None


def allowed_verbs(export_claim: Obj, binding_claim_obj: Obj) -> frozenset[str]:
    """The verbs a provider may use per cluster: the export's claim ∩ the binding's (§7.1.3)."""
    export_verbs = {str(v) for v in export_claim.get("verbs") or ["*"]}
    binding_verbs = {str(v) for v in binding_claim_obj.get("verbs") or export_verbs}
    if "*" in export_verbs:
        return frozenset(binding_verbs)
    if "*" in binding_verbs:
        return frozenset(export_verbs)
    return frozenset(export_verbs & binding_verbs)


def permits(verbs: frozenset[str], verb: str) -> bool:
    return "*" in verbs or verb in verbs


@dataclass(frozen=True)
class ClaimSelector:
    """A binding claim's `selector`: matchAll, or matchLabels and matchExpressions."""

    match_all: bool
    match_labels: dict[str, str]
    selector: LabelSelector

    @staticmethod
    def of(claim: Obj) -> ClaimSelector:
        spec = claim.get("selector") or {}
        if not isinstance(spec, dict) or spec.get("matchAll") or not (spec.get("matchLabels") or spec.get("matchExpressions")):
            return ClaimSelector(True, {}, LabelSelector())
        labels = {str(k): str(v) for k, v in (spec.get("matchLabels") or {}).items()}
        return ClaimSelector(False, labels, LabelSelector.from_dict(spec))

    def matches(self, labels: dict[str, str]) -> bool:
        return self.match_all or self.selector.matches(labels)

    def admit(self, obj: Obj) -> None:
        """Writes of claimed objects (§8.4): missing `matchLabels` are added, a protected label with
        another value is 403, and the result must match the selector (403 otherwise)."""
        if self.match_all:
            return
        md = obj.setdefault("metadata", {})
        labels = md.get("labels")
        if not isinstance(labels, dict):
            labels = md["labels"] = {}
        for key, value in self.match_labels.items():
            if key not in labels:
                labels[key] = value
            elif labels[key] != value:
                raise errors.forbidden(f"protected label {key} must have value {value}")
        self.require(labels)

    def require(self, labels: dict[str, str]) -> None:
        if not self.selector.matches({str(k): str(v) for k, v in labels.items()}):
            raise errors.forbidden("object does not match required labels")
