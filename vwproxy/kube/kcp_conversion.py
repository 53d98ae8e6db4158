"""APIExport and APIBinding between `apis.kcp.io/v1alpha1` and the stored `v1alpha2`, as kcp does.

v1alpha2 claims have `verbs` (and bindings a label `selector`); v1alpha1 claims have `all` or a
`resourceSelector`. What one version cannot say rides along in kcp's annotations, so that a read
in either version gives back what was written in it (kcp-reference.md section 8.1; kcp
`sdk/apis/apis/v1alpha2/types_api{export,binding}_conversion.go`). A v1alpha1 claim without verbs
becomes `verbs: ["*"]`; a binding claim without a selector becomes `matchAll: true`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vwproxy.kube.kcp import claim_key, go_json_string

Obj = dict[str, Any]

# On a stored APIExport/APIBinding: the v1alpha1 claims as written (their `all`/`resourceSelector`).
V1ALPHA1_CLAIMS_ANNOTATION = "apis.v1alpha2.kcp.io/v1alpha1-permission-claims"
# On a v1alpha1 APIExport: the v1alpha2 claims v1alpha1 cannot say (verbs other than `*`).
V2_CLAIMS_ANNOTATION = "apis.v1alpha2.kcp.io/permission-claims"
# On a v1alpha1 APIExport: v1alpha2 resources v1alpha1 cannot say (not stored as CRDs).
RESOURCE_SCHEMAS_ANNOTATION = "apis.v1alpha2.kcp.io/resource-schemas"
# On a v1alpha1 APIBinding: the v1alpha2 accepted claims v1alpha1 cannot say.
ACCEPTABLE_CLAIMS_ANNOTATION = "apis.v1alpha2.kcp.io/acceptable-permission-claims"
STATUS_CLAIMS_ANNOTATION = "apis.v1alpha2.kcp.io/status-export-permission-claims"
STATUS_APPLIED_ANNOTATION = "apis.v1alpha2.kcp.io/status-applied-permission-claims"
STATUS_V1ALPHA1_CLAIMS_ANNOTATION = "apis.v1alpha2.kcp.io/v1alpha1-status-export-permission-claims"
STATUS_V1ALPHA1_APPLIED_ANNOTATION = "apis.v1alpha2.kcp.io/v1alpha1-status-applied-permission-claims"

WILDCARD_VERBS = ["*"]


# -- Go's encoding/json, so annotation values read like kcp's -----------------------------------

def go_json(value: Any) -> str:
    """Compact JSON in the key order given (structs), as Go's json.Marshal writes it."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json_string(str(k))}:{go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, str):
        return go_json_string(value)
    return json.dumps(value)


def _load(text: Any) -> list[Obj]:
    try:
        found = json.loads(str(text))
    except ValueError:
        return []
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


# -- the claim shapes, fields in kcp's struct order -------------------------------------------------

def _group_resource(claim: Obj) -> Obj:
    out: Obj = {}
    if claim.get("group"):
        out["group"] = claim["group"]
    out["resource"] = claim.get("resource", "")
    return out


def _label_selector(selector: Any) -> Obj:
    selector = selector if isinstance(selector, dict) else {}
    out: Obj = {}
    if selector.get("matchLabels"):
        out["matchLabels"] = dict(sorted(selector["matchLabels"].items()))
    if selector.get("matchExpressions"):
        out["matchExpressions"] = [
            {k: e[k] for k in ("key", "operator", "values") if isinstance(e, dict) and e.get(k) not in (None, [])}
            for e in selector["matchExpressions"]
        ]
    if selector.get("matchAll"):
        out["matchAll"] = True
    return out


def _v2_claim(claim: Obj, verbs: Any = None) -> Obj:
    out = _group_resource(claim)
    out["verbs"] = verbs if verbs is not None else (list(claim["verbs"]) if claim.get("verbs") else None)
    if claim.get("identityHash"):
        out["identityHash"] = claim["identityHash"]
    if claim.get("defaultSelector") is not None:
        out["defaultSelector"] = _label_selector(claim["defaultSelector"])
    return out


def _v2_scoped(claim: Obj) -> Obj:
    return {**_v2_claim(claim), "selector": _label_selector(claim.get("selector"))}


def _v2_acceptable(claim: Obj) -> Obj:
    return {**_v2_scoped(claim), "state": claim.get("state", "")}


def _v1_claim(claim: Obj, all_: bool = False) -> Obj:
    out = _group_resource(claim)
    if all_ or claim.get("all"):
        out["all"] = True
    if claim.get("resourceSelector"):
        out["resourceSelector"] = [
            {k: s[k] for k in ("name", "namespace") if isinstance(s, dict) and s.get(k)} for s in claim["resourceSelector"]
        ]
    if claim.get("identityHash"):
        out["identityHash"] = claim["identityHash"]
    return out


