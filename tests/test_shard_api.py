"""The embedded shard through real HTTP on loopback: verbs, errors, lists, watches, CRDs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from vwproxy.testing.shard import EmbeddedShard

CM = "/api/v1/namespaces/default/configmaps"


def cm(name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data or {"k": "v"}}


def status_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert body["kind"] == "Status" and body["status"] == "Failure", body
    assert body["code"] == resp.status_code
    assert body["message"], "every error Status carries a message"
    return body


def watch_lines(client: httpx.Client, path: str, params: dict[str, str], count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Read `count` events from a watch (bounded by `timeout`)."""
    events: list[dict[str, Any]] = []
    with client.stream("GET", path, params={**params, "watch": "true"}, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line:
                events.append(orjson.loads(line))
                if len(events) >= count:
                    break
    return events


# -- CRUD and server-managed metadata ------------------------------------------------------


def test_create_get_update_delete(api: httpx.Client) -> None:
    created = api.post(CM, json=cm("one"))
    assert created.status_code == 201
    obj = created.json()
    md = obj["metadata"]
    assert md["namespace"] == "default" and md["uid"] and md["creationTimestamp"]
    assert md["annotations"]["kcp.io/cluster"] == "root"
    assert obj["apiVersion"] == "v1" and obj["kind"] == "ConfigMap"
    rv = int(md["resourceVersion"])

    got = api.get(f"{CM}/one").json()
    assert got == obj

    got["data"] = {"k": "changed"}
    updated = api.put(f"{CM}/one", json=got)
    assert updated.status_code == 200
    assert int(updated.json()["metadata"]["resourceVersion"]) > rv
    assert updated.json()["metadata"]["uid"] == md["uid"]

    stale = api.put(f"{CM}/one", json=got)  # still carries the old resourceVersion
    assert stale.status_code == 409
    assert status_of(stale)["reason"] == "Conflict"

    deleted = api.delete(f"{CM}/one")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "Success"
    missing = api.get(f"{CM}/one")
    assert missing.status_code == 404
    assert status_of(missing)["reason"] == "NotFound"
    assert status_of(missing)["details"] == {"name": "one", "kind": "configmaps"}


def test_client_cannot_set_cluster_annotation_or_server_fields(api: httpx.Client) -> None:
    body = cm("mine")
    body["metadata"].update({"annotations": {"kcp.io/cluster": "elsewhere"}, "uid": "x", "resourceVersion": "999999"})
    obj = api.post(CM, json=body).json()
    assert obj["metadata"]["annotations"]["kcp.io/cluster"] == "root"
    assert obj["metadata"]["uid"] != "x"
    assert obj["metadata"]["resourceVersion"] != "999999"


def test_generate_name(api: httpx.Client) -> None:
    body = cm("")
    body["metadata"] = {"generateName": "gen-"}
    obj = api.post(CM, json=body).json()
    assert obj["metadata"]["name"].startswith("gen-") and len(obj["metadata"]["name"]) == 9


def test_already_exists(api: httpx.Client) -> None:
    assert api.post(CM, json=cm("dup")).status_code == 201
    again = api.post(CM, json=cm("dup"))
    assert again.status_code == 409
    assert status_of(again)["reason"] == "AlreadyExists"


def test_resource_versions_are_increasing_decimal_integers(api: httpx.Client) -> None:
    rvs = [int(api.post(CM, json=cm(f"rv-{i}")).json()["metadata"]["resourceVersion"]) for i in range(5)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 5
    listed = api.get(CM).json()
    assert int(listed["metadata"]["resourceVersion"]) >= rvs[-1]


def test_no_op_update_keeps_resource_version(api: httpx.Client) -> None:
    obj = api.post(CM, json=cm("same")).json()
    again = api.put(f"{CM}/same", json=obj).json()
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_dry_run_writes_nothing(api: httpx.Client) -> None:
    resp = api.post(CM, params={"dryRun": "All"}, json=cm("dry"))
    assert resp.status_code == 201 and resp.json()["metadata"]["name"] == "dry"
    assert api.get(f"{CM}/dry").status_code == 404
    bad = api.post(CM, params={"dryRun": "Some"}, json=cm("dry"))
    assert bad.status_code == 422


def test_secret_string_data_and_base64_validation(api: httpx.Client) -> None:
    path = "/api/v1/namespaces/default/secrets"
    obj = api.post(path, json={"metadata": {"name": "s"}, "stringData": {"user": "admin"}}).json()
    assert obj["data"] == {"user": "YWRtaW4="} and obj["type"] == "Opaque" and "stringData" not in obj
    bad = api.post(path, json={"metadata": {"name": "t"}, "data": {"x": "not base64!"}})
    assert bad.status_code == 422
    assert status_of(bad)["details"]["causes"][0]["field"] == "data[x]"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "code", "reason"),
    [
        (b"{not json", "application/json", 400, "BadRequest"),
        (b"[1,2]", "application/json", 400, "BadRequest"),
        (b"", "application/json", 400, "BadRequest"),
        (b"\x00\x01", "application/x-custom", 415, "UnsupportedMediaType"),
        (b'{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"x"}}', "application/json", 400, "BadRequest"),
        (b'{"kind":"Secret","metadata":{"name":"x"}}', "application/json", 400, "BadRequest"),
        (b'{"metadata":{"name":"Bad_Name"}}', "application/json", 422, "Invalid"),
        (b'{"metadata":{}}', "application/json", 422, "Invalid"),
        (b'{"metadata":{"name":"x","labels":{"a b":"c"}}}', "application/json", 422, "Invalid"),
        (b'{"metadata":"nope"}', "application/json", 400, "BadRequest"),
    ],
)
def test_bad_bodies_get_status_errors(api: httpx.Client, body: bytes, content_type: str, code: int, reason: str) -> None:
    resp = api.post(CM, content=body, headers={"content-type": content_type})
    assert resp.status_code == code, resp.text
    assert status_of(resp)["reason"] == reason


