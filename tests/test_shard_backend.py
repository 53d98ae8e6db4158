"""A declared shard-like backend (`shard: true` in backends.yaml): one `vwproxy shard` process
holding several workspaces under /clusters/<name>, followed with one wildcard list+watch per
resource instead of one per workspace; each workspace named there by `vwproxy.dev/backend-cluster`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from support import eventually
from test_kube_backend import TOKEN
from vwproxy.testing.process import ShardProcess
from vwproxy.testing.proxy import RunningProxy, example_topology

pytestmark = pytest.mark.timeout(60)

WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"
FAR = {"root:far-a": "far1", "root:far-b": "far2"}


def workspace_yaml(name: str, remote: str) -> str:
    return f"""\
apiVersion: tenancy.kcp.io/v1alpha1
kind: Workspace
metadata:
  name: {name}
  annotations: {{vwproxy.dev/backend: data-shard, vwproxy.dev/backend-cluster: {remote}}}
---
apiVersion: apis.kcp.io/v1alpha2
kind: APIBinding
metadata:
  name: widgets
  annotations: {{kcp.io/path: "root:{name}"}}
spec:
  reference:
    export: {{path: "root:provider", name: widgets}}
"""


@pytest.fixture(scope="module")
def data_shard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path_factory.mktemp("data-shard") / "data", token=TOKEN) as running:
        for remote in FAR.values():
            running.create_logical_cluster(remote)
        yield running


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, data_shard: ShardProcess) -> Iterator[RunningProxy]:
    folder = tmp_path_factory.mktemp("config") / "config"
    shutil.copytree(example_topology(), folder)
    (folder / "backend.token").write_text(TOKEN + "\n")
    (folder / "backends.yaml").write_text(
        "apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {name: data-shard}\n"
        f"spec:\n  url: {data_shard.url}\n  tokenFile: backend.token\n  shard: true\n"
    )
    for path, remote in FAR.items():
        (folder / f"50-{remote}.yaml").write_text(workspace_yaml(path.split(":")[1], remote))
    with RunningProxy(folder.parent / "data", folder) as running:
        yield running


def test_workspaces_on_a_shard_backend_are_served_through_one_wildcard_watch(proxy: RunningProxy, data_shard: ShardProcess) -> None:
    direct = httpx.Client(base_url=data_shard.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, trust_env=False)
    with proxy.client() as front, direct:
        for path in FAR:
            eventually(lambda p=path: front.get(f"/clusters/{p}/{WIDGETS}").status_code == 200, f"{path} bound")
        for path, remote in FAR.items():
            made = direct.post(f"/clusters/{remote}/{WIDGETS}", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": f"on-{remote}"}, "spec": {"size": 1}})
            assert made.status_code == 201, made.text
        vw = proxy.endpoint_url("root:provider", "widgets")
        clusters = {path: proxy.cluster_of(path) for path in FAR}

        def served() -> set[tuple[str, str]]:
            listed = front.get(f"{vw}/clusters/*/apis/example.dev/v1alpha1/widgets").json()["items"]
            return {(w["metadata"]["annotations"]["kcp.io/cluster"], w["metadata"]["name"]) for w in listed}

        wanted = {(clusters[p], f"on-{r}") for p, r in FAR.items()}
        eventually(lambda: wanted <= served(), "both workspaces' widgets, stamped with their proxy logical cluster")
        assert not any(c in FAR.values() for c, _ in served()), "the backend's own cluster names never leak"

        # Writes through the VW land in the workspace's cluster on the backend, read back at once.
        at = f"{vw}/clusters/{clusters['root:far-a']}/{WIDGETS}"
        made = front.post(at, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "via-vw"}, "spec": {"size": 2}})
        assert made.status_code == 201, made.text
        assert front.get(f"{at}/via-vw").json() == made.json()
        assert direct.get(f"/clusters/far1/{WIDGETS}/via-vw").status_code == 200
        assert direct.get(f"/clusters/far2/{WIDGETS}/via-vw").status_code == 404

    metrics = proxy.client().get("/metrics").text
    reflectors = next(int(line.split()[1]) for line in metrics.splitlines() if line.startswith("vwproxy_reflectors "))
    assert reflectors == 1, f"one feed for two workspaces on the shard backend, not one reflector each:\n{metrics}"
