"""What a provider must never see through its APIExport virtual workspace: workspaces that hold
the same group/resource without being bound to THIS export's identity.

On the example topology, `root:provider` and `root:rival` both export widgets.example.dev (same
group, resource and export name, different identities). Each test builds one workspace that
looks like a consumer of the provider's export and is not: a local CRD of the same resource, a
binding refused for a naming conflict, a binding to the rival, bindings left on an identity the
export no longer has. Such a workspace is invisible in `/clusters/*` lists and watches, every
per-cluster request is a 403, and nothing is written into it.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import kubernetes
import orjson
import pytest
from kubernetes.client.rest import ApiException

from support import conditions, eventually
from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(60)

WIDGETS = "apis/example.dev/v1alpha1"
KCP = "/apis/apis.kcp.io/v1alpha2"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.dev"},
    "spec": {"group": "example.dev", "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def widget(name: str, size: int = 1) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name, "namespace": "default"}, "spec": {"size": size}}


def vw_url(front: httpx.Client, provider: str = "provider") -> str:
    slice_obj = front.get(f"/clusters/root:{provider}/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    return str(slice_obj["status"]["endpoints"][0]["url"])


def workspace(proxy: RunningProxy, front: httpx.Client, name: str) -> str:
    """A new Ready workspace under root; its logical cluster name."""
    assert front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": name}}).status_code == 201
    eventually(lambda: front.get(f"/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/{name}").json().get("status", {}).get("phase") == "Ready", f"workspace {name} Ready")
    return proxy.cluster_of(f"root:{name}")


def bind(proxy: RunningProxy, front: httpx.Client, ws: str, name: str, export_path: str) -> dict[str, Any]:
    """Create an APIBinding and let the control plane settle; the binding as it then is."""
    body = {"metadata": {"name": name}, "spec": {"reference": {"export": {"path": export_path, "name": "widgets"}}}}
    assert front.post(f"/clusters/root:{ws}{KCP}/apibindings", json=body).status_code == 201
    assert proxy.settle()
    return dict(front.get(f"/clusters/root:{ws}{KCP}/apibindings/{name}").json())


def in_workspace(front: httpx.Client, ws: str) -> dict[str, str]:
    """name → resourceVersion of the widgets the workspace itself holds."""
    items = front.get(f"/clusters/root:{ws}/{WIDGETS}/namespaces/default/widgets").json()["items"]
    return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}


def wildcard_clusters(front: httpx.Client, base: str) -> set[str]:
    items = front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()["items"]
    return {i["metadata"]["annotations"]["kcp.io/cluster"] for i in items}


def client_at(proxy: RunningProxy, url: str) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(proxy.api_client(url))


def assert_invisible(proxy: RunningProxy, front: httpx.Client, ws: str, cluster: str, base: str) -> None:
    """Not in the provider's `/clusters/*` list or watch; 403 for every verb per cluster; nothing written."""
    wildcard = client_at(proxy, f"{base}/clusters/*")
    listed = wildcard.list_cluster_custom_object("example.dev", "v1alpha1", "widgets")
    assert cluster not in {i["metadata"]["annotations"]["kcp.io/cluster"] for i in listed["items"]}
    assert {i["metadata"]["annotations"]["kcp.io/cluster"] for i in listed["items"]} == {proxy.cluster_of(f"root:consumer-{n}") for n in (1, 2, 3)}

    # a change in the workspace never reaches a wildcard watcher; a change in a consumer does
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        with proxy.client() as watcher, watcher.stream("GET", f"{base}/clusters/*/{WIDGETS}/widgets", params={"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "10"}, timeout=15) as resp:
            for line in resp.iter_lines():
                if line:
                    seen.append(orjson.loads(line))
                    if seen[-1]["object"]["metadata"]["name"] == "marker":
                        break
        done.set()

    thread = threading.Thread(target=watch)
    thread.start()
    assert front.post(f"/clusters/root:{ws}/{WIDGETS}/namespaces/default/widgets", json=widget("unseen")).status_code == 201
    assert front.post(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets", json=widget("marker")).status_code == 201
    assert done.wait(10), "the marker never arrived"
    thread.join()
    assert [e["object"]["metadata"]["name"] for e in seen] == ["marker"], [(e["type"], e["object"]["metadata"]) for e in seen]
    before = in_workspace(front, ws)

    per_cluster = client_at(proxy, f"{base}/clusters/{cluster}")
    name = sorted(before)[0]
    attempts = {
        "list": lambda: per_cluster.list_cluster_custom_object("example.dev", "v1alpha1", "widgets"),
        "get": lambda: per_cluster.get_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets", name),
        "create": lambda: per_cluster.create_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets", widget("planted")),
        "patch": lambda: per_cluster.patch_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets", name, {"spec": {"size": 99}}),
        "delete": lambda: per_cluster.delete_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets", name),
        "deletecollection": lambda: per_cluster.delete_collection_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets"),
    }
    for verb, attempt in attempts.items():
        with pytest.raises(ApiException) as denied:
            attempt()
        assert denied.value.status == 403, f"{verb}: {denied.value.status} {denied.value.body}"
        assert "access denied" in orjson.loads(denied.value.body)["message"], verb
    watched = front.get(f"{base}/clusters/{cluster}/{WIDGETS}/widgets", params={"watch": "true", "timeoutSeconds": "1"})
    assert watched.status_code == 403
    assert in_workspace(front, ws) == before, "nothing was written into the workspace"


def test_a_workspace_with_its_own_crd_of_the_resource_is_invisible(proxy: RunningProxy, front: httpx.Client) -> None:
    cluster = workspace(proxy, front, "local-crd")
    assert front.post("/clusters/root:local-crd/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD).status_code == 201
    eventually(lambda: front.post(f"/clusters/root:local-crd/{WIDGETS}/namespaces/default/widgets", json=widget("local")).status_code == 201, "the local CRD served")
    # Bound by the export's logical cluster name: the binding names the provider's export exactly.
    binding = bind(proxy, front, "local-crd", "widgets", proxy.cluster_of("root:provider"))
    assert conditions(binding)["Ready"] == "False"
    assert "already exists" in next(c["message"] for c in binding["status"]["conditions"] if c["type"] == "Ready")
    assert_invisible(proxy, front, "local-crd", cluster, vw_url(front))


def test_a_binding_refused_for_a_naming_conflict_is_invisible(proxy: RunningProxy, front: httpx.Client) -> None:
    cluster = workspace(proxy, front, "conflicted")
    assert conditions(bind(proxy, front, "conflicted", "rival-widgets", "root:rival"))["Ready"] == "True"
    assert front.post(f"/clusters/root:conflicted/{WIDGETS}/namespaces/default/widgets", json=widget("rivals-own")).status_code == 201
    refused = bind(proxy, front, "conflicted", "widgets", proxy.cluster_of("root:provider"))
    ready = next(c for c in refused["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "NamingConflicts"
    assert_invisible(proxy, front, "conflicted", cluster, vw_url(front))
    # the rival's own virtual workspace does see it
    assert cluster in wildcard_clusters(front, vw_url(front, "rival"))


def test_a_binding_to_another_identity_of_the_same_resource_is_invisible(proxy: RunningProxy, front: httpx.Client) -> None:
    # root:consumer-4 binds root:rival's widgets: same group, resource and export name as the provider's
    cluster = proxy.cluster_of("root:consumer-4")
    assert in_workspace(front, "consumer-4"), "the example gives consumer-4 widgets of its own"
    assert_invisible(proxy, front, "consumer-4", cluster, vw_url(front))
    assert wildcard_clusters(front, vw_url(front, "rival")) == {cluster}


def test_bindings_left_on_an_identity_the_export_no_longer_has_are_disengaged(proxy: RunningProxy, front: httpx.Client) -> None:
    """The provider re-creates its export with a new identity. A workspace whose two bindings still
    carry the old identity (each refuses to move while the other holds it) is not the provider's
    any more, though its bindings name the provider's export and its logical cluster."""
    cluster = workspace(proxy, front, "old-identity")
    for name in ("first", "second"):
        assert conditions(bind(proxy, front, "old-identity", name, "root:provider"))["Ready"] == "True"
    assert front.post(f"/clusters/root:old-identity/{WIDGETS}/namespaces/default/widgets", json=widget("kept")).status_code == 201
    base = vw_url(front)
    assert cluster in wildcard_clusters(front, base), "bound with the export's identity: engaged"

    export = front.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()
    old_identity = export["status"]["identityHash"]
    assert front.delete(f"/clusters/root:provider{KCP}/apiexports/widgets").status_code == 200
    assert front.delete("/clusters/root:provider/api/v1/namespaces/kcp-system/secrets/widgets").status_code == 200
    assert proxy.settle()
    again = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "widgets"}, "spec": export["spec"]}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=again).status_code == 201
    assert proxy.settle()
    new_identity = front.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"]
    assert new_identity != old_identity
    for name in ("first", "second"):
        stuck = front.get(f"/clusters/root:old-identity{KCP}/apibindings/{name}").json()
        assert stuck["status"]["apiExportClusterName"] == proxy.cluster_of("root:provider")
        assert [r["schema"]["identityHash"] for r in stuck["status"]["boundResources"]] == [old_identity]
    consumer_1 = front.get(f"/clusters/root:consumer-1{KCP}/apibindings/widgets").json()
    assert [r["schema"]["identityHash"] for r in consumer_1["status"]["boundResources"]] == [new_identity], "single bindings move to the new identity"

    assert_invisible(proxy, front, "old-identity", cluster, vw_url(front))
