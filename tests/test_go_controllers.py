"""Go controllers built on client-go, controller-runtime, multicluster-runtime and kcp's
multicluster-provider (the module in tests/go) run against `vwproxy serve`, as our users run
theirs against kcp; their effects are checked through the front.

The programs are built once per session into a cache folder keyed by the Go toolchain and the
module's sources, so reruns on the same machine skip the build; a cold build relies on Go's own
GOCACHE and GOMODCACHE. A missing `go` fails these tests: they are the only check of the Go
client stack.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support import eventually
from vwproxy.testing.proxy import RunningProxy

log = logging.getLogger(__name__)

GO_MODULE = Path(__file__).parent / "go"
PROGRAMS = ("apiexport-controller", "initializer")
# No VCS stamp (the module sits in this repository's work tree); no symbol table or DWARF,
# which nearly halves the link time and the size of the binaries (stack traces still work).
BUILD_FLAGS = ("-trimpath", "-buildvcs=false", "-ldflags=-s -w")
# A cold build (empty GOCACHE) of both programs costs about 235 CPU-seconds: 2-4.5 minutes on
# a 2-core machine depending on its load, the module downloads (~220 MB) adding little. This
# leaves room for a slower runner or module proxy.
BUILD_TIMEOUT_SECONDS = 600
# Builds for other sources (other branches, older commits) are dropped after a week unused.
STALE_BUILD_SECONDS = 7 * 24 * 3600
# The tests' own waits are bounded; this only catches a hang in the build fixture.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 120)
# How long a controller gets to engage its clusters and reconcile what is already there: the
# provider's caches sync in well under a second on loopback, a loaded CI runner is slower.
RECONCILE_SECONDS = 30.0
# How long a controller gets to exit after SIGTERM: controller-runtime waits for its workers.
STOP_SECONDS = 15.0

WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"
RECONCILED_BY = "example.dev/reconciled-by"
CLEANUP_FINALIZER = "example.dev/cleanup"
# The example's consumers of root:provider's widgets and what they hold; root:consumer-4
# binds root:rival's export, which the controller must never see.
PROVIDER_CONSUMERS = {"root:consumer-1": ("blue", "red"), "root:consumer-2": ("green",), "root:consumer-3": ("black", "yellow")}
RIVAL_CONSUMER = "root:consumer-4"


# -- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoPrograms:
    folder: Path
    build_seconds: float  # 0 when the cache folder already held this build

    def path(self, name: str) -> str:
        return str(self.folder / name)


def go_environment(go: str) -> str:
    """What besides the sources decides the binaries: toolchain, target, cgo."""
    return subprocess.run([go, "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED"], capture_output=True, text=True, check=True, timeout=60).stdout


def sources_digest(go: str) -> str:
    digest = hashlib.sha256(go_environment(go).encode() + "\0".join(BUILD_FLAGS).encode())
    files = [GO_MODULE / "go.mod", GO_MODULE / "go.sum", *sorted(GO_MODULE.rglob("*.go"))]
    for file in files:
        digest.update(str(file.relative_to(GO_MODULE)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def build_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vwproxy-go-tests"


def drop_stale_builds(root: Path) -> None:
    cutoff = time.time() - STALE_BUILD_SECONDS
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def go_programs(record_testsuite_property: Any) -> GoPrograms:
    go = shutil.which("go")
    if go is None:
        pytest.fail("`go` is not on PATH: install Go 1.26 or newer (https://go.dev/dl/) to run the Go controller tests; they are not optional")
    target = build_cache_root() / sources_digest(go)
    if all((target / name).is_file() for name in PROGRAMS):
        os.utime(target)  # in use: not stale
        drop_stale_builds(target.parent)
        log.info("Go programs cached in %s", target)
        record_testsuite_property("go_build_seconds", "cached")
        return GoPrograms(target, 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    # One invocation for all programs, so their shared packages are compiled once.
    try:
        result = subprocess.run(
            [go, "build", *BUILD_FLAGS, "-o", f"{staging}{os.sep}", "./cmd/..."],
            cwd=GO_MODULE, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"go build ./cmd/... in {GO_MODULE} took over {BUILD_TIMEOUT_SECONDS} s (module proxy unreachable?):\n{timeout.stderr!r}")
    build_seconds = time.monotonic() - started
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"go build ./cmd/... in {GO_MODULE} exited {result.returncode} after {build_seconds:.0f} s:\n{result.stderr}")
    try:
        staging.rename(target)
    except OSError:  # another session finished the same build first
        shutil.rmtree(staging, ignore_errors=True)
    drop_stale_builds(target.parent)
    log.info("built Go programs in %.1f s into %s", build_seconds, target)
    record_testsuite_property("go_build_seconds", round(build_seconds, 1))
    return GoPrograms(target, build_seconds)


# -- running ----------------------------------------------------------------------------------


def write_kubeconfig(path: Path, proxy: RunningProxy, server: str) -> Path:
    """A kubeconfig with one context for `server`, with the proxy's credentials and trust."""
    path.write_text(yaml.safe_dump(proxy.kubeconfig(server)))
    return path