def _v1_acceptable(claim: Obj) -> Obj:
    return {**_v1_claim(claim), "state": claim.get("state", "")}


def _is_wildcard(claim: Obj) -> bool:
    return claim.get("verbs") == WILDCARD_VERBS


def _matches_all(claim: Obj) -> bool:
    return bool((claim.get("selector") or {}).get("matchAll"))


def _claims(where: Any, field: str) -> list[Obj]:
    found = where.get(field) if isinstance(where, dict) else None
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def _restore(into: list[Obj], saved: list[Obj], fields: tuple[str, ...], shape: Callable[[Obj], Obj] = lambda c: c) -> None:
    """Put `fields` of each saved claim back on the claim with the same group, resource, identity."""
    for old in saved:
        for claim in into:
            if claim_key(claim) == claim_key(old):
                source = shape(old)
                for f in fields:
                    if f in source:
                        claim[f] = source[f]
                    else:
                        claim.pop(f, None)


class _Annotations:
    """The metadata.annotations of an object being converted (a new dict; dropped when empty)."""

    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        md = obj.get("metadata")
        self.md: Obj = dict(md) if isinstance(md, dict) else {}
        obj["metadata"] = self.md
        found = self.md.get("annotations")
        self.values: dict[str, str] = dict(found) if isinstance(found, dict) else {}

    def pop(self, key: str) -> list[Obj] | None:
        return _load(self.values.pop(key)) if key in self.values else None

    def put(self, key: str, claims: list[Obj]) -> None:
        if claims:
            self.values[key] = go_json(claims)

    def done(self) -> None:
        if self.values:
            self.md["annotations"] = self.values
        else:
            self.md.pop("annotations", None)


# -- APIExport ---------------------------------------------------------------------------------------

def export_to_v1alpha2(obj: Obj) -> Obj:
    """A v1alpha1 APIExport in its stored (v1alpha2) form."""
    obj = dict(obj)
    notes = _Annotations(obj)
    spec: Obj = dict(obj.get("spec") or {})
    obj["spec"] = spec
    written = _claims(spec, "permissionClaims")
    if "permissionClaims" in spec:
        spec["permissionClaims"] = [_v2_claim(c) for c in written]
    if written:
        notes.put(V1ALPHA1_CLAIMS_ANNOTATION, [_v1_claim(c) for c in written])
    latest = spec.pop("latestResourceSchemas", None)
    if isinstance(latest, list):
        resources: list[Obj] = []
        for schema in latest:
            parts = str(schema).split(".")
            if len(parts) >= 3:
                group = ".".join(parts[2:])
                resources.append({"group": "" if group == "core" else group, "name": parts[1], "schema": schema, "storage": {"crd": {}}})
        spec["resources"] = resources
    extra = notes.pop(RESOURCE_SCHEMAS_ANNOTATION)
    if extra:
        spec["resources"] = [*(spec.get("resources") or []), *extra]
    saved = notes.pop(V2_CLAIMS_ANNOTATION)
    claims = _claims(spec, "permissionClaims")
    if saved:
        _restore(claims, saved, ("verbs", "defaultSelector"))
    for claim in claims:
        if not claim.get("verbs"):
            claim["verbs"] = list(WILDCARD_VERBS)
    notes.done()
    return obj


def export_to_v1alpha1(obj: Obj) -> Obj:
    """A stored APIExport as v1alpha1 shows it."""
    obj = dict(obj)
    notes = _Annotations(obj)
    spec: Obj = dict(obj.get("spec") or {})
    obj["spec"] = spec
    resources = spec.pop("resources", None)
    if isinstance(resources, list):
        crd = [r for r in resources if isinstance(r, dict) and (r.get("storage") or {}).get("crd") is not None]
        other = [r for r in resources if isinstance(r, dict) and (r.get("storage") or {}).get("crd") is None]
        if other:
            notes.values[RESOURCE_SCHEMAS_ANNOTATION] = go_json(other)
        if crd:
            spec["latestResourceSchemas"] = [r.get("schema") for r in crd]
    claims = _claims(spec, "permissionClaims")
    notes.put(V2_CLAIMS_ANNOTATION, [_v2_claim(c) for c in claims if not _is_wildcard(c)])
    if "permissionClaims" in spec:
        spec["permissionClaims"] = [_v1_claim(c) for c in claims]
    saved = notes.pop(V1ALPHA1_CLAIMS_ANNOTATION)
    if saved:
        _restore(spec["permissionClaims"], saved, ("all", "resourceSelector"), _v1_claim)
    notes.done()
    return obj


# -- APIBinding --------------------------------------------------------------------------------------

