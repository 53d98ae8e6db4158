"""`vwproxy serve` as a user runs it: a subprocess, a port, a config folder, its exit code and stderr."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.process import child_env, stop_child
from vwproxy.testing.proxy import example_topology
from support import eventually, free_port

pytestmark = pytest.mark.timeout(60)

READY_TIMEOUT_SECONDS = 15.0
EXIT_TIMEOUT_SECONDS = 15.0
KCP = "/apis/apis.kcp.io/v1alpha2"
WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"






def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


class Serve:
    """One `python -m vwproxy.cli serve …` child process; output goes to files in tmp."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.stdout_path, self.stderr_path = tmp / "serve.stdout", tmp / "serve.stderr"
        self.argv = [sys.executable, "-m", "vwproxy.cli", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *args]
        self.given_cert = args[args.index("--tls-cert-file") + 1] if "--tls-cert-file" in args else None
        self.open = "--insecure-open" in args
        self.scheme = "http" if self.open and self.given_cert is None else "https"
        env = child_env()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=env, cwd=tmp)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self) -> Serve:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vwproxy serve exited with {self.proc.returncode}:\n{self.stderr}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1, verify=False).status_code == 200:  # only readiness
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"vwproxy serve not ready within {READY_TIMEOUT_SECONDS} s:\n{self.stderr}")

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """Trust in the server's certificate: the one given, or the CA `serve` made in its data dir."""
        if self.scheme == "http":
            return True
        return ssl.create_default_context(cafile=self.given_cert or str(self.data_dir / "ca.crt"))

    @property
    def token(self) -> str | None:
        """The admin's token `serve` wrote into its data dir (None for --insecure-open)."""
        if self.open:
            return None
        line = (self.data_dir / "tokens.csv").read_text().splitlines()[0]
        return line.split(",")[0]

    def client(self, timeout: float = 10) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, verify=self.verify, headers=headers, timeout=timeout)

    def wait_exit(self) -> int:
        """The exit code of a run expected to end on its own (bounded)."""
        try:
            return self.proc.wait(EXIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"vwproxy serve still running after {EXIT_TIMEOUT_SECONDS} s:\n{self.stderr}") from None

    def listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> int | None:
        return stop_child(self.proc)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        running = Serve(tmp_path, *args)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def config_folder(tmp_path: Path, files: dict[str, str], *, with_example: bool = True) -> Path:
    folder = tmp_path / "config"
    if with_example:
        shutil.copytree(example_topology(), folder)
    else:
        folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


# -- the default example ------------------------------------------------------------------------


def test_serve_with_the_example_topology(serve: Callable[..., Serve]) -> None:
    proc = serve().wait_ready()
    with proc.client(timeout=10) as client:
        widgets = eventually(lambda: (r := client.get(f"/clusters/root:consumer-1{WIDGETS}")).status_code == 200 and r.json()["items"], "consumer-1's widgets")
        assert sorted(w["metadata"]["name"] for w in widgets) == ["blue", "red"]
        ws = client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/consumer-1").json()
        cluster = ws["spec"]["cluster"]
        assert {w["metadata"]["annotations"]["kcp.io/cluster"] for w in widgets} == {cluster}
        assert ws["spec"]["URL"] == f"{proc.url}/clusters/root:consumer-1"
    # the log names every workspace with its logical cluster and URL
    assert f"workspace root:consumer-1: logical cluster {cluster}, {proc.url}/clusters/root:consumer-1" in proc.stderr
    for path in ("root:provider", "root:rival", "root:consumer-4"):
        assert f"workspace {path}: logical cluster " in proc.stderr
    # SIGTERM is a graceful shutdown (uvicorn re-raises the signal once done, hence -SIGTERM)
    assert proc.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in proc.stderr, proc.stderr


# -- invalid configuration fails before listening -------------------------------------------------


