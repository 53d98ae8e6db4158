"""The pytest plugin's fixtures, used the way another project's tests would use them."""

from __future__ import annotations

import httpx

from vwproxy.testing.proxy import RunningProxy
from vwproxy.testing.shard import EmbeddedShard


def test_shard_fixture(vwproxy_shard: EmbeddedShard) -> None:
    url = vwproxy_shard.create_logical_cluster("mine")
    created = httpx.post(f"{url}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}})
    assert created.status_code == 201 and created.json()["metadata"]["annotations"]["kcp.io/cluster"] == "mine"


def test_proxy_fixture_serves_the_example_and_its_virtual_workspace(vwproxy_proxy: RunningProxy) -> None:
    with vwproxy_proxy.client() as client:
        slice_obj = client.get(f"{vwproxy_proxy.workspace_url('root:provider')}/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
        url = slice_obj["status"]["endpoints"][0]["url"]
        widgets = client.get(f"{url}/clusters/*/apis/example.dev/v1alpha1/widgets").json()["items"]
    assert len(widgets) == 5
    assert {w["metadata"]["annotations"]["kcp.io/cluster"] for w in widgets} == {vwproxy_proxy.cluster_of(f"root:consumer-{n}") for n in (1, 2, 3)}
