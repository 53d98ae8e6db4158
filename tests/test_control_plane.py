"""The control plane through the real HTTP front: workspaces, exports, identities, endpoint
slices, bindings and workspace types as kcp objects, on the example topology."""

from __future__ import annotations

import hashlib
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.testing.proxy import RunningProxy
from support import conditions, eventually

KCP = "/apis/apis.kcp.io/v1alpha2"


def test_example_workspaces_exist_with_kcp_names(proxy: RunningProxy, front: httpx.Client) -> None:
    names = {}
    for ws in ("provider", "rival", "consumer-1", "consumer-2", "consumer-3", "consumer-4"):
        obj = front.get(f"/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/{ws}").json()
        cluster = obj["spec"]["cluster"]
        assert len(cluster) == 16 and cluster.isalnum() and cluster == cluster.lower()
        assert obj["status"]["phase"] == "Ready"
        assert obj["spec"]["URL"] == f"{proxy.url}/clusters/root:{ws}"
        lc = front.get(f"/clusters/{cluster}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json()
        assert lc["metadata"]["annotations"]["kcp.io/path"] == f"root:{ws}"
        assert lc["status"]["phase"] == "Ready" and lc["metadata"]["labels"]["tenancy.kcp.io/phase"] == "Ready"
        assert lc["spec"]["owner"]["name"] == ws and lc["spec"]["owner"]["cluster"] == "root"
        assert front.get(f"/clusters/root:{ws}/api/v1/namespaces/default").status_code == 200
        names[ws] = cluster
    assert len(set(names.values())) == 6


def test_export_identity_is_the_hash_of_its_secret(front: httpx.Client) -> None:
    hashes = []
    for ws in ("provider", "rival"):
        export = front.get(f"/clusters/root:{ws}{KCP}/apiexports/widgets").json()
        secret = front.get(f"/clusters/root:{ws}/api/v1/namespaces/kcp-system/secrets/widgets").json()
        key = base64.b64decode(secret["data"]["key"]).decode()
        assert len(key) == 43
        assert export["status"]["identityHash"] == hashlib.sha256(key.encode()).hexdigest()
        assert conditions(export)["IdentityValid"] == "True"
        hashes.append(export["status"]["identityHash"])
    assert hashes[0] != hashes[1], "two exports of the same resource have different identities"


def test_endpoint_slice_url_and_binding_status(proxy: RunningProxy, front: httpx.Client) -> None:
    provider = proxy.cluster_of("root:provider")
    slice_obj = front.get(f"/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    assert slice_obj["status"]["endpoints"] == [{"url": f"{proxy.url}/services/apiexport/{provider}/widgets"}]
    assert slice_obj["spec"]["export"] == {"path": "root:provider", "name": "widgets"}
    assert slice_obj["metadata"]["ownerReferences"][0]["kind"] == "APIExport"
    identity = front.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"]
    binding = front.get(f"/clusters/root:consumer-1{KCP}/apibindings/widgets").json()
    assert binding["status"]["apiExportClusterName"] == provider
    assert binding["status"]["boundResources"] == [{
        "group": "example.dev", "resource": "widgets",
        "schema": {"name": "v1alpha1.widgets.example.dev", "UID": binding["status"]["boundResources"][0]["schema"]["UID"], "identityHash": identity},
        "storageVersions": ["v1alpha1"],
    }]
    assert conditions(binding)["Ready"] == "True" and conditions(binding)["InitialBindingCompleted"] == "True"
    v1 = front.get(f"/clusters/root:consumer-1/apis/apis.kcp.io/v1alpha1/apibindings/widgets").json()
    assert v1["apiVersion"] == "apis.kcp.io/v1alpha1" and v1["status"]["apiExportClusterName"] == provider


def test_bound_resources_are_served_in_consumers(front: httpx.Client) -> None:
    widgets = front.get("/clusters/root:consumer-1/apis/example.dev/v1alpha1/namespaces/default/widgets").json()["items"]
    assert sorted(w["metadata"]["name"] for w in widgets) == ["blue", "red"]
    crd = front.get("/clusters/root:consumer-1/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev").json()
    assert crd["metadata"]["annotations"]["apis.kcp.io/identity"]
    assert front.get("/clusters/root:provider/apis/example.dev/v1alpha1/namespaces/default/widgets").status_code == 404


def test_workspace_type_virtual_workspace_urls(proxy: RunningProxy, front: httpx.Client) -> None:
    wst = front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspacetypes/team").json()
    assert wst["status"]["virtualWorkspaces"] == [
        {"url": f"{proxy.url}/services/initializingworkspaces/root:team", "type": "initializing"},
        {"url": f"{proxy.url}/services/terminatingworkspaces/root:team", "type": "terminating"},
    ]


def test_live_workspace_and_binding_lifecycle(proxy: RunningProxy, front: httpx.Client) -> None:
    created = front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": "late"}})
    assert created.status_code == 201
    eventually(lambda: front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/late").json().get("status", {}).get("phase") == "Ready", "workspace late Ready")
    assert front.get("/clusters/root:late/api/v1/namespaces/default").status_code == 200
    provider = proxy.cluster_of("root:provider")

    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "w"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}}
    assert front.post(f"/clusters/root:late{KCP}/apibindings", json=binding).status_code == 201
    got = eventually(lambda: conditions(front.get(f"/clusters/root:late{KCP}/apibindings/w").json()).get("Ready") == "True", "binding Ready")
    assert got
    path = "/clusters/root:late/apis/example.dev/v1alpha1/namespaces/default/widgets"
    made = front.post(path, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "n"}, "spec": {}})
    assert made.status_code == 201 and made.json()["spec"] == {"size": 1}, "the bound schema's defaults apply"
    assert front.delete(f"/clusters/root:late{KCP}/apibindings/w").status_code == 200
    eventually(lambda: front.get(path).status_code == 404, "unbound resource no longer served")
    slice_obj = front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    assert slice_obj["status"]["endpoints"][0]["url"].endswith(f"/services/apiexport/{provider}/widgets"), "other bindings keep the URL"


