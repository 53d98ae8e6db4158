"""The pytest plugin's fixtures, used the way another project's tests would use them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.testing import factories
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.process import child_env
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


# -- wider scopes and the factories ------------------------------------------------------------

WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"


def endpoint_url(proxy: RunningProxy) -> str:
    with proxy.client() as client:
        slice_obj = client.get(f"{proxy.workspace_url('root:provider')}/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    return str(slice_obj["status"]["endpoints"][0]["url"])


def test_the_module_proxy_is_shared_by_the_module(vwproxy_proxy_module: RunningProxy, vwproxy_proxy_session: RunningProxy) -> None:
    _SEEN_MODULE_PROXY.append(vwproxy_proxy_module)
    assert vwproxy_proxy_module is not vwproxy_proxy_session
    with vwproxy_proxy_session.client() as client:
        assert client.get("/readyz").status_code == 200


def test_the_module_proxy_is_the_same_one_again(vwproxy_proxy_module: RunningProxy) -> None:
    assert _SEEN_MODULE_PROXY == [vwproxy_proxy_module]


_SEEN_MODULE_PROXY: list[RunningProxy] = []


def test_a_new_consumer_with_its_own_widget_becomes_visible_through_the_vw(
    vwproxy_proxy: RunningProxy, make_workspace: Callable[..., str], make_binding: Callable[..., dict[str, Any]],
    wait_visible: Callable[..., dict[str, Any]],
) -> None:
    cluster = make_workspace("root:consumer-9")
    assert cluster == vwproxy_proxy.cluster_of("root:consumer-9")
    binding = make_binding("root:consumer-9", "root:provider", "widgets")
    assert binding["status"]["apiExportClusterName"] == vwproxy_proxy.cluster_of("root:provider")
    with vwproxy_proxy.client() as front:
        made = front.post(f"{vwproxy_proxy.workspace_url('root:consumer-9')}/{WIDGETS}", json={
            "apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "green"}, "spec": {"size": 3, "color": "green"}})
        assert made.status_code == 201, made.text
    seen = wait_visible(endpoint_url(vwproxy_proxy), WIDGETS, "green", "root:consumer-9")
    assert seen["metadata"]["annotations"]["kcp.io/cluster"] == cluster


def test_wait_visible_fails_naming_what_it_waited_for(vwproxy_proxy: RunningProxy) -> None:
    with pytest.raises(factories.NotVisible, match="nothing-here"):
        factories.wait_visible(vwproxy_proxy, endpoint_url(vwproxy_proxy), WIDGETS, "nothing-here", "root:consumer-1", timeout=0.2)


def test_a_workspace_of_a_type_with_an_initializer_is_made_and_waits(vwproxy_proxy: RunningProxy, make_workspace: Callable[..., str]) -> None:
    make_workspace("root:team-b", type="root:team")
    with vwproxy_proxy.client() as front:
        ws = front.get(f"{vwproxy_proxy.workspace_url('root')}/apis/tenancy.kcp.io/v1alpha1/workspaces/team-b").json()
    assert ws["status"]["phase"] == "Initializing"


def test_a_service_account_kubeconfig_gets_exactly_its_rules(
    vwproxy_proxy: RunningProxy, service_account_kubeconfig: Callable[..., Path], tmp_path: Path,
) -> None:
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    path = service_account_kubeconfig("root:consumer-1", "reader", rules)
    kubectl = Kubectl(tmp_path / "kubectl")
    assert kubectl.run("--kubeconfig", str(path), "get", "configmaps").returncode == 0
    denied = kubectl.run("--kubeconfig", str(path), "get", "secrets")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_the_readme_example_passes_as_a_user_runs_it(tmp_path: Path) -> None:
    """examples/test_widget_controller.py and test_controller_under_faults.py, quoted in the README, run by pytest in a child process
    with the plugin found through its entry point."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    argv = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            str(examples / "test_widget_controller.py"), str(examples / "test_controller_under_faults.py")]
    result = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=100, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_readme_quotes_the_example_as_it_is() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    quoted = readme.split("```python\n", 1)[1].split("```\n", 1)[0]
    example = (root / "examples" / "test_widget_controller.py").read_text()
    assert example.split("\n", 1)[1] == quoted
    assert quoted.count("\n") < 30
    faults_quoted = readme.split("```python\n")[2].split("```\n", 1)[0]
    assert (root / "examples" / "test_controller_under_faults.py").read_text().split("\n", 1)[1] == faults_quoted
    assert faults_quoted.count("\n") < 30
    go_quoted = readme.split("```go\n", 1)[1].split("```\n", 1)[0]
    assert go_quoted == (root / "go" / "vwproxytest" / "example_test.go").read_text()
    assert go_quoted.count("\n") < 30
