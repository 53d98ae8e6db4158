"""A kube backend that stops answering, or that backends.yaml never declared, as its users see it:
the Workspace's conditions and phase, `/readyz`, the log (once per transition), and kubectl.

The backend is a `vwproxy shard --token …` process (as in test_kube_backend.py), stopped and
started again on the same port.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import eventually
from test_kube_backend import TOKEN, kube_topology

from vwproxy.control.backend_health import REASON_UNREACHABLE, verdict
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.process import ShardProcess
from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(60)

WORKSPACES = "/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces"
LOGICAL_CLUSTER = "/apis/core.kcp.io/v1alpha1/logicalclusters/cluster"
HEALTH_LOGGER = "vwproxy.control.backend_health"
# Probe rounds to watch after a transition before counting log lines: several, so a log line
# per probe (rather than per transition) would show.
ROUNDS_AFTER_TRANSITION = 3


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path / "backend-data", token=TOKEN, log=tmp_path / "backend.log") as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path, backend: ShardProcess) -> Iterator[RunningProxy]:
    with RunningProxy(tmp_path / "data", kube_topology(tmp_path / "config", backend)) as running:
        yield running


@pytest.fixture
def front(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client(timeout=10) as client:
        yield client


def workspace(front: httpx.Client, name: str) -> dict[str, Any]:
    ws: dict[str, Any] = front.get(f"{WORKSPACES}/{name}").json()
    return ws


def condition(ws: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (ws.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def reachable_is(front: httpx.Client, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        ws = workspace(front, "ext")
        found = condition(ws, "BackendReachable")
        return ws if found is not None and found["status"] == status else None

    ws: dict[str, Any] = eventually(check, f"root:ext BackendReachable={status}")
    return ws


def wait_rounds(proxy: RunningProxy, rounds: int) -> None:
    health = proxy.app.control.health
    target = health.rounds + rounds
    eventually(lambda: health.rounds >= target, f"{rounds} more backend probe rounds")


def health_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == HEALTH_LOGGER and text in r.getMessage()]


def test_an_unreachable_backend_shows_in_the_workspace_readyz_and_log_and_clears_when_back(
    proxy: RunningProxy, front: httpx.Client, backend: ShardProcess, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=HEALTH_LOGGER)
    ws = reachable_is(front, "True")
    assert ws["status"]["phase"] == "Ready"
    assert "root:ext" not in front.get("/readyz").text

    backend.stop()
    ws = reachable_is(front, "False")
    cond = condition(ws, "BackendReachable")
    assert cond is not None and cond["reason"] == REASON_UNREACHABLE and "remote" in cond["message"], cond
    assert ws["status"]["phase"] == "Unavailable", "a Ready workspace whose backend is gone is Unavailable, as kcp's unready mounts"
    # the logical cluster lives in the embedded shard and keeps its phase; so do the other workspaces
    assert front.get(f"/clusters/root:ext{LOGICAL_CLUSTER}").json()["status"]["phase"] == "Ready"
    assert workspace(front, "consumer-1")["status"]["phase"] == "Ready"
    ready = front.get("/readyz")
    assert ready.status_code == 200, "a down backend is reported, not fatal: the other workspaces are served"
    assert '[-]workspace root:ext: backend "remote" is unreachable' in ready.text, ready.text
    wait_rounds(proxy, ROUNDS_AFTER_TRANSITION)
    assert len(health_lines(caplog, "backend remote went unreachable")) == 1, health_lines(caplog, "remote")

    backend.start()
    ws = reachable_is(front, "True")
    assert ws["status"]["phase"] == "Ready"
    eventually(lambda: "root:ext" not in front.get("/readyz").text, "readyz without root:ext")
    wait_rounds(proxy, ROUNDS_AFTER_TRANSITION)
    assert len(health_lines(caplog, "backend remote is reachable again")) == 1
    assert len(health_lines(caplog, "backend remote went unreachable")) == 1


def test_an_undeclared_backend_is_named_to_kubectl_and_in_readyz(tmp_path: Path, proxy: RunningProxy, front: httpx.Client) -> None:
    created = front.post(WORKSPACES, json={"metadata": {"name": "lost", "annotations": {"vwproxy.dev/backend": "nowhere"}}})
    assert created.status_code == 201, created.text
    eventually(lambda: condition(workspace(front, "lost"), "BackendValid"), "BackendValid on root:lost")
    assert workspace(front, "lost")["status"]["phase"] == "Unavailable"

    kubectl = Kubectl(tmp_path / "kubectl", kubeconfig=proxy.kubeconfig(proxy.workspace_url("root:lost")))
    result = kubectl.run("get", "configmaps")
    assert result.returncode != 0
    assert 'backend "nowhere"' in result.stderr and "backends.yaml" in result.stderr, result.stderr
    assert "unable to handle the request" not in result.stderr, result.stderr
    # the workspace's control-plane objects stay reachable through kubectl
    assert kubectl.run("get", "logicalclusters").returncode == 0

    ready = front.get("/readyz")
    assert ready.status_code == 200
    assert '[-]workspace root:lost: backend "nowhere" is not declared in backends.yaml' in ready.text, ready.text


@pytest.mark.parametrize(("status", "reachable", "reason"), [
    (200, True, "BackendReachable"), (404, True, "BackendReachable"),
    (401, False, "BackendRefusedCredentials"), (403, False, "BackendRefusedCredentials"),
    (503, False, REASON_UNREACHABLE), (None, False, REASON_UNREACHABLE),
])
def test_what_a_probe_answer_means(status: int | None, reachable: bool, reason: str) -> None:
    found = verdict("remote", status, "backend remote is unreachable: refused")
    assert (found.reachable, found.reason) == (reachable, reason)
    assert "remote" in found.message
