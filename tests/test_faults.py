"""Faults on demand (issue 15): a test switches a kube backend's faults on and off through the
admin API while `serve` runs, and each has an effect a client of the front or the VW notices."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Iterator

import httpx
import pytest

from test_kube_backend import EXT, TOKEN, ShardProcess, backend, direct, ext_ready, front, kube_topology, widget  # noqa: F401  (fixtures)
from support import eventually
from vwproxy.testing.proxy import RunningProxy

WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"


@pytest.fixture
def proxy(tmp_path: Path, backend: ShardProcess) -> Iterator[RunningProxy]:
    with RunningProxy(tmp_path / "data", kube_topology(tmp_path / "config", backend), users={"alice": ["team"]}) as running:
        yield running


def test_down_answers_503_and_clearing_restores_service(proxy: RunningProxy, front: httpx.Client) -> None:
    ext_ready(front)
    assert front.post(f"{EXT}{WIDGETS}", json=widget("before")).status_code == 201
    proxy.fault("remote", "down")
    assert 'vwproxy_faults_active{backend="remote",fault="down"} 1' in front.get("/metrics").text
    resp = front.get(f"{EXT}{WIDGETS}/before")
    assert resp.status_code == 503 and "remote" in resp.json()["message"], resp.text
    assert front.get(f"/clusters/root:consumer-1{WIDGETS}").status_code == 200, "other workspaces keep working"
    proxy.clear_faults("remote")
    assert "vwproxy_faults_active" not in front.get("/metrics").text
    assert front.get(f"{EXT}{WIDGETS}/before").status_code == 200


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
    assert front.post("/vwproxy/faults/nowhere", json={"fault": "down"}).status_code == 404
    assert front.post("/vwproxy/faults/remote", json={"fault": "melt"}).status_code == 400
    assert front.post("/vwproxy/faults/remote", json={"fault": "slow"}).status_code == 400
