"""`vwproxy up --json` / `vwproxy down` from a subprocess, as a test in another language runs them:
the printed kubeconfig and VW URL work with kubectl, `down` ends the pid, errors are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vwproxy.kube.kcp import path_logical_cluster_name
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.process import child_env

pytestmark = pytest.mark.timeout(120)

COMMAND_TIMEOUT_SECONDS = 90
# The example topology: root:consumer-1..3 bind root:provider's widgets and hold these many.
EXAMPLE_PROVIDER_WIDGETS = 5


def vwproxy(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vwproxy.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=COMMAND_TIMEOUT_SECONDS, check=False)


def up(data_dir: Path, *args: str) -> dict[str, Any]:
    result = vwproxy("up", "--data-dir", str(data_dir), "--port", "0", "--json", *args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_up_prints_what_kubectl_needs_and_down_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    started = up(data_dir)
    try:
        assert started["dataDir"] == str(data_dir.resolve())
        assert Path(started["kubeconfig"]).is_file() and Path(started["ca"]).is_file() and Path(started["log"]).is_file()
        vw = started["endpoints"]["root:provider/widgets"][0]
        assert vw.startswith(f"{started['url']}/services/apiexport/")
        kubectl = Kubectl(tmp_path / "kubectl")
        # No sleeps: `up` answered only once every binding and endpoint slice was ready.
        names = kubectl.ok("--kubeconfig", started["kubeconfig"], "--server", f"{vw}/clusters/*", "get", "widgets", "-A", "-o", "name")
        assert len(names.split()) == EXAMPLE_PROVIDER_WIDGETS, names
        assert "root:provider" in kubectl.ok("--kubeconfig", started["kubeconfig"], "get", "workspaces")
        for_vw = started["endpointKubeconfigs"]["root:provider/widgets"]
        assert len(kubectl.ok("--kubeconfig", for_vw, "get", "widgets", "-A", "-o", "name").split()) == EXAMPLE_PROVIDER_WIDGETS
    finally:
        stopped = vwproxy("down", "--data-dir", str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 5
    while not gone(started["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(started["pid"])
    assert "Finished server process" in Path(started["log"]).read_text()


def test_down_without_a_running_serve_is_one_line(tmp_path: Path) -> None:
    result = vwproxy("down", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no running serve" in result.stderr


def test_up_with_a_bad_config_is_one_line_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "broken.yaml").write_text("apiVersion: tenancy.kcp.io/v1alpha1\nkind: Workspace\nmetadata: [\n")
    result = vwproxy("up", "--data-dir", str(tmp_path / "data"), "--config", str(config), "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "broken.yaml" in result.stderr, result.stderr


def test_a_second_up_on_the_same_data_dir_names_the_running_pid(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    started = up(data_dir, "--deterministic")
    try:
        # Deterministic: the export's cluster in the VW URL is known before the run.
        assert f"/services/apiexport/{path_logical_cluster_name('root:provider')}/widgets" in started["endpoints"]["root:provider/widgets"][0]
        again = vwproxy("up", "--data-dir", str(data_dir), "--json")
        assert again.returncode == 1 and f"pid {started['pid']}" in again.stderr and again.stderr.count("\n") == 1
    finally:
        assert vwproxy("down", "--data-dir", str(data_dir)).returncode == 0


def test_the_go_package_runs_its_example_under_go_test() -> None:
    """go/vwproxytest (its own module, standard library only) wraps `up`/`down` for `go test`."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("`go` is not on PATH: install Go 1.22 or newer to run the Go package's example")
    module = Path(__file__).resolve().parent.parent / "go" / "vwproxytest"
    env = child_env({"VWPROXY": f"{sys.executable} -m vwproxy.cli", "GOFLAGS": "-count=1"})
    result = subprocess.run([go, "test", "./..."], cwd=module, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_hands_out_service_account_kubeconfigs(tmp_path: Path) -> None:
    """`--service-account WS/NAME=EXPORT`: a ServiceAccount granted the export's content, its own
    TokenRequest token, a kubeconfig for its workspace and one for the export's VW; without
    `=EXPORT`, the token grants nothing in the VW. A second `up` on the data dir applies the same."""
    data_dir = tmp_path / "data"
    started = up(data_dir, "--service-account", "root:provider/controller=widgets", "--service-account", "root:consumer-1/nobody")
    kubectl = Kubectl(tmp_path / "kubectl")
    try:
        controller = started["serviceAccounts"]["root:provider/controller"]
        vw_config = controller["endpointKubeconfigs"]["root:provider/widgets"]
        assert "token: " in Path(vw_config).read_text() and started["kubeconfig"] != vw_config
        names = kubectl.ok("--kubeconfig", vw_config, "get", "widgets", "-A", "-o", "name")
        assert len(names.split()) == EXAMPLE_PROVIDER_WIDGETS, names
        assert "serviceaccount/controller" in kubectl.ok("--kubeconfig", started["kubeconfig"], "--server", f"{started['url']}/clusters/root:provider", "get", "serviceaccounts", "-o", "name")
        not_admin = kubectl.run("--kubeconfig", controller["kubeconfig"], "get", "workspaces")
        assert not_admin.returncode != 0 and "forbidden" in not_admin.stderr.lower(), "the ServiceAccount's token, not the admin's"
        # What a multicluster-provider reads first: the endpoint slice, in its own workspace.
        url = kubectl.ok("--kubeconfig", controller["kubeconfig"], "get", "apiexportendpointslices", "widgets", "-o", "jsonpath={.status.endpoints[0].url}")
        assert url == started["endpoints"]["root:provider/widgets"][0]
        nobody = started["serviceAccounts"]["root:consumer-1/nobody"]
        assert nobody["endpointKubeconfigs"] == {}
        denied = kubectl.run("--kubeconfig", nobody["kubeconfig"], "--server", f"{url}/clusters/*", "get", "widgets", "-A")
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    finally:
        assert vwproxy("down", "--data-dir", str(data_dir)).returncode == 0
    again = up(data_dir, "--service-account", "root:provider/controller=widgets")
    try:
        names = kubectl.ok("--kubeconfig", again["serviceAccounts"]["root:provider/controller"]["endpointKubeconfigs"]["root:provider/widgets"], "get", "widgets", "-A", "-o", "name")
        assert len(names.split()) == EXAMPLE_PROVIDER_WIDGETS
    finally:
        assert vwproxy("down", "--data-dir", str(data_dir)).returncode == 0


@pytest.mark.parametrize(("spec", "code", "said"), [
    ("controller", 2, "WORKSPACE/NAME"),  # argparse: before anything starts
    ("root:provider/Bad_Name", 2, "WORKSPACE/NAME"),
    ("root:nowhere/controller", 1, "workspace root:nowhere not found"),
    ("root:provider/controller=gadgets", 1, "no endpoint slice root:provider/gadgets"),
])
def test_up_with_a_bad_service_account_is_one_line(tmp_path: Path, spec: str, code: int, said: str) -> None:
    data_dir = tmp_path / "data"
    result = vwproxy("up", "--data-dir", str(data_dir), "--json", "--service-account", spec)
    assert result.returncode == code and result.stdout == "", result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr, result.stderr
    if code == 1:
        assert result.stderr.count("\n") == 1, result.stderr
        state = data_dir / "serve.json"
        deadline = time.monotonic() + 15
        while state.exists() and time.monotonic() < deadline:  # the serve it started is stopped again
            time.sleep(0.05)
        assert not state.exists()
