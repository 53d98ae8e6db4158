"""A workspace whose content lives on a `kube` backend, through the real front.

A second `vwproxy shard --token …` PROCESS stands in for the external cluster. The config folder
is the example topology plus a `backends.yaml` declaring it as `remote` and a Workspace
`root:ext` annotated `vwproxy.dev/backend: remote` that binds `root:provider`'s widgets. Tests
check what a user of the front sees, and what landed on the backend by asking it directly.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.kube import kcp
from vwproxy.testing.process import ShardProcess
from vwproxy.testing.proxy import RunningProxy, example_topology
from support import client_go_openapi_url, conditions, eventually

pytestmark = pytest.mark.timeout(60)

TOKEN = "backend-t0ken-7f3a9c1e5b2d"
KCP = "/apis/apis.kcp.io/v1alpha2"
WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
EXT = "/clusters/root:ext"
WAIT_SECONDS = 10.0

EXT_YAML = """\
apiVersion: tenancy.kcp.io/v1alpha1
kind: Workspace
metadata:
  name: ext
  annotations: {vwproxy.dev/backend: remote}
---
apiVersion: apis.kcp.io/v1alpha2
kind: APIBinding
metadata:
  name: widgets
  annotations: {kcp.io/path: "root:ext"}
spec:
  reference:
    export: {path: "root:provider", name: widgets}
"""


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path / "backend-data", token=TOKEN, log=tmp_path / "backend.log") as running:
        yield running


def kube_topology(folder: Path, backend: ShardProcess) -> Path:
    """The example topology plus `remote` (the backend process) and root:ext on it, in `folder`."""
    shutil.copytree(example_topology(), folder)
    (folder / "backend.token").write_text(TOKEN + "\n")
    (folder / "backends.yaml").write_text(
        "apiVersion: vwproxy.dev/v1alpha1\n"
        "kind: Backend\n"
        "metadata: {name: remote}\n"
        "spec:\n"
        f"  url: {backend.url}/clusters/root\n"
        "  tokenFile: backend.token\n"
    )
    (folder / "40-ext.yaml").write_text(EXT_YAML)
    return folder


@pytest.fixture
def config(tmp_path: Path, backend: ShardProcess) -> Path:
    return kube_topology(tmp_path / "config", backend)


@pytest.fixture
def proxy(tmp_path: Path, config: Path) -> Iterator[RunningProxy]:
    with RunningProxy(tmp_path / "data", config) as running:
        yield running


@pytest.fixture
def front(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client(timeout=10) as client:
        yield client


@pytest.fixture
def direct(backend: ShardProcess) -> Iterator[httpx.Client]:
    """The backend's `root` logical cluster, asked directly with the token."""
    with httpx.Client(base_url=f"{backend.url}/clusters/root", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


def ext_ready(front: httpx.Client) -> dict[str, Any]:
    """Wait until root:ext's widgets binding is Ready; returns it."""
    def ready() -> dict[str, Any] | None:
        obj = front.get(f"{EXT}{KCP}/apibindings/widgets").json()
        return obj if conditions(obj).get("Ready") == "True" else None

    binding: dict[str, Any] = eventually(ready, "root:ext's widgets binding Ready")
    return binding


def widget(name: str, size: int = 1, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name, **extra}, "spec": {"size": size}}


