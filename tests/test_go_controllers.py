"""Go controllers built on client-go, controller-runtime, multicluster-runtime and kcp's
multicluster-provider (the module in tests/go) run against `vwproxy serve`, as our users run
theirs against kcp; their effects are checked through the front.

The programs are built once per session by the `go_programs` fixture (tests/gobuild.py), into a
cache folder keyed by the Go toolchain and the module's sources. A missing `go` fails these
tests: they are the only check of the Go client stack.

Besides our own programs, kcp's multicluster-provider example `examples/apiexport` is built
unchanged and run on the example's own manifests (permission claims on configmaps and events, a
WorkspaceType whose default binding accepts them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gobuild import BUILD_TIMEOUT_SECONDS, GO_MODULE, STOCK_EXAMPLE, STOCK_EXAMPLE_MODULE, GoPrograms
from support import eventually
from vwproxy.testing.proxy import RunningProxy

log = logging.getLogger(__name__)

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


# -- running ----------------------------------------------------------------------------------


def write_kubeconfig(path: Path, proxy: RunningProxy, server: str) -> Path:
    """A kubeconfig with one context for `server`, with the proxy's credentials and trust."""
    path.write_text(yaml.safe_dump(proxy.kubeconfig(server)))
    return path


class Controller:
    """A controller program running as a subprocess, its output in a log file."""

    def __init__(self, binary: str, args: list[str], log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env.update(extra_env or {})
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


def run_controller(controllers: list[Controller], go_programs: GoPrograms, tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> Controller:
    controller = Controller(go_programs.path(name), list(args), tmp_path / f"{name}.log", env)
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


# -- permission claims: multicluster-provider's apiexport example ------------------------------

# The config folder: the example's bundle.yaml (copied at run time, unchanged, from the module
# go.mod pins) plus tests/go/testdata/apiexport-example (two more workspaces); root:universal, which
# the example's WorkspaceType extends, is bootstrapped by vwproxy as by kcp.
EXAMPLE_TESTDATA = GO_MODULE / "testdata" / "apiexport-example"
EXAMPLE_BUNDLE = "examples/apiexport/manifests/bundle.yaml"
EXAMPLE_EXPORT = "examples-apiexport-multicluster"  # the APIExport, its endpoint slice and the WorkspaceType
EXAMPLE_CONSUMERS = ("root:example1", "root:example2", "root:example3", "root:tenant")
SEEDED_CONFIGMAPS = {"root:tenant": ("limits", "settings")}
BYSTANDER = "root:bystander"  # universal, no binding: its ConfigMap `private` is never claimed
CONFIGMAPS = "api/v1/namespaces/default/configmaps"
# The stock example serves metrics on this fixed port (manager.Options{}): only one can run.
STOCK_METRICS_PORT = 8080


@pytest.fixture(scope="session")
def example_bundle(go_programs: GoPrograms) -> Path:
    """The example's bundle.yaml in the module source, the version go.mod pins (downloaded if the
    module cache lacks it, as when the programs came from the build cache folder)."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", STOCK_EXAMPLE_MODULE], cwd=GO_MODULE, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False,
    )
    assert result.returncode == 0, f"go mod download {STOCK_EXAMPLE_MODULE}: {result.stdout}{result.stderr}"
    bundle = Path(json.loads(result.stdout)["Dir"]) / EXAMPLE_BUNDLE
    assert bundle.is_file(), f"{bundle} is missing from the module source"
    return bundle


@pytest.fixture
def example_proxy(tmp_path: Path, example_bundle: Path) -> Iterator[RunningProxy]:
    """`vwproxy serve --config` on the example's bundle, settled."""
    config = tmp_path / "config"
    config.mkdir()
    shutil.copyfile(example_bundle, config / "10-bundle.yaml")
    for manifest in EXAMPLE_TESTDATA.glob("*.yaml"):
        shutil.copyfile(manifest, config / manifest.name)
    with RunningProxy(tmp_path / "data", config) as running:
        assert running.settle()
        yield running


@pytest.fixture
def example_front(example_proxy: RunningProxy) -> Iterator[httpx.Client]:
    with example_proxy.client(timeout=10) as client:
        yield client


def example_bindings(front: httpx.Client, workspace: str) -> list[dict[str, Any]]:
    resp = front.get(f"/clusters/{workspace}/apis/apis.kcp.io/v1alpha2/apibindings")
    assert resp.status_code == 200, (workspace, resp.text)
    return [b for b in resp.json()["items"] if b["spec"]["reference"]["export"] == {"path": "root", "name": EXAMPLE_EXPORT}]


def claims_accepted(binding: dict[str, Any]) -> bool:
    states = {(c.get("group", ""), c["resource"]): c.get("state") for c in binding["spec"].get("permissionClaims", [])}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in binding.get("status", {}).get("conditions", []))
    return ready and states == {("", "configmaps"): "Accepted", ("", "events"): "Accepted"}


def create_configmap(front: httpx.Client, workspace: str, name: str) -> dict[str, Any]:
    resp = front.post(f"/clusters/{workspace}/{CONFIGMAPS}", json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"from": "test"}})
    assert resp.status_code == 201, (workspace, name, resp.text)
    return dict(resp.json())


