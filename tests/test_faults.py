"""Faults on demand (issue 15): a test switches a kube backend's faults on and off through the
admin API while `serve` runs, and each has an effect a client of the front or the VW notices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import TEST_BOOKMARK_INTERVAL
from support import eventually
from test_kube_backend import (  # noqa: F401  (fixtures)
    EXT,
    TOKEN,
    ShardProcess,
    backend,
    direct,
    ext_ready,
    front,
    kube_topology,
    widget,
)
from test_vw_backends import vw_url
from test_workspace_faults import WidgetController

from vwproxy.testing.proxy import RunningProxy
from vwproxy.upstream.faults import FaultError, Faults

WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"


@pytest.fixture
def proxy(tmp_path: Path, backend: ShardProcess) -> Iterator[RunningProxy]:
    # Frequent bookmarks let a watching controller notice promptly that its test has ended.
    with RunningProxy(tmp_path / "data", kube_topology(tmp_path / "config", backend), users={"alice": ["team"]}, bookmark_interval=TEST_BOOKMARK_INTERVAL) as running:
        yield running


def test_down_answers_503_and_clearing_restores_service(proxy: RunningProxy, front: httpx.Client) -> None:
    ext_ready(front)
    assert front.post(f"{EXT}{WIDGETS}", json=widget("before")).status_code == 201
    proxy.fault("remote", "down")
    assert 'vwproxy_faults_active{backend="remote",fault="down"} 1' in front.get("/metrics").text
    resp = front.get(f"{EXT}{WIDGETS}/before")
    assert resp.status_code == 503 and "remote" in resp.json()["message"], resp.text
    assert front.get(f"/clusters/root:consumer-1{WIDGETS}").status_code == 200, "other workspaces keep working"
    # the backend health check fails too: the workspace is marked unavailable
    eventually(lambda: '[-]workspace root:ext: backend "remote"' in front.get("/readyz").text, "root:ext unavailable in /readyz")
    proxy.clear_faults("remote")
    assert "vwproxy_faults_active" not in front.get("/metrics").text
    assert front.get(f"{EXT}{WIDGETS}/before").status_code == 200
    eventually(lambda: 'backend "remote"' not in front.get("/readyz").text, "root:ext available again")


def test_slow_delays_every_request(proxy: RunningProxy, front: httpx.Client) -> None:
    ext_ready(front)
    proxy.fault("remote", "slow", ms=300)
    started = time.monotonic()
    assert front.get(f"{EXT}{WIDGETS}").status_code == 200
    assert time.monotonic() - started >= 0.3
    proxy.clear_faults("remote")
    started = time.monotonic()
    assert front.get(f"{EXT}{WIDGETS}").status_code == 200
    assert time.monotonic() - started < 0.3


def test_only_admins_may_set_faults(proxy: RunningProxy, front: httpx.Client) -> None:
    with proxy.client(token=proxy.user_token("alice")) as alice:
        assert alice.post("/vwproxy/faults/remote", json={"fault": "down"}).status_code == 403
        assert alice.delete("/vwproxy/faults/remote").status_code == 403
        assert alice.post("/vwproxy/faults/workspaces/root:consumer-1", json={"fault": "down"}).status_code == 403
        assert alice.delete("/vwproxy/faults/workspaces/root:consumer-1").status_code == 403
    assert front.get("/vwproxy/faults/workspaces/root:consumer-1").json()["faults"] == []
    assert front.post("/vwproxy/faults/nowhere", json={"fault": "down"}).status_code == 404
    assert front.post("/vwproxy/faults/remote", json={"fault": "melt"}).status_code == 400
    assert front.post("/vwproxy/faults/remote", json={"fault": "slow"}).status_code == 400


def _watch_vw(proxy: RunningProxy, url: str, rv: str, wanted: set[str], seen: list[dict[str, Any]], done: threading.Event) -> None:
    with proxy.client() as watcher, watcher.stream("GET", url, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "15"}, timeout=20) as stream:
        for line in stream.iter_lines():
            if line:
                seen.append(orjson.loads(line))
                if wanted <= {e["object"]["metadata"]["name"] for e in seen}:
                    break
    done.set()


@pytest.mark.parametrize("kind", ["expire-next-watch", "drop-watches"])
def test_a_vw_watcher_loses_nothing_when_backend_watches_expire_or_drop(kind: str, proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    ext_ready(front)
    url = f"{vw_url(front)}/clusters/*/apis/example.dev/v1alpha1/widgets"
    assert direct.post(WIDGETS, json=widget("first")).status_code == 201
    eventually(lambda: "first" in {i["metadata"]["name"] for i in front.get(url).json()["items"]}, "first in the VW")
    rv = front.get(url).json()["metadata"]["resourceVersion"]
    seen: list[dict[str, Any]] = []
    done = threading.Event()
    thread = threading.Thread(target=_watch_vw, args=(proxy, url, rv, {"during", "after"}, seen, done))
    thread.start()
    if kind == "expire-next-watch":
        proxy.fault("remote", "expire-next-watch")
        eventually(lambda: proxy.fault("remote", "drop-watches")["dropped"] >= 1, "a backend watch to cut")  # the reflector watches again now
    assert direct.post(WIDGETS, json=widget("during")).status_code == 201
    if kind == "drop-watches":
        eventually(lambda: proxy.fault("remote", "drop-watches")["dropped"] >= 1, "a backend watch to cut")
    assert direct.post(WIDGETS, json=widget("after")).status_code == 201
    assert done.wait(10), f"the VW watcher saw {[(e['type'], e['object']['metadata']['name']) for e in seen]}"
    thread.join()
    added = [e["object"]["metadata"]["name"] for e in seen if e["type"] == "ADDED"]
    assert added.count("during") == 1 and added.count("after") == 1, added
    # the expired watch was consumed: the reflector relisted, and no fault is left
    eventually(lambda: "vwproxy_faults_active" not in front.get("/metrics").text, "the one-shot fault consumed")


def test_hung_holds_requests_until_the_request_timeout(proxy: RunningProxy, front: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    ext_ready(front)
    monkeypatch.setattr("vwproxy.upstream.client.READ_TIMEOUT_SECONDS", 0.5)  # the server runs in this process
    proxy.fault("remote", "hung")
    started = time.monotonic()
    resp = front.get(f"{EXT}{WIDGETS}")
    assert resp.status_code == 504 and resp.json()["reason"] == "Timeout", resp.text
    assert time.monotonic() - started >= 0.5
    proxy.clear_faults("remote")
    assert front.get(f"{EXT}{WIDGETS}").status_code == 200


def test_faults_registry_validates_and_expire_next_watch_is_one_shot() -> None:
    registry = Faults("remote")
    assert not registry.active
    for kind, args in (("melt", {}), ("drop-watches", {}), ("slow", {}), ("slow", {"ms": -1}), ("slow", {"ms": True})):
        with pytest.raises(FaultError):
            registry.set(kind, args)
    assert not registry.active
    registry.set("expire-next-watch", {})
    assert registry.active and not registry.take_expired_watch(is_watch=False), "a list is not a watch"
    assert registry.take_expired_watch(is_watch=True) and not registry.take_expired_watch(is_watch=True)
    assert not registry.active, "nothing left to consult"
    registry.set("slow", {"ms": 5})
    registry.clear()
    assert not registry.active and registry.kinds == {}


def observed_on_backend(direct: httpx.Client, name: str) -> bool:
    obj = direct.get(f"{WIDGETS}/{name}").json()
    return bool((obj.get("status") or {}).get("observedSize") == obj["spec"]["size"])


@pytest.mark.parametrize("kind", ["down", "hung", "slow", "expire-next-watch", "drop-watches"])
def test_a_controller_on_the_vw_converges_after_each_backend_fault(
    kind: str, proxy: RunningProxy, front: httpx.Client, direct: httpx.Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The controller of tests/test_workspace_faults.py on the VW, root:ext on the kube backend:
    while the backend misbehaves the other workspaces are reconciled; once it is cleared (the
    reflector resumes or relists) the widgets created on the backend meanwhile and after are too."""
    monkeypatch.setattr("vwproxy.upstream.client.READ_TIMEOUT_SECONDS", 0.5)  # the server runs in this process
    monkeypatch.setattr("vwproxy.upstream.client.RESPONSE_HEAD_SECONDS", 0.5)
    ext_ready(front)
    assert direct.post(WIDGETS, json=widget("before")).status_code == 201
    with WidgetController(proxy, vw_url(front)):
        eventually(lambda: observed_on_backend(direct, "before"), "root:ext's widget reconciled before the fault")
        answer = proxy.fault("remote", kind, **({"ms": 300} if kind == "slow" else {}))
        if kind in ("down", "hung"):
            assert answer["faults"] == [{"fault": kind}]
            eventually(lambda: proxy.cluster_of("root:ext") in " ".join(front.get(f"{vw_url(front)}/clusters/*/apis/example.dev/v1alpha1/widgets").headers.get_list("warning")),
                       "root:ext stale in the VW's Warning header")
        if kind == "expire-next-watch":
            eventually(lambda: proxy.fault("remote", "drop-watches")["dropped"] >= 1, "a backend watch to cut")  # the reflector watches again now
        assert direct.post(WIDGETS, json=widget("during")).status_code == 201
        assert front.post(f"/clusters/root:consumer-1{WIDGETS}", json=widget("elsewhere")).status_code == 201
        eventually(lambda: (front.get(f"/clusters/root:consumer-1{WIDGETS}/elsewhere").json().get("status") or {}).get("observedSize") == 1,
                   "another workspace reconciled meanwhile")
        proxy.clear_faults("remote")
        assert direct.post(WIDGETS, json=widget("after")).status_code == 201
        eventually(lambda: observed_on_backend(direct, "during") and observed_on_backend(direct, "after"), "root:ext converged after the fault", timeout=20)