def cluster_annotation(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get("kcp.io/cluster")


def assert_no_token(resp: httpx.Response) -> None:
    assert TOKEN not in resp.text, f"{resp.request.method} {resp.request.url} leaks the backend token in its body"
    for name, value in resp.headers.items():
        assert TOKEN not in value and TOKEN not in name, f"{resp.request.method} {resp.request.url} leaks the backend token in header {name}"


# -- binding ------------------------------------------------------------------------------


def test_binding_installs_the_crd_on_the_backend(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    binding = ext_ready(front)
    provider = proxy.cluster_of("root:provider")
    identity = front.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"]
    assert binding["status"]["apiExportClusterName"] == provider
    assert [(r["group"], r["resource"]) for r in binding["status"]["boundResources"]] == [("example.dev", "widgets")]

    crd = direct.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev")
    assert crd.status_code == 200, crd.text
    assert crd.json()["metadata"]["annotations"]["apis.kcp.io/identity"] == identity
    assert crd.json()["spec"]["group"] == "example.dev" and crd.json()["spec"]["names"]["plural"] == "widgets"
    # the bound resource is served on the backend itself, and nothing lands in the embedded shard's copy of root:ext
    assert direct.get(WIDGETS).status_code == 200
    ws = front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/ext").json()
    assert ws["status"]["phase"] == "Ready"
    assert ws["spec"]["cluster"] == proxy.cluster_of("root:ext") != "root"


# -- content through the front --------------------------------------------------------------


def test_widget_crud_lands_on_the_backend_and_comes_back_stamped(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    cluster = proxy.cluster_of("root:ext")

    created = front.post(f"{EXT}{WIDGETS}", json=widget("w1", 3))
    assert created.status_code == 201, created.text
    assert cluster_annotation(created.json()) == cluster
    stored = direct.get(f"{WIDGETS}/w1")
    assert stored.status_code == 200 and stored.json()["spec"] == {"size": 3}
    assert stored.json()["metadata"]["uid"] == created.json()["metadata"]["uid"]

    got = front.get(f"{EXT}{WIDGETS}/w1")
    assert got.status_code == 200 and cluster_annotation(got.json()) == cluster
    assert got.json()["metadata"]["resourceVersion"] == stored.json()["metadata"]["resourceVersion"]

    # a widget made directly on the backend shows up in the front's list
    assert direct.post(WIDGETS, json=widget("w2", 2)).status_code == 201
    listed = front.get(f"{EXT}{WIDGETS}")
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert sorted(i["metadata"]["name"] for i in items) == ["w1", "w2"]
    assert {cluster_annotation(i) for i in items} == {cluster}

    patched = front.patch(f"{EXT}{WIDGETS}/w1", content=json.dumps({"spec": {"color": "red"}}), headers={"Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"] == {"size": 3, "color": "red"} and cluster_annotation(patched.json()) == cluster
    assert direct.get(f"{WIDGETS}/w1").json()["spec"] == {"size": 3, "color": "red"}

    json_patch = [{"op": "add", "path": "/metadata/labels", "value": {"tier": "gold"}}]
    patched = front.patch(f"{EXT}{WIDGETS}/w1", content=json.dumps(json_patch), headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    assert direct.get(f"{WIDGETS}/w1").json()["metadata"]["labels"] == {"tier": "gold"}

    # a client sending back a cached (stamped) object: the update works, the backend never stores its value
    cached = front.get(f"{EXT}{WIDGETS}/w1").json()
    cached["spec"]["size"] = 5
    updated = front.put(f"{EXT}{WIDGETS}/w1", json=cached)
    assert updated.status_code == 200, updated.text
    assert updated.json()["spec"]["size"] == 5 and cluster_annotation(updated.json()) == cluster

    deleted = front.delete(f"{EXT}{WIDGETS}/w1")
    assert deleted.status_code == 200, deleted.text
    assert direct.get(f"{WIDGETS}/w1").status_code == 404
    missing = front.get(f"{EXT}{WIDGETS}/w1")
    assert missing.status_code == 404 and missing.json()["kind"] == "Status" and missing.json()["reason"] == "NotFound"


def test_configmap_crud_through_the_front(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    cluster = proxy.cluster_of("root:ext")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "annotations": {"kcp.io/cluster": "forged", "keep": "me"}}, "data": {"a": "1"}}
    created = front.post(f"{EXT}{CONFIGMAPS}", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["metadata"]["annotations"] == {"kcp.io/cluster": cluster, "keep": "me"}, "a client-chosen kcp.io/cluster is never kept"
    on_backend = direct.get(f"{CONFIGMAPS}/settings").json()
    assert on_backend["data"] == {"a": "1"} and on_backend["metadata"]["annotations"].get("keep") == "me"
    assert on_backend["metadata"]["annotations"].get("kcp.io/cluster") != "forged"

    smp = front.patch(f"{EXT}{CONFIGMAPS}/settings", content=json.dumps({"data": {"b": "2"}}), headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert smp.status_code == 200, smp.text
    assert direct.get(f"{CONFIGMAPS}/settings").json()["data"] == {"a": "1", "b": "2"}

    got = front.get(f"{EXT}{CONFIGMAPS}/settings")
    assert got.status_code == 200 and got.json()["data"] == {"a": "1", "b": "2"} and cluster_annotation(got.json()) == cluster
    listed = front.get(f"{EXT}{CONFIGMAPS}", params={"labelSelector": ""}).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["settings"]
    assert cluster_annotation(listed["items"][0]) == cluster

    assert front.delete(f"{EXT}{CONFIGMAPS}/settings").status_code == 200
    assert direct.get(f"{CONFIGMAPS}/settings").status_code == 404
    # the embedded shard's other workspaces never see root:ext's content
    assert front.get(f"/clusters/root:consumer-1{CONFIGMAPS}").json()["items"] == []


def test_watch_through_the_front_sees_backend_changes_stamped(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    cluster = proxy.cluster_of("root:ext")
    rv = front.get(f"{EXT}{WIDGETS}").json()["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    opened = threading.Event()
    done = threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            with proxy.client(timeout=httpx.Timeout(10, read=10)) as client:
                with client.stream("GET", f"{EXT}{WIDGETS}", params={"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "10"}) as stream:
                    assert stream.status_code == 200
                    opened.set()
                    for line in stream.iter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] != "BOOKMARK":
                            events.append(event)
                        if event["type"] == "DELETED":
                            return
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            opened.set()
            done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert opened.wait(WAIT_SECONDS)
    assert direct.post(WIDGETS, json=widget("from-backend", 4)).status_code == 201
    assert direct.delete(f"{WIDGETS}/from-backend").status_code == 200
    assert done.wait(WAIT_SECONDS), f"watch did not see the backend's changes; saw {events}"
    assert not errors, errors
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "from-backend"), ("DELETED", "from-backend")]
    assert [cluster_annotation(e["object"]) for e in events] == [cluster, cluster], "watch events carry the workspace's logical cluster, not the backend's"


def test_front_never_leaks_the_backend_token(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    responses = [
        front.get(f"{EXT}/api"),
        front.get(f"{EXT}/api/v1"),
        front.get(f"{EXT}/apis"),
        front.get(f"{EXT}/apis/example.dev/v1alpha1"),
        front.get(f"{EXT}{WIDGETS}"),
        front.get(f"{EXT}{WIDGETS}/absent"),
        front.post(f"{EXT}{WIDGETS}", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 0}}),
        front.post(f"{EXT}{WIDGETS}", content=b"{not json", headers={"Content-Type": "application/json"}),
        front.get(f"{EXT}/api/v1/namespaces/default/secrets"),
        front.get(f"{EXT}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster"),
        front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/ext"),
        front.get(f"{EXT}{KCP}/apibindings/widgets"),
        # a caller presenting some other token still gets the proxy's answer, never the backend's credentials
        front.get(f"{EXT}{WIDGETS}", headers={"Authorization": "Bearer caller-token"}),
        front.get(f"{EXT}/version"),
    ]
    assert responses[6].status_code == 422 and responses[5].status_code == 404
    for resp in responses:
        assert_no_token(resp)
    with front.stream("GET", f"{EXT}{WIDGETS}", params={"watch": "true", "timeoutSeconds": "1"}) as stream:
        assert TOKEN not in str(stream.headers)
        assert TOKEN not in stream.read().decode()


# -- control plane and discovery ------------------------------------------------------------


def test_control_plane_groups_come_from_the_embedded_shard(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    cluster = proxy.cluster_of("root:ext")
    bindings = front.get(f"{EXT}{KCP}/apibindings")
    assert bindings.status_code == 200
    assert [b["metadata"]["name"] for b in bindings.json()["items"]] == ["widgets"]
    assert {cluster_annotation(b) for b in bindings.json()["items"]} == {cluster}
    assert direct.get(f"{KCP}/apibindings").json()["items"] == [], "the binding lives in the embedded shard, not on the backend"

    lc = front.get(f"{EXT}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json()
    assert lc["metadata"]["annotations"]["kcp.io/path"] == "root:ext"
    assert lc["metadata"]["annotations"]["kcp.io/cluster"] == cluster
    assert lc["status"]["phase"] == "Ready"

    resources = front.get(f"{EXT}/apis/apis.kcp.io/v1alpha2").json()
    assert "apibindings" in {r["name"] for r in resources["resources"]}


def test_apis_discovery_merges_backend_groups_with_kcp_groups(front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    # a group only the backend has (a CRD made there directly)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gizmos.direct.example.com"},
        "spec": {"group": "direct.example.com", "scope": "Namespaced", "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    assert direct.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).status_code == 201

    def groups() -> list[str] | None:
        resp = front.get(f"{EXT}/apis")
        assert resp.status_code == 200, resp.text
        names = [g["name"] for g in resp.json()["groups"]]
        return names if "direct.example.com" in names else None

    names = eventually(groups, "the backend's own group in the front's /apis")
    for group in ("example.dev", "apiextensions.k8s.io", "apis.kcp.io", "core.kcp.io", "tenancy.kcp.io"):
        assert group in names
    assert len(names) == len(set(names)), f"a group is listed twice: {names}"
    assert front.get(f"{EXT}/apis/direct.example.com/v1").status_code == 200
    widgets_discovery = front.get(f"{EXT}/apis/example.dev/v1alpha1").json()
    assert [r["name"] for r in widgets_discovery["resources"] if "/" not in r["name"]] == ["widgets"]
    # a workspace on the embedded shard does not see the backend's group
    assert "direct.example.com" not in [g["name"] for g in front.get("/clusters/root:consumer-1/apis").json()["groups"]]


# -- failures -------------------------------------------------------------------------------


def test_backend_down_is_a_503_status_and_other_workspaces_keep_working(backend: ShardProcess, front: httpx.Client) -> None:
    ext_ready(front)
    assert front.post(f"{EXT}{WIDGETS}", json=widget("before")).status_code == 201
    backend.stop()

    for method, path, body in (
        ("GET", f"{EXT}{WIDGETS}", None),
        ("GET", f"{EXT}{WIDGETS}/before", None),
        ("GET", f"{EXT}{WIDGETS}?watch=true", None),
        ("POST", f"{EXT}{CONFIGMAPS}", {"metadata": {"name": "c"}}),
        ("GET", f"{EXT}/apis", None),
    ):
        started = time.monotonic()
        resp = front.request(method, path, json=body)
        took = time.monotonic() - started
        assert resp.status_code == 503, f"{method} {path}: {resp.status_code} {resp.text}"
        status = resp.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable" and status["code"] == 503
        assert "remote" in status["message"], status["message"]
        assert took < 6, f"{method} {path} took {took:.1f} s"
        assert_no_token(resp)

    consumer = front.get(f"/clusters/root:consumer-1{WIDGETS}")
    assert consumer.status_code == 200 and len(consumer.json()["items"]) == 2
    made = front.post(f"/clusters/root:consumer-1{CONFIGMAPS}", json={"metadata": {"name": "still-fine"}})
    assert made.status_code == 201
    # root:ext's control-plane objects live in the embedded shard and stay readable
    assert front.get(f"{EXT}{KCP}/apibindings/widgets").status_code == 200

    backend.start()
    again = eventually(lambda: (r := front.get(f"{EXT}{WIDGETS}/before")).status_code == 200 and r, "root:ext content back after the backend returns")
    assert again.json()["metadata"]["name"] == "before"


def test_workspace_naming_an_undeclared_backend_says_so(proxy: RunningProxy, front: httpx.Client) -> None:
    created = front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": "lost", "annotations": {"vwproxy.dev/backend": "nowhere"}}})
    assert created.status_code == 201, created.text

    def invalid() -> dict[str, Any] | None:
        ws = front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/lost").json()
        found = [c for c in (ws.get("status") or {}).get("conditions") or [] if c["type"] == "BackendValid" and c["status"] == "False"]
        return found[0] if found else None

    cond = eventually(invalid, "BackendValid False on workspace lost")
    assert cond["reason"] == "BackendNotFound"
    assert '"nowhere"' in cond["message"] and "backends.yaml" in cond["message"]
    assert front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/lost").json()["status"]["phase"] != "Ready"
    resp = front.get("/clusters/root:lost/api/v1/namespaces/default/configmaps")
    assert resp.status_code == 503 and resp.json()["kind"] == "Status" and "nowhere" in resp.json()["message"]
    # the declared backend's workspace is unaffected
    assert front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/ext").json()["status"]["phase"] == "Ready"


def test_proxy_starts_with_its_backend_down_and_binds_once_it_is_up(tmp_path: Path, backend: ShardProcess, config: Path) -> None:
    backend.stop()
    with RunningProxy(tmp_path / "data", config) as proxy, proxy.client(timeout=10) as front:
        # serving starts anyway: the embedded workspaces work, root:ext's content is a 503
        assert len(front.get(f"/clusters/root:consumer-1{WIDGETS}").json()["items"]) == 2
        down = front.get(f"{EXT}{WIDGETS}")
        assert down.status_code == 503 and down.json()["reason"] == "ServiceUnavailable"
        binding = front.get(f"{EXT}{KCP}/apibindings/widgets").json()
        assert conditions(binding).get("Ready") != "True"

        backend.start()
        ext_ready(front)
        with httpx.Client(base_url=f"{backend.url}/clusters/root", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as direct:
            assert direct.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev").status_code == 200
        assert front.post(f"{EXT}{WIDGETS}", json=widget("late")).status_code == 201


def test_deleting_the_binding_removes_the_crd_from_the_backend(front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    assert front.post(f"{EXT}{WIDGETS}", json=widget("doomed")).status_code == 201
    assert front.delete(f"{EXT}{KCP}/apibindings/widgets").status_code == 200
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev"
    eventually(lambda: direct.get(crd).status_code == 404, "the bound CRD removed from the backend")
    gone = front.get(f"{EXT}{WIDGETS}")
    assert gone.status_code == 404 and gone.json()["kind"] == "Status"
    assert "example.dev" not in [g["name"] for g in front.get(f"{EXT}/apis").json()["groups"]]


def test_a_binding_deletes_its_objects_on_the_backend_before_its_crd(front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev"
    assert direct.post(WIDGETS, json=widget("held", finalizers=["example.dev/hold"])).status_code == 201
    assert front.post(f"{EXT}{WIDGETS}", json=widget("plain")).status_code == 201
    deleted = front.delete(f"{EXT}{KCP}/apibindings/widgets")
    assert deleted.status_code == 200 and deleted.json()["metadata"]["deletionTimestamp"]
    eventually(lambda: direct.get(f"{WIDGETS}/plain").status_code == 404, "the plain widget deleted on the backend")
    eventually(lambda: direct.get(f"{WIDGETS}/held").json()["metadata"].get("deletionTimestamp"), "the held widget marked for deletion")
    assert direct.get(crd).status_code == 200, "the CRD stays while an object remains"
    assert front.get(f"{EXT}{KCP}/apibindings/widgets").status_code == 200, "and so does the binding"
    released = direct.patch(f"{WIDGETS}/held", content=json.dumps({"metadata": {"finalizers": None}}), headers={"Content-Type": "application/merge-patch+json"})
    assert released.status_code == 200
    eventually(lambda: direct.get(crd).status_code == 404, "the CRD removed once its objects are gone")
    eventually(lambda: front.get(f"{EXT}{KCP}/apibindings/widgets").status_code == 404, "the binding goes last")


def test_openapi_of_a_kube_workspace_is_fetchable_the_way_kubectl_fetches_it(front: httpx.Client) -> None:
    ext_ready(front)
    index = front.get(f"{EXT}/openapi/v3")
    assert index.status_code == 200
    assert "metadata" not in index.json(), "an OpenAPI index is not an object and carries no kcp.io/cluster"
    for key in ("apis/example.dev/v1alpha1", "api/v1"):
        url = client_go_openapi_url(EXT, index.json()["paths"][key]["serverRelativeURL"])
        doc = front.get(url)
        assert doc.status_code == 200, f"{key}: kubectl would fetch {url} and get {doc.status_code}"
    widgets_doc = front.get(client_go_openapi_url(EXT, index.json()["paths"]["apis/example.dev/v1alpha1"]["serverRelativeURL"])).json()
    assert "/apis/example.dev/v1alpha1/namespaces/{namespace}/widgets" in widgets_doc["paths"]


def test_a_watch_in_flight_ends_when_the_backend_goes_away_and_rewatching_gets_503(backend: ShardProcess, proxy: RunningProxy, front: httpx.Client) -> None:
    ext_ready(front)
    rv = front.get(f"{EXT}{CONFIGMAPS}").json()["metadata"]["resourceVersion"]
    outcome: list[str] = []
    opened, ended = threading.Event(), threading.Event()

    def watch() -> None:
        try:
            with proxy.client(timeout=httpx.Timeout(10, read=30)) as client:
                with client.stream("GET", f"{EXT}{CONFIGMAPS}", params={"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"}) as stream:
                    outcome.append(str(stream.status_code))
                    opened.set()
                    for _ in stream.iter_lines():
                        pass
            outcome.append("closed")
        except httpx.TransportError as exc:  # an abrupt end is what a broken upstream watch looks like
            outcome.append(type(exc).__name__)
        finally:
            opened.set()
            ended.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert opened.wait(WAIT_SECONDS) and outcome[:1] == ["200"], outcome
    backend.stop()
    assert ended.wait(WAIT_SECONDS), "the watch through the front hangs after its backend went away"
    again = front.get(f"{EXT}{CONFIGMAPS}", params={"watch": "true", "resourceVersion": rv})
    assert again.status_code == 503 and again.json()["reason"] == "ServiceUnavailable"


# -- permission claims on a backend ---------------------------------------------------------


def test_claim_labels_land_on_the_backend(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    """Accepted claims on a kube-backend workspace label its objects through the backend client:
    a built-in (configmaps, by selector) and another export's resource (widgets, by identity)."""
    ext_ready(front)
    provider = proxy.cluster_of("root:provider")
    identity = front.get(f"/clusters/root:provider{KCP}/apiexports/widgets").json()["status"]["identityHash"]
    for name, app in (("picked", "x"), ("other", "y")):
        assert direct.post(CONFIGMAPS, json={"metadata": {"name": name, "labels": {"app": app}}}).status_code == 201
    assert direct.post(WIDGETS, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}).status_code == 201
    widget_claim = {"group": "example.dev", "resource": "widgets", "verbs": ["get"], "identityHash": identity}
    cm_claim = {"group": "", "resource": "configmaps", "verbs": ["get"]}
    export = {"metadata": {"name": "watcher"}, "spec": {"permissionClaims": [cm_claim, widget_claim]}}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=export).status_code == 201
    binding = {"metadata": {"name": "watcher"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "watcher"}}, "permissionClaims": [
        {**cm_claim, "selector": {"matchLabels": {"app": "x"}}, "state": "Accepted"},
        {**widget_claim, "selector": {"matchAll": True}, "state": "Accepted"}]}}
    assert front.post(f"{EXT}{KCP}/apibindings", json=binding).status_code == 201
    key = kcp.claim_label_key(provider, "watcher")

    def label_on(path: str) -> str | None:
        return (direct.get(path).json()["metadata"].get("labels") or {}).get(key)

    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and (label_on(f"{CONFIGMAPS}/picked") is None or label_on(f"{WIDGETS}/w") is None):
        time.sleep(0.05)
    assert label_on(f"{CONFIGMAPS}/picked") == kcp.claim_label(provider, "watcher", cm_claim)[1]
    assert label_on(f"{WIDGETS}/w") == kcp.claim_label(provider, "watcher", widget_claim)[1]
    assert label_on(f"{CONFIGMAPS}/other") is None
    status = front.get(f"{EXT}{KCP}/apibindings/watcher").json()["status"]
    assert [c["resource"] for c in status["appliedPermissionClaims"]] == ["configmaps", "widgets"]