def test_invalid_lists_every_cause(api: httpx.Client) -> None:
    resp = api.post(CM, json={"metadata": {"name": "UPPER", "labels": {"-bad": "ok", "k": "bad value"}}})
    causes = status_of(resp)["details"]["causes"]
    assert {c["field"] for c in causes} == {"metadata.name", "metadata.labels"}
    assert len(causes) == 3


def test_yaml_body_is_accepted(api: httpx.Client) -> None:
    resp = api.post(CM, content=b"metadata:\n  name: from-yaml\ndata:\n  a: b\n", headers={"content-type": "application/yaml"})
    assert resp.status_code == 201 and resp.json()["data"] == {"a": "b"}


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/clusters/root/api/v1/nonsense", 404),
        ("/clusters/root/apis/example.dev/v1/widgets", 404),
        ("/clusters/nowhere/api/v1/namespaces", 404),
        ("/clusters/Bad_Name/api/v1/namespaces", 404),
        ("/clusters/root/api/v1/namespaces/default/configmaps/x/y/z", 404),
        ("/clusters/root/api/v1/namespaces/default/configmaps/x/scale", 404),
        ("/clusters/root/api/v1/namespaces/default/namespaces", 404),
        ("/clusters/root/unknown", 404),
    ],
)
def test_bad_paths(base: httpx.Client, path: str, code: int) -> None:
    resp = base.get(path)
    assert resp.status_code == code
    status_of(resp)


def test_missing_logical_cluster_is_named(base: httpx.Client) -> None:
    body = status_of(base.get("/clusters/nowhere/api/v1/namespaces"))
    assert "nowhere" in body["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"labelSelector": "a in (b"},
        {"labelSelector": "!!"},
        {"fieldSelector": "metadata.name"},
        {"fieldSelector": "spec.foo=bar"},
        {"limit": "ten"},
        {"resourceVersion": "abc"},
        {"watch": "maybe"},
        {"continue": "garbage!!"},
    ],
)
def test_bad_queries_are_400(api: httpx.Client, params: dict[str, str]) -> None:
    resp = api.get(CM, params=params)
    assert resp.status_code == 400, resp.text
    assert status_of(resp)["reason"] == "BadRequest"


def test_unsupported_field_label_message(api: httpx.Client) -> None:
    assert status_of(api.get(CM, params={"fieldSelector": "spec.foo=bar"}))["message"] == "field label not supported: spec.foo"


@pytest.mark.parametrize(
    "params",
    [
        {"resourceVersionMatch": "NotOlderThan"},
        {"resourceVersion": "0", "resourceVersionMatch": "Exact"},
        {"resourceVersion": "1", "resourceVersionMatch": "Sometimes"},
        {"sendInitialEvents": "true"},
        {"watch": "true", "sendInitialEvents": "true"},
        {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"},
        {"watch": "true", "resourceVersionMatch": "NotOlderThan", "resourceVersion": "1"},
    ],
)
def test_invalid_list_options_are_422(api: httpx.Client, params: dict[str, str]) -> None:
    resp = api.get(CM, params=params)
    assert resp.status_code == 422, resp.text
    body = status_of(resp)
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "ListOptions"


def test_protobuf_body_without_decoder_is_415_not_500(api: httpx.Client) -> None:
    resp = api.post(CM, content=b"k8s\x00garbage", headers={"content-type": "application/vnd.kubernetes.protobuf"})
    assert resp.status_code in (400, 415)
    status_of(resp)


def test_wildcard_cluster_rules(base: httpx.Client) -> None:
    assert base.get("/clusters/*/api/v1/configmaps").status_code == 200
    assert base.get("/clusters/%2A/api/v1/configmaps").status_code == 200
    ns_scoped = base.get("/clusters/*/api/v1/namespaces/default/configmaps")
    assert ns_scoped.status_code == 400
    assert "cross-cluster LIST and WATCH are required to be cross-namespace" in status_of(ns_scoped)["message"]
    get = base.get("/clusters/*/api/v1/namespaces/default/configmaps/x")
    assert get.status_code == 405
    create = base.post("/clusters/*/api/v1/configmaps", json=cm("x"))
    assert create.status_code == 405
    assert status_of(create)["message"] == 'create is not supported on resources of kind "configmaps" in the `*` logical cluster'


def test_request_body_limit(api: httpx.Client) -> None:
    huge = cm("huge", data={"k": "x" * (3 * 1024 * 1024 + 10)})
    resp = api.post(CM, json=huge)
    assert resp.status_code == 413
    status_of(resp)


# -- patches and subresources ---------------------------------------------------------------


def test_merge_and_json_patch(api: httpx.Client) -> None:
    api.post(CM, json=cm("p", data={"a": "1"}))
    merged = api.patch(f"{CM}/p", content=b'{"data":{"b":"2","a":null}}', headers={"content-type": "application/merge-patch+json"})
    assert merged.status_code == 200 and merged.json()["data"] == {"b": "2"}
    jp = api.patch(f"{CM}/p", content=b'[{"op":"add","path":"/data/c","value":"3"}]', headers={"content-type": "application/json-patch+json"})
    assert jp.json()["data"] == {"b": "2", "c": "3"}
    failing = api.patch(f"{CM}/p", content=b'[{"op":"test","path":"/data/c","value":"4"}]', headers={"content-type": "application/json-patch+json"})
    assert failing.status_code == 422
    stale = api.patch(f"{CM}/p", content=b'{"metadata":{"resourceVersion":"1"}}', headers={"content-type": "application/merge-patch+json"})
    assert stale.status_code == 409
    missing = api.patch(f"{CM}/nope", content=b"{}", headers={"content-type": "application/merge-patch+json"})
    assert missing.status_code == 404


def test_strategic_merge_on_custom_resource_is_415(shard: EmbeddedShard, api: httpx.Client) -> None:
    _install_widgets(api)
    api.post("/apis/example.dev/v1/namespaces/default/widgets", json=widget("w"))
    resp = api.patch("/apis/example.dev/v1/namespaces/default/widgets/w", content=b"{}", headers={"content-type": "application/strategic-merge-patch+json"})
    assert resp.status_code == 415
    status_of(resp)


def widget(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec or {"size": 1}}


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
             "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
            {"name": "v1beta1", "served": True, "storage": False,
             "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
            {"name": "v1alpha1", "served": False, "storage": False,
             "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
        ],
    },
}


