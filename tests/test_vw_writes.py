"""Optimistic concurrency through the APIExport virtual workspace, on both kinds of backend.

A client only ever sees proxy resourceVersions; the backend holds its own. A precondition the
client sends (`metadata.resourceVersion` in an update, a merge or JSON patch, an apply; a
DELETE's `preconditions.resourceVersion`) must behave as it does on kcp: the RV the client
last read succeeds, an older one is a 409 Conflict. Each case runs against root:consumer-1 (the
embedded shard) and root:ext (a kube backend: a second `vwproxy shard --token` process).
One proxy and one backend serve the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import kubernetes
import orjson
import pytest
from kubernetes.client.rest import ApiException

from support import eventually
from test_kube_backend import EXT, TOKEN, ext_ready, kube_topology
from vwproxy.testing.process import ShardProcess
from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(60)

WIDGETS = "apis/example.dev/v1alpha1"
BACKENDS = {"embedded": "root:consumer-1", "kube": EXT.removeprefix("/clusters/")}


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path_factory.mktemp("remote") / "data", token=TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, remote: ShardProcess) -> Iterator[RunningProxy]:
    folder = tmp_path_factory.mktemp("topology")
    with RunningProxy(folder / "data", kube_topology(folder / "config", remote)) as running:
        yield running


@pytest.fixture(scope="module")
def front(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client(timeout=10) as client:
        ext_ready(client)
        yield client


@pytest.fixture(params=sorted(BACKENDS))
def at(request: pytest.FixtureRequest, proxy: RunningProxy, front: httpx.Client) -> str:
    """The VW URL of one workspace's widgets in `default`, on the embedded or the kube backend."""
    slice_obj = front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    cluster = proxy.cluster_of(BACKENDS[request.param])
    url = f"{slice_obj['status']['endpoints'][0]['url']}/clusters/{cluster}/{WIDGETS}/namespaces/default/widgets"
    eventually(lambda: front.get(url).status_code == 200, f"{BACKENDS[request.param]} engaged in the view")
    return url


def stale_and_current(front: httpx.Client, at: str, name: str) -> tuple[str, dict[str, Any]]:
    """Create a widget through the VW and change it once: (its first RV, now stale; the object as it is)."""
    made = front.post(at, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1}})
    assert made.status_code == 201, made.text
    changed = front.patch(f"{at}/{name}", content=b'{"metadata":{"labels":{"step":"2"}}}', headers={"content-type": "application/merge-patch+json"})
    assert changed.status_code == 200, changed.text
    stale, current = made.json()["metadata"]["resourceVersion"], changed.json()
    assert int(current["metadata"]["resourceVersion"]) > int(stale) > 10**15, "proxy RVs"
    return stale, dict(current)


def assert_conflict(resp: httpx.Response) -> None:
    assert resp.status_code == 409, f"{resp.status_code} {resp.text}"
    status = resp.json()
    assert (status["kind"], status["reason"]) == ("Status", "Conflict")