def configmap(front: httpx.Client, workspace: str, name: str) -> dict[str, Any]:
    resp = front.get(f"/clusters/{workspace}/{CONFIGMAPS}/{name}")
    assert resp.status_code == 200, (workspace, name, resp.text)
    return dict(resp.json())


def events_about(front: httpx.Client, workspace: str, name: str, *, api: str, controller: str) -> list[dict[str, Any]]:
    """Events in `workspace`'s default namespace about ConfigMap `name` from `controller`, read
    through the API the controller wrote them with (events.k8s.io/v1 or core v1)."""
    if api == "core":
        items = front.get(f"/clusters/{workspace}/api/v1/namespaces/default/events").json()["items"]
        return [e for e in items if e["involvedObject"].get("kind") == "ConfigMap" and e["involvedObject"].get("name") == name
                and controller in (e.get("source", {}).get("component"), e.get("reportingComponent"))]
    items = front.get(f"/clusters/{workspace}/apis/events.k8s.io/v1/namespaces/default/events").json()["items"]
    return [e for e in items if e["regarding"].get("kind") == "ConfigMap" and e["regarding"].get("name") == name and e.get("reportingController") == controller]


def create_example_workspace(front: httpx.Client, name: str) -> None:
    """A new workspace of the example's type: the `system:apibindings` initializer binds it."""
    created = front.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json={
        "apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
        "spec": {"type": {"name": EXAMPLE_EXPORT, "path": "root"}},
    })
    assert created.status_code == 201, created.text

    def ready() -> bool:
        ws = front.get(f"/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/{name}").json()
        return bool((ws.get("status") or {}).get("phase") == "Ready")
    eventually(ready, f"root:{name} to be Ready")
    cluster = logical_cluster(front, f"root:{name}")
    assert cluster["spec"].get("initializers") == ["system:apibindings"] and not cluster["status"].get("initializers"), cluster
    bindings = example_bindings(front, f"root:{name}")
    assert len(bindings) == 1 and claims_accepted(bindings[0]), bindings


