"""The virtual workspace over a kube backend (a second shard process): its workspace joins the
merged view through a reflector, a stopped backend only makes its own workspace stale (Warning
header), and when it returns the view catches up."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import orjson

from test_kube_backend import EXT, ShardProcess, backend, config, direct, ext_ready, front, proxy, widget  # noqa: F401  (fixtures)
from support import eventually
from vwproxy.testing.proxy import RunningProxy

WIDGETS = "apis/example.dev/v1alpha1"


def vw_url(front: httpx.Client) -> str:
    slice_obj = front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    return str(slice_obj["status"]["endpoints"][0]["url"])


def clusters_of(items: list[dict[str, Any]]) -> set[str]:
    return {i["metadata"]["annotations"]["kcp.io/cluster"] for i in items}


def test_kube_backed_workspace_joins_the_view(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    ext = proxy.cluster_of("root:ext")
    assert direct.post(f"/{WIDGETS}/namespaces/default/widgets", json=widget("remote-1", 4)).status_code == 201
    base = vw_url(front)

    def listed() -> list[dict[str, Any]] | None:
        items = front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()["items"]
        return [i for i in items if i["metadata"]["annotations"]["kcp.io/cluster"] == ext] or None

    remote = eventually(listed, "the backend's widget in the merged view")
    assert [i["metadata"]["name"] for i in remote] == ["remote-1"]
    assert int(remote[0]["metadata"]["resourceVersion"]) > 10**15, "a proxy RV, not the backend's"
    # a write through the VW lands on the backend and comes back as the view holds it
    path = f"{base}/clusters/{ext}/{WIDGETS}/namespaces/default/widgets/remote-1"
    held = front.get(path).json()
    held["status"] = {"ready": True}
    written = front.put(f"{path}/status", json=held)
    assert written.status_code == 200, written.text
    assert written.json()["metadata"]["annotations"]["kcp.io/cluster"] == ext
    assert front.get(path).json() == written.json(), "read your own write"
    assert direct.get(f"/{WIDGETS}/namespaces/default/widgets/remote-1").json()["status"] == {"ready": True}


def test_a_stopped_backend_only_makes_its_workspace_stale(proxy: RunningProxy, front: httpx.Client, backend: ShardProcess, direct: httpx.Client) -> None:
    ext_ready(front)
    ext = proxy.cluster_of("root:ext")
    direct.post(f"/{WIDGETS}/namespaces/default/widgets", json=widget("before", 1))
    base = vw_url(front)
    eventually(lambda: ext in clusters_of(front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()["items"]), "ext in the view")
    listed = front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()
    rv = listed["metadata"]["resourceVersion"]

    backend.stop()

    def warned() -> httpx.Response | None:
        resp = front.get(f"{base}/clusters/*/{WIDGETS}/widgets")
        return resp if "warning" in resp.headers else None

    resp = eventually(warned, "a Warning header naming the stale workspace")
    assert ext in resp.headers["warning"] and resp.headers["warning"].startswith("299 - ")
    assert len(resp.json()["items"]) >= 6, "the other workspaces keep flowing"
    events: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        with proxy.client() as watcher, watcher.stream("GET", f"{base}/clusters/*/{WIDGETS}/widgets", params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "20"}, timeout=30) as stream:
            for line in stream.iter_lines():
                if line:
                    events.append(orjson.loads(line))
                    names = {e["object"]["metadata"]["name"] for e in events}
                    if {"during", "after"} <= names:
                        break
        done.set()

    thread = threading.Thread(target=watch)
    thread.start()
    made = front.post(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets", json=widget("during", 2))
    assert made.status_code == 201, "other workspaces keep taking writes"
    backend.start()  # same port, same data: the reflector resumes or relists
    with httpx.Client(base_url=f"{backend.url}/clusters/root", headers=dict(direct.headers), timeout=10) as again:
        assert again.post(f"/{WIDGETS}/namespaces/default/widgets", json=widget("after", 3)).status_code == 201
    assert done.wait(25), f"the watcher saw {[(e['type'], e['object']['metadata']['name']) for e in events]}"
    thread.join()
    after = next(e for e in events if e["object"]["metadata"]["name"] == "after")
    assert after["type"] == "ADDED" and after["object"]["metadata"]["annotations"]["kcp.io/cluster"] == ext
    eventually(lambda: "warning" not in front.get(f"{base}/clusters/*/{WIDGETS}/widgets").headers, "the Warning goes once the backend is current")
