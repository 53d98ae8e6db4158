"""Permission claims in the control plane through the real front, as kcp fills them in: the
binding's claim status and conditions, and the claim labels on the consumer's objects following
acceptance, selectors, object changes, rejection, binding deletion and restarts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.control.claims import accepted_claims
from vwproxy.store.shard import Shard
from vwproxy.testing.proxy import RunningProxy
from support import eventually

pytestmark = pytest.mark.timeout(90)

KCP = "/apis/apis.kcp.io/v1alpha2"
KCP_V1 = "/apis/apis.kcp.io/v1alpha1"
CONSUMER = "/clusters/root:consumer-1"
CONFIGMAPS = f"{CONSUMER}/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}
PREFIX = "claimed.internal.apis.kcp.io/"
_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def b62sha224(data: bytes) -> str:
    number, out = int.from_bytes(hashlib.sha224(data).digest(), "big"), ""
    while number:
        number, rest = divmod(number, 62)
        out = _B62[rest] + out
    return out


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def claim_labels(front: httpx.Client, path: str) -> dict[str, str]:
    labels = front.get(path).json()["metadata"].get("labels") or {}
    return {k: v for k, v in labels.items() if k.startswith(PREFIX)}


def configmap(front: httpx.Client, name: str, **labels: str) -> None:
    resp = front.post(CONFIGMAPS, json={"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
    assert resp.status_code == 201, resp.text


def binding_of(front: httpx.Client) -> dict[str, Any]:
    got: dict[str, Any] = front.get(f"{CONSUMER}{KCP}/apibindings/tools").json()
    return got


def export_and_binding(front: httpx.Client, binding_claims: list[dict[str, Any]]) -> None:
    export = {"metadata": {"name": "tools"}, "spec": {"permissionClaims": [
        {"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch"]},
        {"group": "", "resource": "events", "verbs": ["*"]},
        {"group": "", "resource": "secrets", "verbs": ["*"]},
    ]}}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=export).status_code == 201
    binding = {"metadata": {"name": "tools"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "tools"}}, "permissionClaims": binding_claims}}
    assert front.post(f"{CONSUMER}{KCP}/apibindings", json=binding).status_code == 201


def set_claims(front: httpx.Client, binding_claims: list[dict[str, Any]]) -> None:
    resp = front.patch(f"{CONSUMER}{KCP}/apibindings/tools", json={"spec": {"permissionClaims": binding_claims}}, headers=MERGE)
    assert resp.status_code == 200, resp.text


CM = {"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch"]}
SECRETS = {"group": "", "resource": "secrets", "verbs": ["*"]}


def test_accepted_claims_label_matching_objects_and_follow_changes(proxy: RunningProxy, front: httpx.Client) -> None:
    provider = proxy.cluster_of("root:provider")
    key = PREFIX + b62sha224(f"{provider}:tools".encode())
    cm_value = b62sha224(b'{"resource":"configmaps","verbs":null}')
    configmap(front, "picked", app="x")
    configmap(front, "other", app="y")
    export_and_binding(front, [
        {**CM, "selector": {"matchLabels": {"app": "x"}}, "state": "Accepted"},
        {**SECRETS, "selector": {"matchAll": True}, "state": "Rejected"},
    ])
    eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/picked") == {key: cm_value}, "the matching configmap labelled")
    assert claim_labels(front, f"{CONFIGMAPS}/other") == {}, "a configmap the selector does not pick stays unlabelled"

    def applied() -> dict[str, Any] | None:
        found = binding_of(front)
        return found if conditions(found).get("PermissionClaimsApplied", {}).get("status") == "True" else None

    binding = eventually(applied, "claims applied")
    status = binding["status"]
    assert status["exportPermissionClaims"] == [
        {"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch"]},
        {"group": "", "resource": "events", "verbs": ["*"]},
        {"group": "", "resource": "secrets", "verbs": ["*"]},
    ]
    assert status["appliedPermissionClaims"] == [{**CM, "selector": {"matchLabels": {"app": "x"}}}]
    assert conditions(binding)["PermissionClaimsValid"]["status"] == "True"
    assert conditions(binding)["Ready"]["status"] == "True"
    labels = binding["metadata"]["labels"]
    assert labels["internal.apis.kcp.io/export"] == b62sha224(f"{provider}:tools".encode())
    assert labels[key] == "LstvmbbzVDDOn90ZbhzSQO5U3DMCf88h1pZ", "every binding carries its export's reflexive claim label"
    # what the virtual workspace asks: from the shard, and from the labeller's index
    control = proxy.app.control
    consumer = proxy.cluster_of("root:consumer-1")
    for found in (accepted_claims(control.store, provider, "tools"), control.claims.claims_of_export(provider, "tools")):
        assert list(found) == [consumer]
        (claim,) = found[consumer]
        assert (claim.resource, claim.allowed_verbs, claim.selector, claim.label_key, claim.label_value) == (
            "configmaps", {"get", "list", "watch"}, {"matchLabels": {"app": "x"}}, key, cm_value)

    # objects created and changed later follow the selector
    configmap(front, "later", app="x")
    eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/later") == {key: cm_value}, "a new matching configmap labelled")
    assert front.patch(f"{CONFIGMAPS}/picked", json={"metadata": {"labels": {"app": "z"}}}, headers=MERGE).status_code == 200
    eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/picked") == {}, "a configmap that stopped matching unlabelled")
    assert front.patch(f"{CONFIGMAPS}/other", json={"metadata": {"labels": {key: "forged"}}}, headers=MERGE).status_code == 200
    eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/other") == {}, "a hand-written claim label taken off")

    # a selector change relabels; events.k8s.io events share the core storage and label
    event = {"metadata": {"name": "e1"}, "regarding": {"kind": "ConfigMap", "name": "other"}, "reason": "R", "note": "n", "action": "A",
             "reportingController": "c", "reportingInstance": "i", "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal"}
    assert front.post(f"{CONSUMER}/apis/events.k8s.io/v1/namespaces/default/events", json=event).status_code == 201
    set_claims(front, [{**CM, "selector": {"matchAll": True}, "state": "Accepted"},
                       {"group": "", "resource": "events", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}])
    for name in ("picked", "other", "later"):
        eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/{name}") == {key: cm_value}, f"{name} labelled under matchAll")
    ev_value = b62sha224(b'{"resource":"events","verbs":null}')
    eventually(lambda: claim_labels(front, f"{CONSUMER}/apis/events.k8s.io/v1/namespaces/default/events/e1") == {key: ev_value}, "the event labelled")
    assert claim_labels(front, f"{CONSUMER}/api/v1/namespaces/default/events/e1") == {key: ev_value}

    # rejecting takes the labels off; a claim the export does not make is invalid, Ready stays
    set_claims(front, [{**CM, "selector": {"matchAll": True}, "state": "Rejected"},
                       {"group": "", "resource": "serviceaccounts", "verbs": ["get"], "selector": {"matchAll": True}, "state": "Accepted"}])
    for name in ("picked", "other", "later"):
        eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/{name}") == {}, f"{name} unlabelled after rejection")

    def invalid() -> dict[str, Any] | None:
        found = conditions(binding_of(front)).get("PermissionClaimsValid", {})
        return found if found.get("reason") == "InvalidPermissionClaims" else None

    assert "serviceaccounts" in eventually(invalid, "PermissionClaimsValid False")["message"]
    assert conditions(binding_of(front))["Ready"]["status"] == "True", "claims never make a binding un-Ready"
    assert "appliedPermissionClaims" not in binding_of(front)["status"]

    # verbs other than the export's: a warning
    set_claims(front, [{**CM, "verbs": ["get"], "selector": {"matchLabels": {"app": "y"}}, "state": "Accepted"}])
    eventually(lambda: conditions(binding_of(front)).get("PermissionClaimsValid", {}).get("reason") == "PermissionClaimsMismatch", "a mismatch warning")
    eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/other") == {key: cm_value}, "relabelled under the new selector")
    assert claim_labels(front, f"{CONFIGMAPS}/later") == {}

    # the binding going takes its labels with it
    assert front.delete(f"{CONSUMER}{KCP}/apibindings/tools").status_code == 200
    eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/other") == {}, "labels gone with the binding")


def test_v1alpha1_claims_through_the_front(front: httpx.Client) -> None:
    export = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "old-style"},
              "spec": {"permissionClaims": [{"group": "", "resource": "configmaps", "all": True}]}}
    assert front.post(f"/clusters/root:provider{KCP_V1}/apiexports", json=export).status_code == 201
    stored = front.get(f"/clusters/root:provider{KCP}/apiexports/old-style").json()
    assert stored["spec"]["permissionClaims"] == [{"resource": "configmaps", "verbs": ["*"]}]
    assert front.get(f"/clusters/root:provider{KCP_V1}/apiexports/old-style").json()["spec"]["permissionClaims"] == [{"resource": "configmaps", "all": True}]
    binding = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIBinding", "metadata": {"name": "old-style"}, "spec": {
        "reference": {"export": {"path": "root:provider", "name": "old-style"}}, "permissionClaims": [{"resource": "configmaps", "all": True, "state": "Accepted"}]}}
    assert front.post(f"{CONSUMER}{KCP_V1}/apibindings", json=binding).status_code == 201
    got = front.get(f"{CONSUMER}{KCP}/apibindings/old-style").json()
    assert got["spec"]["permissionClaims"] == [{"resource": "configmaps", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}]
    applied = eventually(lambda: front.get(f"{CONSUMER}{KCP_V1}/apibindings/old-style").json()["status"].get("appliedPermissionClaims"), "applied, read as v1alpha1")
    assert applied == [{"resource": "configmaps", "all": True}]


def test_claim_labels_converge_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RunningProxy(data) as first:
        assert first.settle()
        provider = first.cluster_of("root:provider")
        key = PREFIX + b62sha224(f"{provider}:tools".encode())
        with first.client(timeout=10) as front:
            configmap(front, "before", app="x")
            export_and_binding(front, [{**SECRETS, "selector": {"matchAll": True}, "state": "Accepted"}])
            secret = {"metadata": {"name": "s"}, "stringData": {"a": "b"}}
            assert front.post(f"{CONSUMER}/api/v1/namespaces/default/secrets", json=secret).status_code == 201
            eventually(lambda: key in claim_labels(front, f"{CONSUMER}/api/v1/namespaces/default/secrets/s"), "the secret labelled")
            set_claims(front, [{**SECRETS, "selector": {"matchAll": True}, "state": "Accepted"}, {**CM, "selector": {"matchAll": True}, "state": "Accepted"}])
            eventually(lambda: key in claim_labels(front, f"{CONFIGMAPS}/before"), "the configmap labelled")
    # the configmap claim rejected while nothing runs: its label is stale at the next start
    shard = Shard(data)
    try:
        consumer = shard.cluster_for_path("root:consumer-1")
        assert consumer is not None
        info = shard.resolve(consumer, "apis.kcp.io", "v1alpha2", "apibindings")
        stored = shard.get(info, consumer, "", "tools").decode()
        stored["spec"]["permissionClaims"][1]["state"] = "Rejected"
        shard.update(info, consumer, "", "tools", stored)
    finally:
        shard.close()
    with RunningProxy(data) as second:
        assert second.settle()
        with second.client(timeout=10) as front:
            assert key in claim_labels(front, f"{CONSUMER}/api/v1/namespaces/default/secrets/s")
            eventually(lambda: claim_labels(front, f"{CONFIGMAPS}/before") == {}, "the stale label taken off at start")
            assert front.post(f"{CONSUMER}/api/v1/namespaces/default/secrets", json={"metadata": {"name": "t"}}).status_code == 201
            eventually(lambda: key in claim_labels(front, f"{CONSUMER}/api/v1/namespaces/default/secrets/t"), "a secret created after the restart labelled")


def test_a_claim_on_another_exports_resource_labels_its_objects(proxy: RunningProxy, front: httpx.Client) -> None:
    """consumer-1 binds root:provider's widgets; a second export claims widgets by that identity."""
    provider = proxy.cluster_of("root:provider")
    identity = front.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"]
    claim = {"group": "example.dev", "resource": "widgets", "verbs": ["get", "list"], "identityHash": identity}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json={"metadata": {"name": "auditor"}, "spec": {"permissionClaims": [claim]}}).status_code == 201
    binding = {"metadata": {"name": "auditor"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "auditor"}},
               "permissionClaims": [{**claim, "selector": {"matchAll": True}, "state": "Accepted"}]}}
    assert front.post(f"{CONSUMER}{KCP}/apibindings", json=binding).status_code == 201
    key = PREFIX + b62sha224(f"{provider}:auditor".encode())
    value = b62sha224(b'{"group":"example.dev","resource":"widgets","verbs":null,"identityHash":"' + identity.encode() + b'"}')
    for name in ("red", "blue"):
        eventually(lambda: claim_labels(front, f"{CONSUMER}/apis/example.dev/v1alpha1/namespaces/default/widgets/{name}").get(key) == value, f"widget {name} labelled")
