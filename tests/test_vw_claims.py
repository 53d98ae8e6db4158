"""Permission claims through the APIExport virtual workspace (kcp-reference.md §7.1, §8; kcp's
e2e PermissionClaims, DefaultSelector, ClaimsVerbs, ClaimsSSA, ClaimsSelectors, BindingAuthorizer):
the provider claims configmaps and events; consumers accept or reject."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from support import eventually
from test_apiexport_vw import vw_url
from vwproxy.core.claims import ClaimRef, claim_label
from vwproxy.testing.proxy import RunningProxy

KCP = "/apis/apis.kcp.io/v1alpha2"
CM = "api/v1/configmaps"
NS_CM = "api/v1/namespaces/default/configmaps"
MERGE = {"content-type": "application/merge-patch+json"}
ALL_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


def claim_export(front: httpx.Client, claims: list[dict[str, Any]]) -> None:
    resp = front.patch(f"/clusters/root:provider{KCP}/apiexports/widgets", content=orjson.dumps({"spec": {"permissionClaims": claims}}), headers=MERGE)
    assert resp.status_code == 200, resp.text


def answer(front: httpx.Client, consumer: str, claims: list[dict[str, Any]]) -> None:
    resp = front.patch(f"/clusters/root:{consumer}{KCP}/apibindings/widgets", content=orjson.dumps({"spec": {"permissionClaims": claims}}), headers=MERGE)
    assert resp.status_code == 200, resp.text


def configmap(front: httpx.Client, consumer: str, name: str, labels: dict[str, str] | None = None) -> None:
    body = {"metadata": {"name": name, "labels": labels or {}}, "data": {"k": "v"}}
    assert front.post(f"/clusters/root:{consumer}/{NS_CM}", json=body).status_code == 201


def names(resp: httpx.Response) -> list[tuple[str, str]]:
    assert resp.status_code == 200, resp.text
    return sorted((i["metadata"]["annotations"]["kcp.io/cluster"], i["metadata"]["name"]) for i in resp.json()["items"])


@pytest.fixture
def claimed(proxy: RunningProxy, front: httpx.Client) -> str:
    claim_export(front, [{"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
                         {"group": "", "resource": "events", "verbs": ["*"]}])
    for consumer in ("consumer-1", "consumer-2"):
        configmap(front, consumer, "plain")
        configmap(front, consumer, "tagged", {"app": "x"})
    return vw_url(front)


def test_claimed_resources_are_discovered_before_acceptance_and_list_empty(proxy: RunningProxy, front: httpx.Client, claimed: str) -> None:
    v1 = front.get(f"{claimed}/clusters/*/api/v1").json()
    assert {r["name"] for r in v1["resources"]} == {"configmaps", "events"}
    assert front.get(f"{claimed}/clusters/*/api").json()["versions"] == ["v1"]
    assert "events.k8s.io" in {g["name"] for g in front.get(f"{claimed}/clusters/*/apis").json()["groups"]}, "a core events claim serves events.k8s.io too"
    assert names(front.get(f"{claimed}/clusters/*/{CM}")) == []
    c1 = proxy.cluster_of("root:consumer-1")
    denied = front.get(f"{claimed}/clusters/{c1}/{NS_CM}")
    assert denied.status_code == 403 and denied.json()["message"].endswith("access denied")


def test_accepted_claims_show_objects_rejected_vanish_removed_404(proxy: RunningProxy, front: httpx.Client, claimed: str) -> None:
    c1, c2 = proxy.cluster_of("root:consumer-1"), proxy.cluster_of("root:consumer-2")
    answer(front, "consumer-1", [{"group": "", "resource": "configmaps", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}])
    answer(front, "consumer-2", [{"group": "", "resource": "configmaps", "verbs": ["*"], "selector": {"matchLabels": {"app": "x"}}, "state": "Accepted"}])
    expected = [(c1, "kube-root-ca.crt"), (c1, "plain"), (c1, "tagged"), (c2, "tagged")]
    got = eventually(lambda: (lambda n: n if {x for x in n if x[1] in ("plain", "tagged")} == {(c1, "plain"), (c1, "tagged"), (c2, "tagged")} else None)(names(front.get(f"{claimed}/clusters/*/{CM}"))), "claimed configmaps labelled and visible")
    assert all(x[0] in (c1, c2) for x in got) and (c2, "plain") not in got, expected
    # Per cluster: objects outside the selector are 404 even by name.
    assert front.get(f"{claimed}/clusters/{c2}/{NS_CM}/tagged").status_code == 200
    assert front.get(f"{claimed}/clusters/{c2}/{NS_CM}/plain").status_code == 404
    # Rejected: the consumer's objects vanish and per-cluster requests are 403.
    answer(front, "consumer-2", [{"group": "", "resource": "configmaps", "verbs": ["*"], "selector": {"matchLabels": {"app": "x"}}, "state": "Rejected"}])
    eventually(lambda: all(c != c2 for c, _ in names(front.get(f"{claimed}/clusters/*/{CM}"))), "a rejected claim's objects vanish")
    assert front.get(f"{claimed}/clusters/{c2}/{NS_CM}/tagged").status_code == 403
    # Removed from the export: no longer served.
    claim_export(front, [{"group": "", "resource": "events", "verbs": ["*"]}])
    assert front.get(f"{claimed}/clusters/*/{CM}").status_code == 404
    assert front.get(f"{claimed}/clusters/{c1}/{NS_CM}/plain").status_code == 404


def test_claim_verbs_are_the_intersection_of_export_and_binding(proxy: RunningProxy, front: httpx.Client, claimed: str) -> None:
    c1 = proxy.cluster_of("root:consumer-1")
    answer(front, "consumer-1", [{"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch"], "selector": {"matchAll": True}, "state": "Accepted"}])
    eventually(lambda: front.get(f"{claimed}/clusters/{c1}/{NS_CM}/plain").status_code == 200, "readable once accepted")
    made = front.post(f"{claimed}/clusters/{c1}/{NS_CM}", json={"metadata": {"name": "by-provider"}})
    assert made.status_code == 403, "create is in the export's verbs but not the binding's"
    answer(front, "consumer-1", [{"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch", "create"], "selector": {"matchAll": True}, "state": "Accepted"}])
    made = front.post(f"{claimed}/clusters/{c1}/{NS_CM}", json={"metadata": {"name": "by-provider"}})
    assert made.status_code == 201, made.text
    assert made.json()["metadata"]["annotations"]["kcp.io/cluster"] == c1
    key, value = claim_label(proxy.cluster_of("root:provider"), "widgets", ClaimRef("", "configmaps"))
    assert made.json()["metadata"]["labels"][key] == value, "created through the VW: labelled, so it stays visible"
    assert front.delete(f"{claimed}/clusters/{c1}/api/v1/namespaces/default/configmaps").status_code == 403, "deletecollection is not in the binding's verbs"


def test_claim_selectors_on_writes(proxy: RunningProxy, front: httpx.Client, claimed: str) -> None:
    c2 = proxy.cluster_of("root:consumer-2")
    answer(front, "consumer-2", [{"group": "", "resource": "configmaps", "verbs": ["*"], "selector": {"matchLabels": {"app": "x"}}, "state": "Accepted"}])
    eventually(lambda: front.get(f"{claimed}/clusters/{c2}/{NS_CM}/tagged").status_code == 200, "tagged visible")
    base = f"{claimed}/clusters/{c2}/{NS_CM}"
    made = front.post(base, json={"metadata": {"name": "new"}})
    assert made.status_code == 201 and made.json()["metadata"]["labels"]["app"] == "x", "missing matchLabels are added"
    wrong = front.post(base, json={"metadata": {"name": "wrong", "labels": {"app": "y"}}})
    assert wrong.status_code == 403 and "protected label app must have value x" in wrong.json()["message"]
    dropped = front.patch(f"{base}/new", content=orjson.dumps({"metadata": {"labels": {"app": None}}}), headers=MERGE)
    assert dropped.status_code == 200 and dropped.json()["metadata"]["labels"]["app"] == "x", "dropping the label is a no-op"
    changed = front.patch(f"{base}/new", content=orjson.dumps({"metadata": {"labels": {"app": "z"}}}), headers=MERGE)
    assert changed.status_code == 403
    assert front.delete(f"{base}/plain").status_code in (403, 404), "a non-matching object cannot be deleted"
    assert front.get(f"/clusters/root:consumer-2/{NS_CM}/plain").status_code == 200
    gone = front.delete(base)
    assert gone.status_code == 200
    assert sorted(i["metadata"]["name"] for i in gone.json()["items"]) == ["new", "tagged"], "deletecollection only takes matching objects"
    assert front.get(f"/clusters/root:consumer-2/{NS_CM}/plain").status_code == 200


def test_events_claim_serves_both_event_groups(proxy: RunningProxy, front: httpx.Client, claimed: str) -> None:
    c1 = proxy.cluster_of("root:consumer-1")
    answer(front, "consumer-1", [{"group": "", "resource": "events", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}])
    event = {"metadata": {"name": "e1"}, "reason": "Reconciled", "note": "ok", "type": "Normal", "action": "Reconcile",
             "eventTime": "2026-12-06T00:00:00.000000Z", "reportingController": "p", "reportingInstance": "p-1",
             "regarding": {"kind": "ConfigMap", "name": "plain", "namespace": "default"}}
    made = eventually(lambda: (lambda r: r if r.status_code == 201 else None)(front.post(f"{claimed}/clusters/{c1}/apis/events.k8s.io/v1/namespaces/default/events", json=event)), "events.k8s.io create through the VW")
    assert made.json()["metadata"]["annotations"]["kcp.io/cluster"] == c1
    core = front.get(f"{claimed}/clusters/*/api/v1/events").json()["items"]
    assert [(e["metadata"]["name"], e["reason"]) for e in core] == [("e1", "Reconciled")], "the same event as core v1"


def test_a_forged_claim_label_in_a_workspace_that_did_not_accept_never_shows(proxy: RunningProxy, front: httpx.Client, claimed: str) -> None:
    c1, c3 = proxy.cluster_of("root:consumer-1"), proxy.cluster_of("root:consumer-3")
    answer(front, "consumer-1", [{"group": "", "resource": "configmaps", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}])
    eventually(lambda: front.get(f"{claimed}/clusters/{c1}/{NS_CM}/plain").status_code == 200, "consumer-1 engaged")
    key, value = claim_label(proxy.cluster_of("root:provider"), "widgets", ClaimRef("", "configmaps"))
    listed = front.get(f"{claimed}/clusters/*/{CM}").json()
    params = {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "2"}
    with front.stream("GET", f"{claimed}/clusters/*/{CM}", params=params) as stream:
        configmap(front, "consumer-3", "forged", {key: value})
        configmap(front, "consumer-1", "marker")
        seen = [orjson.loads(line)["object"]["metadata"] for line in stream.iter_lines() if line]
    assert [(m["annotations"]["kcp.io/cluster"], m["name"]) for m in seen if m["name"] in ("forged", "marker")] == [(c1, "marker")]
    assert all(m["annotations"]["kcp.io/cluster"] != c3 for m in seen)
    assert names(front.get(f"{claimed}/clusters/*/{CM}")) == sorted(names(front.get(f"{claimed}/clusters/*/{CM}")))
    assert front.get(f"{claimed}/clusters/{c3}/{NS_CM}/forged").status_code == 403


def test_a_claim_on_another_exports_resource_sees_only_that_identitys_data(proxy: RunningProxy, front: httpx.Client) -> None:
    schema = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIResourceSchema", "metadata": {"name": "v1.gadgets.other.dev"},
              "spec": {"group": "other.dev", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
                       "scope": "Namespaced", "versions": [{"name": "v1", "served": True, "storage": True,
                                                            "schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}]}}
    assert front.post("/clusters/root:rival/apis/apis.kcp.io/v1alpha1/apiresourceschemas", json=schema).status_code == 201
    export = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "gadgets"},
              "spec": {"resources": [{"group": "other.dev", "name": "gadgets", "schema": "v1.gadgets.other.dev", "storage": {"crd": {}}}]}}
    assert front.post(f"/clusters/root:rival{KCP}/apiexports", json=export).status_code == 201
    identity = eventually(lambda: front.get(f"/clusters/root:rival{KCP}/apiexports/gadgets").json().get("status", {}).get("identityHash"), "gadgets identity")
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "gadgets"},
               "spec": {"reference": {"export": {"path": "root:rival", "name": "gadgets"}}}}
    assert front.post(f"/clusters/root:consumer-1{KCP}/apibindings", json=binding).status_code == 201
    gadgets = "apis/other.dev/v1/namespaces/default/gadgets"
    made = eventually(lambda: (lambda r: r if r.status_code == 201 else None)(
        front.post(f"/clusters/root:consumer-1/{gadgets}", json={"apiVersion": "other.dev/v1", "kind": "Gadget", "metadata": {"name": "g1"}})), "a gadget in consumer-1")
    assert made.status_code == 201
    # consumer-2 has a local CRD of the same group/resource: another identity, never visible.
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gadgets.other.dev"},
           "spec": {"group": "other.dev", "scope": "Namespaced", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    assert front.post("/clusters/root:consumer-2/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).status_code == 201
    eventually(lambda: front.post(f"/clusters/root:consumer-2/{gadgets}", json={"apiVersion": "other.dev/v1", "kind": "Gadget", "metadata": {"name": "local"}}).status_code == 201, "a local gadget")
    claim = {"group": "other.dev", "resource": "gadgets", "identityHash": identity, "verbs": ["*"]}
    claim_export(front, [claim])
    for consumer in ("consumer-1", "consumer-2"):
        answer(front, consumer, [{**claim, "selector": {"matchAll": True}, "state": "Accepted"}])
    base = vw_url(front)
    assert {r["name"] for r in front.get(f"{base}/clusters/*/apis/other.dev/v1").json()["resources"]} == {"gadgets"}
    c1, c2 = proxy.cluster_of("root:consumer-1"), proxy.cluster_of("root:consumer-2")
    eventually(lambda: names(front.get(f"{base}/clusters/*/apis/other.dev/v1/gadgets")) == [(c1, "g1")], "only the claimed identity's gadgets")
    assert front.get(f"{base}/clusters/{c2}/{gadgets}/local").status_code == 403