def _install_widgets(client: httpx.Client) -> dict[str, Any]:
    resp = client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=WIDGET_CRD)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_crd_serves_its_resource_with_status_and_generation(api: httpx.Client) -> None:
    crd = _install_widgets(api)
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {"NamesAccepted": "True", "Established": "True"}
    path = "/apis/example.dev/v1/namespaces/default/widgets"
    created = api.post(path, json={**widget("w1"), "status": {"ready": True}}).json()
    assert created["metadata"]["generation"] == 1
    assert "status" not in created, "status is set only through /status"

    status = api.put(f"{path}/w1/status", json={**created, "spec": {"size": 99}, "status": {"ready": True}}).json()
    assert status["status"] == {"ready": True} and status["spec"] == {"size": 1}
    assert status["metadata"]["generation"] == 1

    main = api.put(f"{path}/w1", json={**status, "spec": {"size": 2}, "status": {"ready": False}}).json()
    assert main["spec"] == {"size": 2} and main["status"] == {"ready": True}
    assert main["metadata"]["generation"] == 2

    labels_only = api.patch(f"{path}/w1", content=b'{"metadata":{"labels":{"a":"b"}}}', headers={"content-type": "application/merge-patch+json"}).json()
    assert labels_only["metadata"]["generation"] == 2

    other_version = api.get(f"/apis/example.dev/v1beta1/namespaces/default/widgets/w1").json()
    assert other_version["apiVersion"] == "example.dev/v1beta1" and other_version["spec"] == {"size": 2}
    assert api.get("/apis/example.dev/v1alpha1/namespaces/default/widgets").status_code == 404

    resources = api.get("/apis/example.dev/v1").json()["resources"]
    assert [r["name"] for r in resources] == ["widgets", "widgets/status"]
    assert resources[0]["shortNames"] == ["wd"] and resources[0]["namespaced"] is True
    assert api.get("/apis/example.dev").json()["preferredVersion"]["version"] == "v1"


def _gadget_crd(maximum: int) -> dict[str, Any]:
    port = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer", "maximum": maximum}}}
    spec = {"type": "object", "properties": {
        "size": {"type": "integer", "maximum": maximum},
        "color": {"type": "string"},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": port},
        "sizes": {"type": "array", "items": {"type": "integer", "maximum": maximum}},
    }}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gadgets.example.dev"},
        "spec": {"group": "example.dev", "scope": "Namespaced", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}}}]},
    }


