"""A hung kube backend (issue 12): the process is stopped (SIGSTOP), its socket stays open, so
neither errors nor TCP keepalive reveal it. Its workspace must be stale within seconds
(/readyz, the stale-workspace metric, the Warning header) and a front request to it must be a
504 within the named read timeout; once resumed, it is current again. The timeouts are the
named constants, shortened here so the test takes seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import eventually
from test_kube_backend import EXT, TOKEN, ext_ready, kube_topology, widget
from test_vw_backends import WIDGETS, vw_url
from vwproxy.testing.process import ShardProcess
from vwproxy.testing.proxy import RunningProxy
from vwproxy.upstream import client as client_module
from vwproxy.upstream import reflector as reflector_module

pytestmark = pytest.mark.timeout(60)

READ_TIMEOUT = 1.5
HEARTBEAT = 0.5
PROBE_TIMEOUT = 0.5


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path / "backend-data", token=TOKEN) as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path, backend: ShardProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningProxy]:
    monkeypatch.setattr(client_module, "READ_TIMEOUT_SECONDS", READ_TIMEOUT)
    monkeypatch.setattr(client_module, "RESPONSE_HEAD_SECONDS", READ_TIMEOUT)
    monkeypatch.setattr(client_module, "PROBE_TIMEOUT_SECONDS", PROBE_TIMEOUT)
    monkeypatch.setattr(reflector_module, "HEARTBEAT_SECONDS", HEARTBEAT)
    with RunningProxy(tmp_path / "data", kube_topology(tmp_path / "config", backend)) as running:
        yield running


def test_a_hung_backend_is_stale_within_seconds_and_answers_504_in_time(proxy: RunningProxy, backend: ShardProcess) -> None:
    with proxy.client(timeout=30) as front:
        ext_ready(front)
        ext = proxy.cluster_of("root:ext")
        base = vw_url(front)
        assert front.post(f"{EXT}/{WIDGETS}/namespaces/default/widgets", json=widget("before")).status_code == 201
        eventually(lambda: ext in {i["metadata"]["annotations"]["kcp.io/cluster"] for i in front.get(f"{base}/clusters/*/{WIDGETS}/widgets").json()["items"]}, "ext in the view")

        backend.freeze()
        try:
            frozen_at = time.monotonic()
            eventually(lambda: f"workspace {ext}: stale" in front.get("/readyz").text, "/readyz naming the hung workspace", timeout=10)
            assert time.monotonic() - frozen_at < HEARTBEAT + PROBE_TIMEOUT + 3
            assert "vwproxy_stale_workspaces 1" in front.get("/metrics").text
            warned = front.get(f"{base}/clusters/*/{WIDGETS}/widgets")
            assert warned.status_code == 200 and ext in warned.headers.get("warning", "")
            asked_at = time.monotonic()
            hung = front.get(f"{EXT}/{WIDGETS}/namespaces/default/widgets")
            assert hung.status_code == 504 and hung.json()["reason"] == "Timeout", hung.text
            assert time.monotonic() - asked_at < READ_TIMEOUT + 2
            assert front.get("/clusters/root:consumer-1/api/v1/namespaces").status_code == 200, "the rest is served"
        finally:
            backend.resume()
        eventually(lambda: f"workspace {ext}" not in front.get("/readyz").text, "ext current again", timeout=15)
        assert front.get(f"{EXT}/{WIDGETS}/namespaces/default/widgets").status_code == 200
