"""The Go widget controller (kcp's multicluster-provider v0.8.0 apiexport provider, built by
tests/test_go_controllers.py) survives every workspace fault (issue 15): while a consumer
workspace is down, hung, slow, late, expired or dropped, the other consumers are reconciled; once
the fault is cleared, the widgets created during and after it are reconciled too."""

from __future__ import annotations

import httpx
import pytest

from test_go_controllers import (  # noqa: F401  (fixtures)
    WIDGETS,
    Controller,
    controllers,
    reconciled,
    status_write,
    widget,
    widget_controller,
)
from vwproxy.testing.proxy import RunningProxy

FAULTED = "root:consumer-2"
FAULTS = [
    ("down", {}),
    ("hung", {}),
    ("slow", {"ms": 300}),
    ("delay", {"resource": "widgets.example.dev", "ms": 300}),
    ("expire-next-watch", {}),
    ("drop-watches", {}),
]


def create(front: httpx.Client, workspace: str, name: str) -> None:
    resp = front.post(f"/clusters/{workspace}/{WIDGETS}", json={
        "apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 4},
    })
    assert resp.status_code == 201, resp.text


def test_go_controller_converges_after_each_workspace_fault(
    widget_controller: Controller, proxy: RunningProxy, front: httpx.Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("vwproxy.upstream.client.READ_TIMEOUT_SECONDS", 1.0)  # hung: 504 after 1 s (the proxy runs in this process)
    for kind, args in FAULTS:
        answer = proxy.workspace_fault(FAULTED, kind, **args)
        if kind == "drop-watches":
            assert answer["dropped"] >= 1, "the provider's wildcard watches cover the workspace"
        if kind == "expire-next-watch":
            proxy.workspace_fault(FAULTED, "drop-watches")  # the provider's informers watch again: the first watch is the expired one
            widget_controller.eventually(lambda: "expire-next-watch" not in front.get("/metrics").text, "a provider watch answered 410 Expired")
        create(front, FAULTED, f"during-{kind}")
        create(front, "root:consumer-1", f"elsewhere-{kind}")
        widget_controller.eventually(lambda: reconciled(widget(front, "root:consumer-1", f"elsewhere-{kind}")),
                                     f"another consumer's widget reconciled while {FAULTED} is {kind}")
        proxy.clear_workspace_faults(FAULTED)
        create(front, FAULTED, f"after-{kind}")
        widget_controller.eventually(
            lambda: reconciled(widget(front, FAULTED, f"during-{kind}")) and reconciled(widget(front, FAULTED, f"after-{kind}")),
            f"{FAULTED}'s widgets created during and after {kind} reconciled once it is cleared",
        )
    assert "vwproxy_faults_active" not in front.get("/metrics").text
    assert widget_controller.stop() == 0, widget_controller.output()[-6000:]