INVALID_MANIFESTS = {
    "missing-name": ("apiVersion: tenancy.kcp.io/v1alpha1\nkind: Workspace\nmetadata:\n  labels: {a: b}\n", ["bad.yaml#1", "metadata.name"]),
    "second-document": ("apiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {}\n", ["bad.yaml#2", "metadata.name"]),
    "missing-kind": ("apiVersion: v1\nmetadata: {name: x}\n", ["bad.yaml#1", "kind"]),
    "not-yaml": ("apiVersion: v1\nkind: Namespace\nmetadata: {name: [unclosed\n", ["bad.yaml", "not valid YAML"]),
    "a-list": ("- apiVersion: v1\n  kind: Namespace\n  metadata: {name: listed}\n", ["bad.yaml#1", "mapping"]),
    "unknown-workspace": ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lost\n  annotations: {kcp.io/path: 'root:nowhere'}\n", ["bad.yaml#1", "root:nowhere"]),
}
# Cases found by reading the files alone: nothing (not even the data folder) is created.
STATIC_CASES = {"missing-name", "second-document", "missing-kind", "not-yaml", "a-list"}


@pytest.mark.parametrize("case", sorted(INVALID_MANIFESTS))
def test_invalid_manifest_exits_before_listening_naming_file_and_field(tmp_path: Path, serve: Callable[..., Serve], case: str) -> None:
    text, expected = INVALID_MANIFESTS[case]
    config = config_folder(tmp_path, {"bad.yaml": text})
    proc = serve("--config", str(config))
    code = proc.wait_exit()
    assert code != 0
    assert not proc.listening()
    if case in STATIC_CASES:
        assert not proc.data_dir.exists(), "nothing is created before the configuration is known to be good"
    stderr = proc.stderr
    assert "Traceback" not in stderr, stderr
    assert "Uvicorn running" not in stderr and "Application startup complete" not in stderr, stderr
    assert str(config / "bad.yaml") in stderr, stderr
    for fragment in expected:
        assert fragment in stderr, f"{fragment!r} not in:\n{stderr}"