def test_example_bundle_binds_every_workspace_of_its_type_with_claims_accepted(example_proxy: RunningProxy, example_front: httpx.Client) -> None:
    for workspace in EXAMPLE_CONSUMERS:
        bindings = example_bindings(example_front, workspace)
        assert len(bindings) == 1 and claims_accepted(bindings[0]), (workspace, bindings)
    assert example_bindings(example_front, BYSTANDER) == []
    phases = {ws["metadata"]["name"]: ws["status"].get("phase") for ws in example_front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces").json()["items"]}
    assert phases == {"example1": "Ready", "example2": "Ready", "example3": "Ready", "tenant": "Ready", "bystander": "Ready"}

    slice_ = example_front.get(f"/clusters/root/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/{EXAMPLE_EXPORT}")
    assert slice_.status_code == 200, slice_.text
    vw = f"{example_proxy.url}/services/apiexport/root/{EXAMPLE_EXPORT}"
    assert [e["url"] for e in slice_.json()["status"]["endpoints"]] == [vw]

    # Through the VW: the seeded ConfigMaps, claimed; never the bystander's.
    listed = example_front.get(f"{vw}/clusters/*/api/v1/configmaps").json()["items"]
    tenant = example_proxy.cluster_of("root:tenant")
    assert sorted((cm["metadata"]["annotations"]["kcp.io/cluster"], cm["metadata"]["name"]) for cm in listed) == [(tenant, "limits"), (tenant, "settings")]


@pytest.mark.parametrize("events_api", ["events.k8s.io", "core"])
def test_configmap_controller_reconciles_claimed_configmaps_and_records_events(
    example_proxy: RunningProxy, example_front: httpx.Client, go_programs: GoPrograms, controllers: list[Controller], tmp_path: Path,
    events_api: str, record_testsuite_property: Any,
) -> None:
    front = example_front
    expected = {ws: list(SEEDED_CONFIGMAPS.get(ws, ())) for ws in EXAMPLE_CONSUMERS}
    for workspace in ("root:example1", "root:example2", "root:example3"):
        create_configmap(front, workspace, "hello")
        expected[workspace].append("hello")

    kubeconfig = write_kubeconfig(tmp_path / "root.kubeconfig", example_proxy, example_proxy.workspace_url("root"))
    controller = run_controller(controllers, go_programs, tmp_path, "configmap-controller", "--kubeconfig", str(kubeconfig), "--events", events_api)

    def pending() -> list[str]:
        return [f"{ws}/{name}" for ws, names in expected.items() for name in names
                if (configmap(front, ws, name)["metadata"].get("annotations") or {}).get(RECONCILED_BY) != "configmap-controller"
                or not events_about(front, ws, name, api=events_api, controller="configmap-controller")]
    controller.eventually(lambda: not pending(), "every claimed ConfigMap to be annotated and an Event recorded")
    record_testsuite_property(f"configmap_controller_{events_api}_reconcile_existing_seconds", round(time.monotonic() - controller.started, 2))

    event = events_about(front, "root:example1", "hello", api=events_api, controller="configmap-controller")[0]
    regarding = event["involvedObject"] if events_api == "core" else event["regarding"]
    assert regarding["uid"] == configmap(front, "root:example1", "hello")["metadata"]["uid"]
    assert event["reason"] == "Reconciled" and event["type"] == "Normal"
    assert RECONCILED_BY not in (configmap(front, BYSTANDER, "private")["metadata"].get("annotations") or {}), "an unbound workspace is never touched"
    assert events_about(front, BYSTANDER, "private", api=events_api, controller="configmap-controller") == []

    # Reconciled again (its annotation dropped): the recorder repeats the Event. The core one
    # aggregates it into the first (a PATCH of `count`); the events.k8s.io one regards the
    # ConfigMap's new resourceVersion, a new Event (or a series on the first).
    dropped = front.patch(f"/clusters/root:example1/{CONFIGMAPS}/hello", json={"metadata": {"annotations": {RECONCILED_BY: None}}},
                          headers={"Content-Type": "application/merge-patch+json"})
    assert dropped.status_code == 200, dropped.text

    def occurrences() -> int:
        events = events_about(front, "root:example1", "hello", api=events_api, controller="configmap-controller")
        return sum(e.get("count") or (e.get("series") or {}).get("count") or 1 for e in events)
    controller.eventually(lambda: occurrences() == 2, "the repeated Event to be recorded")
    if events_api == "core":
        [aggregated] = events_about(front, "root:example1", "hello", api="core", controller="configmap-controller")
        assert aggregated["count"] == 2, aggregated

    # A workspace of the example's type created while the controller runs: bound by the
    # initializer, engaged, and a ConfigMap created in it afterwards is reconciled.
    started = time.monotonic()
    create_example_workspace(front, "latecomer")
    create_configmap(front, "root:latecomer", "late")

    def late_reconciled() -> bool:
        annotated = (configmap(front, "root:latecomer", "late")["metadata"].get("annotations") or {}).get(RECONCILED_BY) == "configmap-controller"
        return annotated and bool(events_about(front, "root:latecomer", "late", api=events_api, controller="configmap-controller"))
    controller.eventually(late_reconciled, "a ConfigMap in a new workspace of the example's type to be reconciled")
    record_testsuite_property(f"configmap_controller_{events_api}_new_workspace_seconds", round(time.monotonic() - started, 2))

    assert controller.stop() == 0, controller.output()[-6000:]
    assert "stopped cleanly" in controller.output()


def test_stock_apiexport_example_reconciles_every_consumer(
    example_proxy: RunningProxy, example_front: httpx.Client, go_programs: GoPrograms, controllers: list[Controller], tmp_path: Path,
    record_testsuite_property: Any,
) -> None:
    """multicluster-provider's examples/apiexport, unchanged: it takes its kubeconfig from
    $KUBECONFIG (ctrl.GetConfigOrDie; it parses pflag only, so no --kubeconfig), follows the
    endpoint slice named by --endpointslice (default: the example's), logs `Reconciling
    ConfigMap` for each ConfigMap and records an events.k8s.io/v1 Event about it."""
    front = example_front
    with socket.socket() as probe:
        try:
            probe.bind(("", STOCK_METRICS_PORT))
        except OSError as error:
            pytest.fail(f"the stock example serves metrics on :{STOCK_METRICS_PORT}, which is taken here ({error})")
    expected = {ws: list(SEEDED_CONFIGMAPS.get(ws, ())) for ws in EXAMPLE_CONSUMERS}
    for workspace in ("root:example1", "root:example2", "root:example3"):
        create_configmap(front, workspace, "hello")
        expected[workspace].append("hello")

    kubeconfig = write_kubeconfig(tmp_path / "root.kubeconfig", example_proxy, example_proxy.workspace_url("root"))
    stock = run_controller(controllers, go_programs, tmp_path, STOCK_EXAMPLE, env={"KUBECONFIG": str(kubeconfig)})

    def recorded(workspace: str, name: str) -> bool:
        events = events_about(front, workspace, name, api="events.k8s.io", controller="kcp-configmap-controller")
        return any(e["reason"] == "normal" and e["note"] == f"ConfigMap {name} reconciled" for e in events)

    def pending() -> list[str]:
        return [f"{ws}/{name}" for ws, names in expected.items() for name in names if not recorded(ws, name)]
    stock.eventually(lambda: not pending(), "the stock example to record an Event for every claimed ConfigMap")
    record_testsuite_property("stock_apiexport_example_reconcile_existing_seconds", round(time.monotonic() - stock.started, 2))
    for workspace, names in expected.items():
        for name in names:
            uid = configmap(front, workspace, name)["metadata"]["uid"]
            assert f'"name": "{name}", "uuid": "{uid}"' in stock.output(), f"no `Reconciling ConfigMap` line for {workspace}/{name}"
    assert events_about(front, BYSTANDER, "private", api="events.k8s.io", controller="kcp-configmap-controller") == []

    create_example_workspace(front, "latecomer")
    create_configmap(front, "root:latecomer", "late")
    stock.eventually(lambda: recorded("root:latecomer", "late"), "the stock example to reconcile a ConfigMap in a new workspace of its type")

    assert stock.stop() == 0, stock.output()[-6000:]


# -- the controllers as a ServiceAccount ------------------------------------------------------------


def test_apiexport_controller_needs_apiexports_content_for_its_service_account(
    proxy: RunningProxy, front: httpx.Client, go_programs: GoPrograms, controllers: list[Controller], tmp_path: Path,
) -> None:
    """As on kcp: the provider's ServiceAccount reads its endpoint slice by RBAC in its workspace,
    and the virtual workspace by `apiexports/content`; without that grant nothing is reconciled."""
    from test_auth_http import grant, service_account

    token = service_account(front, "root:provider", "widget-controller")
    grant(front, "root:provider", "read-endpoint-slices", [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexportendpointslices"], "verbs": ["get", "list", "watch"]}], "widget-controller")
    kubeconfig = tmp_path / "controller.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(proxy.kubeconfig(proxy.workspace_url("root:provider"), token=token)))
    refused = run_controller(controllers, go_programs, tmp_path, "apiexport-controller", "--kubeconfig", str(kubeconfig), "--endpointslice", "widgets")
    time.sleep(3)  # a window in which a permitted controller reconciles everything (it takes well under a second)
    assert unreconciled(front, PROVIDER_CONSUMERS), "nothing is reconciled without apiexports/content"
    refused.stop()
    grant(front, "root:provider", "widgets-content", [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "resourceNames": ["widgets"],
                                                      "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}], "widget-controller")
    (tmp_path / "granted").mkdir()
    allowed = run_controller(controllers, go_programs, tmp_path / "granted", "apiexport-controller", "--kubeconfig", str(kubeconfig), "--endpointslice", "widgets")
    allowed.eventually(lambda: not unreconciled(front, PROVIDER_CONSUMERS), "every bound consumer's widgets reconciled by the granted ServiceAccount")
    assert allowed.stop() == 0, allowed.output()[-6000:]


# -- two proxy shards ---------------------------------------------------------------------------


def test_apiexport_controller_reconciles_both_shards_and_survives_one_dying(
    go_programs: GoPrograms, controllers: list[Controller], tmp_path: Path,
) -> None:
    """multicluster-provider runs one informer per endpoint of the slice: against a control plane
    and two proxy shards it reconciles the consumers of both; with one shard killed it goes on with
    the other's, and picks the dead shard's partition up again once it is back."""
    from vwproxy.core.partition import Partition
    from vwproxy.testing.topology import ShardedTopology

    partitions = ("hash:0/2", "hash:1/2")
    with ShardedTopology(tmp_path / "sharded", partitions) as topo:
        kubeconfig = tmp_path / "provider.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "provider",
            "clusters": [{"name": "provider", "cluster": {"server": f"{topo.control.url}/clusters/root:provider", "certificate-authority": str(topo.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": topo.token}}],
            "contexts": [{"name": "provider", "context": {"cluster": "provider", "user": "admin"}}],
        }))
        assert len(topo.endpoint_urls("root:provider", "widgets")) == 2, "both shards host consumers"
        controller = run_controller(controllers, go_programs, tmp_path, "apiexport-controller", "--kubeconfig", str(kubeconfig), "--endpointslice", "widgets")
        with topo.client() as front:
            controller.eventually(lambda: not unreconciled(front, PROVIDER_CONSUMERS), "the consumers on both shards to be reconciled")

            def owner(path: str) -> int:
                lc = front.get(f"/clusters/{path}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json()
                cluster = lc["metadata"]["annotations"]["kcp.io/cluster"]
                return next(i for i, spec in enumerate(partitions) if Partition.parse(spec).owns(cluster))

            on = {i: next(p for p in PROVIDER_CONSUMERS if owner(p) == i) for i in (0, 1)}
            topo.members[0].kill()

            def add(path: str, name: str) -> None:
                made = front.post(f"/clusters/{path}/{WIDGETS}", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 3}})
                assert made.status_code == 201, made.text

            add(on[0], "while-down")
            add(on[1], "while-down")
            controller.eventually(lambda: reconciled(widget(front, on[1], "while-down")), "the surviving shard's consumer to be reconciled")
            assert not reconciled(widget(front, on[0], "while-down")), "the dead shard's partition waits"
            topo.members[0].start(topo.token)
            controller.eventually(lambda: reconciled(widget(front, on[0], "while-down")), "the restarted shard's consumer to be reconciled")
        assert controller.stop() == 0, controller.output()[-6000:]
