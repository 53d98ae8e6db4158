"""The workspace lifecycle through the real front, as kcp runs it: initializers and terminators
from the WorkspaceType (and what it extends), the `system:apibindings` initializer for default
bindings, deletion held by terminators while content goes, and APIBinding deletion that takes
its bound objects first. Initializers and terminators finish by editing the LogicalCluster's
status through the shard, as the lifecycle virtual workspaces will let their controllers do.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.proxy import RunningProxy
from support import eventually

pytestmark = pytest.mark.timeout(60)

TENANCY = "/apis/tenancy.kcp.io/v1alpha1"
KCP = "/apis/apis.kcp.io/v1alpha2"
LC = "/apis/core.kcp.io/v1alpha1/logicalclusters/cluster"
WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
# kubectl's own run: a prompt answer is well under this.
KUBECTL_TIMEOUT_SECONDS = 20
_B62 = "0123456789abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def label(prefix: str, owner: str) -> tuple[str, str]:
    digest = hashlib.sha224(owner.encode()).hexdigest()
    return f"{prefix}/{digest[:35]}", digest


def b62sha224(text: str) -> str:
    number, out = int.from_bytes(hashlib.sha224(text.encode()).digest(), "big"), ""
    while number:
        number, rest = divmod(number, 62)
        out = _B62[rest] + out
    return out


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def workspace(front: httpx.Client, name: str, parent: str = "root") -> dict[str, Any]:
    got: dict[str, Any] = front.get(f"/clusters/{parent}{TENANCY}/workspaces/{name}").json()
    return got


def create_workspace(front: httpx.Client, name: str, type_name: str | None = None, type_path: str = "root") -> None:
    body: dict[str, Any] = {"metadata": {"name": name}}
    if type_name:
        body["spec"] = {"type": {"name": type_name, "path": type_path}}
    assert front.post(f"/clusters/root{TENANCY}/workspaces", json=body).status_code == 201


def wait_phase(front: httpx.Client, name: str, phase: str) -> dict[str, Any]:
    ws: dict[str, Any] = eventually(lambda: (w := workspace(front, name)).get("status", {}).get("phase") == phase and w, f"workspace {name} {phase}")
    return ws


def logical_cluster(front: httpx.Client, cluster: str) -> dict[str, Any]:
    got: dict[str, Any] = front.get(f"/clusters/{cluster}{LC}").json()
    return got


def patch_status(front: httpx.Client, cluster: str, status: dict[str, Any]) -> None:
    resp = front.patch(f"/clusters/{cluster}{LC}/status", content=json.dumps({"status": status}), headers=MERGE)
    assert resp.status_code == 200, resp.text


def add_type(front: httpx.Client, where: str, name: str, **spec: Any) -> None:
    body = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "WorkspaceType", "metadata": {"name": name}, "spec": spec}
    resp = front.post(f"/clusters/{where}{TENANCY}/workspacetypes", json=body)
    assert resp.status_code == 201, resp.text


def kubectl(proxy: RunningProxy, tmp_path: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return Kubectl(tmp_path, kubeconfig=proxy.kubeconfig(server)).run(*args, timeout=KUBECTL_TIMEOUT_SECONDS)


# -- creation and initialization -------------------------------------------------------------------


def test_example_team_workspace_waits_for_its_initializer(proxy: RunningProxy, front: httpx.Client) -> None:
    ws = wait_phase(front, "team-a", "Initializing")
    assert ws["spec"]["type"] == {"name": "team", "path": "root"}
    assert ws["status"]["initializers"] == ["root:team"], "no system:apibindings for a type without defaultAPIBindings"
    assert ws["status"]["terminators"] == ["root:team"]
    assert conditions(ws)["WorkspaceInitialized"] == "False"
    assert "core.kcp.io/logicalcluster" in ws["metadata"]["finalizers"]
    cluster = ws["spec"]["cluster"]
    lc = logical_cluster(front, cluster)
    assert lc["spec"]["initializers"] == lc["status"]["initializers"] == ["root:team"]
    assert lc["spec"]["terminators"] == lc["status"]["terminators"] == ["root:team"], "terminators listed from creation"
    init_key, init_value = label("initializer.internal.kcp.io", "root:team")
    term_key, term_value = label("terminator.internal.kcp.io", "root:team")
    assert lc["metadata"]["labels"] == {"tenancy.kcp.io/phase": "Initializing", init_key: init_value, term_key: term_value}
    assert lc["metadata"]["annotations"]["internal.tenancy.kcp.io/type"] == "root:team"
    assert proxy.settle()
    assert workspace(front, "team-a")["status"]["phase"] == "Initializing", "stays Initializing while the initializer is listed"

    patch_status(front, cluster, {"initializers": []})
    ws = wait_phase(front, "team-a", "Ready")
    assert conditions(ws)["WorkspaceInitialized"] == "True" and "initializers" not in ws["status"]
    assert ws["status"]["terminators"] == ["root:team"], "terminators stay listed while Ready"
    lc = logical_cluster(front, cluster)
    assert lc["status"]["phase"] == "Ready" and "initializers" not in lc["status"]
    assert lc["metadata"]["labels"] == {"tenancy.kcp.io/phase": "Ready", term_key: term_value}
    assert "kcp.io/has-terminators" in lc["metadata"]["finalizers"]


def test_initializers_and_terminators_of_extended_types(proxy: RunningProxy, front: httpx.Client) -> None:
    provider = proxy.cluster_of("root:provider")
    add_type(front, "root", "base", initializer=True, terminator=True)
    add_type(front, "root:provider", "mid", initializer=True, extend={"with": [{"name": "base", "path": "root"}]})
    add_type(front, "root", "leaf", terminator=True, extend={"with": [{"name": "mid", "path": "root:provider"}, {"name": "base", "path": "root"}]})
    create_workspace(front, "layered", "leaf")
    ws = wait_phase(front, "layered", "Initializing")
    assert ws["status"]["initializers"] == [f"{provider}:mid", "root:base"], "each extended type once, in kcp's order, named by logical cluster"
    assert ws["status"]["terminators"] == ["root:base", "root:leaf"]
    labels = logical_cluster(front, ws["spec"]["cluster"])["metadata"]["labels"]
    assert dict([label("initializer.internal.kcp.io", f"{provider}:mid"), label("initializer.internal.kcp.io", "root:base")]).items() <= labels.items()

    # a type that does not resolve (yet) keeps the workspace in Scheduling, saying why
    create_workspace(front, "early", "later")
    eventually(lambda: conditions(workspace(front, "early")).get("WorkspaceScheduled") == "False", "WorkspaceScheduled False")
    assert "later" in next(c["message"] for c in workspace(front, "early")["status"]["conditions"] if c["type"] == "WorkspaceScheduled")
    add_type(front, "root", "later")
    wait_phase(front, "early", "Ready")

    add_type(front, "root", "ouroboros", extend={"with": [{"name": "ouroboros", "path": "root"}]})
    create_workspace(front, "loop", "ouroboros")
    eventually(lambda: "circular" in str(workspace(front, "loop").get("status", {}).get("conditions")), "a cycle refused")


def test_default_api_bindings_are_created_and_waited_for(proxy: RunningProxy, front: httpx.Client) -> None:
    claims = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "gadgets"}, "spec": {
        "resources": [{"group": "example.dev", "name": "gizmos", "schema": "v1alpha1.gizmos.example.dev", "storage": {"crd": {}}}],
        "permissionClaims": [
            {"group": "", "resource": "configmaps", "verbs": ["get", "list"], "defaultSelector": {"matchLabels": {"app": "gadgets"}}},
            {"group": "", "resource": "secrets", "verbs": ["*"]},
        ]}}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=claims).status_code == 201
    add_type(front, "root", "plain-base", defaultAPIBindings=[{"path": "root:provider", "export": "widgets"}])
    add_type(front, "root", "equipped", extend={"with": [{"name": "plain-base"}]}, defaultAPIBindings=[{"path": "root:provider", "export": "gadgets"}])
    create_workspace(front, "equipped-1", "equipped")
    ws = wait_phase(front, "equipped-1", "Initializing")
    cluster = ws["spec"]["cluster"]
    assert ws["status"]["initializers"] == ["system:apibindings"], "a built-in initializer only where a type has defaultAPIBindings"
    widgets_name = f"widgets-{b62sha224(f'{cluster}|root:provider|widgets')[:5].lower()}"
    gadgets_name = f"gadgets-{b62sha224(f'{cluster}|root:provider|gadgets')[:5].lower()}"
    names = eventually(lambda: sorted(b["metadata"]["name"] for b in front.get(f"/clusters/{cluster}{KCP}/apibindings").json()["items"]) or None, "default bindings")
    assert names == sorted([widgets_name, gadgets_name])
    gadgets = front.get(f"/clusters/{cluster}{KCP}/apibindings/{gadgets_name}").json()
    assert gadgets["spec"]["reference"] == {"export": {"path": "root:provider", "name": "gadgets"}}
    assert gadgets["spec"]["permissionClaims"] == [
        {"group": "", "resource": "configmaps", "verbs": ["get", "list"], "defaultSelector": {"matchLabels": {"app": "gadgets"}},
         "selector": {"matchLabels": {"app": "gadgets"}}, "state": "Accepted"},
        {"group": "", "resource": "secrets", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"},
    ]
    assert "apis.kcp.io/apibinding-finalizer" in gadgets["metadata"]["finalizers"]

    # gadgets' schema does not exist: its binding cannot bind, so the initializer waits
    assert proxy.settle()
    lc = logical_cluster(front, cluster)
    assert lc["status"]["phase"] == "Initializing" and lc["status"]["initializers"] == ["system:apibindings"]
    waiting = next(c for c in lc["status"]["conditions"] if c["type"] == "WorkspaceAPIBindingsInitialized")
    assert waiting["status"] == "False" and waiting["reason"] == "WaitingOnAPIBindings" and gadgets_name in waiting["message"]
    schema = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIResourceSchema", "metadata": {"name": "v1alpha1.gizmos.example.dev"}, "spec": {
        "group": "example.dev", "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"}, "scope": "Namespaced",
        "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}]}}
    assert front.post(f"/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiresourceschemas", json=schema).status_code == 201
    ws = wait_phase(front, "equipped-1", "Ready")
    for name in (widgets_name, gadgets_name):
        assert conditions(front.get(f"/clusters/{cluster}{KCP}/apibindings/{name}").json())["InitialBindingCompleted"] == "True"
    assert front.get(f"/clusters/root:equipped-1{WIDGETS}").status_code == 200, "the default binding's resource is served"

    # an export that does not exist yet: the initializer says so, and goes on once it appears
    add_type(front, "root", "ahead", defaultAPIBindings=[{"path": "root:provider", "export": "future"}])
    create_workspace(front, "ahead-1", "ahead")
    ahead = wait_phase(front, "ahead-1", "Initializing")["spec"]["cluster"]

    def reason() -> str:
        found = [c for c in logical_cluster(front, ahead)["status"].get("conditions", []) if c["type"] == "WorkspaceAPIBindingsInitialized"]
        return str(found[0].get("reason", "")) if found else ""

    assert eventually(reason, "WorkspaceAPIBindingsInitialized False") == "APIBindingErrors"
    future = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "future"}, "spec": {}}
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=future).status_code == 201
    wait_phase(front, "ahead-1", "Ready")


# -- deletion ----------------------------------------------------------------------------------------


def test_kubectl_delete_workspace_returns_and_everything_goes(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    create_workspace(front, "brief")
    cluster = wait_phase(front, "brief", "Ready")["spec"]["cluster"]
    assert front.post(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "c"}}).status_code == 201
    binding = {"metadata": {"name": "widgets"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}}
    assert front.post(f"/clusters/{cluster}{KCP}/apibindings", json=binding).status_code == 201
    eventually(lambda: conditions(front.get(f"/clusters/{cluster}{KCP}/apibindings/widgets").json()).get("Ready") == "True", "binding Ready")
    assert front.post(f"/clusters/{cluster}{WIDGETS}", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}).status_code == 201

    started = time.monotonic()
    result = kubectl(proxy, tmp_path, f"{proxy.url}/clusters/root", "delete", "workspaces.tenancy.kcp.io", "brief")
    assert result.returncode == 0, result.stderr
    assert "deleted" in result.stdout and time.monotonic() - started < 10, "kubectl waits for the workspace, which goes at once without terminators"
    assert front.get(f"/clusters/root{TENANCY}/workspaces/brief").status_code == 404
    assert front.get(f"/clusters/{cluster}{LC}").status_code == 404
    assert front.get(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps").status_code == 404


def test_a_terminator_holds_deletion_while_content_goes(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    create_workspace(front, "held", "team")
    cluster = wait_phase(front, "held", "Initializing")["spec"]["cluster"]
    patch_status(front, cluster, {"initializers": []})
    wait_phase(front, "held", "Ready")
    assert front.post(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "c"}}).status_code == 201
    rv = front.get(f"/clusters/{cluster}{LC}").json()["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    connected, done = threading.Event(), threading.Event()

    def watch() -> None:
        url = f"/clusters/{cluster}/apis/core.kcp.io/v1alpha1/logicalclusters?watch=true&resourceVersion={rv}&timeoutSeconds=30"
        try:
            with proxy.client(timeout=40) as client, client.stream("GET", url) as resp:
                assert resp.status_code == 200
                connected.set()
                for line in resp.iter_lines():
                    if line.strip():
                        events.append(json.loads(line))
                        if events[-1]["type"] == "DELETED":
                            break
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)
        finally:
            connected.set()
            done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert connected.wait(10) and not failures, failures
    started = time.monotonic()
    result = kubectl(proxy, tmp_path, f"{proxy.url}/clusters/root", "delete", "workspaces.tenancy.kcp.io", "held", "--wait=false")
    assert result.returncode == 0 and time.monotonic() - started < 10, result.stderr

    ws = wait_phase(front, "held", "Terminating")
    assert ws["metadata"]["deletionTimestamp"] and ws["status"]["terminators"] == ["root:team"]
    lc = eventually(lambda: conditions(l := logical_cluster(front, cluster)).get("WorkspaceContentDeleted") == "True" and l, "content deleted")
    assert lc["metadata"]["deletionTimestamp"] and lc["status"]["phase"] == "Terminating"
    term_key, term_value = label("terminator.internal.kcp.io", "root:team")
    assert lc["metadata"]["labels"][term_key] == term_value and lc["metadata"]["labels"]["tenancy.kcp.io/phase"] == "Terminating"
    assert lc["metadata"]["finalizers"] == ["kcp.io/has-terminators"], "only the terminator holds it now"
    assert front.get(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps/c").status_code == 404, "content goes while terminating"
    assert proxy.settle()
    assert workspace(front, "held")["status"]["phase"] == "Terminating", "the terminator holds the deletion"

    patch_status(front, cluster, {"terminators": []})
    eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/held").status_code == 404, "workspace gone")
    assert front.get(f"/clusters/{cluster}{LC}").status_code == 404
    assert done.wait(10) and not failures, failures
    kinds = [(e["type"], bool(e["object"]["metadata"].get("deletionTimestamp")), e["object"].get("status", {}).get("phase")) for e in events]
    assert kinds[0] == ("MODIFIED", True, "Ready"), "first the deletionTimestamp"
    assert ("MODIFIED", True, "Terminating") in kinds and kinds[-1][0] == "DELETED"
    assert kinds.index(("MODIFIED", True, "Terminating")) < len(kinds) - 1
    assert any(e["type"] == "MODIFIED" and not e["object"]["status"].get("terminators") for e in events), "terminators emptied before the end"


def test_lifecycle_converges_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RunningProxy(data) as first:
        assert first.settle()
        with first.client(timeout=10) as front:
            team_a = wait_phase(front, "team-a", "Initializing")["spec"]["cluster"]
            create_workspace(front, "parting", "team")
            parting = wait_phase(front, "parting", "Initializing")["spec"]["cluster"]
            assert front.delete(f"/clusters/root{TENANCY}/workspaces/parting").status_code == 200
            wait_phase(front, "parting", "Terminating")
    with RunningProxy(data) as second:
        assert second.settle()
        with second.client(timeout=10) as front:
            assert workspace(front, "team-a")["status"]["phase"] == "Initializing"
            assert workspace(front, "parting")["status"]["phase"] == "Terminating"
            patch_status(front, team_a, {"initializers": []})
            wait_phase(front, "team-a", "Ready")
            patch_status(front, parting, {"terminators": []})
            eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/parting").status_code == 404, "workspace gone after restart")


# -- APIBinding deletion -----------------------------------------------------------------------------


def test_a_binding_goes_only_after_its_objects(proxy: RunningProxy, front: httpx.Client) -> None:
    from kubernetes import client as k8s

    held = {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "held", "finalizers": ["example.dev/hold"]}, "spec": {}}
    assert front.post(f"/clusters/root:consumer-1{WIDGETS}", json=held).status_code == 201
    with proxy.api_client(f"{proxy.url}/clusters/root:consumer-1") as api:
        deleted = k8s.CustomObjectsApi(api).delete_cluster_custom_object("apis.kcp.io", "v1alpha2", "apibindings", "widgets")
    assert deleted["metadata"]["deletionTimestamp"] and "apis.kcp.io/apibinding-finalizer" in deleted["metadata"]["finalizers"]

    def held_back() -> dict[str, Any] | None:
        binding = front.get(f"/clusters/root:consumer-1{KCP}/apibindings/widgets").json()
        return binding if conditions(binding).get("BindingResourceDeleteSuccess") == "False" else None

    binding = eventually(held_back, "binding waiting on a finalizer")
    assert next(c for c in binding["status"]["conditions"] if c["type"] == "BindingResourceDeleteSuccess")["reason"] == "SomeFinalizersRemain"
    listed = front.get(f"/clusters/root:consumer-1{WIDGETS}").json()["items"]
    assert [w["metadata"]["name"] for w in listed] == ["held"] and listed[0]["metadata"]["deletionTimestamp"], "the others went, held waits"
    assert proxy.settle()
    assert front.get(f"/clusters/root:consumer-1{KCP}/apibindings/widgets").status_code == 200, "the binding stays while an object remains"

    assert front.patch(f"/clusters/root:consumer-1{WIDGETS}/held", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE).status_code == 200
    eventually(lambda: front.get(f"/clusters/root:consumer-1{KCP}/apibindings/widgets").status_code == 404, "binding gone")
    assert front.get(f"/clusters/root:consumer-1{WIDGETS}").status_code == 404, "its CRD went before it"
