"""The APIExport virtual workspace through the real HTTP stack, on the example topology:
the URL contract, identity scoping, the merged list and watch, per-cluster writes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import orjson

from support import conditions, eventually
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.proxy import RunningProxy

WIDGETS = "apis/example.dev/v1alpha1"
KCP = "/apis/apis.kcp.io/v1alpha2"


def vw_url(front: httpx.Client, provider: str = "provider") -> str:
    slice_obj = front.get(f"/clusters/root:{provider}/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    return str(slice_obj["status"]["endpoints"][0]["url"])


def status_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert body["kind"] == "Status" and body["code"] == resp.status_code and body["message"]
    return dict(body)


def names_by_cluster(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["metadata"]["annotations"]["kcp.io/cluster"], i["metadata"]["name"]) for i in items]


def test_wildcard_list_is_scoped_to_the_exports_identity(proxy: RunningProxy, front: httpx.Client) -> None:
    consumers = {n: proxy.cluster_of(f"root:consumer-{n}") for n in range(1, 5)}
    for provider, expected in (("provider", (1, 2, 3)), ("rival", (4,))):
        base = vw_url(front, provider)
        listed = front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()
        got = names_by_cluster(listed["items"])
        assert {c for c, _ in got} == {consumers[n] for n in expected}, provider
        assert got == sorted(got), "ordered by (cluster, namespace, name)"
        rvs = [int(i["metadata"]["resourceVersion"]) for i in listed["items"]]
        assert all(rv > 1_000_000_000_000_000 for rv in rvs), "proxy RVs are above the start-time base"
        assert int(listed["metadata"]["resourceVersion"]) >= max(rvs)
    assert front.get(f"{vw_url(front)}/clusters/%2A/{WIDGETS}/widgets").status_code == 200


def test_url_contract(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    provider = proxy.cluster_of("root:provider")
    consumer = proxy.cluster_of("root:consumer-1")
    outsider = proxy.cluster_of("root:consumer-4")
    ns = front.get(f"{base}/clusters/*/{WIDGETS}/namespaces/default/widgets")
    assert ns.status_code == 400 and "cross-cluster LIST and WATCH are required to be cross-namespace" in status_of(ns)["message"]
    get = front.get(f"{base}/clusters/*/{WIDGETS}/namespaces/default/widgets/red")
    assert get.status_code == 405
    assert front.get(f"{base}/clusters/root:consumer-1/{WIDGETS}/widgets").status_code == 404, "a path is not a cluster name"
    assert front.get(f"{proxy.url}/services/apiexport/root:provider/widgets/clusters/*/{WIDGETS}/widgets").status_code == 404
    assert front.get(f"{proxy.url}/services/apiexport/{provider}/nope/clusters/*/apis").status_code == 404
    assert front.get(f"{proxy.url}/services/apiexport/{provider}/widgets/apis").status_code == 404
    forbidden = front.get(f"{base}/clusters/{outsider}/{WIDGETS}/widgets")
    assert forbidden.status_code == 403 and status_of(forbidden)["message"].endswith("access denied")
    assert front.get(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/red").json()["metadata"]["annotations"]["kcp.io/cluster"] == consumer
    assert front.get(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/red/scale").status_code == 404


def test_discovery_is_the_same_under_wildcard_and_name(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    consumer = proxy.cluster_of("root:consumer-2")
    for path in ("api", "apis", "apis/example.dev/v1alpha1", "apis/apis.kcp.io/v1alpha1", "apis/apis.kcp.io/v1alpha2", "openapi/v3"):
        wildcard = front.get(f"{base}/clusters/*/{path}")
        named = front.get(f"{base}/clusters/{consumer}/{path}")
        assert wildcard.status_code == 200, path
        if path != "openapi/v3":
            assert wildcard.json() == named.json(), path
    groups = {g["name"] for g in front.get(f"{base}/clusters/*/apis").json()["groups"]}
    assert groups == {"example.dev", "apis.kcp.io"}
    widgets = front.get(f"{base}/clusters/*/apis/example.dev/v1alpha1").json()["resources"]
    assert [r["name"] for r in widgets] == ["widgets", "widgets/status"]
    bindings = front.get(f"{base}/clusters/*/apis/apis.kcp.io/v1alpha1").json()["resources"]
    assert bindings[0]["name"] == "apibindings" and bindings[0]["verbs"] == ["get", "list", "watch"]


def test_apibindings_lists_only_this_exports_bindings(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    for version in ("v1alpha1", "v1alpha2"):
        items = front.get(f"{base}/clusters/*/apis/apis.kcp.io/{version}/apibindings").json()["items"]
        assert sorted(i["metadata"]["annotations"]["kcp.io/cluster"] for i in items) == sorted(proxy.cluster_of(f"root:consumer-{n}") for n in (1, 2, 3))
        assert all(i["apiVersion"] == f"apis.kcp.io/{version}" for i in items)
    consumer = proxy.cluster_of("root:consumer-1")
    write = front.post(f"{base}/clusters/{consumer}/apis/apis.kcp.io/v1alpha2/apibindings", json={"metadata": {"name": "x"}})
    assert write.status_code == 403


def test_watch_list_then_live_changes_and_engagement(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true", "timeoutSeconds": "10"}
    events: list[dict[str, Any]] = []
    done = threading.Event()

    def reader() -> None:
        with proxy.client() as watcher, watcher.stream("GET", f"{base}/clusters/*/{WIDGETS}/widgets", params=params, timeout=15) as resp:
            for line in resp.iter_lines():
                if line:
                    events.append(orjson.loads(line))
                    if len([e for e in events if e["type"] == "ADDED"]) >= 7 and any(e["type"] == "DELETED" for e in events):
                        break
        done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    eventually(lambda: any(e["type"] == "BOOKMARK" for e in events), "initial-events-end bookmark")
    initial = [e for e in events if e["type"] == "ADDED"]
    assert len(initial) == 5
    end = next(e for e in events if e["type"] == "BOOKMARK")
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    # a new consumer binding the export is engaged live: its widgets arrive as ADDED
    front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": "newcomer"}})
    eventually(lambda: front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/newcomer").json().get("status", {}).get("phase") == "Ready", "workspace Ready")
    front.post(f"/clusters/root:newcomer{KCP}/apibindings", json={"metadata": {"name": "widgets"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}})
    eventually(lambda: conditions(front.get(f"/clusters/root:newcomer{KCP}/apibindings/widgets").json()).get("Ready") == "True", "binding Ready")
    front.post(f"/clusters/root:newcomer/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "fresh"}, "spec": {"size": 9}})
    front.delete(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets/red")
    assert done.wait(10)
    thread.join()
    live = [e for e in events if e["type"] in ("ADDED", "DELETED")][5:]
    newcomer = proxy.cluster_of("root:newcomer")
    assert ("ADDED", newcomer, "fresh") in [(e["type"], e["object"]["metadata"]["annotations"]["kcp.io/cluster"], e["object"]["metadata"]["name"]) for e in live]
    deleted = [e for e in live if e["type"] == "DELETED"][0]["object"]
    assert deleted["metadata"]["name"] == "red" and deleted["metadata"]["annotations"]["kcp.io/cluster"] == proxy.cluster_of("root:consumer-1")
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events if e["type"] != "BOOKMARK"]
    assert rvs[5:] == sorted(rvs[5:]) and len(set(rvs)) == len(rvs)


def test_unbinding_disengages_with_deleted_events(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    listed = front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()
    rv = listed["metadata"]["resourceVersion"]
    consumer = proxy.cluster_of("root:consumer-3")
    front.delete(f"/clusters/root:consumer-3{KCP}/apibindings/widgets")
    seen: list[dict[str, Any]] = []
    with proxy.client() as watcher, watcher.stream("GET", f"{base}/clusters/*/{WIDGETS}/widgets", params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}, timeout=10) as resp:
        for line in resp.iter_lines():
            if line:
                seen.append(orjson.loads(line))
                if len(seen) == 2:
                    break
    assert {(e["type"], e["object"]["metadata"]["annotations"]["kcp.io/cluster"]) for e in seen} == {("DELETED", consumer)}
    assert consumer not in {c for c, _ in names_by_cluster(front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()["items"])}


def test_status_write_through_the_vw_reads_its_own_write(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    consumer = proxy.cluster_of("root:consumer-2")
    path = f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/green"
    cached = front.get(path).json()
    cached["status"] = {"ready": True, "observedSize": cached["spec"]["size"]}
    written = front.put(f"{path}/status", json=cached)
    assert written.status_code == 200, written.text
    body = written.json()
    assert body["status"] == {"ready": True, "observedSize": 2}
    assert int(body["metadata"]["resourceVersion"]) > int(cached["metadata"]["resourceVersion"])
    assert body["metadata"]["annotations"]["kcp.io/cluster"] == consumer
    assert front.get(path).json() == body, "the VW returns what it now holds"
    in_workspace = front.get(f"/clusters/root:consumer-2/{WIDGETS}/namespaces/default/widgets/green").json()
    assert in_workspace["status"] == {"ready": True, "observedSize": 2}
    stale = front.put(f"{path}/status", json=cached)  # carries the old proxy RV
    assert stale.status_code == 409 and status_of(stale)["reason"] == "Conflict"
    merged = front.patch(path, content=b'{"metadata":{"labels":{"seen":"yes"}}}', headers={"content-type": "application/merge-patch+json"})
    assert merged.status_code == 200 and merged.json()["metadata"]["labels"] == {"seen": "yes"}
    created = front.post(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets",
                         json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "via-vw"}, "spec": {"size": 3}})
    assert created.status_code == 201 and created.json()["metadata"]["annotations"]["kcp.io/cluster"] == consumer
    gone = front.delete(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/via-vw")
    assert gone.status_code == 200
    assert front.get(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/via-vw").status_code == 404


def test_python_client_watch_resumes_without_loss_or_repeat(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    api = proxy.api_client(f"{base}/clusters/*")
    custom = kubernetes.client.CustomObjectsApi(api)
    listed = custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets")
    rv = listed["metadata"]["resourceVersion"]
    consumer = "root:consumer-1"
    made: list[str] = []

    def write(name: str) -> None:
        resp = front.post(f"/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {}})
        assert resp.status_code == 201
        made.append(name)

    for i in range(3):
        write(f"a{i}")
    seen: list[tuple[str, str, int]] = []
    w = kubernetes.watch.Watch()
    for event in w.stream(custom.list_cluster_custom_object, "example.dev", "v1alpha1", "widgets", resource_version=rv, timeout_seconds=5):
        obj = event["object"]
        seen.append((event["type"], obj["metadata"]["name"], int(obj["metadata"]["resourceVersion"])))
        if len(seen) == 2:
            w.stop()
            break
    for i in range(2):
        write(f"b{i}")
    last = str(seen[-1][2])
    w = kubernetes.watch.Watch()
    for event in w.stream(custom.list_cluster_custom_object, "example.dev", "v1alpha1", "widgets", resource_version=last, timeout_seconds=5):
        obj = event["object"]
        seen.append((event["type"], obj["metadata"]["name"], int(obj["metadata"]["resourceVersion"])))
        if len(seen) == 5:
            w.stop()
            break
    assert [n for _, n, _ in seen] == made
    assert all(t == "ADDED" for t, _, _ in seen)
    rvs = [rv for _, _, rv in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 5


def test_kubectl_through_the_vw(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    kubectl = Kubectl(tmp_path, kubeconfig=proxy.kubeconfig())
    url = kubectl.ok("get", "apiexportendpointslices.apis.kcp.io", "widgets", "-o", "jsonpath={.status.endpoints[0].url}", server=f"{proxy.url}/clusters/root:provider")
    assert url == vw_url(front)
    got = kubectl.run("get", "widgets", "-A", "-o", "json", server=f"{url}/clusters/*")
    assert got.returncode == 0, got.stderr
    items = json.loads(got.stdout)["items"]
    consumers = {proxy.cluster_of(f"root:consumer-{n}") for n in (1, 2, 3)}
    assert {i["metadata"]["annotations"]["kcp.io/cluster"] for i in items} == consumers
    assert len(items) == 5
    watch = kubectl.popen("get", "widgets", "-A", "-w", "--output-watch-events", "-o", "name", server=f"{url}/clusters/*")
    try:
        lines: list[str] = []
        assert watch.stdout is not None
        reader = threading.Thread(target=lambda: [lines.append(line) for line in watch.stdout])  # type: ignore[union-attr]
        reader.start()
        eventually(lambda: len(lines) >= 5, "kubectl lists the initial widgets", timeout=20)
        front.post(f"/clusters/root:consumer-2/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "watched"}, "spec": {}})
        eventually(lambda: any("watched" in line for line in lines), "kubectl -w sees the change", timeout=20)
    finally:
        watch.terminate()
        watch.wait(10)


def test_readyz_and_metrics(proxy: RunningProxy, front: httpx.Client) -> None:
    ready = front.get("/readyz")
    assert ready.status_code == 200 and ready.text.strip().endswith("readyz check passed")
    front.get(f"{vw_url(front)}/clusters/*/{WIDGETS}/widgets")
    metrics = dict(line.split(" ", 1) for line in front.get("/metrics").text.splitlines() if line and not line.startswith("#"))
    assert int(metrics["vwproxy_views"]) >= 1 and int(metrics["vwproxy_view_objects"]) >= 5
    assert int(metrics["vwproxy_resource_version"]) > 10**15
    assert metrics["vwproxy_slow_watchers_closed_total"] == "0"


def test_deletecollection_through_the_vw_answers_in_proxy_rvs(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    consumer = proxy.cluster_of("root:consumer-3")
    before = int(front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()["metadata"]["resourceVersion"])
    resp = front.delete(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets")
    assert resp.status_code == 200, resp.text
    gone = resp.json()["items"]
    assert sorted(i["metadata"]["name"] for i in gone) == ["black", "yellow"]
    assert all(int(i["metadata"]["resourceVersion"]) > before and i["metadata"]["annotations"]["kcp.io/cluster"] == consumer for i in gone)
    assert front.get(f"{base}/clusters/{consumer}/{WIDGETS}/widgets").json()["items"] == []
