"""Permission claims, the pure parts: kcp's label hashing (kcp-reference.md section 8.3 vectors),
v1alpha1 ↔ v1alpha2 conversion of APIExport and APIBinding claims, and the binding conditions."""

from __future__ import annotations

import json
from typing import Any

from vwproxy.control import claims
from vwproxy.kube import kcp, kcp_conversion
from vwproxy.kube.conversion import to_served, to_stored
from vwproxy.kube.resources import BUILTIN_RESOURCES

Obj = dict[str, Any]


def test_hashes_match_the_reference_vectors() -> None:
    assert kcp.claim_label_key("root", "tenancy.kcp.io") == "claimed.internal.apis.kcp.io/bmCdly9xXiUpEHe3ypvDwvXMTfoVZUE92mqAQf"
    assert kcp.base62_sha224(b'{"resource":"configmaps","verbs":null}') == "3QVjs6pfBjMpLEVYYhysJnroYGsQGlWm05E4qe"
    # group omitted when empty, verbs and selectors never part of the value
    key, value = kcp.claim_label("root", "tenancy.kcp.io", {"group": "", "resource": "configmaps", "verbs": ["get"], "selector": {"matchAll": True}})
    assert (key, value) == ("claimed.internal.apis.kcp.io/bmCdly9xXiUpEHe3ypvDwvXMTfoVZUE92mqAQf", "3QVjs6pfBjMpLEVYYhysJnroYGsQGlWm05E4qe")
    claim = {"group": "apps", "resource": "deployments", "verbs": ["*"], "identityHash": "deadbeef", "defaultSelector": {"matchLabels": {"a": "b"}}}
    assert kcp.claim_hash_input(claim) == b'{"group":"apps","resource":"deployments","verbs":null,"identityHash":"deadbeef"}'
    assert kcp.claim_label("x", "y", claim)[1] == "4CpOMiJ5JL9ZC4cG8ne7nGNQbSOEUiwZ89KHal"
    assert kcp.REFLEXIVE_CLAIM_VALUE == "LstvmbbzVDDOn90ZbhzSQO5U3DMCf88h1pZ"
    assert kcp.reflexive_claim_label("root", "tenancy.kcp.io") == (key, "LstvmbbzVDDOn90ZbhzSQO5U3DMCf88h1pZ")


def _info(resource: str, version: str) -> Any:
    return next(r for r in BUILTIN_RESOURCES if r.group == "apis.kcp.io" and r.resource == resource and r.version == version)


def test_v1alpha1_export_claims_are_stored_as_wildcard_verbs_and_read_back() -> None:
    v1 = _info("apiexports", "v1alpha1")
    written = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "e"}, "spec": {
        "latestResourceSchemas": ["v1.widgets.example.dev"],
        "permissionClaims": [{"resource": "configmaps", "all": True}, {"group": "rbac.authorization.k8s.io", "resource": "roles", "all": True}]}}
    stored = to_stored(written, v1)
    assert stored["apiVersion"] == "apis.kcp.io/v1alpha2"
    assert stored["spec"]["permissionClaims"] == [
        {"resource": "configmaps", "verbs": ["*"]}, {"group": "rbac.authorization.k8s.io", "resource": "roles", "verbs": ["*"]}]
    assert stored["spec"]["resources"] == [{"group": "example.dev", "name": "widgets", "schema": "v1.widgets.example.dev", "storage": {"crd": {}}}]
    assert json.loads(stored["metadata"]["annotations"][kcp_conversion.V1ALPHA1_CLAIMS_ANNOTATION]) == written["spec"]["permissionClaims"]
    assert kcp_conversion.V1ALPHA1_CLAIMS_ANNOTATION == "apis.v1alpha2.kcp.io/v1alpha1-permission-claims"
    assert to_served(stored, v1) == written


def test_v1alpha2_export_verbs_survive_a_v1alpha1_round_trip() -> None:
    v1 = _info("apiexports", "v1alpha1")
    stored = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "e"}, "spec": {"permissionClaims": [
        {"resource": "configmaps", "verbs": ["get", "list"], "defaultSelector": {"matchLabels": {"app": "x"}}},
        {"resource": "secrets", "verbs": ["*"]}]}}
    served = to_served(stored, v1)
    assert served["spec"]["permissionClaims"] == [{"resource": "configmaps"}, {"resource": "secrets"}]
    assert served["metadata"]["annotations"] == {
        "apis.v1alpha2.kcp.io/permission-claims": '[{"resource":"configmaps","verbs":["get","list"],"defaultSelector":{"matchLabels":{"app":"x"}}}]'}
    back = to_stored(served, v1)
    assert back["spec"] == stored["spec"]
    assert json.loads(back["metadata"]["annotations"][kcp_conversion.V1ALPHA1_CLAIMS_ANNOTATION]) == [{"resource": "configmaps"}, {"resource": "secrets"}]