def test_a_workspace_fault_stays_stale_while_its_backend_reflector_recovers(proxy: RunningProxy, front: httpx.Client, direct: httpx.Client) -> None:
    """A workspace `down` fault on a kube-backed workspace says "stale" for as long as it is set,
    even when the workspace's reflector relists and finds its backend healthy meanwhile."""
    ext_ready(front)
    url = f"{vw_url(front)}/clusters/*/apis/example.dev/v1alpha1/widgets"
    assert direct.post(WIDGETS, json=widget("seen")).status_code == 201
    eventually(lambda: "seen" in {i["metadata"]["name"] for i in front.get(url).json()["items"]}, "the reflector of root:ext running")
    proxy.workspace_fault("root:ext", "down")
    why = "workspace root:ext is down (fault injected)"
    assert why in front.get("/readyz").text
    # The backend cuts the reflector's watch and expires the next one: it relists, and the
    # relist succeeding reports the backend healthy.
    proxy.fault("remote", "expire-next-watch")
    eventually(lambda: proxy.fault("remote", "drop-watches")["dropped"] >= 1, "a backend watch to cut")
    eventually(lambda: 'fault="expire-next-watch"' not in front.get("/metrics").text, "the reflector relisted")
    assert why in front.get("/readyz").text, "a healthy reflector cleared the fault's stale mark"
    assert "vwproxy_stale_workspaces 1" in front.get("/metrics").text
    assert any(why in w for w in front.get(url).headers.get_list("warning")), front.get(url).headers
    proxy.clear_workspace_faults("root:ext")
    assert why not in front.get("/readyz").text
    assert "vwproxy_stale_workspaces 0" in front.get("/metrics").text
