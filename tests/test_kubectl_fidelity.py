"""kubectl habits beyond CRUD against the embedded shard: apply (client- and server-side),
printer columns, explain, api-resources, finalizers, owner cascade, namespace deletion."""

from __future__ import annotations

import json
from typing import Any

import httpx
import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

from test_kubectl import http, kubectl, table_rows  # noqa: F401  (fixtures)
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.shard import EmbeddedShard

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.dev
spec:
  group: example.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A widget of the example topology.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size: {type: integer, minimum: 1, default: 1, description: How big the widget is.}
              color: {type: string, enum: [red, green, blue], description: The widget's color.}
              tags: {type: array, items: {type: string}}
          status:
            type: object
            properties:
              ready: {type: boolean}
"""


def widget_yaml(name: str, size: int, color: str) -> str:
    return f"apiVersion: example.dev/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  size: {size}\n  color: {color}\n"


@pytest.fixture
def widgets(kubectl: Kubectl) -> Kubectl:
    kubectl.ok("apply", "-f", kubectl.write("crd.yaml", WIDGET_CRD))
    return kubectl


def test_client_side_apply_of_crd_then_custom_resource_and_reapply(widgets: Kubectl) -> None:
    path = widgets.write("w.yaml", widget_yaml("w1", 2, "red"))
    assert widgets.ok("apply", "-f", path).strip() == "widget.example.dev/w1 created"
    assert widgets.ok("apply", "-f", path).strip() == "widget.example.dev/w1 unchanged"
    widgets.write("w.yaml", widget_yaml("w1", 5, "blue"))
    assert widgets.ok("apply", "-f", path).strip() == "widget.example.dev/w1 configured"
    obj = widgets.json("get", "widget", "w1")
    assert obj["spec"] == {"size": 5, "color": "blue"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]


def test_client_side_apply_of_configmap_uses_strategic_merge(kubectl: Kubectl) -> None:
    path = kubectl.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  keep: a\n  drop: b\n")
    kubectl.ok("apply", "-f", path)
    kubectl.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  keep: changed\n")
    assert kubectl.ok("apply", "-f", path).strip() == "configmap/cfg configured"
    assert kubectl.json("get", "cm", "cfg")["data"] == {"keep": "changed"}
    kubectl.ok("patch", "cm", "cfg", "-p", '{"data":{"added":"x"}}')  # the default patch type: strategic
    assert kubectl.json("get", "cm", "cfg")["data"] == {"keep": "changed", "added": "x"}


def test_server_side_apply_conflict_then_force(widgets: Kubectl) -> None:
    path = widgets.write("w.yaml", widget_yaml("w2", 2, "red"))
    widgets.ok("apply", "--server-side", "-f", path)
    other = widgets.write("other.yaml", widget_yaml("w2", 3, "red"))
    conflict = widgets.run("apply", "--server-side", "--field-manager", "someone-else", "-f", other)
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower() and ".spec.size" in conflict.stderr and '"kubectl"' in conflict.stderr
    widgets.ok("apply", "--server-side", "--field-manager", "someone-else", "--force-conflicts", "-f", other)
    obj = widgets.json("get", "widget", "w2", "--show-managed-fields")
    assert obj["spec"]["size"] == 3
    owners = {m["manager"]: m for m in obj["metadata"]["managedFields"]}
    assert "f:size" in owners["someone-else"]["fieldsV1"]["f:spec"]
    assert "f:size" not in owners["kubectl"]["fieldsV1"].get("f:spec", {})


def test_get_shows_printer_columns_and_json(widgets: Kubectl) -> None:
    widgets.ok("apply", "-f", widgets.write("w.yaml", widget_yaml("w3", 4, "green")))
    rows = table_rows(widgets.ok("get", "widgets"))
    assert rows[0] == ["NAME", "SIZE", "COLOR", "AGE"]
    assert rows[1][:3] == ["w3", "4", "green"]
    assert table_rows(widgets.ok("get", "wd"))[1][0] == "w3"
    obj = widgets.json("get", "widget", "w3")
    assert obj["kind"] == "Widget" and obj["metadata"]["annotations"]["kcp.io/cluster"] == "abc"
    widgets.ok("create", "configmap", "shown", "--from-literal=a=b")
    cm_rows = table_rows(widgets.ok("get", "configmaps", "-A"))
    assert cm_rows[0] == ["NAMESPACE", "NAME", "DATA", "AGE"] and cm_rows[1][:3] == ["default", "shown", "1"]


def test_explain_builtin_and_custom_resource(widgets: Kubectl) -> None:
    out = widgets.ok("explain", "widget.spec.size")
    assert "How big the widget is." in out and "<integer>" in out
    out = widgets.ok("explain", "configmap.data")
    assert "Data contains the configuration data" in out


def test_api_resources_lists_builtins_kcp_kinds_and_crds(widgets: Kubectl) -> None:
    out = widgets.ok("api-resources")
    names = {row[0] for row in table_rows(out)[1:]}
    assert {"configmaps", "namespaces", "customresourcedefinitions", "apiexports", "logicalclusters", "workspaces", "widgets"} <= names


def test_schema_validation_defaults_and_pruning_through_kubectl(widgets: Kubectl) -> None:
    bad = widgets.run("apply", "-f", widgets.write("bad.yaml", widget_yaml("bad", 0, "purple")))
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr and "spec.color" in bad.stderr
    widgets.ok("apply", "-f", widgets.write("d.yaml", "apiVersion: example.dev/v1\nkind: Widget\nmetadata:\n  name: d\nspec:\n  color: red\n"))
    assert widgets.json("get", "widget", "d")["spec"] == {"color": "red", "size": 1}
    unknown = widgets.run("apply", "-f", widgets.write("u.yaml", widget_yaml("u", 1, "red") + "  extra: field\n"))
    assert unknown.returncode != 0 and 'unknown field "spec.extra"' in unknown.stderr


def test_delete_with_finalizer_waits_until_it_is_removed(kubectl: Kubectl) -> None:
    kubectl.ok("create", "-f", kubectl.write("f.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.dev/hold]\n"))
    out = kubectl.ok("delete", "cm", "held", "--wait=false")
    assert 'configmap "held" deleted' in out
    held = kubectl.json("get", "cm", "held")
    assert held["metadata"]["deletionTimestamp"]
    kubectl.ok("patch", "cm", "held", "--type", "merge", "-p", '{"metadata":{"finalizers":null}}')
    gone = kubectl.run("get", "cm", "held")
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_owner_reference_cascade(kubectl: Kubectl) -> None:
    kubectl.ok("create", "configmap", "owner")
    uid = kubectl.json("get", "cm", "owner")["metadata"]["uid"]
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}
    kubectl.ok("create", "-f", kubectl.write("child.json", json.dumps(child)))
    kubectl.ok("delete", "cm", "owner")
    assert kubectl.run("get", "cm", "child").returncode != 0
    kubectl.ok("create", "configmap", "owner2")
    uid2 = kubectl.json("get", "cm", "owner2")["metadata"]["uid"]
    child["metadata"] = {"name": "child2", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": uid2}]}
    kubectl.ok("create", "-f", kubectl.write("child2.json", json.dumps(child)))
    kubectl.ok("delete", "cm", "owner2", "--cascade=orphan")
    assert "ownerReferences" not in kubectl.json("get", "cm", "child2")["metadata"]


def test_namespace_deletion(kubectl: Kubectl) -> None:
    kubectl.ok("create", "namespace", "scratch")
    kubectl.ok("create", "configmap", "x", "-n", "scratch")
    kubectl.ok("create", "secret", "generic", "y", "-n", "scratch", "--from-literal=a=b")
    kubectl.ok("delete", "namespace", "scratch")
    assert kubectl.run("get", "namespace", "scratch").returncode != 0
    assert kubectl.ok("get", "cm,secret", "-n", "scratch", "-o", "name").strip() == ""


# -- the Python client -----------------------------------------------------------------------


@pytest.fixture
def py_client(shard: EmbeddedShard, http: httpx.Client, kubectl: Kubectl) -> kubernetes.client.ApiClient:
    resp = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", content=yaml.safe_dump(yaml.safe_load(WIDGET_CRD)), headers={"content-type": "application/yaml"})
    assert resp.status_code == 201, resp.text
    config = kubernetes.client.Configuration(host=shard.cluster_url("abc"))
    return kubernetes.client.ApiClient(config)


def test_python_client_custom_resource_validation_and_defaults(py_client: kubernetes.client.ApiClient) -> None:
    custom = kubernetes.client.CustomObjectsApi(py_client)
    created = custom.create_namespaced_custom_object("example.dev", "v1", "default", "widgets", {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "py"}, "spec": {"color": "blue"}})
    assert created["spec"] == {"color": "blue", "size": 1}
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object("example.dev", "v1", "default", "widgets", {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 0, "color": "pink", "tags": "not-a-list"}})
    assert rejected.value.status == 422
    status: dict[str, Any] = json.loads(rejected.value.body)
    assert status["reason"] == "Invalid"
    assert {c["field"] for c in status["details"]["causes"]} == {"spec.size", "spec.color", "spec.tags"}


def test_python_client_metadata_only_list_and_watch(py_client: kubernetes.client.ApiClient, http: httpx.Client) -> None:
    http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "meta", "labels": {"a": "b"}}, "data": {"big": "x" * 1000}})
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    base = py_client.configuration.host
    listed = py_client.rest_client.request("GET", f"{base}/api/v1/namespaces/default/configmaps", headers={"Accept": accept})
    data = json.loads(listed.read())
    assert listed.status == 200 and data["kind"] == "PartialObjectMetadataList"
    assert data["items"][0]["metadata"]["labels"] == {"a": "b"} and "data" not in data["items"][0]
    rv = data["metadata"]["resourceVersion"]
    http.patch("/api/v1/namespaces/default/configmaps/meta", content=b'{"metadata":{"labels":{"a":"c"}}}', headers={"content-type": "application/merge-patch+json"})
    resp = py_client.rest_client.request(
        "GET", f"{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5",
        headers={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"},
    )
    event = json.loads(resp.read().splitlines()[0])
    assert event["type"] == "MODIFIED" and event["object"]["kind"] == "PartialObjectMetadata"
    assert event["object"]["metadata"]["labels"] == {"a": "c"} and "data" not in event["object"]