class Controller:
    """A controller program running as a subprocess, its output in a log file."""

    def __init__(self, binary: str, args: list[str], log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        self.name = Path(binary).name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen([binary, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"{self.name} exited {code} early"

    def eventually(self, check: Callable[[], Any], what: str, timeout: float = RECONCILE_SECONDS) -> Any:
        """`support.eventually`, failing at once if the controller dies, with its log."""
        def alive_check() -> Any:
            self.assert_running()
            return check()
        try:
            return eventually(alive_check, what, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- {self.name} log ---\n{self.output()[-6000:]}") from None

    def stop(self) -> int:
        """SIGTERM, then wait: a controller-runtime manager drains and exits 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name} did not stop within {STOP_SECONDS} s of SIGTERM:\n{self.output()[-6000:]}") from None
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def controllers() -> Iterator[list[Controller]]:
    """Controllers a test started; any still running at teardown are killed."""
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.kill()


def run_controller(controllers: list[Controller], go_programs: GoPrograms, tmp_path: Path, name: str, *args: str) -> Controller:
    controller = Controller(go_programs.path(name), list(args), tmp_path / f"{name}.log")
    controllers.append(controller)
    return controller


# -- the APIExport controller ------------------------------------------------------------------


def widget(front: httpx.Client, workspace: str, name: str) -> dict[str, Any]:
    resp = front.get(f"/clusters/{workspace}/{WIDGETS}/{name}")
    assert resp.status_code == 200, (workspace, name, resp.text)
    return dict(resp.json())


def reconciled(obj: dict[str, Any], controller_name: str = "widget-controller") -> bool:
    status = obj.get("status") or {}
    return (
        (obj["metadata"].get("annotations") or {}).get(RECONCILED_BY) == controller_name
        and CLEANUP_FINALIZER in obj["metadata"].get("finalizers", [])
        and status.get("ready") is True
        and status.get("observedSize") == obj["spec"]["size"]
    )


def unreconciled(front: httpx.Client, consumers: dict[str, tuple[str, ...]]) -> list[str]:
    return [f"{ws}/{name}" for ws, names in consumers.items() for name in names if not reconciled(widget(front, ws, name))]


@pytest.fixture
def status_write(request: pytest.FixtureRequest) -> str:
    """How the widget controller writes status: `patch` (merge patch) or `update` (PUT)."""
    return str(getattr(request, "param", "patch"))


@pytest.fixture
def widget_controller(
    proxy: RunningProxy, go_programs: GoPrograms, controllers: list[Controller], tmp_path: Path, status_write: str, record_testsuite_property: Any,
) -> Controller:
    """apiexport-controller for root:provider's `widgets` endpoint slice, all existing widgets
    reconciled."""
    kubeconfig = write_kubeconfig(tmp_path / "provider.kubeconfig", proxy, proxy.workspace_url("root:provider"))
    controller = run_controller(
        controllers, go_programs, tmp_path, "apiexport-controller",
        "--kubeconfig", str(kubeconfig), "--endpointslice", "widgets", "--status-write", status_write,
    )
    with proxy.client(timeout=10) as front:
        controller.eventually(lambda: not unreconciled(front, PROVIDER_CONSUMERS), "every bound consumer's widgets to be reconciled")
    record_testsuite_property("apiexport_controller_reconcile_existing_seconds", round(time.monotonic() - controller.started, 2))
    return controller


@pytest.mark.parametrize("status_write", ["patch", "update"], indirect=True)
def test_apiexport_controller_reconciles_every_bound_consumer_through_the_virtual_workspace(
    widget_controller: Controller, front: httpx.Client, record_testsuite_property: Any,
) -> None:
    for name in ("purple", "white"):
        obj = widget(front, RIVAL_CONSUMER, name)
        assert RECONCILED_BY not in (obj["metadata"].get("annotations") or {}) and not obj.get("status"), "a rival's consumer is never touched"

    started = time.monotonic()
    created = front.post(f"/clusters/root:consumer-2/{WIDGETS}", json={
        "apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "late"}, "spec": {"size": 7, "color": "grey"},
    })
    assert created.status_code == 201, created.text
    widget_controller.eventually(lambda: reconciled(widget(front, "root:consumer-2", "late")), "a widget created later to be reconciled")
    record_testsuite_property("apiexport_controller_reconcile_new_widget_seconds", round(time.monotonic() - started, 2))

    patched = front.patch(f"/clusters/root:consumer-1/{WIDGETS}/red", json={"spec": {"size": 9}}, headers={"Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 200, patched.text
    widget_controller.eventually(lambda: widget(front, "root:consumer-1", "red").get("status", {}).get("observedSize") == 9, "a changed spec to be observed")

    deleted = front.delete(f"/clusters/root:consumer-3/{WIDGETS}/black")
    # kube-apiserver answers 200 here (202 only for orphanDependents=false); any success will do.
    assert deleted.is_success and deleted.json()["metadata"].get("deletionTimestamp"), "held by the controller's finalizer"
    widget_controller.eventually(lambda: front.get(f"/clusters/root:consumer-3/{WIDGETS}/black").status_code == 404, "the controller to release a deleted widget")

    assert widget_controller.stop() == 0, widget_controller.output()[-6000:]
    assert "stopped cleanly" in widget_controller.output()


def test_apiexport_controller_engages_a_consumer_bound_while_it_runs(widget_controller: Controller, proxy: RunningProxy, front: httpx.Client) -> None:
    workspace = front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={
        "apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "consumer-5"},
    })
    assert workspace.status_code == 201, workspace.text
    eventually(lambda: front.get("/clusters/root:consumer-5/api/v1/namespaces/default").status_code == 200, "the new workspace to be served")
    binding = front.post("/clusters/root:consumer-5/apis/apis.kcp.io/v1alpha2/apibindings", json={
        "apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "widgets"},
        "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}},
    })
    assert binding.status_code == 201, binding.text

    def bound() -> bool:
        return front.post(f"/clusters/root:consumer-5/{WIDGETS}", json={
            "apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "fresh"}, "spec": {"size": 3},
        }).status_code == 201
    eventually(bound, "the binding to serve widgets in root:consumer-5")
    widget_controller.eventually(lambda: reconciled(widget(front, "root:consumer-5", "fresh")), "a newly bound consumer's widget to be reconciled")
    assert widget_controller.stop() == 0, widget_controller.output()[-6000:]


# -- the initializer -----------------------------------------------------------------------------


def logical_cluster(front: httpx.Client, workspace: str) -> dict[str, Any]:
    return dict(front.get(f"/clusters/{workspace}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json())


def test_initializer_seeds_a_workspace_and_lets_it_go_ready(
    proxy: RunningProxy, front: httpx.Client, go_programs: GoPrograms, controllers: list[Controller], tmp_path: Path, record_testsuite_property: Any,
) -> None:
    created = front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={
        "apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "seeded"},
        "spec": {"type": {"name": "team", "path": "root"}},
    })
    assert created.status_code == 201, created.text
    eventually(lambda: "root:team" in (logical_cluster(front, "root:seeded").get("status") or {}).get("initializers", []),
               "the new workspace to wait on root:team")

    kubeconfig = write_kubeconfig(tmp_path / "root.kubeconfig", proxy, proxy.workspace_url("root"))
    initializer = run_controller(controllers, go_programs, tmp_path, "initializer", "--kubeconfig", str(kubeconfig), "--workspace-type", "team", "--configmap", "initialized", "--vw-wait", "5s")

    def seeded() -> dict[str, Any] | None:
        resp = front.get("/clusters/root:seeded/api/v1/namespaces/default/configmaps/initialized")
        return dict(resp.json()) if resp.status_code == 200 else None
    configmap = initializer.eventually(seeded, "the initializer's ConfigMap in root:seeded")
    assert configmap["data"] == {"initializer": "root:team", "workspace": "root:seeded"}

    def ready() -> bool:
        ws = front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/seeded").json()
        return bool((ws.get("status") or {}).get("phase") == "Ready")
    initializer.eventually(ready, "root:seeded to be Ready once its only initializer is removed")
    assert "root:team" not in (logical_cluster(front, "root:seeded").get("status") or {}).get("initializers", [])
    record_testsuite_property("initializer_seconds", round(time.monotonic() - initializer.started, 2))

    assert initializer.stop() == 0, initializer.output()[-6000:]