def test_slice_is_empty_until_the_first_binding(proxy: RunningProxy, front: httpx.Client) -> None:
    export = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "lonely"}, "spec": {"resources": [
        {"group": "example.dev", "name": "widgets", "schema": "v1alpha1.widgets.example.dev", "storage": {"crd": {}}}]}}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=export).status_code == 201
    slice_path = "/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/lonely"
    slice_obj = eventually(lambda: (r := front.get(slice_path)).status_code == 200 and conditions(r.json()).get("APIExportValid") == "True" and r.json(), "slice created")
    assert "endpoints" not in slice_obj["status"]
    front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": "fan"}})
    eventually(lambda: front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/fan").json().get("status", {}).get("phase") == "Ready", "workspace fan Ready")
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "lonely"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "lonely"}}}}
    front.post(f"/clusters/root:fan{KCP}/apibindings", json=binding)
    urls = eventually(lambda: front.get(slice_path).json()["status"].get("endpoints"), "slice endpoints")
    assert urls == [{"url": f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/lonely"}]


def test_second_identity_for_the_same_resource_is_refused(front: httpx.Client) -> None:
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "rival-widgets"}, "spec": {"reference": {"export": {"path": "root:rival", "name": "widgets"}}}}
    assert front.post(f"/clusters/root:consumer-1{KCP}/apibindings", json=binding).status_code == 201

    def refused() -> dict[str, Any] | None:
        obj = front.get(f"/clusters/root:consumer-1{KCP}/apibindings/rival-widgets").json()
        ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
        return ready[0] if ready and ready[0]["status"] == "False" else None

    ready = eventually(refused, "conflicting binding refused")
    assert ready["reason"] == "NamingConflicts" and "widgets.example.dev" in ready["message"]
    assert conditions(front.get(f"/clusters/root:consumer-1{KCP}/apibindings/widgets").json())["Ready"] == "True"


def test_binding_to_a_missing_export_says_so(front: httpx.Client) -> None:
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "ghost"}, "spec": {"reference": {"export": {"path": "root:nowhere", "name": "ghost"}}}}
    front.post(f"/clusters/root:consumer-2{KCP}/apibindings", json=binding)

    def reason() -> str:
        obj = front.get(f"/clusters/root:consumer-2{KCP}/apibindings/ghost").json()
        return next((c.get("message", "") for c in obj.get("status", {}).get("conditions", []) if c["type"] == "APIExportValid" and c["status"] == "False"), "")

    assert "root:nowhere:ghost not found" in eventually(reason, "APIExportValid False")