def test_an_update_keeps_what_it_did_not_change_valid_as_kube_ratchets(api: httpx.Client) -> None:
    """The schema tightened (maximum 5 to 2) after the object was written. kube-apiserver ratchets
    validation: a problem with a value the update did not change is tolerated; a changed value is
    checked. Map members correlate by name, items of a list of type map by their keys, other
    lists only as a whole; `true` is not taken for the `1` it equals in Python."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    assert api.post(crds, json=_gadget_crd(5)).status_code == 201
    path = "/apis/example.dev/v1/namespaces/default/gadgets"
    spec = {"size": 3, "color": "red", "ports": [{"name": "a", "port": 3}, {"name": "b", "port": 1}], "sizes": [3, 1]}
    gadget = {"apiVersion": "example.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": spec}
    assert api.post(path, json=gadget).status_code == 201, "valid when written"
    crd = api.get(f"{crds}/gadgets.example.dev").json()
    tightened = _gadget_crd(2)
    tightened["metadata"]["resourceVersion"] = crd["metadata"]["resourceVersion"]
    assert api.put(f"{crds}/gadgets.example.dev", json=tightened).status_code == 200

    def patch(body: bytes) -> httpx.Response:
        return api.patch(f"{path}/g", content=body, headers={"content-type": "application/merge-patch+json"})

    labelled = patch(b'{"metadata":{"labels":{"a":"b"}}}')
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["spec"] == spec and labelled.json()["metadata"]["labels"] == {"a": "b"}
    recolored = patch(b'{"spec":{"color":"blue"}}')
    assert recolored.status_code == 200, ("size, ports and sizes did not change", recolored.text)

    grown = patch(b'{"spec":{"size":4}}')
    assert grown.status_code == 422, grown.text
    assert [c["field"] for c in grown.json()["details"]["causes"]] == ["spec.size"], "only the changed value is held against the schema"

    # A list of type map: port a (still 3) is matched by its name even when it moves.
    reordered = patch(b'{"spec":{"ports":[{"name":"c","port":2},{"name":"b","port":1},{"name":"a","port":3}]}}')
    assert reordered.status_code == 200, reordered.text
    raised = patch(b'{"spec":{"ports":[{"name":"c","port":2},{"name":"b","port":4},{"name":"a","port":3}]}}')
    assert raised.status_code == 422 and [c["field"] for c in raised.json()["details"]["causes"]] == ["spec.ports[1].port"], raised.text
    # Any other list only as a whole: one item changed, every item checked.
    assert patch(b'{"spec":{"sizes":[3,2]}}').status_code == 422
    assert patch(b'{"spec":{"sizes":[1,2]}}').status_code == 200

    assert patch(b'{"spec":{"size":1}}').status_code == 200
    assert patch(b'{"spec":{"size":true}}').status_code == 422  # True == 1 in Python


def test_crd_deletion_removes_its_objects(api: httpx.Client) -> None:
    _install_widgets(api)
    api.post("/apis/example.dev/v1/namespaces/default/widgets", json=widget("w"))
    assert api.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev").status_code == 200
    assert api.get("/apis/example.dev/v1/namespaces/default/widgets").status_code == 404
    _install_widgets(api)
    assert api.get("/apis/example.dev/v1/namespaces/default/widgets").json()["items"] == []


def test_crd_is_per_logical_cluster(shard: EmbeddedShard, api: httpx.Client) -> None:
    _install_widgets(api)
    other = shard.create_logical_cluster("other")
    with httpx.Client(base_url=other, timeout=10) as client:
        assert client.get("/apis/example.dev/v1/namespaces/default/widgets").status_code == 404
        assert "example.dev" not in [g["name"] for g in client.get("/apis").json()["groups"]]


def test_invalid_crd(api: httpx.Client) -> None:
    bad = {**WIDGET_CRD, "metadata": {"name": "wrong.name"}}
    resp = api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=bad)
    assert resp.status_code == 422
    assert any(c["field"] == "metadata.name" for c in status_of(resp)["details"]["causes"])


def test_namespace_status_subresource(api: httpx.Client) -> None:
    ns = api.get("/api/v1/namespaces/default/status").json()
    assert ns["kind"] == "Namespace" and ns["status"]["phase"] == "Active"


# -- finalizers and namespaces --------------------------------------------------------------


def test_finalizer_keeps_object_until_removed(api: httpx.Client) -> None:
    body = cm("fin")
    body["metadata"]["finalizers"] = ["example.dev/hold"]
    api.post(CM, json=body)
    resp = api.delete(f"{CM}/fin")
    assert resp.status_code == 200, "kube-apiserver answers 200 with the marked object (202 only for orphanDependents: false)"
    assert resp.json()["metadata"]["deletionTimestamp"]
    held = api.get(f"{CM}/fin").json()
    assert held["metadata"]["deletionTimestamp"]
    add = api.patch(f"{CM}/fin", content=b'{"metadata":{"finalizers":["example.dev/hold","x.dev/more"]}}', headers={"content-type": "application/merge-patch+json"})
    assert add.status_code == 422
    released = api.patch(f"{CM}/fin", content=b'{"metadata":{"finalizers":null}}', headers={"content-type": "application/merge-patch+json"})
    assert released.status_code == 200
    assert api.get(f"{CM}/fin").status_code == 404


def test_delete_preconditions(api: httpx.Client) -> None:
    obj = api.post(CM, json=cm("pre")).json()
    wrong = api.request("DELETE", f"{CM}/pre", json={"preconditions": {"uid": "nope"}})
    assert wrong.status_code == 409
    stale = api.request("DELETE", f"{CM}/pre", json={"preconditions": {"resourceVersion": "1"}})
    assert stale.status_code == 409
    ok = api.request("DELETE", f"{CM}/pre", json={"preconditions": {"uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"]}})
    assert ok.status_code == 200


def test_namespace_deletion_removes_content(api: httpx.Client) -> None:
    api.post("/api/v1/namespaces", json={"metadata": {"name": "doomed"}})
    for i in range(3):
        api.post("/api/v1/namespaces/doomed/configmaps", json=cm(f"c{i}"))
    held = {**cm("held"), "metadata": {"name": "held", "finalizers": ["example.dev/x"]}}
    api.post("/api/v1/namespaces/doomed/configmaps", json=held)
    resp = api.delete("/api/v1/namespaces/doomed")
    assert resp.status_code == 200
    ns = api.get("/api/v1/namespaces/doomed").json()
    assert ns["status"]["phase"] == "Terminating"
    assert [o["metadata"]["name"] for o in api.get("/api/v1/namespaces/doomed/configmaps").json()["items"]] == ["held"]
    blocked = api.post("/api/v1/namespaces/doomed/configmaps", json=cm("new"))
    assert blocked.status_code == 403
    api.patch("/api/v1/namespaces/doomed/configmaps/held", content=b'{"metadata":{"finalizers":[]}}', headers={"content-type": "application/merge-patch+json"})
    assert api.get("/api/v1/namespaces/doomed").status_code == 404


def test_create_in_missing_namespace(api: httpx.Client) -> None:
    resp = api.post("/api/v1/namespaces/ghost/configmaps", json=cm("x"))
    assert resp.status_code == 404
    assert status_of(resp)["message"] == 'namespaces "ghost" not found'


def test_deletecollection_with_selector(api: httpx.Client) -> None:
    for i in range(4):
        api.post(CM, json=cm(f"dc{i}", labels={"parity": "even" if i % 2 == 0 else "odd"}))
    resp = api.delete(CM, params={"labelSelector": "parity=even"})
    assert resp.status_code == 200
    assert sorted(o["metadata"]["name"] for o in resp.json()["items"]) == ["dc0", "dc2"]
    assert sorted(o["metadata"]["name"] for o in api.get(CM).json()["items"]) == ["dc1", "dc3"]


# -- logical clusters ----------------------------------------------------------------------


def test_logical_clusters_are_isolated_and_wildcard_sees_all(shard: EmbeddedShard, base: httpx.Client) -> None:
    for name in ("alpha", "beta"):
        created = base.post(f"/clusters/{name}/apis/core.kcp.io/v1alpha1/logicalclusters", json={"metadata": {"name": "cluster"}})
        assert created.status_code == 201, created.text
        base.post(f"/clusters/{name}{CM}", json=cm("same-name", data={"who": name}))
    assert base.get(f"/clusters/alpha{CM}/same-name").json()["data"] == {"who": "alpha"}
    assert base.get(f"/clusters/beta{CM}/same-name").json()["data"] == {"who": "beta"}
    items = base.get("/clusters/*/api/v1/configmaps").json()["items"]
    assert [(o["metadata"]["annotations"]["kcp.io/cluster"], o["data"]["who"]) for o in items] == [("alpha", "alpha"), ("beta", "beta")]
    bad = base.post("/clusters/gamma/apis/core.kcp.io/v1alpha1/logicalclusters", json={"metadata": {"name": "not-cluster"}})
    assert bad.status_code == 422


def test_deleting_logical_cluster_purges_it(base: httpx.Client) -> None:
    base.post("/clusters/gone/apis/core.kcp.io/v1alpha1/logicalclusters", json={"metadata": {"name": "cluster"}})
    base.post(f"/clusters/gone{CM}", json=cm("x"))
    assert base.delete("/clusters/gone/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").status_code == 200
    assert base.get(f"/clusters/gone{CM}").status_code == 404
    assert all(o["metadata"]["annotations"]["kcp.io/cluster"] != "gone" for o in base.get("/clusters/*/api/v1/configmaps").json()["items"])


# -- lists ---------------------------------------------------------------------------------


def _seed(api: httpx.Client, count: int, prefix: str = "item") -> None:
    for i in range(count):
        assert api.post(CM, json=cm(f"{prefix}-{i:03d}", labels={"n": str(i), "group": "a" if i < count // 2 else "b"})).status_code == 201


def test_label_and_field_selectors(api: httpx.Client) -> None:
    _seed(api, 6)

    def names(**params: str) -> list[str]:
        resp = api.get(CM, params=params)
        assert resp.status_code == 200, resp.text
        return [o["metadata"]["name"] for o in resp.json()["items"]]

    assert names(labelSelector="group=a") == ["item-000", "item-001", "item-002"]
    assert names(labelSelector="group!=a") == ["item-003", "item-004", "item-005"]
    assert names(labelSelector="n in (1,4)") == ["item-001", "item-004"]
    assert names(labelSelector="n notin (0,1,2,3,4)") == ["item-005"]
    assert names(labelSelector="n>3") == ["item-004", "item-005"]
    assert names(labelSelector="missing") == []
    assert len(names(labelSelector="!missing")) == 6
    assert names(fieldSelector="metadata.name=item-002") == ["item-002"]
    assert names(fieldSelector="metadata.name!=item-002,metadata.namespace=default", labelSelector="group=a") == ["item-000", "item-001"]


def test_all_namespaces_list(api: httpx.Client) -> None:
    api.post("/api/v1/namespaces", json={"metadata": {"name": "second"}})
    api.post("/api/v1/namespaces/second/configmaps", json=cm("x"))
    api.post(CM, json=cm("x"))
    items = api.get("/api/v1/configmaps").json()["items"]
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items] == [("default", "x"), ("second", "x")]


def test_paging_is_a_consistent_snapshot(api: httpx.Client) -> None:
    _seed(api, 25)
    first = api.get(CM, params={"limit": "10"}).json()
    assert len(first["items"]) == 10 and first["metadata"]["remainingItemCount"] == 15
    rv = first["metadata"]["resourceVersion"]
    api.post(CM, json=cm("item-000a"))  # created between pages: not part of this list
    api.delete(f"{CM}/item-020")  # deleted between pages: still part of this list
    names = [o["metadata"]["name"] for o in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = api.get(CM, params={"limit": "10", "continue": token}).json()
        assert page["metadata"]["resourceVersion"] == rv
        names += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue", "")
    assert names == [f"item-{i:03d}" for i in range(25)]


def test_continue_with_resource_version_is_rejected(api: httpx.Client) -> None:
    _seed(api, 3)
    token = api.get(CM, params={"limit": "1"}).json()["metadata"]["continue"]
    resp = api.get(CM, params={"limit": "1", "continue": token, "resourceVersion": "5"})
    assert resp.status_code == 400
    assert status_of(resp)["message"] == "specifying resource version is not allowed when using continue"


def test_expired_continue_token_is_410_with_inconsistent_continuation(shard: EmbeddedShard, api: httpx.Client) -> None:
    _seed(api, 5)
    token = api.get(CM, params={"limit": "2"}).json()["metadata"]["continue"]
    shard.server.call(shard.shard.forget_snapshots)  # what the TTL does after five minutes
    resp = api.get(CM, params={"limit": "2", "continue": token})
    assert resp.status_code == 410
    body = status_of(resp)
    assert body["reason"] == "Expired" and body["message"].startswith("The provided continue parameter is too old")
    rest = api.get(CM, params={"continue": body["metadata"]["continue"]}).json()
    assert [o["metadata"]["name"] for o in rest["items"]] == ["item-002", "item-003", "item-004"]


def test_resource_version_semantics(api: httpx.Client) -> None:
    api.post(CM, json=cm("v", data={"gen": "1"}))
    then = api.get(CM).json()["metadata"]["resourceVersion"]
    api.put(f"{CM}/v", json=cm("v", data={"gen": "2"}))
    api.post(CM, json=cm("w"))
    exact = api.get(CM, params={"resourceVersion": then, "resourceVersionMatch": "Exact"}).json()
    assert exact["metadata"]["resourceVersion"] == then
    assert [(o["metadata"]["name"], o["data"]) for o in exact["items"]] == [("v", {"gen": "1"})]
    newer = api.get(CM, params={"resourceVersion": then, "resourceVersionMatch": "NotOlderThan"}).json()
    assert [o["metadata"]["name"] for o in newer["items"]] == ["v", "w"]
    assert api.get(CM, params={"resourceVersion": "0"}).status_code == 200
    future = api.get(CM, params={"resourceVersion": str(int(then) + 1000)})
    assert future.status_code == 504
    assert status_of(future)["reason"] == "Timeout"


def test_exact_list_older_than_history_is_410(shard: EmbeddedShard, tmp_path: Any) -> None:
    with EmbeddedShard(tmp_path / "small", history_size=2) as small, httpx.Client(base_url=small.cluster_url("root")) as client:
        first = client.post(CM, json=cm("a")).json()["metadata"]["resourceVersion"]
        for i in range(4):
            client.post(CM, json=cm(f"b{i}"))
        resp = client.get(CM, params={"resourceVersion": first, "resourceVersionMatch": "Exact"})
        assert resp.status_code == 410
        assert status_of(resp)["reason"] == "Expired"


def test_large_list_streams_valid_json(api: httpx.Client) -> None:
    for i in range(2100):  # above the chunk size
        api.post(CM, json=cm(f"bulk-{i:05d}"))
    body = api.get(CM).json()
    assert len(body["items"]) == 2100
    assert body["items"][-1]["metadata"]["name"] == "bulk-02099"


# -- watches ------------------------------------------------------------------------------


def _later(fn: Any, delay: float = 0.3) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), fn()))
    thread.start()
    return thread


def test_watch_from_resource_version_sees_changes_in_order(api: httpx.Client, shard: EmbeddedShard) -> None:
    rv = api.get(CM).json()["metadata"]["resourceVersion"]
    api.post(CM, json=cm("w1"))
    obj = api.post(CM, json=cm("w2")).json()
    api.put(f"{CM}/w2", json={**obj, "data": {"x": "y"}})
    api.delete(f"{CM}/w1")
    events = watch_lines(api, CM, {"resourceVersion": rv}, 4)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w1"), ("ADDED", "w2"), ("MODIFIED", "w2"), ("DELETED", "w1")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4
    assert all(e["object"]["metadata"]["annotations"]["kcp.io/cluster"] == "root" for e in events)


def test_watch_live_and_wildcard(shard: EmbeddedShard, base: httpx.Client) -> None:
    rv = base.get("/clusters/*/api/v1/configmaps").json()["metadata"]["resourceVersion"]
    shard.create_logical_cluster("live")
    writer = _later(lambda: base.post(f"/clusters/live{CM}", json=cm("hello")))
    events = watch_lines(base, "/clusters/*/api/v1/configmaps", {"resourceVersion": rv}, 1)
    writer.join()
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["metadata"]["annotations"]["kcp.io/cluster"] == "live"


def test_watch_without_resource_version_starts_with_state(api: httpx.Client) -> None:
    api.post(CM, json=cm("existing"))
    events = watch_lines(api, CM, {}, 1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "existing"


def test_watch_list_sends_initial_events_then_bookmark(api: httpx.Client) -> None:
    _seed(api, 3)
    params = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true"}
    events = watch_lines(api, CM, params, 4)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    bookmark = events[3]["object"]
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bookmark["kind"] == "ConfigMap" and bookmark["apiVersion"] == "v1"
    assert int(bookmark["metadata"]["resourceVersion"]) >= max(int(e["object"]["metadata"]["resourceVersion"]) for e in events[:3])


def test_watch_list_of_empty_set_still_sends_bookmark(api: httpx.Client) -> None:
    params = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true", "labelSelector": "none=here"}
    events = watch_lines(api, CM, params, 1)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


def test_periodic_bookmarks(api: httpx.Client) -> None:
    rv = api.get(CM).json()["metadata"]["resourceVersion"]
    events = watch_lines(api, CM, {"resourceVersion": rv, "allowWatchBookmarks": "true"}, 2)
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_watch_too_old_is_in_stream_410(tmp_path: Any) -> None:
    with EmbeddedShard(tmp_path / "small", history_size=2) as small, httpx.Client(base_url=small.cluster_url("root")) as client:
        first = client.post(CM, json=cm("a")).json()["metadata"]["resourceVersion"]
        for i in range(4):
            client.post(CM, json=cm(f"b{i}"))
        events = watch_lines(client, CM, {"resourceVersion": first}, 1)
        assert events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_watch_timeout_seconds_ends_stream(api: httpx.Client) -> None:
    start = time.monotonic()
    with api.stream("GET", CM, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": "0", "sendInitialEvents": "false", "resourceVersionMatch": "NotOlderThan"}, timeout=5) as resp:
        assert resp.status_code == 200
        assert [line for line in resp.iter_lines() if line] == []
    assert 0.9 <= time.monotonic() - start < 4


def test_selector_transitions_in_watch(api: httpx.Client) -> None:
    obj = api.post(CM, json=cm("t", labels={"color": "red"})).json()
    rv = obj["metadata"]["resourceVersion"]
    blue = api.put(f"{CM}/t", json={**obj, "metadata": {**obj["metadata"], "labels": {"color": "blue"}}}).json()
    api.put(f"{CM}/t", json={**blue, "metadata": {**blue["metadata"], "labels": {"color": "red"}}})
    events = watch_lines(api, CM, {"resourceVersion": rv, "labelSelector": "color=red"}, 2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
    assert events[0]["object"]["metadata"]["labels"] == {"color": "red"}, "a leaving object is shown as it was"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == int(blue["metadata"]["resourceVersion"])


def test_watch_single_object_and_legacy_path(api: httpx.Client) -> None:
    rv = api.get(CM).json()["metadata"]["resourceVersion"]
    api.post(CM, json=cm("other"))
    api.post(CM, json=cm("mine"))
    by_name = watch_lines(api, f"{CM}/mine", {"resourceVersion": rv}, 1)
    assert by_name[0]["object"]["metadata"]["name"] == "mine"
    legacy = watch_lines(api, "/api/v1/watch/namespaces/default/configmaps/mine", {"resourceVersion": rv}, 1)
    assert legacy[0]["object"]["metadata"]["name"] == "mine"


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1"])
def test_watch_flag_any_case(api: httpx.Client, value: str) -> None:
    api.post(CM, json=cm("flag"))
    with api.stream("GET", CM, params={"watch": value}, timeout=5) as resp:
        line = next(line for line in resp.iter_lines() if line)
    assert orjson.loads(line)["type"] == "ADDED"


def test_events_are_served_in_both_groups(api: httpx.Client) -> None:
    core = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "ConfigMap", "name": "x"}, "reason": "Tested", "message": "hello", "count": 2, "type": "Normal"}
    assert api.post("/api/v1/namespaces/default/events", json=core).status_code == 201
    new = api.get("/apis/events.k8s.io/v1/namespaces/default/events/e1").json()
    assert new["apiVersion"] == "events.k8s.io/v1"
    assert new["regarding"] == {"kind": "ConfigMap", "name": "x"} and new["note"] == "hello" and new["deprecatedCount"] == 2
    written = {"metadata": {"name": "e2"}, "regarding": {"kind": "Secret", "name": "y"}, "note": "hi", "reason": "R", "type": "Warning",
               "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "me", "reportingInstance": "me-1", "action": "Act"}
    assert api.post("/apis/events.k8s.io/v1/namespaces/default/events", json=written).status_code == 201
    old = api.get("/api/v1/namespaces/default/events/e2").json()
    assert old["involvedObject"] == {"kind": "Secret", "name": "y"} and old["message"] == "hi" and old["reportingComponent"] == "me"


# -- discovery ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/version", "/version/", "/api", "/api/", "/apis", "/apis/"])
def test_discovery_accepts_trailing_slashes(api: httpx.Client, path: str) -> None:
    assert api.get(path).status_code == 200


def test_discovery_documents(api: httpx.Client) -> None:
    assert api.get("/api").json()["versions"] == ["v1"]
    core = {r["name"]: r for r in api.get("/api/v1").json()["resources"]}
    assert core["configmaps"]["verbs"] == sorted(core["configmaps"]["verbs"]) and core["configmaps"]["shortNames"] == ["cm"]
    assert core["namespaces"]["namespaced"] is False and "namespaces/status" in core
    groups = {g["name"]: g for g in api.get("/apis").json()["groups"]}
    assert {"apis.kcp.io", "core.kcp.io", "tenancy.kcp.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "events.k8s.io"} <= set(groups)
    assert [v["version"] for v in groups["apis.kcp.io"]["versions"]] == ["v1alpha2", "v1alpha1"]
    kcp = {r["name"] for r in api.get("/apis/apis.kcp.io/v1alpha1").json()["resources"]}
    assert {"apiexports", "apiexportendpointslices", "apiresourceschemas", "apibindings"} <= kcp
    assert api.get("/apis/nope.dev").status_code == 404
    assert api.get("/version").json()["major"] == "1"


def test_openapi_v3(api: httpx.Client) -> None:
    index = api.get("/openapi/v3").json()["paths"]
    assert "api/v1" in index and "apis/apis.kcp.io/v1alpha1" in index
    url = index["api/v1"]["serverRelativeURL"]
    assert url.startswith("/clusters/root/openapi/v3/api/v1?hash=")
    doc = httpx.get(str(api.base_url.copy_with(raw_path=url.encode()))).json()
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    assert api.get("/openapi/v2").status_code == 404


def test_health(base: httpx.Client) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        assert base.get(path).text == "ok"


# -- persistence ---------------------------------------------------------------------------


def test_restart_keeps_objects_and_revision(tmp_path: Any) -> None:
    data = tmp_path / "persist"
    with EmbeddedShard(data) as first, httpx.Client(base_url=first.cluster_url("root")) as client:
        first.create_logical_cluster("kept")
        obj = client.post(CM, json=cm("durable", data={"a": "b"})).json()
    with EmbeddedShard(data) as second, httpx.Client(base_url=second.url) as client:
        again = client.get(f"/clusters/root{CM}/durable").json()
        assert again == obj
        assert client.get("/clusters/kept/api/v1/namespaces/default").status_code == 200
        newer = client.post(f"/clusters/root{CM}", json=cm("after")).json()
        assert int(newer["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])


@pytest.fixture
def many_watchers(api: httpx.Client) -> Iterator[None]:
    yield


def test_slow_watcher_is_cut_off_not_buffered_forever(shard: EmbeddedShard, api: httpx.Client) -> None:
    from vwproxy.core.watch import Watcher, begin_watch
    from vwproxy.kube.listoptions import parse_list_options

    info = shard.server.call(lambda: shard.shard.resolve("root", "", "v1", "configmaps"))
    opts = parse_list_options({"watch": "true", "resourceVersion": str(shard.shard.revision)})
    watcher = Watcher("root", "default", opts.labels, opts.fields, "v1", lambda o: o.raw)
    shard.server.call(lambda: begin_watch(shard.shard.reader(info), watcher, opts, ("v1", "ConfigMap")))
    watcher.limit = watcher._base_limit = 5
    for i in range(8):
        api.post(CM, json=cm(f"burst-{i}"))
    assert watcher.closed == "watcher fell behind"
    assert watcher.pending == 5


# -- garbage collection ------------------------------------------------------------------


def _owned(api: httpx.Client, name: str, owner: dict[str, Any], finalizers: list[str] | None = None) -> dict[str, Any]:
    body = cm(name)
    body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    if finalizers:
        body["metadata"]["finalizers"] = finalizers
    resp = api.post(CM, json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _names(api: httpx.Client) -> list[str]:
    return [o["metadata"]["name"] for o in api.get(CM).json()["items"]]


def test_background_deletion_collects_dependents_down_the_chain(api: httpx.Client) -> None:
    owner = api.post(CM, json=cm("owner")).json()
    child = _owned(api, "child", owner)
    _owned(api, "grandchild", child)
    api.post(CM, json=cm("bystander"))
    assert api.delete(f"{CM}/owner").status_code == 200
    assert _names(api) == ["bystander"]


def test_dependent_with_a_living_owner_stays(api: httpx.Client) -> None:
    first = api.post(CM, json=cm("first")).json()
    second = api.post(CM, json=cm("second")).json()
    body = cm("shared")
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]} for o in (first, second)
    ]
    api.post(CM, json=body)
    api.delete(f"{CM}/first")
    assert _names(api) == ["second", "shared"]
    api.delete(f"{CM}/second")
    assert _names(api) == []


def test_orphan_deletion_keeps_dependents_without_the_reference(api: httpx.Client) -> None:
    owner = api.post(CM, json=cm("owner")).json()
    _owned(api, "child", owner)
    resp = api.delete(f"{CM}/owner", params={"propagationPolicy": "Orphan"})
    assert resp.status_code == 200
    assert _names(api) == ["child"]
    assert "ownerReferences" not in api.get(f"{CM}/child").json()["metadata"]


def test_foreground_deletion_waits_for_dependents(api: httpx.Client) -> None:
    owner = api.post(CM, json=cm("owner")).json()
    _owned(api, "quick", owner)
    _owned(api, "held", owner, finalizers=["example.dev/hold"])
    resp = api.request("DELETE", f"{CM}/owner", json={"propagationPolicy": "Foreground"})
    assert resp.status_code == 200, "the owner stays (marked); kube-apiserver still answers 200"
    waiting = api.get(f"{CM}/owner").json()["metadata"]
    assert waiting["deletionTimestamp"] and "foregroundDeletion" in waiting["finalizers"]
    assert _names(api) == ["held", "owner"]
    api.patch(f"{CM}/held", content=b'{"metadata":{"finalizers":null}}', headers={"content-type": "application/merge-patch+json"})
    assert _names(api) == []


def test_unknown_propagation_policy(api: httpx.Client) -> None:
    api.post(CM, json=cm("x"))
    resp = api.delete(f"{CM}/x", params={"propagationPolicy": "Sideways"})
    assert resp.status_code == 400
    status_of(resp)


def test_field_selectors_beyond_metadata(api: httpx.Client) -> None:
    secrets = "/api/v1/namespaces/default/secrets"
    api.post(secrets, json={"metadata": {"name": "opaque"}})
    api.post(secrets, json={"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {}})
    tls = api.get(secrets, params={"fieldSelector": "type=kubernetes.io/tls"}).json()["items"]
    assert [o["metadata"]["name"] for o in tls] == ["tls"]
    events = "/api/v1/namespaces/default/events"
    for name, kind in (("e1", "Pod"), ("e2", "ConfigMap")):
        api.post(events, json={"metadata": {"name": name}, "involvedObject": {"kind": kind, "name": "x"}, "reason": "Seen", "type": "Normal"})
    found = api.get(events, params={"fieldSelector": "involvedObject.kind=ConfigMap,reason=Seen"}).json()["items"]
    assert [o["metadata"]["name"] for o in found] == ["e2"]
    newer = api.get("/apis/events.k8s.io/v1/namespaces/default/events", params={"fieldSelector": "regarding.kind=Pod"}).json()["items"]
    assert [o["metadata"]["name"] for o in newer] == ["e1"]
    bad = api.get(secrets, params={"fieldSelector": "data.x=y"})
    assert bad.status_code == 400 and status_of(bad)["message"] == "field label not supported: data.x"


def test_table_and_metadata_only_representations(api: httpx.Client) -> None:
    api.post(CM, json=cm("shown", data={"a": "1", "b": "2"}))
    table = api.get(CM, headers={"accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["shown", 2]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    one = api.get(f"{CM}/shown", headers={"accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert one["kind"] == "Table" and len(one["rows"]) == 1
    partial = api.get(CM, headers={"accept": "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"}).json()
    assert partial["kind"] == "PartialObjectMetadataList"
    assert partial["items"][0] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": api.get(f"{CM}/shown").json()["metadata"]}
    with api.stream("GET", CM, params={"watch": "true"}, headers={"accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}) as resp:
        event = orjson.loads(next(line for line in resp.iter_lines() if line))
    assert event["type"] == "ADDED" and event["object"]["kind"] == "PartialObjectMetadata" and "data" not in event["object"]
    refused = api.get(CM, headers={"accept": "application/vnd.kubernetes.protobuf"})
    assert refused.status_code == 406
    status_of(refused)


def test_crd_printer_columns(api: httpx.Client) -> None:
    crd = json_copy(WIDGET_CRD)
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    assert api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).status_code == 201
    path = "/apis/example.dev/v1/namespaces/default/widgets"
    created = api.post(path, json=widget("w", {"size": 7})).json()
    api.put(f"{path}/w/status", json={**created, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    table = api.get(path, headers={"accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Ready", "Age"]
    assert table["rows"][0]["cells"][:3] == ["w", 7, "True"]


def test_aggregated_discovery(api: httpx.Client) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    resp = api.get("/apis", headers={"accept": accept})
    assert resp.headers["content-type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    groups = {g["metadata"]["name"]: g for g in resp.json()["items"]}
    crds = groups["apiextensions.k8s.io"]["versions"][0]["resources"][0]
    assert crds["resource"] == "customresourcedefinitions" and crds["scope"] == "Cluster" and crds["subresources"][0]["subresource"] == "status"
    core = api.get("/api", headers={"accept": accept}).json()["items"]
    assert core[0]["metadata"]["name"] == "" and any(r["resource"] == "configmaps" for r in core[0]["versions"][0]["resources"])
    assert api.get("/apis").json()["kind"] == "APIGroupList"


def json_copy(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


def test_workspace_paths_resolve_to_logical_clusters(shard: EmbeddedShard, base: httpx.Client) -> None:
    shard.server.call(lambda: shard.shard.create_logical_cluster("abc123", path="root:team"))
    base.post(f"/clusters/abc123{CM}", json=cm("by-name"))
    by_path = base.get(f"/clusters/root:team{CM}/by-name")
    assert by_path.status_code == 200
    assert by_path.json()["metadata"]["annotations"]["kcp.io/cluster"] == "abc123"
    missing = base.get(f"/clusters/root:nobody{CM}")
    assert missing.status_code == 404 and "root:nobody" in status_of(missing)["message"]


def test_marking_for_deletion_bumps_the_generation(api: httpx.Client) -> None:
    """kube-apiserver's markAsDeleting increments metadata.generation with the deletionTimestamp."""
    _install_widgets(api)
    path = "/apis/example.dev/v1/namespaces/default/widgets"
    held = widget("held")
    held["metadata"]["finalizers"] = ["example.dev/hold"]
    assert api.post(path, json=held).json()["metadata"]["generation"] == 1
    marked = api.delete(f"{path}/held").json()
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
    again = api.delete(f"{path}/held").json()
    assert again["metadata"]["generation"] == 2, "only the first deletion marks"


def test_a_merge_patch_gives_its_manager_the_fields_it_changed(api: httpx.Client) -> None:
    """managedFields after a merge PATCH, as kube-apiserver keeps them: the patcher's Update entry
    owns exactly the fields the patch added or changed, and the creator keeps the rest."""
    assert api.post(CM, params={"fieldManager": "creator"}, json=cm("owned", labels={"a": "1"}, data={"k": "v"})).status_code == 201
    patched = api.patch(f"{CM}/owned", params={"fieldManager": "patcher"}, content=orjson.dumps({"metadata": {"labels": {"b": "2"}}, "data": {"k": "w"}}),
                        headers={"content-type": "application/merge-patch+json"})
    assert patched.status_code == 200, patched.text
    managers = {e["manager"]: e for e in patched.json()["metadata"]["managedFields"]}
    assert managers["patcher"]["operation"] == "Update"
    assert managers["patcher"]["fieldsV1"] == {"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:b": {}}}}
    creator = managers["creator"]["fieldsV1"]
    assert creator["f:metadata"]["f:labels"].get("f:a") == {} and "f:k" not in creator.get("f:data", {}), creator
