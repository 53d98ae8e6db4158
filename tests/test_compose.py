"""docker-compose.yml, its config folder (deploy/compose) and the Dockerfile, checked without Docker.

- The Compose file is loaded by compose-go's loader (tests/go/cmd/compose-check), the code
  `docker compose` itself runs: the Compose specification's JSON schema, interpolation,
  normalization and its consistency checks (services, volumes, networks that are named must be
  declared). Planted errors show the check can fail. On top of the loaded project: what the
  loader does not know (health-gated dependencies need a healthcheck, bind sources exist, the
  shards read the control plane's data dir read-only where `--join-secrets` says).
- The Dockerfile: what it COPYs exists and survives .dockerignore, and those files alone build a
  wheel with the console script and the package data (the bootstrap policies reach the image
  through a link to policies/, which therefore must be copied too).
- `vwproxy.testing.compose` turns the services into local command lines; the control plane's
  config folder then runs today on `vwproxy serve` against the k3s stand-ins it describes.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gobuild import GoPrograms
from support import conditions, eventually
from vwproxy.testing.compose import K3S_SERVER_CA, ComposeError, LocalTopology, local_topology
from vwproxy.testing.process import stop_child
from vwproxy.testing.proxy import RunningProxy
from vwproxy.upstream.backends import load_backends

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
VWPROXY_SERVICES = {"control-plane", "shard-1", "shard-2"}
K3S_SERVICES = {"k3s-a", "k3s-b"}
# The consumers in deploy/compose/config, where they live, and their widgets.
CONSUMERS = {"root:consumer-1": ("embedded", {"red", "blue"}), "root:consumer-2": ("embedded", {"green"}),
             "root:consumer-a": ("k3s-a", {"amber", "azure"}), "root:consumer-b": ("k3s-b", {"black"})}
WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"


# -- compose-go's loader --------------------------------------------------------------------------


def compose_check(go_programs: GoPrograms, file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([go_programs.path("compose-check"), str(file)], capture_output=True, text=True, timeout=60, check=False)


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_docker_compose_file_loads_with_compose_go(go_programs: GoPrograms) -> None:
    result = compose_check(go_programs, COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    assert set(services) == VWPROXY_SERVICES | K3S_SERVICES
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            if how["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck", {}).get("test"), f"{name} waits for {dependency} to be healthy, which has no healthcheck"
        for volume in service.get("volumes") or []:
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: bind source {volume['source']} does not exist"
    for name in VWPROXY_SERVICES:
        assert services[name]["build"]["context"] == str(REPO) and services[name]["build"]["dockerfile"] == "Dockerfile"
        for cluster in K3S_SERVICES:  # backends.yaml's CA files exist only once the clusters have written them
            assert services[name]["depends_on"][cluster]["condition"] == "service_healthy", f"{name} must wait for {cluster}"
    mounts = {name: {v["target"]: v for v in services[name]["volumes"]} for name in services}
    control_data = flag(services["control-plane"]["command"], "--data-dir")
    assert mounts["control-plane"][control_data]["source"] == "control-plane-data"
    assert not mounts["control-plane"][control_data].get("read_only")
    for shard in ("shard-1", "shard-2"):
        command = services[shard]["command"]
        secrets = mounts[shard][flag(command, "--join-secrets")]
        assert secrets["source"] == "control-plane-data" and secrets["read_only"], f"{shard} reads the control plane's data dir read-only"
        assert flag(command, "--join") == flag(services["control-plane"]["command"], "--external-url")
        assert services[shard]["depends_on"]["control-plane"]["condition"] == "service_healthy"
    partitions = sorted(flag(services[s]["command"], "--partition") for s in ("shard-1", "shard-2"))
    assert partitions == ["hash:0/2", "hash:1/2"], "the two shards split the hash space between them"


PLANTED = [
    # (what, text replaced, replacement, what the loader says)
    ("a dependency on a service that does not exist", "control-plane: {condition: service_healthy}", "control-plan: {condition: service_healthy}",
     'depends on undefined service "control-plan"'),
    ("a misspelled key (the schema refuses it)", "  privileged: true\n", "  priviledged: true\n", "priviledged"),
    ("a named volume that is not declared", "  shard-2-data:\n", "  shard-2-dat:\n", "undefined volume shard-2-data"),
    ("a value of the wrong type", "    retries: 24\n", "    retries: many\n", "retries"),
]


@pytest.mark.parametrize(("what", "old", "new", "message"), PLANTED, ids=[p[0] for p in PLANTED])
def test_compose_check_fails_on_a_planted_error(go_programs: GoPrograms, tmp_path: Path, what: str, old: str, new: str, message: str) -> None:
    text = COMPOSE_FILE.read_text()
    assert old in text, f"the plant for {what} no longer matches docker-compose.yml"
    unchanged = tmp_path / "unchanged" / "docker-compose.yml"
    unchanged.parent.mkdir()
    unchanged.write_text(text)
    assert compose_check(go_programs, unchanged).returncode == 0, "the copy must load, so the failure below is the plant's"
    planted = tmp_path / "docker-compose.yml"
    planted.write_text(text.replace(old, new, 1))
    result = compose_check(go_programs, planted)
    assert result.returncode == 1, f"{what} was not caught:\n{result.stdout[:2000]}"
    assert message in result.stderr, result.stderr


# -- the Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            instruction, _, arguments = pending.strip().partition(" ")
            out.append((instruction.upper(), arguments.strip()))
            pending = ""
    return out


def copied_sources() -> list[str]:
    sources: list[str] = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            parts = [p for p in arguments.split() if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def ignored_by_dockerignore(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches decides (`!` re-includes)."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.removeprefix("**/")):
            ignored = not negate
    return ignored


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    sources = copied_sources()
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert (REPO / source).exists(), f"Dockerfile: COPY {source}: no such file or folder in the repository"
        assert not ignored_by_dockerignore(source), f"Dockerfile: COPY {source}: excluded from the build context by .dockerignore"
    instructions = dict(dockerfile_instructions())
    assert instructions["FROM"] == "python:3.11-slim"
    assert json.loads(instructions["ENTRYPOINT"]) == ["vwproxy"]
    assert instructions["USER"] not in ("root", "0")
    assert instructions["EXPOSE"] == "6443"
    assert "vwproxy" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_dockerfile_copies_are_enough_for_pip_install(tmp_path: Path) -> None:
    """What the image's `pip install .` sees: only the COPYed paths (links kept as links)."""
    context = tmp_path / "context"
    context.mkdir()
    for source in copied_sources():
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, context / source, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / source, context / source)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(context)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("vwproxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vwproxy/cli.py" in names
    assert "vwproxy/auth/policies/00-admin.yaml" in names, "the bootstrap policies (vwproxy/auth/policies -> policies/) are missing"
    assert "vwproxy/data/example/10-root.yaml" in names and "vwproxy/data/openapi/builtin.json" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "vwproxy = vwproxy.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# -- docker-compose.yml as local processes ---------------------------------------------------------


@pytest.fixture
def topology(tmp_path: Path) -> LocalTopology:
    return local_topology(COMPOSE_FILE, tmp_path / "topology")


def test_local_topology_maps_the_compose_services(topology: LocalTopology) -> None:
    services = topology.services
    assert set(services) == VWPROXY_SERVICES | K3S_SERVICES
    order = topology.start_order()
    assert set(order[:2]) == K3S_SERVICES and order[2] == "control-plane" and set(order[3:]) == {"shard-1", "shard-2"}
    control = services["control-plane"]
    assert control.argv[1:4] == ["-m", "vwproxy.cli", "serve"] and control.url.startswith("https://127.0.0.1:")
    for name in VWPROXY_SERVICES:
        argv = services[name].argv
        assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == str(services[name].port)
        assert flag(argv, "--external-url") == services[name].url
        container_paths = [a for a in argv[4:] if a.startswith(("/config", "/data", "/control-plane-data", "/backends"))]
        assert not container_paths and not any(h in a for a in argv for h in ("control-plane:", "shard-1:", "k3s-a:")), argv
        assert (Path(flag(argv, "--config")) / "10-root.yaml").is_file()
    for shard in ("shard-1", "shard-2"):
        argv = services[shard].argv
        assert flag(argv, "--join") == control.url
        # the control plane's data dir, as the shard sees it, is the folder the control plane writes
        assert flag(argv, "--join-secrets") == flag(control.argv, "--data-dir") == str(topology.local_path("control-plane", "/data"))
        assert flag(argv, "--data-dir") != flag(control.argv, "--data-dir")
    assert topology.translate("see https://shard-2:6443/services/x and https://elsewhere:6443") == \
        f"see {services['shard-2'].url}/services/x and https://elsewhere:6443"


def test_k3s_stand_ins_are_what_backends_yaml_expects(topology: LocalTopology) -> None:
    """The stand-ins serve the token and CA that each vwproxy service's backends.yaml names."""
    for name in VWPROXY_SERVICES:
        backends = load_backends(topology.local_path(name, "/config"))  # checks that the files exist
        assert set(backends) == K3S_SERVICES
        for backend in backends.values():
            stand_in = topology.services[backend.name]
            assert stand_in.kind == "k3s" and backend.url == stand_in.url and stand_in.url.startswith("https://")
            assert backend.token == stand_in.token, f"{name}: the token of backend {backend.name} is not one {backend.name}'s token file grants system:masters"
            assert stand_in.ca_file is not None and Path(backend.ca_file) == stand_in.ca_file and stand_in.ca_file.name == K3S_SERVER_CA
    for name in K3S_SERVICES:
        argv = topology.services[name].argv
        assert argv[3] == "shard" and Path(flag(argv, "--token-file")).read_text().strip() == topology.services[name].token
        assert Path(flag(argv, "--tls-cert-file")).is_file() and Path(flag(argv, "--tls-private-key-file")).is_file()


def small_compose(folder: Path, k3s_command: str, backend_url: str) -> Path:
    (folder / "config").mkdir(parents=True)
    (folder / "tokens.csv").write_text('t0ken,vwproxy,vwproxy,"system:masters,other"\n')
    (folder / "config" / "backends.yaml").write_text(
        f"apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {{name: cluster}}\nspec: {{url: '{backend_url}', token: t0ken}}\n")
    (folder / "compose.yml").write_text(yaml.safe_dump({"services": {
        "proxy": {"build": ".", "command": "serve --config /config --data-dir /data --host 0.0.0.0 --port 6443",
                  "volumes": ["./config:/config:ro", {"type": "volume", "source": "proxy-data", "target": "/data"}],
                  "depends_on": ["cluster"]},
        "cluster": {"image": "rancher/k3s:v1.31.4-k3s1", "command": k3s_command, "volumes": ["./tokens.csv:/auth/tokens.csv:ro"]},
    }}))
    return folder / "compose.yml"


def test_a_cluster_reached_over_http_gets_a_stand_in_without_tls(tmp_path: Path) -> None:
    compose = small_compose(tmp_path, "server --kube-apiserver-arg=token-auth-file=/auth/tokens.csv", "http://cluster:6443")
    topology = local_topology(compose, tmp_path / "work")
    cluster, proxy = topology.services["cluster"], topology.services["proxy"]
    assert cluster.url.startswith("http://") and cluster.ca_file is None and "--tls-cert-file" not in cluster.argv
    assert cluster.token == "t0ken" and topology.start_order() == ["cluster", "proxy"]
    assert flag(proxy.argv, "--data-dir") == str(tmp_path / "work" / "volumes" / "proxy-data")
    assert load_backends(topology.local_path("proxy", "/config"))["cluster"].url == cluster.url


def test_a_cluster_without_a_token_file_is_refused(tmp_path: Path) -> None:
    compose = small_compose(tmp_path, "server", "http://cluster:6443")
    with pytest.raises(ComposeError, match="service cluster: no --kube-apiserver-arg=token-auth-file"):
        local_topology(compose, tmp_path / "work")


def test_a_token_file_without_an_admin_is_refused(tmp_path: Path) -> None:
    compose = small_compose(tmp_path, "server --kube-apiserver-arg=token-auth-file=/auth/tokens.csv", "http://cluster:6443")
    (tmp_path / "tokens.csv").write_text("t0ken,someone,someone,viewers\n")
    with pytest.raises(ComposeError, match="grants no token the group system:masters"):
        local_topology(compose, tmp_path / "work")


# -- the control plane's config on today's `serve`, against the k3s stand-ins ----------------------


@pytest.fixture
def stand_ins(topology: LocalTopology, tmp_path: Path) -> Iterator[LocalTopology]:
    processes = []
    try:
        for name in sorted(K3S_SERVICES):
            processes.append(topology.services[name].start(tmp_path / f"{name}.log"))
            topology.services[name].wait_ready()
        yield topology
    finally:
        for process in processes:
            stop_child(process)


def test_the_control_plane_config_serves_every_consumer(stand_ins: LocalTopology, tmp_path: Path) -> None:
    """deploy/compose/config seeds, binds and serves on `vwproxy serve`: the bindings of the k3s
    consumers install the CRD on their clusters, the seed applies their widgets there, and the
    export's VW shows all six widgets."""
    config = stand_ins.local_path("control-plane", "/config")
    with RunningProxy(tmp_path / "control-plane-data", config) as proxy, proxy.client() as front:
        assert proxy.settle()
        for path, (backend, names) in CONSUMERS.items():
            binding = front.get(f"{proxy.workspace_url(path)}/apis/apis.kcp.io/v1alpha2/apibindings/widgets").json()
            assert conditions(binding).get("Ready") == "True", f"{path}: {binding}"
        vw = proxy.endpoint_url("root:provider", "widgets")

        def every_widget() -> set[tuple[str, str]] | None:
            items = front.get(f"{vw}/clusters/*/{WIDGETS.replace('namespaces/default/', '')}").json()["items"]
            seen = {(i["metadata"]["annotations"]["kcp.io/cluster"], i["metadata"]["name"]) for i in items}
            return seen if len(seen) == 6 else None

        seen = eventually(every_widget, "the six widgets through the export's virtual workspace")
        assert seen == {(proxy.cluster_of(path), name) for path, (_, names) in CONSUMERS.items() for name in names}
    for path, (backend, names) in CONSUMERS.items():
        if backend == "embedded":
            continue
        cluster = stand_ins.services[backend]
        with httpx.Client(verify=ssl.create_default_context(cafile=cluster.ca_file), headers={"Authorization": f"Bearer {cluster.token}"}, trust_env=False, timeout=5) as direct:
            on_cluster = {w["metadata"]["name"] for w in direct.get(f"{cluster.url}/{WIDGETS}").json()["items"]}
        assert on_cluster == names, f"{path}'s widgets on {backend}"


def test_the_readme_shows_the_compose_commands() -> None:
    """README's "Scaling out" commands are docker-compose.yml's control-plane and shard-1 ones."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Scaling out"):readme.index("## Not yet")]
    blocks = [block.split("```", 1)[0] for block in section.split("```sh\n")[1:]]
    shown = [shlex.split(line.replace("\\\n", " ")) for block in blocks for line in block.replace("\\\n", " ").splitlines()
             if line.startswith("vwproxy serve")]
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert shown == [["vwproxy", *services["control-plane"]["command"]], ["vwproxy", *services["shard-1"]["command"]]]


def test_wait_ready_names_what_it_waited_for(topology: LocalTopology, tmp_path: Path) -> None:
    k3s = topology.services["k3s-a"]
    with pytest.raises(AssertionError, match=r"k3s-a not ready at https://127\.0\.0\.1:\d+/readyz within 0\.3 s: ConnectError"):
        k3s.wait_ready(timeout=0.3)  # not started
    missing = tmp_path / "ca.crt"
    with pytest.raises(AssertionError, match="ca.crt does not exist yet"):
        topology.services["control-plane"].wait_ready(missing, timeout=0.3)


def test_wait_ready_waits_for_the_ca_to_appear(stand_ins: LocalTopology, tmp_path: Path) -> None:
    """A vwproxy service's CA is written by the control plane once it runs: wait_ready waits for it."""
    k3s = stand_ins.services["k3s-b"]
    assert k3s.ca_file is not None
    later = tmp_path / "later" / "ca.crt"
    later.parent.mkdir()
    timer = threading.Timer(0.5, shutil.copyfile, (k3s.ca_file, later))
    timer.start()
    try:
        k3s.wait_ready(later, timeout=10)
    finally:
        timer.cancel()
    assert later.is_file()


# -- the whole topology: docker-compose.yml's own commands as local processes ----------------------


def test_the_compose_topology_serves_each_partition_at_its_endpoint(topology: LocalTopology, tmp_path: Path) -> None:
    """Every service of docker-compose.yml runs its own command (k3s replaced by `vwproxy shard`):
    the endpoint slice lists the proxy shards that host consumers, a wildcard list and a wildcard
    watch on each endpoint see exactly that shard's partition, and the union is the truth read from
    the control plane and the clusters."""
    from test_proxy_shards import record_watch_events
    from vwproxy.core.partition import Partition

    data = topology.local_path("control-plane", "/data")
    processes = []
    try:
        for name in topology.start_order():
            service = topology.services[name]
            processes.append(service.start(tmp_path / f"{name}.log"))
            service.wait_ready(None if service.kind == "k3s" else data / "ca.crt")
        ca = ssl.create_default_context(cafile=str(data / "ca.crt"))
        token = (data / "tokens.csv").read_text().split(",", 1)[0]

        def client(base: str) -> httpx.Client:
            return httpx.Client(base_url=base, verify=ca, headers={"Authorization": f"Bearer {token}"}, trust_env=False, timeout=10)

        control = topology.services["control-plane"].url
        partitions = {topology.services[s].url: Partition.parse(flag(topology.services[s].argv, "--partition")) for s in ("shard-1", "shard-2")}
        with client(control) as front:
            clusters = {path: front.get(f"/clusters/{path}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json()["metadata"]["annotations"]["kcp.io/cluster"]
                        for path in CONSUMERS}
            for path in CONSUMERS:
                eventually(lambda p=path: front.get(f"/clusters/{p}/{WIDGETS}").status_code == 200, f"{path} bound")
            truth = {(clusters[p], n) for p, (_, names) in CONSUMERS.items() for n in names}

            def endpoints() -> list[str]:
                found = front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
                return [e["url"] for e in (found.get("status") or {}).get("endpoints") or []]

            hosting = sorted(url for url, p in partitions.items() if any(p.owns(c) for c in clusters.values()))
            eventually(lambda: sorted(u.split("/services/")[0] for u in endpoints()) == hosting, "one endpoint per shard hosting a consumer")
        with client(control) as front:
            urls = {u.split("/services/")[0]: u for u in endpoints()}

        def listed(url: str) -> set[tuple[str, str]]:
            with client(url) as vw:
                items = vw.get(f"/clusters/*/{WIDGETS.replace('namespaces/default/', '')}").json()["items"]
            return {(i["metadata"]["annotations"]["kcp.io/cluster"], i["metadata"]["name"]) for i in items}

        union: set[tuple[str, str]] = set()
        for base, url in urls.items():
            mine = {(c, n) for c, n in truth if partitions[base].owns(c)}
            eventually(lambda u=url, m=mine: listed(u) == m, f"{url} to list exactly its partition")
            union |= mine
        assert union == truth

        # A wildcard watch on each endpoint sees exactly its partition's new widgets, once each.
        events = record_watch_events(list(urls.values()), ca, token, control, [(path, "watched") for path in CONSUMERS],
                                     lambda got: all({("ADDED", clusters[p], "watched") for p in CONSUMERS if partitions[b].owns(clusters[p])} <= set(e)
                                                     for b, e in zip(urls, got, strict=True)))
        for (base, _), seen in zip(urls.items(), events, strict=True):
            assert sorted(e for e in seen if e[2] == "watched") == sorted(("ADDED", clusters[p], "watched") for p in CONSUMERS if partitions[base].owns(clusters[p])), (base, seen)
    finally:
        for process in reversed(processes):
            stop_child(process)