def test_binding_claims_convert_both_ways() -> None:
    v1 = _info("apibindings", "v1alpha1")
    written = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIBinding", "metadata": {"name": "b"}, "spec": {
        "reference": {"export": {"path": "root:provider", "name": "e"}},
        "permissionClaims": [{"resource": "configmaps", "all": True, "state": "Accepted"}, {"resource": "secrets", "all": True, "state": "Rejected"}]}}
    stored = to_stored(written, v1)
    assert stored["spec"]["permissionClaims"] == [
        {"resource": "configmaps", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"},
        {"resource": "secrets", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Rejected"}]
    assert to_served(stored, v1) == written
    scoped = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "b"}, "spec": {"permissionClaims": [
        {"resource": "configmaps", "verbs": ["get"], "selector": {"matchLabels": {"app": "x"}}, "state": "Accepted"}]},
        "status": {"exportPermissionClaims": [{"resource": "configmaps", "verbs": ["get"]}],
                   "appliedPermissionClaims": [{"resource": "configmaps", "verbs": ["get"], "selector": {"matchLabels": {"app": "x"}}}]}}
    served = to_served(scoped, v1)
    assert served["spec"]["permissionClaims"] == [{"resource": "configmaps", "state": "Accepted"}]
    assert set(served["metadata"]["annotations"]) == {kcp_conversion.ACCEPTABLE_CLAIMS_ANNOTATION, kcp_conversion.STATUS_CLAIMS_ANNOTATION, kcp_conversion.STATUS_APPLIED_ANNOTATION}
    back = to_stored(served, v1)
    assert back["spec"] == scoped["spec"] and back["status"] == scoped["status"]


def _export(*export_claims: Obj) -> Obj:
    return {"metadata": {"name": "e"}, "spec": {"permissionClaims": list(export_claims)}}


def _binding(*binding_claims: Obj) -> Obj:
    return {"metadata": {"name": "b"}, "spec": {"permissionClaims": list(binding_claims)}}


def _valid(binding: Obj, export: Obj) -> Obj:
    accepted, invalid = claims.accepted_of_binding("c", binding, "p", export)
    return claims.valid_condition(binding, export, accepted, invalid, [])


def test_binding_conditions_say_what_is_wrong_with_its_claims() -> None:
    cm = {"group": "", "resource": "configmaps", "verbs": ["get", "list"]}
    export = _export(cm)
    ok = _valid(_binding({**cm, "selector": {"matchAll": True}, "state": "Accepted"}), export)
    assert ok["status"] == "True"
    unexpected = _valid(_binding({"resource": "secrets", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}), export)
    assert (unexpected["status"], unexpected["reason"]) == ("False", "InvalidPermissionClaims")
    assert unexpected["message"] == "1 unexpected and/or invalid permission claims (showing first 1): unexpected/invalid claim for secrets. (identity '')"
    malformed = _valid(_binding({**cm, "verbs": [], "selector": {"matchAll": True}, "state": "Accepted"}), export)
    assert malformed["reason"] == "InvalidPermissionClaims" and "no verbs" in malformed["message"]
    bad_selector = _valid(_binding({**cm, "selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}, "state": "Accepted"}), export)
    assert bad_selector["reason"] == "InvalidPermissionClaims"
    mismatch = _valid(_binding({**cm, "verbs": ["get"], "selector": {"matchAll": True}, "state": "Accepted"}), export)
    assert (mismatch["reason"], mismatch["severity"]) == ("PermissionClaimsMismatch", "Warning")
    assert "verbs: accepted [get], exported [get list]" in mismatch["message"]
    rejected = _valid(_binding({**cm, "verbs": ["get"], "selector": {"matchAll": True}, "state": "Rejected"}), export)
    assert rejected["status"] == "True", "a rejected claim is neither applied nor checked"


def test_allowed_verbs_are_the_intersection() -> None:
    export = _export({"resource": "configmaps", "verbs": ["get", "list", "watch"]}, {"resource": "secrets", "verbs": ["*"]})
    binding = _binding({"resource": "configmaps", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"},
                       {"resource": "secrets", "verbs": ["get", "create"], "selector": {"matchLabels": {"a": "b"}}, "state": "Accepted"})
    accepted, _ = claims.accepted_of_binding("c", binding, "p", export)
    by_resource = {c.resource: c for c in accepted}
    assert by_resource["configmaps"].allowed_verbs == {"get", "list", "watch"}
    assert by_resource["secrets"].allowed_verbs == {"get", "create"}
    assert by_resource["secrets"].selects({"a": "b"}) and not by_resource["secrets"].selects({"a": "c"})
    assert by_resource["configmaps"].label_key == kcp.claim_label_key("p", "e")
