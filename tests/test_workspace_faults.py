"""Faults per workspace (issue 15): a workspace on the embedded shard made down, hung, slow,
expired, dropped or late for the APIExport virtual workspace, while a controller-like loop reads
and writes through it; every other workspace keeps working, and once the fault is cleared the
controller converges (objects created during and after the fault are reconciled)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from support import eventually
from test_apiexport_vw import vw_url
from vwproxy.testing.factories import make_workspace
from vwproxy.testing.proxy import RunningProxy

WIDGETS = "apis/example.dev/v1alpha1/widgets"
NS_WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"
MERGE = {"content-type": "application/merge-patch+json"}
KCP = "apis/apis.kcp.io/v1alpha2"
FAULTED = "root:consumer-2"  # on the embedded shard, like every workspace of the example
# The example's widgets in the provider's consumers, which the controller reconciles first.
EXISTING = {"root:consumer-1": ("blue", "red"), "root:consumer-2": ("green",), "root:consumer-3": ("black", "yellow")}


def new_widget(name: str, size: int = 3) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}}


class WidgetController:
    """Stands for a user's controller on the VW, built the way client-go's are: an informer thread
    (list, then watch from the list's RV; a watch that ends is resumed from the last RV seen, an
    in-stream 410 or a failed request means relist) feeding a work queue, and a worker thread
    that reconciles each widget (status.observedSize = spec.size, a merge patch of /status in its
    workspace through the VW) and retries what failed. Counts what happened, for the tests."""

    def __init__(self, proxy: RunningProxy, vw: str) -> None:
        self.proxy = proxy
        self.vw = vw
        self.relists = 0
        self.rewatches = 0
        self.expired = 0
        self._queue: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._inform, daemon=True), threading.Thread(target=self._work, daemon=True)]

    def __enter__(self) -> WidgetController:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(10)

    def _enqueue(self, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        with self._lock:
            self._queue[(md["annotations"]["kcp.io/cluster"], md["name"])] = obj
            self._lock.notify_all()

    def _inform(self) -> None:
        with self.proxy.client(timeout=httpx.Timeout(10, read=40)) as client:
            while not self._stop.is_set():
                try:
                    listed = client.get(f"{self.vw}/clusters/*/{WIDGETS}")
                    listed.raise_for_status()
                    self.relists += 1
                    for item in listed.json()["items"]:
                        self._enqueue(item)
                    rv = listed.json()["metadata"]["resourceVersion"]
                    while not self._stop.is_set():
                        rv = self._watch(client, rv)
                        if rv is None:
                            break  # relist
                        self.rewatches += 1
                except httpx.HTTPError:
                    self._stop.wait(0.05)

    def _watch(self, client: httpx.Client, rv: str) -> str | None:
        """One watch from `rv`: the last RV seen when it ends, None after a 410."""
        params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "30"}
        with client.stream("GET", f"{self.vw}/clusters/*/{WIDGETS}", params=params) as stream:
            stream.raise_for_status()
            for line in stream.iter_lines():
                if self._stop.is_set():
                    return rv
                if not line:
                    continue
                event = orjson.loads(line)
                if event["type"] == "ERROR":
                    self.expired += event["object"].get("code") == 410
                    return None
                rv = event["object"]["metadata"]["resourceVersion"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._enqueue(event["object"])
        return rv

    def _work(self) -> None:
        with self.proxy.client(timeout=10) as client:
            while not self._stop.is_set():
                with self._lock:
                    if not self._queue:
                        self._lock.wait(0.5)
                    batch, self._queue = self._queue, {}
                for (cluster, name), obj in batch.items():
                    if not self._reconcile(client, cluster, obj):
                        with self._lock:
                            self._queue.setdefault((cluster, name), obj)  # retry, unless newer news came
                        self._stop.wait(0.05)

    def _reconcile(self, client: httpx.Client, cluster: str, obj: dict[str, Any]) -> bool:
        name, size = obj["metadata"]["name"], obj["spec"]["size"]
        if (obj.get("status") or {}).get("observedSize") != size:
            try:
                resp = client.patch(f"{self.vw}/clusters/{cluster}/{NS_WIDGETS}/{name}/status", json={"status": {"observedSize": size}}, headers=MERGE)
            except httpx.HTTPError:
                return False
            if resp.status_code != 200:
                return False  # 503 from a down workspace, 504 from a hung one, 409: retried
        return True


def observed(front: httpx.Client, workspace: str, name: str) -> bool:
    obj = front.get(f"/clusters/{workspace}/{NS_WIDGETS}/{name}").json()
    return bool((obj.get("status") or {}).get("observedSize") == obj["spec"]["size"])


def visible(front: httpx.Client, vw: str, cluster: str, name: str) -> bool:
    return front.get(f"{vw}/clusters/{cluster}/{NS_WIDGETS}/{name}").status_code == 200


def create(front: httpx.Client, workspace: str, name: str) -> None:
    resp = front.post(f"/clusters/{workspace}/{NS_WIDGETS}", json=new_widget(name))  # the front is never faulted
    assert resp.status_code == 201, resp.text


@pytest.fixture
def controller(proxy: RunningProxy, front: httpx.Client) -> Any:
    with WidgetController(proxy, vw_url(front)) as running:
        eventually(lambda: all(observed(front, ws, n) for ws, names in EXISTING.items() for n in names), "the existing widgets reconciled")
        yield running


def test_controller_survives_down(proxy: RunningProxy, front: httpx.Client, controller: WidgetController, monkeypatch: pytest.MonkeyPatch) -> None:
    vw, cluster = controller.vw, proxy.cluster_of(FAULTED)
    answer = proxy.workspace_fault(FAULTED, "down")
    assert answer == {"workspace": FAULTED, "cluster": cluster, "faults": [{"fault": "down"}]}
    assert f'vwproxy_faults_active{{workspace="{FAULTED}",fault="down"}} 1' in front.get("/metrics").text
    assert f"[-]workspace {cluster}: stale" in front.get("/readyz").text
    create(front, FAULTED, "during")
    assert not visible(front, vw, cluster, "during"), "a down workspace's changes do not reach the view"
    listed = front.get(f"{vw}/clusters/*/{WIDGETS}")
    assert any(FAULTED in w for w in listed.headers.get_list("warning")), listed.headers
    written = front.patch(f"{vw}/clusters/{cluster}/{NS_WIDGETS}/green", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
    assert written.status_code == 503 and written.json()["reason"] == "ServiceUnavailable", written.text
    create(front, "root:consumer-1", "elsewhere")
    eventually(lambda: observed(front, "root:consumer-1", "elsewhere"), "the other workspaces reconciled meanwhile")
    assert not observed(front, FAULTED, "during")

    proxy.clear_workspace_faults(FAULTED)
    assert "vwproxy_faults_active" not in front.get("/metrics").text
    assert visible(front, vw, cluster, "during"), "clearing delivers what was held back at once"
    create(front, FAULTED, "after")
    eventually(lambda: observed(front, FAULTED, "during") and observed(front, FAULTED, "after"), "the faulted workspace converged")
    assert f"[-]workspace {cluster}" not in front.get("/readyz").text


def test_controller_survives_hung(proxy: RunningProxy, front: httpx.Client, controller: WidgetController, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vwproxy.upstream.client.READ_TIMEOUT_SECONDS", 0.5)  # the server runs in this process
    vw, cluster = controller.vw, proxy.cluster_of(FAULTED)
    proxy.workspace_fault(FAULTED, "hung")
    create(front, FAULTED, "during")
    assert not visible(front, vw, cluster, "during")
    started = time.monotonic()
    written = front.patch(f"{vw}/clusters/{cluster}/{NS_WIDGETS}/green", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
    assert written.status_code == 504 and written.json()["reason"] == "Timeout", written.text
    assert time.monotonic() - started >= 0.5
    create(front, "root:consumer-3", "elsewhere")
    eventually(lambda: observed(front, "root:consumer-3", "elsewhere"), "the other workspaces reconciled meanwhile")

    proxy.clear_workspace_faults(FAULTED)
    create(front, FAULTED, "after")
    eventually(lambda: observed(front, FAULTED, "during") and observed(front, FAULTED, "after"), "the faulted workspace converged")


def test_a_hung_write_goes_on_when_the_fault_is_cleared(proxy: RunningProxy, front: httpx.Client) -> None:
    vw, cluster = vw_url(front), proxy.cluster_of(FAULTED)
    proxy.workspace_fault(FAULTED, "hung")  # the request timeout stays at its 10 s
    answers: list[httpx.Response] = []
    with proxy.client(timeout=30) as writer:
        thread = threading.Thread(target=lambda: answers.append(
            writer.patch(f"{vw}/clusters/{cluster}/{NS_WIDGETS}/green", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE)))
        thread.start()
        eventually(lambda: proxy.app.hub.faults.by_cluster[cluster].held_writes == 1, "the write to be held")
        started = time.monotonic()
        proxy.clear_workspace_faults(FAULTED)
        thread.join(10)
    assert answers and answers[0].status_code == 200 and answers[0].json()["metadata"]["labels"] == {"a": "b"}, answers
    assert time.monotonic() - started < 5, "it went on at once, not at the request timeout"


@pytest.mark.parametrize("kind", ["slow", "delay"])
def test_controller_survives_late_events(kind: str, proxy: RunningProxy, front: httpx.Client, controller: WidgetController) -> None:
    vw, cluster = controller.vw, proxy.cluster_of(FAULTED)
    args = {"ms": 400} if kind == "slow" else {"resource": "widgets.example.dev", "ms": 400}
    answer = proxy.workspace_fault(FAULTED, kind, **args)
    assert answer["faults"] == [{"fault": kind, **args}]
    created_at = time.monotonic()
    create(front, FAULTED, "during")
    assert not visible(front, vw, cluster, "during"), "not in the view at once"
    eventually(lambda: visible(front, vw, cluster, "during"), "the late event")
    assert time.monotonic() - created_at >= 0.4
    if kind == "slow":  # a VW write is slow too, and still reads its own write
        started = time.monotonic()
        written = front.patch(f"{vw}/clusters/{cluster}/{NS_WIDGETS}/green", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
        assert written.status_code == 200 and written.json()["metadata"]["labels"] == {"a": "b"}, written.text
        assert time.monotonic() - started >= 0.8, "the write is sent late and its event reaches the view late"
        assert front.get(f"{vw}/clusters/{cluster}/{NS_WIDGETS}/green").json()["metadata"]["resourceVersion"] == written.json()["metadata"]["resourceVersion"]
    eventually(lambda: observed(front, FAULTED, "during"), "reconciled while late")
    create(front, FAULTED, "held")
    proxy.clear_workspace_faults(FAULTED)
    assert visible(front, vw, cluster, "held"), "clearing delivers what was still on its way at once"
    create(front, FAULTED, "after")
    assert visible(front, vw, cluster, "after"), "on time again"
    eventually(lambda: all(observed(front, FAULTED, n) for n in ("held", "after")), "the faulted workspace converged")


def test_a_delay_keeps_the_workspaces_order_and_spares_other_resources(proxy: RunningProxy, front: httpx.Client) -> None:
    vw, cluster = vw_url(front), proxy.cluster_of(FAULTED)
    rv = front.get(f"{vw}/clusters/*/{WIDGETS}").json()["metadata"]["resourceVersion"]
    proxy.workspace_fault(FAULTED, "delay", resource="configmaps", ms=5000)  # another resource: widgets are on time
    create(front, FAULTED, "on-time")
    assert visible(front, vw, cluster, "on-time")
    proxy.workspace_fault(FAULTED, "delay", resource="widgets.example.dev", ms=300)
    create(front, FAULTED, "first")
    assert front.delete(f"/clusters/{FAULTED}/{NS_WIDGETS}/first").status_code == 200
    proxy.workspace_fault(FAULTED, "delay", resource="widgets.example.dev", ms=0)  # on time from now, but not before what is on its way
    create(front, FAULTED, "second")
    assert not visible(front, vw, cluster, "second"), "queued behind the delayed changes"
    assert proxy.workspace_fault(FAULTED, "delay", resource="configmaps", ms=10)["faults"] == [
        {"fault": "delay", "resource": "configmaps", "ms": 10}, {"fault": "delay", "resource": "widgets.example.dev", "ms": 0}]
    with proxy.client() as watcher, watcher.stream("GET", f"{vw}/clusters/*/{WIDGETS}", params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}) as stream:
        seen = []
        for line in stream.iter_lines():
            if line:
                event = orjson.loads(line)
                seen.append((event["type"], event["object"]["metadata"]["name"]))
                if seen[-1] == ("ADDED", "second"):
                    break
    assert seen == [("ADDED", "on-time"), ("ADDED", "first"), ("DELETED", "first"), ("ADDED", "second")], seen
    proxy.clear_workspace_faults(FAULTED)


def test_controller_survives_dropped_and_expired_watches(proxy: RunningProxy, front: httpx.Client, controller: WidgetController) -> None:
    cluster = proxy.cluster_of(FAULTED)
    rewatches = controller.rewatches
    dropped = proxy.workspace_fault(FAULTED, "drop-watches")
    assert dropped["dropped"] >= 1 and dropped["faults"] == [], "a one-shot action: nothing is kept"
    eventually(lambda: controller.rewatches > rewatches, "the controller to watch again from its last RV")
    create(front, FAULTED, "after-drop")
    eventually(lambda: observed(front, FAULTED, "after-drop"), "reconciled after the drop")

    relists, expired = controller.relists, controller.expired
    proxy.workspace_fault(FAULTED, "expire-next-watch")
    assert f'vwproxy_faults_active{{workspace="{FAULTED}",fault="expire-next-watch"}} 1' in front.get("/metrics").text
    proxy.workspace_fault(FAULTED, "drop-watches")  # the controller's next watch is the expired one
    eventually(lambda: controller.expired > expired and controller.relists > relists, "the controller to relist after the 410")
    assert "vwproxy_faults_active" not in front.get("/metrics").text, "expire-next-watch is consumed by one watch"
    create(front, FAULTED, "after-expiry")
    eventually(lambda: observed(front, FAULTED, "after-expiry"), "reconciled after the relist")
    # A watch of another workspace alone is neither dropped nor expired.
    other = proxy.cluster_of("root:consumer-1")
    proxy.workspace_fault(FAULTED, "expire-next-watch")
    with proxy.client() as watcher, watcher.stream("GET", f"{controller.vw}/clusters/{other}/{NS_WIDGETS}", params={"watch": "true", "timeoutSeconds": "1"}) as stream:
        assert all(orjson.loads(line)["type"] != "ERROR" for line in stream.iter_lines() if line)
    with proxy.client() as watcher, watcher.stream("GET", f"{controller.vw}/clusters/{cluster}/{NS_WIDGETS}", params={"watch": "true", "timeoutSeconds": "1"}) as stream:
        first = orjson.loads(next(line for line in stream.iter_lines() if line))
    assert first["type"] == "ERROR" and first["object"]["code"] == 410, first


def test_delayed_path_annotation_reproduces_the_engage_before_path_race(proxy: RunningProxy, front: httpx.Client) -> None:
    """kcp-dev/multicluster-provider#103: a provider engages a cluster (its APIBinding arrives
    through the VW) before the cluster's LogicalCluster with the `kcp.io/path` annotation does.
    A delay on logicalclusters makes that order certain; a provider that retries its path lookup
    still gets the path."""
    vw = vw_url(front)
    claim = {"group": "core.kcp.io", "resource": "logicalclusters", "verbs": ["get", "list", "watch"]}
    patched = front.patch(f"/clusters/root:provider/{KCP}/apiexports/widgets", content=orjson.dumps({"spec": {"permissionClaims": [claim]}}), headers=MERGE)
    assert patched.status_code == 200, patched.text
    cluster = make_workspace(proxy, "root:late")
    proxy.workspace_fault("root:late", "delay", resource="logicalclusters.core.kcp.io", ms=1000)
    assert 'vwproxy_faults_active{workspace="root:late",fault="delay",resource="logicalclusters.core.kcp.io"} 1' in front.get("/metrics").text
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "widgets"}, "spec": {
        "reference": {"export": {"path": "root:provider", "name": "widgets"}},
        "permissionClaims": [{**claim, "selector": {"matchAll": True}, "state": "Accepted"}]}}
    assert front.post(f"/clusters/root:late/{KCP}/apibindings", json=binding).status_code == 201

    def engaged() -> bool:
        return front.get(f"{vw}/clusters/{cluster}/{KCP}/apibindings/widgets").status_code == 200
    eventually(engaged, "the binding through the VW: the provider engages the cluster")
    engaged_at = time.monotonic()
    lc_url = f"{vw}/clusters/{cluster}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster"
    assert front.get(lc_url).status_code == 404, "engaged before its path is known: the race, every time"

    def path() -> str | None:  # the provider's lookup, retried
        resp = front.get(lc_url)
        return resp.json()["metadata"]["annotations"]["kcp.io/path"] if resp.status_code == 200 else None
    assert eventually(path, "the LogicalCluster with its path, late") == "root:late"
    assert time.monotonic() - engaged_at >= 0.5
    proxy.clear_workspace_faults("root:late")


def test_workspace_fault_requests_are_validated(proxy: RunningProxy, front: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    url = f"/vwproxy/faults/workspaces/{FAULTED}"
    for body, why in (
        (b"not json", "JSON object"), (b"[]", '"fault" string'), (b'{"fault": 3}', '"fault" string'),
        (b'{"fault": "melt"}', "unknown fault"), (b'{"fault": "slow"}', "integer ms"), (b'{"fault": "slow", "ms": -1}', "integer ms"),
        (b'{"fault": "delay", "ms": 10}', '"resource"'), (b'{"fault": "delay", "ms": 10, "resource": "Bad Name"}', '"resource"'),
    ):
        resp = front.post(url, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["kind"] == "Status" and why in resp.json()["message"], (body, resp.text)
    for missing in ("/vwproxy/faults/workspaces/root:nowhere", "/vwproxy/faults/workspaces/", "/vwproxy/faults/workspaces/0123456789abcdef"):
        resp = front.post(missing, json={"fault": "down"})
        assert resp.status_code == 404 and resp.json()["reason"] == "NotFound", (missing, resp.text)
    assert front.put(url, json={"fault": "down"}).status_code == 405
    assert front.get(url).json()["faults"] == [], "nothing was set by the bad requests"
    with caplog.at_level(logging.WARNING, logger="vwproxy.cache.faults"):
        by_name = f"/vwproxy/faults/workspaces/{proxy.cluster_of(FAULTED)}"
        assert front.post(by_name, json={"fault": "slow", "ms": 10}).json()["workspace"] == FAULTED, "a logical cluster name works too"
        assert front.delete(url).json()["faults"] == []
    logged = [r.getMessage() for r in caplog.records]
    assert any("fault set on workspace root:consumer-2" in m and "slow" in m for m in logged), logged
    assert any("faults cleared on workspace root:consumer-2" in m for m in logged), logged


def test_every_way_into_a_view_goes_through_the_fault_gate() -> None:
    """A change entering a view by a method GatedView does not override would skip every workspace
    fault silently (as the shared-bytes entry points once did): each public View method that
    produces events is overridden."""
    import inspect

    from vwproxy.cache.faults import GatedView
    from vwproxy.core.view import View

    producing = {name for name, fn in inspect.getmembers(View, inspect.isfunction)
                 if not name.startswith("_") and "ChangeEvent" in str(inspect.signature(fn).return_annotation)} - {"since"}  # a read of the history
    assert {"upsert", "upsert_stored", "delete", "replace_cluster", "replace_cluster_stored", "drop_cluster"} <= producing
    assert not [name for name in producing if GatedView.__dict__.get(name) is None]