def binding_to_v1alpha2(obj: Obj) -> Obj:
    """A v1alpha1 APIBinding in its stored (v1alpha2) form."""
    obj = dict(obj)
    notes = _Annotations(obj)
    spec: Obj = dict(obj.get("spec") or {})
    obj["spec"] = spec
    written = _claims(spec, "permissionClaims")
    if "permissionClaims" in spec:
        spec["permissionClaims"] = [
            {**_v2_claim(c), "selector": {"matchAll": True} if c.get("all") else {}, "state": c.get("state", "")} for c in written
        ]
    notes.put(V1ALPHA1_CLAIMS_ANNOTATION, [_v1_acceptable(c) for c in written if c.get("resourceSelector")])
    saved = notes.pop(ACCEPTABLE_CLAIMS_ANNOTATION)
    claims = _claims(spec, "permissionClaims")
    if saved:
        _restore(claims, saved, ("verbs", "selector"), _v2_acceptable)
    for claim in claims:
        if not claim.get("verbs"):
            claim["verbs"] = list(WILDCARD_VERBS)
        if not _label_selector(claim.get("selector")):
            claim["selector"] = {"matchAll": True}
    if isinstance(obj.get("status"), dict):
        status = dict(obj["status"])
        obj["status"] = status
        exported = _claims(status, "exportPermissionClaims")
        applied = _claims(status, "appliedPermissionClaims")
        if "exportPermissionClaims" in status:
            status["exportPermissionClaims"] = [_v2_claim(c) for c in exported]
        if "appliedPermissionClaims" in status:
            status["appliedPermissionClaims"] = [{**_v2_claim(c), "selector": {"matchAll": True} if c.get("all") else {}} for c in applied]
        notes.put(STATUS_V1ALPHA1_CLAIMS_ANNOTATION, [_v1_claim(c) for c in exported])
        notes.put(STATUS_V1ALPHA1_APPLIED_ANNOTATION, [_v1_claim(c) for c in applied if c.get("resourceSelector")])
        saved_exported = notes.pop(STATUS_CLAIMS_ANNOTATION)
        if saved_exported:
            _restore(_claims(status, "exportPermissionClaims"), saved_exported, ("verbs",), _v2_claim)
        saved_applied = notes.pop(STATUS_APPLIED_ANNOTATION)
        if saved_applied:
            _restore(_claims(status, "appliedPermissionClaims"), saved_applied, ("verbs", "selector"), _v2_scoped)
        for claim in _claims(status, "exportPermissionClaims"):
            if not claim.get("verbs"):
                claim["verbs"] = list(WILDCARD_VERBS)
        for claim in _claims(status, "appliedPermissionClaims"):
            if not claim.get("verbs"):
                claim["verbs"] = list(WILDCARD_VERBS)
            if not _label_selector(claim.get("selector")):
                claim["selector"] = {"matchAll": True}
    notes.done()
    return obj


def binding_to_v1alpha1(obj: Obj) -> Obj:
    """A stored APIBinding as v1alpha1 shows it."""
    obj = dict(obj)
    notes = _Annotations(obj)
    spec: Obj = dict(obj.get("spec") or {})
    obj["spec"] = spec
    claims = _claims(spec, "permissionClaims")
    notes.put(ACCEPTABLE_CLAIMS_ANNOTATION, [_v2_acceptable(c) for c in claims if not (_is_wildcard(c) and _matches_all(c))])
    if "permissionClaims" in spec:
        spec["permissionClaims"] = [{**_v1_claim(c, _matches_all(c)), "state": c.get("state", "")} for c in claims]
    saved = notes.pop(V1ALPHA1_CLAIMS_ANNOTATION)
    if saved:
        _restore(spec["permissionClaims"], saved, ("all", "resourceSelector"), _v1_acceptable)
    if isinstance(obj.get("status"), dict):
        status = dict(obj["status"])
        obj["status"] = status
        exported = _claims(status, "exportPermissionClaims")
        applied = _claims(status, "appliedPermissionClaims")
        notes.put(STATUS_CLAIMS_ANNOTATION, [_v2_claim(c) for c in exported if not _is_wildcard(c)])
        notes.put(STATUS_APPLIED_ANNOTATION, [_v2_scoped(c) for c in applied if not (_is_wildcard(c) and _matches_all(c))])
        if "exportPermissionClaims" in status:
            status["exportPermissionClaims"] = [_v1_claim(c) for c in exported]
        if "appliedPermissionClaims" in status:
            status["appliedPermissionClaims"] = [_v1_claim(c, _matches_all(c)) for c in applied]
        saved_exported = notes.pop(STATUS_V1ALPHA1_CLAIMS_ANNOTATION)
        if saved_exported:
            _restore(status["exportPermissionClaims"], saved_exported, ("all", "resourceSelector"), _v1_claim)
        saved_applied = notes.pop(STATUS_V1ALPHA1_APPLIED_ANNOTATION)
        if saved_applied:
            _restore(status["appliedPermissionClaims"], saved_applied, ("all", "resourceSelector"), _v1_claim)
    notes.done()
    return obj
