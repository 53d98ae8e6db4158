"""The initializing and terminating virtual workspaces through the real HTTP stack, driven with
the `kubernetes` Python client the way an initializer or terminator controller drives them:
URL from `WorkspaceType.status.virtualWorkspaces` → watch → work in the workspace → remove its
own entry. Conformance items 17–25 of kcp's e2e suite are ported here."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import kubernetes
import yaml
import orjson
import pytest

from support import eventually
from vwproxy.kube import kcp
from vwproxy.testing.proxy import RunningProxy

TENANCY = "/apis/tenancy.kcp.io/v1alpha1"
LC = "apis/core.kcp.io/v1alpha1/logicalclusters"
TYPE = "lifecycle-test"
OWNER = f"root:{TYPE}"


def vw_urls(front: httpx.Client, type_name: str = TYPE) -> dict[str, str]:
    wst = eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspacetypes/{type_name}").json().get("status", {}).get("virtualWorkspaces"), "the type's VW URLs")
    return {entry["type"]: entry["url"] for entry in wst}




@pytest.fixture
def typed(proxy: RunningProxy, front: httpx.Client) -> Iterator[dict[str, str]]:
    """A WorkspaceType with an initializer and a terminator, and its VW URLs."""
    wst = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "WorkspaceType", "metadata": {"name": TYPE}, "spec": {"initializer": True, "terminator": True}}
    assert front.post(f"/clusters/root{TENANCY}/workspacetypes", json=wst).status_code == 201
    yield vw_urls(front)


def new_workspace(front: httpx.Client, name: str) -> str:
    ws = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name}, "spec": {"type": {"name": TYPE, "path": "root"}}}
    assert front.post(f"/clusters/root{TENANCY}/workspaces", json=ws).status_code == 201
    return str(eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/{name}").json().get("spec", {}).get("cluster"), "the workspace's cluster"))


def phase(front: httpx.Client, name: str) -> str:
    return str(front.get(f"/clusters/root{TENANCY}/workspaces/{name}").json().get("status", {}).get("phase", ""))


def test_discovery_is_exactly_logicalclusters(proxy: RunningProxy, front: httpx.Client, typed: dict[str, str]) -> None:
    for kind in ("initializing", "terminating"):
        for cluster in ("*",):
            base = f"{typed[kind]}/clusters/{cluster}"
            resources = front.get(f"{base}/apis/core.kcp.io/v1alpha1").json()["resources"]
            assert resources == [
                {"name": "logicalclusters", "singularName": "logicalcluster", "namespaced": False, "kind": "LogicalCluster",
                 "verbs": ["get", "list", "watch"], "categories": ["kcp"], "storageVersionHash": resources[0]["storageVersionHash"]},
                {"name": "logicalclusters/status", "singularName": "", "namespaced": False, "kind": "LogicalCluster", "verbs": []},
            ]
            assert front.get(f"{base}/api/v1").status_code == 404
            assert [g["name"] for g in front.get(f"{base}/apis").json()["groups"]] == ["core.kcp.io"]
    # Under a cluster name, discovery is the workspace's own while it is in the phase, 403 otherwise.
    waiting = new_workspace(front, "init-discovery")
    eventually(lambda: front.get(f"{typed['initializing']}/clusters/{waiting}/api/v1").status_code == 200, "the waiting workspace's discovery")
    core = {r["name"] for r in front.get(f"{typed['initializing']}/clusters/{waiting}/api/v1").json()["resources"]}
    assert {"configmaps", "secrets", "namespaces"} <= core
    assert front.get(f"{typed['initializing']}/clusters/{proxy.cluster_of('root:consumer-1')}/api/v1").status_code == 403


def test_an_initializer_bootstraps_a_workspace_then_lets_it_go(proxy: RunningProxy, front: httpx.Client, typed: dict[str, str]) -> None:
    url = typed["initializing"]
    assert url == f"{proxy.url}/services/initializingworkspaces/{OWNER}"
    wildcard = kubernetes.client.CustomObjectsApi(proxy.api_client(f"{url}/clusters/*"))
    before = wildcard.list_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters")
    events: list[tuple[str, dict[str, Any]]] = []
    watching = threading.Event()

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        watching.set()
        for event in stream.stream(wildcard.list_cluster_custom_object, "core.kcp.io", "v1alpha1", "logicalclusters",
                                   resource_version=before["metadata"]["resourceVersion"], timeout_seconds=15):
            events.append((event["type"], event["object"]))
            if event["type"] == "DELETED":
                stream.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watching.wait(5)
    cluster = new_workspace(front, "init-1")
    eventually(lambda: any(t == "ADDED" for t, _ in events), "the initializing VW announces the new workspace")
    added = next(o for t, o in events if t == "ADDED")
    assert added["metadata"]["annotations"]["kcp.io/cluster"] == cluster
    assert added["status"]["phase"] == "Initializing" and OWNER in added["status"]["initializers"]
    assert phase(front, "init-1") == "Initializing"
    listed = wildcard.list_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters")["items"]
    assert [o["metadata"]["annotations"]["kcp.io/cluster"] for o in listed] == [cluster], "exactly the initializing workspaces of this type"

    # Bootstrap the workspace's content through the same URL.
    core = kubernetes.client.CoreV1Api(proxy.api_client(f"{url}/clusters/{cluster}"))
    core.create_namespaced_config_map("default", {"metadata": {"name": "bootstrapped"}, "data": {"by": OWNER}})
    assert front.get(f"/clusters/root:init-1/api/v1/namespaces/default/configmaps/bootstrapped").json()["data"] == {"by": OWNER}

    # A foreign change to the list is refused; removing exactly our own entry is accepted.
    mine = kubernetes.client.CustomObjectsApi(proxy.api_client(f"{url}/clusters/{cluster}"))
    with pytest.raises(kubernetes.client.ApiException) as refused:
        mine.patch_cluster_custom_object_status("core.kcp.io", "v1alpha1", "logicalclusters", "cluster", {"status": {"initializers": ["wrong"]}})
    assert refused.value.status == 422 and f'only removing the "{OWNER}" initializer is supported' in orjson.loads(refused.value.body)["message"]
    lc = mine.get_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters", "cluster")
    remaining = [i for i in lc["status"]["initializers"] if i != OWNER]
    mine.patch_cluster_custom_object_status("core.kcp.io", "v1alpha1", "logicalclusters", "cluster", {"status": {"initializers": remaining}})
    eventually(lambda: phase(front, "init-1") == "Ready", "the workspace becomes Ready")
    watcher.join(15)
    types = [t for t, _ in events]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and set(types[1:-1]) <= {"MODIFIED"}, types
    assert events[-1][1]["metadata"]["annotations"]["kcp.io/cluster"] == cluster

    # Afterwards: no more content access, and the object is gone from this VW.
    denied = front.get(f"{url}/clusters/{cluster}/api/v1/namespaces/default/configmaps")
    assert denied.status_code == 403 and f'initializer "{OWNER}" cannot access this workspace' in denied.json()["message"]
    assert front.get(f"{url}/clusters/{cluster}/{LC}/cluster").status_code == 404
    assert wildcard.list_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters")["items"] == []


def test_initializing_vw_contract(proxy: RunningProxy, front: httpx.Client, typed: dict[str, str]) -> None:
    url = typed["initializing"]
    cluster = new_workspace(front, "init-2")
    eventually(lambda: front.get(f"{url}/clusters/{cluster}/{LC}/cluster").status_code == 200, "the workspace in the initializing VW")
    got = front.get(f"{url}/clusters/{cluster}/{LC}/cluster").json()
    key, value = kcp.lifecycle_label(kcp.INITIALIZER_LABEL_PREFIX, OWNER)
    assert got["metadata"]["labels"][key] == value and got["metadata"]["annotations"]["kcp.io/cluster"] == cluster
    # Writes of the main resource are not served; neither are gets or writes on `*`.
    patch = front.patch(f"{url}/clusters/{cluster}/{LC}/cluster", content=b'{"metadata":{"labels":{"x":"y"}}}', headers={"content-type": "application/merge-patch+json"})
    assert patch.status_code == 405
    assert front.get(f"{url}/clusters/*/{LC}/cluster").status_code == 405
    # Adding or replacing entries is refused; so is removing another's.
    for wanted in ([OWNER, "root:other"], [], ["root:other"]):
        if wanted == []:
            continue  # removing our own entry is the accepted case, tested above
        resp = front.patch(f"{url}/clusters/{cluster}/{LC}/cluster/status", content=orjson.dumps({"status": {"initializers": wanted}}),
                           headers={"content-type": "application/merge-patch+json"})
        assert resp.status_code == 422, (wanted, resp.text)
    # Another type's initializing VW neither lists nor reaches this workspace.
    other = f"{proxy.url}/services/initializingworkspaces/root:someone-else"
    assert front.get(f"{other}/clusters/*/{LC}").json()["items"] == []
    assert front.get(f"{other}/clusters/{cluster}/api/v1/namespaces/default/configmaps").status_code == 403
    # A workspace path is not a cluster name; a bare URL says what to append.
    assert front.get(f"{url}/clusters/root:init-2/{LC}").status_code == 404
    assert "append /clusters/*" in front.get(f"{url}/apis").json()["message"]


def test_lifecycle_watch_bookmarks_and_watch_list(proxy: RunningProxy, front: httpx.Client, typed: dict[str, str]) -> None:
    new_workspace(front, "init-3")
    for kind in ("initializing", "terminating"):
        params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
        with front.stream("GET", f"{typed[kind]}/clusters/*/{LC}", params=params) as stream:
            events = [orjson.loads(line) for line in stream.iter_lines() if line]
        bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
        assert bookmarks and bookmarks[0]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true", kind
        assert len(bookmarks) >= 2, f"periodic bookmarks pass the {kind} filter"
        added = [e["object"]["metadata"]["annotations"]["kcp.io/cluster"] for e in events if e["type"] == "ADDED"]
        assert (added == [proxy.cluster_of("root:init-3")]) if kind == "initializing" else added == [], (kind, added)


def _finish_initialization(proxy: RunningProxy, url: str, cluster: str) -> None:
    api = kubernetes.client.CustomObjectsApi(proxy.api_client(f"{url}/clusters/{cluster}"))
    lc = api.get_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters", "cluster")
    remaining = [i for i in lc["status"]["initializers"] if i != OWNER]
    api.patch_cluster_custom_object_status("core.kcp.io", "v1alpha1", "logicalclusters", "cluster", {"status": {"initializers": remaining}})


def test_a_terminator_cleans_up_then_lets_the_workspace_go(proxy: RunningProxy, front: httpx.Client, typed: dict[str, str]) -> None:
    url = typed["terminating"]
    cluster = new_workspace(front, "term-1")
    eventually(lambda: front.get(f"{typed['initializing']}/clusters/{cluster}/{LC}/cluster").status_code == 200, "initializing")
    _finish_initialization(proxy, typed["initializing"], cluster)
    eventually(lambda: phase(front, "term-1") == "Ready", "Ready")
    lc = front.get(f"/clusters/{cluster}/{LC}/cluster").json()
    assert lc["status"]["terminators"] == [OWNER], "terminators are listed from creation, also while Ready"
    wildcard = kubernetes.client.CustomObjectsApi(proxy.api_client(f"{url}/clusters/*"))
    listed = wildcard.list_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters")
    assert listed["items"] == [], "a Ready workspace is not terminating"
    assert front.get(f"{url}/clusters/{cluster}/api/v1/namespaces/default/configmaps").status_code == 403
    events: list[tuple[str, dict[str, Any]]] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        for event in stream.stream(wildcard.list_cluster_custom_object, "core.kcp.io", "v1alpha1", "logicalclusters",
                                   resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=20):
            events.append((event["type"], event["object"]))
            if event["type"] == "DELETED":
                stream.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/term-1").status_code == 200, "workspace")
    time.sleep(0.2)  # let the watch request reach the server before the deletion it must see
    deleted = front.delete(f"/clusters/root{TENANCY}/workspaces/term-1")
    assert deleted.status_code in (200, 202), deleted.text
    eventually(lambda: events, "the terminating VW announces the deletion")
    kind, first = events[0]
    assert kind == "MODIFIED" and first["metadata"]["deletionTimestamp"] and first["metadata"]["annotations"]["kcp.io/cluster"] == cluster
    # While terminating, the terminator reaches the workspace's content and cleans up.
    # (Its content is being deleted meanwhile, as on kcp: the terminator works on what it creates.)
    core = kubernetes.client.CoreV1Api(proxy.api_client(f"{url}/clusters/{cluster}"))
    core.list_config_map_for_all_namespaces()
    core.create_namespace({"metadata": {"name": "audit"}})
    made = core.create_namespaced_config_map("audit", {"metadata": {"name": "audit"}, "data": {"by": OWNER}})
    assert made.metadata.annotations["kcp.io/cluster"] == cluster
    # The main resource cannot be patched; another value in the list is refused.
    mine = kubernetes.client.CustomObjectsApi(proxy.api_client(f"{url}/clusters/{cluster}"))
    with pytest.raises(kubernetes.client.ApiException) as refused:
        mine.patch_cluster_custom_object("core.kcp.io", "v1alpha1", "logicalclusters", "cluster", {"metadata": {"labels": {"x": "y"}}})
    assert refused.value.status == 405
    with pytest.raises(kubernetes.client.ApiException) as foreign:
        mine.patch_cluster_custom_object_status("core.kcp.io", "v1alpha1", "logicalclusters", "cluster", {"status": {"terminators": ["root:foreign"]}})
    assert foreign.value.status == 422 and f'only removing the "{OWNER}" terminator is supported' in orjson.loads(foreign.value.body)["message"]
    assert front.get(f"/clusters/root{TENANCY}/workspaces/term-1").status_code == 200, "the terminator holds the workspace"
    mine.patch_cluster_custom_object_status("core.kcp.io", "v1alpha1", "logicalclusters", "cluster", {"status": {"terminators": []}})
    eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/term-1").status_code == 404, "the workspace goes once its terminator is removed")
    watcher.join(20)
    types = [t for t, _ in events]
    assert types[-1] == "DELETED" and set(types[:-1]) == {"MODIFIED"}, types
    assert any(o["status"].get("phase") == "Terminating" for _, o in events)
    assert any(not o["status"].get("terminators") for t, o in events if t == "MODIFIED"), "the emptied list is delivered"
    assert events[-1][1]["metadata"]["annotations"]["kcp.io/cluster"] == cluster
    assert front.get(f"{url}/clusters/{cluster}/api/v1/namespaces/default/configmaps").status_code == 403


def test_the_example_initializer_makes_team_a_ready(proxy: RunningProxy, front: httpx.Client) -> None:
    """The README's example: `root:team-a` waits for `root:team` until the example initializer runs."""
    import subprocess
    import sys
    from pathlib import Path

    assert phase(front, "team-a") == "Initializing"
    script = Path(__file__).resolve().parent.parent / "examples" / "team_initializer.py"
    kubeconfig = Path(proxy.data_dir) / "initializer.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(proxy.kubeconfig()))
    done = subprocess.run([sys.executable, str(script), "--kubeconfig", str(kubeconfig), "--once"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "initialized root:team-a"
    eventually(lambda: phase(front, "team-a") == "Ready", "team-a becomes Ready")
    assert front.get("/clusters/root:team-a/api/v1/namespaces/default/configmaps/welcome").json()["data"] == {"initialized-by": "root:team"}
