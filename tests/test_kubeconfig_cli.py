"""`vwproxy kubeconfig` against a `vwproxy serve` subprocess, used by the real kubectl: the front,
a workspace, an export's virtual workspace (wildcard and one cluster), a user's token, and the
one-line errors naming the file or flag."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_serve_cli import Serve

from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.process import child_env

pytestmark = pytest.mark.timeout(120)

# The example topology: root:consumer-1..3 bind root:provider's widgets and hold these many.
EXAMPLE_PROVIDER_WIDGETS = 5
COMMAND_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    running = Serve(tmp_path_factory.mktemp("serve"))
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def vwproxy_kubeconfig(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vwproxy.cli", "kubeconfig", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=cwd, timeout=COMMAND_TIMEOUT_SECONDS, check=False)


def kubeconfig_of(served: Serve, tmp_path: Path, *args: str) -> dict[str, Any]:
    """`vwproxy kubeconfig … > k`, as a user runs it; the parsed kubeconfig."""
    result = vwproxy_kubeconfig(tmp_path, "--data-dir", str(served.data_dir), *args)
    assert result.returncode == 0, result.stderr
    (tmp_path / "k").write_text(result.stdout)
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def server_of(config: dict[str, Any]) -> str:
    return str(config["clusters"][0]["cluster"]["server"])


def test_the_export_kubeconfig_lists_every_widget_with_kubectl(served: Serve, tmp_path: Path) -> None:
    config = kubeconfig_of(served, tmp_path, "--export", "root:provider/widgets")
    assert server_of(config).startswith(f"{served.url}/services/apiexport/") and server_of(config).endswith("/widgets/clusters/*")
    kubectl = Kubectl(tmp_path / "kubectl")
    out = kubectl.ok("--kubeconfig", str(tmp_path / "k"), "get", "widgets", "-A", "-o", "name")
    assert len(out.split()) == EXAMPLE_PROVIDER_WIDGETS, out


def test_one_cluster_of_the_export_by_workspace_path(served: Serve, tmp_path: Path) -> None:
    with served.client() as client:
        cluster = client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/consumer-1").json()["spec"]["cluster"]
        expected = client.get("/clusters/root:consumer-1/apis/example.dev/v1alpha1/widgets").json()["items"]
    config = kubeconfig_of(served, tmp_path, "--export", "root:provider/widgets", "--cluster", "root:consumer-1")
    assert server_of(config).endswith(f"/widgets/clusters/{cluster}")
    listed = Kubectl(tmp_path / "kubectl", kubeconfig=config).json("get", "widgets", "-A")
    assert sorted(w["metadata"]["name"] for w in listed["items"]) == sorted(w["metadata"]["name"] for w in expected)


def test_the_front_and_a_workspace(served: Serve, tmp_path: Path) -> None:
    front = kubeconfig_of(served, tmp_path)
    assert server_of(front) == served.url
    names = Kubectl(tmp_path / "front", kubeconfig=front).ok("get", "workspaces", "-o", "name")
    assert "workspace.tenancy.kcp.io/consumer-1" in names.split()
    workspace = kubeconfig_of(served, tmp_path, "--workspace", "root:consumer-1")
    assert server_of(workspace) == f"{served.url}/clusters/root:consumer-1"
    widgets = Kubectl(tmp_path / "ws", kubeconfig=workspace).ok("get", "widgets", "-o", "name")
    assert widgets.split() and all(w.startswith("widget.example.dev/") for w in widgets.split()), widgets


def test_a_users_token_file_goes_into_the_kubeconfig(served: Serve, tmp_path: Path) -> None:
    with served.client() as client:
        made = client.post("/clusters/root:consumer-1/api/v1/namespaces/default/serviceaccounts", json={"metadata": {"name": "robot"}})
        assert made.status_code in (201, 409), made.text
        issued = client.post("/clusters/root:consumer-1/api/v1/namespaces/default/serviceaccounts/robot/token",
                             json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
        assert issued.status_code == 201, issued.text
    token_file = tmp_path / "robot.token"
    token_file.write_text(issued.json()["status"]["token"] + "\n")
    config = kubeconfig_of(served, tmp_path, "--workspace", "root:consumer-1", "--token-file", str(token_file))
    assert config["users"][0]["user"]["token"] == issued.json()["status"]["token"]
    assert server_of(config) == f"{served.url}/clusters/root:consumer-1"
    # kubectl reaches the server as the ServiceAccount (authenticated: a 403 at most, never a 401)
    result = Kubectl(tmp_path / "kubectl", kubeconfig=config).run("get", "configmaps")
    assert "Unauthorized" not in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "names"), [
    (("--export", "root:provider/nothing"), "--export root:provider/nothing"),
    (("--export", "widgets"), "--export widgets"),
    (("--workspace", "root:nope"), "--workspace root:nope"),
    (("--cluster", "x"), "--cluster"),
    (("--token", "forged"), "--token"),
    (("--token-file", "missing.token"), "missing.token"),
])
def test_errors_are_one_line_naming_the_flag_or_file(served: Serve, tmp_path: Path, args: tuple[str, ...], names: str) -> None:
    result = vwproxy_kubeconfig(tmp_path, "--data-dir", str(served.data_dir), *args)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and names in result.stderr, result.stderr


def test_without_a_data_dir_the_error_names_the_file(tmp_path: Path) -> None:
    result = vwproxy_kubeconfig(tmp_path, "--data-dir", str(tmp_path / "never-served"))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "admin.kubeconfig" in result.stderr, result.stderr