def test_backend_with_a_missing_kubeconfig_exits_naming_backends_yaml_and_the_field(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    backends = "apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {name: remote}\nspec:\n  kubeconfig: ./no-such-kubeconfig\n"
    config = config_folder(tmp_path, {"backends.yaml": backends})
    proc = serve("--config", str(config))
    assert proc.wait_exit() != 0
    assert not proc.listening()
    assert not proc.data_dir.exists(), "nothing is created before the configuration is known to be good"
    stderr = proc.stderr
    assert "backends.yaml" in stderr and "spec.kubeconfig" in stderr and "no-such-kubeconfig" in stderr, stderr
    assert "does not exist" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_binding_to_a_missing_export_does_not_stop_serving(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    ghost = (
        "apiVersion: apis.kcp.io/v1alpha2\nkind: APIBinding\nmetadata:\n  name: ghost\n  annotations: {kcp.io/path: 'root:consumer-2'}\n"
        "spec:\n  reference:\n    export: {path: 'root:provider', name: no-such-export}\n"
    )
    config = config_folder(tmp_path, {"50-ghost.yaml": ghost})
    proc = serve("--config", str(config)).wait_ready()
    with proc.client(timeout=10) as client:
        def not_ready() -> dict[str, Any] | None:
            binding = client.get(f"/clusters/root:consumer-2{KCP}/apibindings/ghost").json()
            ready = conditions(binding).get("Ready")
            return ready if ready and ready["status"] == "False" else None

        ready = eventually(not_ready, "the ghost binding's Ready=False condition")
        assert ready["reason"] == "APIExportNotFound"
        assert "root:provider:no-such-export not found" in ready["message"]
        # everything else is served as usual, including the good binding in the same workspace
        assert [w["metadata"]["name"] for w in client.get(f"/clusters/root:consumer-2{WIDGETS}").json()["items"]] == ["green"]
        assert conditions(client.get(f"/clusters/root:consumer-2{KCP}/apibindings/widgets").json())["Ready"]["status"] == "True"
    assert proc.proc.poll() is None


def test_external_url_is_what_clients_are_told(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    external = "https://vw.example:8443"
    proc = serve("--external-url", external + "/").wait_ready()
    with proc.client(timeout=10) as client:
        provider = client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/provider").json()
        cluster = provider["spec"]["cluster"]
        assert provider["spec"]["URL"] == f"{external}/clusters/root:provider"

        def endpoints() -> list[Any] | None:
            slice_obj = client.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
            return (slice_obj.get("status") or {}).get("endpoints")

        assert eventually(endpoints, "widgets slice endpoints") == [{"url": f"{external}/services/apiexport/{cluster}/widgets"}]
        lc = client.get("/clusters/root:provider/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json()
        assert lc["status"]["URL"] == f"{external}/clusters/root:provider"
        wst = client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspacetypes/team").json()
        assert [v["url"] for v in wst["status"]["virtualWorkspaces"]] == [
            f"{external}/services/initializingworkspaces/root:team",
            f"{external}/services/terminatingworkspaces/root:team",
        ]
        # nothing handed to clients names the listen address
        everything = client.get("/clusters/*/apis/tenancy.kcp.io/v1alpha1/workspaces").text + client.get("/clusters/*/apis/apis.kcp.io/v1alpha1/apiexportendpointslices").text
        assert f"127.0.0.1:{proc.port}" not in everything
    assert external in proc.stderr


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=vwproxy-test",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return str(cert), str(key)


def test_serve_over_https(serve: Callable[..., Serve], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    running = serve("--tls-cert-file", cert, "--tls-private-key-file", key).wait_ready()
    assert running.url.startswith("https://")
    with running.client(timeout=10) as client:
        slice_obj = client.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
        url = slice_obj["status"]["endpoints"][0]["url"]
        assert url.startswith(f"{running.url}/services/apiexport/"), "URLs it publishes use https"
        assert len(client.get(f"{url}/clusters/*/apis/example.dev/v1alpha1/widgets").json()["items"]) == 5
    out = Kubectl(tmp_path / "kubectl").run("--certificate-authority", cert, "--token", str(running.token), "get", "workspaces", "-o", "name", server=f"{running.url}/clusters/root")
    assert out.returncode == 0, out.stderr
    assert "workspace.tenancy.kcp.io/provider" in out.stdout.split()


def test_tls_flags_go_together(serve: Callable[..., Serve], tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path)
    running = serve("--tls-cert-file", cert)
    assert running.wait_exit() != 0
    assert "--tls-cert-file and --tls-private-key-file go together" in running.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--partition", "hash:3/2"], "--partition 'hash:3/2': hash:I/N needs"),
    (["--partition", "half"], "--partition 'half': a partition is all, none"),
    (["--shard-name", "Shard_1"], "--shard-name 'Shard_1': a shard name is a DNS label"),
    (["--join", "https://127.0.0.1:1", "--shard-name", "s1"], "--join needs --partition"),
    (["--join", "https://127.0.0.1:1", "--shard-name", "s1", "--partition", "hash:0/2"], "--join needs --join-secrets DIR"),
    (["--join", "https://127.0.0.1:1", "--partition", "hash:0/2", "--join-secrets", "."], "--join needs a --shard-name of its own"),
    (["--join", "https://127.0.0.1:1", "--shard-name", "s1", "--partition", "hash:0/2", "--join-secrets", "nowhere"], "--join-secrets nowhere: ca.crt: cannot read"),
    (["--join", "control-plane:6443", "--shard-name", "s1", "--partition", "hash:0/2", "--join-secrets", "."], "--join 'control-plane:6443': the control plane's URL"),
    (["--join-secrets", "."], "--join-secrets goes with --join"),
])
def test_shard_flags_are_checked_before_listening(serve: Callable[..., Serve], args: list[str], message: str) -> None:
    proc = serve(*args)
    assert proc.wait_exit() == 2
    assert not proc.listening()
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_seeded_data_dir_does_not_read_the_manifests_again(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    """The config seeds a new data dir once (DESIGN §5): a restart does not read its manifests (at
    10,000 workspaces that is most of a second), so a manifest broken since does not stop it and
    the log says why; `--reseed`, which applies them, still refuses it naming the file."""
    config = config_folder(tmp_path, {})
    first = serve("--config", str(config)).wait_ready()
    assert first.stop() == 0
    (config / "bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [not, a, name]}\n")
    again = serve("--config", str(config)).wait_ready()
    assert "are not read (--reseed applies them again)" in again.stderr, again.stderr
    assert again.stop() == 0
    reseed = serve("--config", str(config), "--reseed")
    assert reseed.wait_exit() == 2
    assert str(config / "bad.yaml") in reseed.stderr and "Traceback" not in reseed.stderr, reseed.stderr