def assert_written(front: httpx.Client, at: str, resp: httpx.Response, before: dict[str, Any]) -> dict[str, Any]:
    """A successful write answers in proxy RVs, newer than before, and the VW then holds exactly that."""
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    obj: dict[str, Any] = resp.json()
    assert int(obj["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert obj["metadata"]["annotations"]["kcp.io/cluster"] == before["metadata"]["annotations"]["kcp.io/cluster"]
    assert front.get(f"{at}/{obj['metadata']['name']}").json() == obj, "read your own write"
    return obj


def test_update_with_a_stale_resource_version_conflicts(front: httpx.Client, at: str) -> None:
    stale, current = stale_and_current(front, at, "upd")
    old = {**current, "metadata": {**current["metadata"], "resourceVersion": stale}, "spec": {"size": 2}}
    assert_conflict(front.put(f"{at}/upd", json=old))
    now = {**current, "spec": {"size": 3}}
    assert assert_written(front, at, front.put(f"{at}/upd", json=now), current)["spec"]["size"] == 3


def test_merge_patch_with_a_resource_version_is_a_precondition(front: httpx.Client, at: str) -> None:
    stale, current = stale_and_current(front, at, "merge")
    merge = {"content-type": "application/merge-patch+json"}
    assert_conflict(front.patch(f"{at}/merge", content=orjson.dumps({"metadata": {"resourceVersion": stale}, "spec": {"size": 4}}), headers=merge))
    ok = front.patch(f"{at}/merge", content=orjson.dumps({"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "spec": {"size": 5}}), headers=merge)
    assert assert_written(front, at, ok, current)["spec"]["size"] == 5


@pytest.mark.parametrize(("op", "refusal"), [("replace", 409), ("test", 422)], ids=["replace", "test"])
def test_json_patch_on_the_resource_version_is_a_precondition(front: httpx.Client, at: str, op: str, refusal: int) -> None:
    """`replace` sets the update's precondition; `test` is JSON patch's own "only if unchanged"."""
    stale, current = stale_and_current(front, at, f"json-{op}")
    json_patch = {"content-type": "application/json-patch+json"}

    def ops(rv: str, size: int) -> bytes:
        return orjson.dumps([{"op": op, "path": "/metadata/resourceVersion", "value": rv}, {"op": "replace", "path": "/spec/size", "value": size}])

    refused = front.patch(f"{at}/json-{op}", content=ops(stale, 6), headers=json_patch)
    assert refused.status_code == refusal and refused.json()["reason"] == ("Conflict" if refusal == 409 else "Invalid"), refused.text
    ok = front.patch(f"{at}/json-{op}", content=ops(current["metadata"]["resourceVersion"], 7), headers=json_patch)
    assert assert_written(front, at, ok, current)["spec"]["size"] == 7


def test_apply_with_a_resource_version_is_a_precondition(front: httpx.Client, at: str) -> None:
    stale, current = stale_and_current(front, at, "applied")
    apply = {"content-type": "application/apply-patch+yaml"}

    def manifest(rv: str, size: int) -> bytes:
        return f"apiVersion: example.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: applied\n  namespace: default\n  resourceVersion: '{rv}'\nspec:\n  size: {size}\n".encode()

    params = {"fieldManager": "precondition-test", "force": "true"}
    assert_conflict(front.patch(f"{at}/applied", params=params, content=manifest(stale, 9), headers=apply))
    ok = front.patch(f"{at}/applied", params=params, content=manifest(current["metadata"]["resourceVersion"], 10), headers=apply)
    assert assert_written(front, at, ok, current)["spec"]["size"] == 10


def test_delete_preconditions_use_the_resource_version_the_client_read(front: httpx.Client, at: str) -> None:
    stale, current = stale_and_current(front, at, "doomed")
    assert_conflict(front.request("DELETE", f"{at}/doomed", json={"preconditions": {"resourceVersion": stale}}))
    assert front.get(f"{at}/doomed").status_code == 200, "a refused delete deletes nothing"
    gone = front.request("DELETE", f"{at}/doomed", json={"preconditions": {"resourceVersion": current["metadata"]["resourceVersion"], "uid": current["metadata"]["uid"]}})
    assert gone.status_code == 200, gone.text
    assert gone.json()["metadata"]["annotations"]["kcp.io/cluster"] == current["metadata"]["annotations"]["kcp.io/cluster"]
    assert front.get(f"{at}/doomed").status_code == 404


def test_the_python_client_deletes_with_a_precondition(proxy: RunningProxy, front: httpx.Client, at: str) -> None:
    stale, current = stale_and_current(front, at, "py-doomed")
    host, _, rest = at.partition("/apis/")
    custom = kubernetes.client.CustomObjectsApi(proxy.api_client(host))
    with pytest.raises(ApiException) as conflict:
        custom.delete_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets", "py-doomed",
                                               body=kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(resource_version=stale)))
    assert conflict.value.status == 409
    custom.delete_namespaced_custom_object("example.dev", "v1alpha1", "default", "widgets", "py-doomed",
                                           body=kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(resource_version=current["metadata"]["resourceVersion"])))
    assert front.get(f"{at}/py-doomed").status_code == 404




def test_a_create_answers_what_the_view_then_holds(front: httpx.Client, at: str) -> None:
    """Read your own create: the answer's proxy RV is the one a GET right after it returns, on a
    kube backend too (the name comes from the answer there: generateName leaves the path without one)."""
    for body in ({"metadata": {"name": "fresh"}}, {"metadata": {"generateName": "gen-"}}):
        made = front.post(at, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "spec": {"size": 1}, **body})
        assert made.status_code == 201, made.text
        name = made.json()["metadata"]["name"]
        assert front.get(f"{at}/{name}").json() == made.json(), "read your own create"