def test_restart_converges_to_the_same_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RunningProxy(data) as first:
        assert first.settle()
        provider = first.cluster_of("root:provider")
        with first.client() as client:
            before = client.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"]
            client.delete("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets")
    with RunningProxy(data) as second:
        assert second.settle()
        assert second.cluster_of("root:provider") == provider, "logical cluster names are stable"
        with second.client() as client:
            assert client.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"] == before
            slice_obj = client.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
            assert slice_obj["status"]["endpoints"] == [{"url": f"{second.url}/services/apiexport/{provider}/widgets"}]
            assert len(client.get("/clusters/root:consumer-3/apis/example.dev/v1alpha1/namespaces/default/widgets").json()["items"]) == 2


def test_bad_manifest_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "bad.yaml").write_text("apiVersion: tenancy.kcp.io/v1alpha1\nkind: Workspace\nmetadata: {}\n")
    from vwproxy.control.manifests import ManifestError

    with pytest.raises(ManifestError, match=r"bad\.yaml#1: field metadata\.name is required"):
        RunningProxy(tmp_path / "data", config)


def test_deleting_a_workspace_deletes_its_logical_cluster(proxy: RunningProxy, front: httpx.Client) -> None:
    front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": "short-lived"}})
    eventually(lambda: front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/short-lived").json().get("status", {}).get("phase") == "Ready", "Ready")
    cluster = proxy.cluster_of("root:short-lived")
    front.post(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "doomed"}})
    assert front.delete("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/short-lived").status_code == 200
    eventually(lambda: front.get(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps").status_code == 404, "the logical cluster is gone")
    assert front.get("/clusters/root:short-lived/api/v1/namespaces").status_code == 404


def test_two_bindings_of_the_same_export_share_the_crd(proxy: RunningProxy, front: httpx.Client) -> None:
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "again"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}}
    assert front.post(f"/clusters/root:consumer-2{KCP}/apibindings", json=binding).status_code == 201
    eventually(lambda: conditions(front.get(f"/clusters/root:consumer-2{KCP}/apibindings/again").json()).get("Ready") == "True", "second binding Ready")
    assert proxy.settle(), "the two bindings settle instead of fighting over the CRD"
    front.delete(f"/clusters/root:consumer-2{KCP}/apibindings/widgets")
    assert proxy.settle()
    listed = front.get("/clusters/root:consumer-2/apis/example.dev/v1alpha1/namespaces/default/widgets")
    assert listed.status_code == 200 and [w["metadata"]["name"] for w in listed.json()["items"]] == ["green"], "the remaining binding keeps the resource and its objects"


def test_the_backend_of_a_workspace_follows_its_logical_cluster(tmp_path: Path) -> None:
    """Which backend holds a workspace is read from its LogicalCluster's annotation on every
    request through the front (remembered per stored object): a new state of the object is read
    again at once, without waiting for anything."""
    import asyncio

    from vwproxy.control.manifests import load_folder
    from vwproxy.control.objects import LOGICAL_CLUSTERS
    from vwproxy.control.reconcilers import BACKEND_ANNOTATION, EMBEDDED_BACKEND
    from vwproxy.kube import errors
    from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME
    from vwproxy.server.app import ServeApp
    from vwproxy.store.shard import Shard
    from vwproxy.testing.proxy import example_topology

    async def main() -> None:
        shard = Shard(tmp_path / "data")
        app = ServeApp(shard, "http://127.0.0.1:1", load_folder(example_topology()), {})
        await app.startup()
        try:
            control = app.control
            cluster = shard.cluster_for_path("root:consumer-1")
            assert cluster is not None
            assert control.backend_of(cluster) == EMBEDDED_BACKEND
            assert control.backend_of(cluster) == EMBEDDED_BACKEND  # asked twice: the same answer

            def annotate(value: str | None) -> None:
                lc = control.store.get(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
                assert lc is not None
                annotations = lc["metadata"].setdefault("annotations", {})
                if value is None:
                    annotations.pop(BACKEND_ANNOTATION, None)
                else:
                    annotations[BACKEND_ANNOTATION] = value
                control.store.update(LOGICAL_CLUSTERS, cluster, lc)

            annotate("elsewhere")
            assert control.backend_of(cluster) == "elsewhere"
            with pytest.raises(errors.StatusError, match="elsewhere") as refused:
                control.client_for(cluster)  # undeclared: 503 naming it
            assert refused.value.code == 503
            annotate(None)
            assert control.backend_of(cluster) == EMBEDDED_BACKEND
        finally:
            await app.shutdown()

    asyncio.run(main())
