"""docker-compose.yml as local processes: the same topology without Docker.

`local_topology(compose_file, workdir)` reads a Compose file whose services are vwproxy
processes (they `build` the Dockerfile or run a `vwproxy` image) and k3s clusters (a `rancher/k3s`
image), and says how to run each as a process on this machine:

- every service gets a free port on 127.0.0.1; `https://<service>:<port>` in a command line or in
  a backends.yaml becomes `https://127.0.0.1:<its local port>`, `--host 0.0.0.0` becomes
  `--host 127.0.0.1` and `--port` the local port;
- every volume gets a folder: a named volume `workdir/volumes/<name>` (one folder, however many
  services mount it, so the control plane's data dir is what the shards read), a bind mount its
  source next to the Compose file (folders are copied to `workdir/services/<service><target>`, so a
  backends.yaml in them can be rewritten for this machine); absolute paths in command lines and in
  a mounted backends.yaml that lie under a mount's target are mapped to that folder. Read-only
  mounts are not enforced;
- a vwproxy service runs `python -m vwproxy.cli <its command>`;
- a k3s service runs `vwproxy shard`, the stand-in for a real cluster: it requires the token of
  the `system:masters` user in the file its `--kube-apiserver-arg=token-auth-file=…` names, and
  serves HTTPS when a backends.yaml reaches it by `https://`, with a CA written as `server-ca.crt`
  into the folder of the volume mounted at k3s's TLS folder (where a real k3s writes its own, and
  where the backends' `caFile` should point).

    topology = local_topology(Path("docker-compose.yml"), tmp_path)
    data = topology.local_path("control-plane", "/data")
    for name in topology.start_order():            # what a service depends on comes first
        service = topology.services[name]
        processes.append(service.start(tmp_path / f"{name}.log"))   # stop_child(process) later
        service.wait_ready(None if service.kind == "k3s" else data / "ca.crt")
    topology.services["shard-1"].url               # https://127.0.0.1:<port>, also in its endpoint slices
    data / "admin.kubeconfig", data / "ca.crt"     # the admin's kubeconfig and the CA, here
    topology.services["k3s-a"].token               # ask a stand-in directly with this bearer token
    topology.translate("https://shard-2:6443/x")   # a URL of the Compose network, here

`local_topology` starts nothing; it writes the files (rewritten config copies, the stand-ins'
certificates and token files) into `workdir`; `LocalService.start` and `wait_ready` run one.
Compose features beyond what docker-compose.yml uses (env files, profiles, networks, published ports) are ignored; an
unsupported construct in a part that matters (a volume spec, a k3s service without a token file)
raises `ComposeError` naming the service.
"""

from __future__ import annotations

import csv
import datetime
import graphlib
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import yaml

from vwproxy.auth.tls import new_ca, new_serving_certificate
from vwproxy.testing.process import POLL_SECONDS, READY_TIMEOUT_SECONDS, child_env, free_port
from vwproxy.upstream.backends import FILE_NAME as BACKENDS_FILE

# Where a real k3s server keeps its certificates; its server CA is server-ca.crt there.
K3S_TLS_DIR = "/var/lib/rancher/k3s/server/tls"
K3S_SERVER_CA = "server-ca.crt"
# The port a k3s server listens on (--https-listen-port), unless its command says otherwise.
K3S_PORT = 6443
# The group a token needs to be a cluster admin on Kubernetes.
MASTERS = "system:masters"
_TOKEN_AUTH_ARG = re.compile(r"^--kube-apiserver-arg=token-auth-file=(?P<path>.+)$")
_SERVICE_URL = re.compile(r"\bhttps?://(?P<host>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<port>\d+)")


class ComposeError(Exception):
    """A Compose file this module cannot turn into local processes; the message names the service."""


@dataclass(frozen=True)
class Mount:
    """One volume of a service: `target` in the container is `local` here."""

    target: str
    local: Path
    named: str = ""  # the named volume, or "" for a bind mount
    read_only: bool = False


@dataclass
class LocalService:
    """How to run one Compose service here.

    `kind` is "vwproxy" or "k3s". `argv` is the complete command line; `url` the local
    `https://127.0.0.1:<port>` (or `http://` for a stand-in without TLS) that stands for
    `<name>:<container port>`; `ready_url` the health endpoint to poll before starting what
    depends on it. A k3s stand-in also has `token` (the bearer token it requires) and `ca_file`
    (the CA it serves with, when TLS). `depends_on` is the Compose file's.
    """

    name: str
    kind: str
    argv: list[str]
    port: int
    url: str
    mounts: list[Mount] = field(default_factory=list)
    depends_on: tuple[str, ...] = ()
    token: str = field(default="", repr=False)
    ca_file: Path | None = None

    @property
    def ready_url(self) -> str:
        return f"{self.url}/readyz"

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        """Run `argv` as a child (this checkout's vwproxy, no HTTP proxies), output to `log`.
        Stopping it is the caller's: `vwproxy.testing.process.stop_child`."""
        with log.open("ab") as output:
            return subprocess.Popen(self.argv, stdout=output, stderr=subprocess.STDOUT, env=child_env())

    def wait_ready(self, ca_file: Path | None = None, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Poll `ready_url` until it answers 200, trusting `ca_file` (default: the stand-in's own
        CA; a vwproxy service needs the control plane's ca.crt, which may appear only once the
        control plane runs: it is waited for too); AssertionError after `timeout`."""
        trust = ca_file or self.ca_file
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if trust is not None and not trust.is_file():
                last = f"{trust} does not exist yet"
            else:
                verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=trust) if trust is not None else True
                try:
                    with httpx.Client(verify=verify, trust_env=False, timeout=2) as client:
                        response = client.get(self.ready_url)
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
            time.sleep(POLL_SECONDS)  # bounded by the deadline
        raise AssertionError(f"{self.name} not ready at {self.ready_url} within {timeout} s: {last}")

    def local_path(self, container_path: str) -> Path | None:
        """Where `container_path` of this service is here, or None if no mount holds it."""
        path = PurePosixPath(container_path)
        for mount in sorted(self.mounts, key=lambda m: len(m.target), reverse=True):
            target = PurePosixPath(mount.target)
            if path == target or target in path.parents:
                return mount.local.joinpath(*path.relative_to(target).parts)
        return None


@dataclass
class LocalTopology:
    """The services of a Compose file, ready to run here (see the module docstring)."""

    compose_file: Path
    workdir: Path
    services: dict[str, LocalService]

    def start_order(self) -> list[str]:
        """Service names, each after everything it depends on (ties by name)."""
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for name in sorted(self.services):
            sorter.add(name, *sorted(self.services[name].depends_on))
        return list(sorter.static_order())

    def local_path(self, service: str, container_path: str) -> Path:
        """`container_path` of `service` here; KeyError if the service has no mount there."""
        found = self.services[service].local_path(container_path)
        if found is None:
            raise KeyError(f"service {service} mounts nothing at {container_path}")
        return found

    def translate(self, text: str) -> str:
        """`text` with every `http(s)://<service>:<container port>` replaced by that service's local URL."""
        return _SERVICE_URL.sub(lambda m: self._local_url(m) or m.group(0), text)

    def _local_url(self, match: re.Match[str]) -> str | None:
        service = self.services.get(match.group("host"))
        return service.url if service is not None else None


def local_topology(compose_file: Path, workdir: Path, *, python: str = sys.executable) -> LocalTopology:
    """Read `compose_file` and prepare its services to run here, with their files in `workdir`."""
    document = yaml.safe_load(compose_file.read_text())
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ComposeError(f"{compose_file}: no services")
    raw: dict[str, dict[str, Any]] = document["services"]
    folder = compose_file.resolve().parent
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = {name: _kind(name, spec) for name, spec in raw.items()}
    ports = {name: free_port() for name in raw}
    mounts = {name: _mounts(name, spec, folder, workdir) for name, spec in raw.items()}
    # Which k3s services some backends.yaml reaches over https (so their stand-in serves TLS).
    tls = _https_backends({n: m for n, m in mounts.items() if kinds[n] == "vwproxy"}, set(raw))
    services: dict[str, LocalService] = {}
    for name, spec in raw.items():
        scheme = "https" if kinds[name] == "vwproxy" or name in tls else "http"
        services[name] = LocalService(
            name=name, kind=kinds[name], argv=[], port=ports[name], url=f"{scheme}://127.0.0.1:{ports[name]}",
            mounts=mounts[name], depends_on=tuple(sorted(_depends_on(spec))),
        )
    topology = LocalTopology(compose_file, workdir, services)
    for name, spec in raw.items():
        service = services[name]
        command = _command(name, spec)
        if service.kind == "k3s":
            _k3s_stand_in(service, command, workdir, python, tls=name in tls)
        else:
            service.argv = [python, "-m", "vwproxy.cli", *_vwproxy_args(service, command, topology)]
            for mount in service.mounts:
                if not mount.named and (mount.local / BACKENDS_FILE).is_file():
                    _rewrite_backends(mount.local / BACKENDS_FILE, service, topology)
    return topology


# --- reading the Compose file ---------------------------------------------------------------------


def _kind(name: str, spec: dict[str, Any]) -> str:
    image = str(spec.get("image") or "")
    if image.split("/")[-1].startswith("k3s:") or image.startswith("rancher/k3s"):
        return "k3s"
    if "build" in spec or image.split(":")[0].endswith("vwproxy"):
        return "vwproxy"
    raise ComposeError(f"service {name}: neither a vwproxy service (build, or a vwproxy image) nor a rancher/k3s one (image {image!r})")


def _command(name: str, spec: dict[str, Any]) -> list[str]:
    command = spec.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    if isinstance(command, list):
        return [str(part) for part in command]
    raise ComposeError(f"service {name}: command: required, a list or a string")


def _depends_on(spec: dict[str, Any]) -> list[str]:
    depends = spec.get("depends_on") or []
    return list(depends) if isinstance(depends, (list, dict)) else []


def _mounts(name: str, spec: dict[str, Any], folder: Path, workdir: Path) -> list[Mount]:
    out: list[Mount] = []
    for entry in spec.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) not in (2, 3):
                raise ComposeError(f"service {name}: volume {entry!r}: expected SOURCE:TARGET[:MODE]")
            source, target, read_only = parts[0], parts[1], len(parts) == 3 and "ro" in parts[2].split(",")
        elif isinstance(entry, dict) and "source" in entry and "target" in entry:
            source, target, read_only = str(entry["source"]), str(entry["target"]), bool(entry.get("read_only"))
        else:
            raise ComposeError(f"service {name}: volume {entry!r}: expected SOURCE:TARGET[:MODE] or a mapping with source and target")
        if source.startswith((".", "/", "~")):  # a bind mount
            local = (folder / source).resolve()
            if not local.exists():
                raise ComposeError(f"service {name}: volume {entry!r}: {local} does not exist")
            if local.is_dir():
                copy = workdir / "services" / name / target.lstrip("/")
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(local, copy)
                local = copy
            out.append(Mount(target, local, "", read_only))
        else:
            local = workdir / "volumes" / source
            local.mkdir(parents=True, exist_ok=True)
            out.append(Mount(target, local, source, read_only))
    return out


def _https_backends(vwproxy_mounts: dict[str, list[Mount]], names: set[str]) -> set[str]:
    found: set[str] = set()
    for mounts in vwproxy_mounts.values():
        for mount in mounts:
            backends = mount.local / BACKENDS_FILE
            if mount.named or not backends.is_file():
                continue
            for doc in yaml.safe_load_all(backends.read_text()):
                url = str(((doc or {}).get("spec") or {}).get("url") or "")
                match = _SERVICE_URL.match(url)
                if match and url.startswith("https://") and match.group("host") in names:
                    found.add(match.group("host"))
    return found


# --- vwproxy services ------------------------------------------------------------------------------


def _vwproxy_args(service: LocalService, command: list[str], topology: LocalTopology) -> list[str]:
    out: list[str] = []
    previous = ""
    for arg in command:
        if previous == "--host":
            arg = "127.0.0.1"
        elif previous == "--port":
            arg = str(service.port)
        else:
            arg = _local_arg(arg, service, topology)
        out.append(arg)
        previous = arg
    return out


def _local_arg(arg: str, service: LocalService, topology: LocalTopology) -> str:
    if arg.startswith("/"):
        local = service.local_path(arg)
        return str(local) if local is not None else arg
    return topology.translate(arg)


def _rewrite_backends(path: Path, service: LocalService, topology: LocalTopology) -> None:
    """backends.yaml for this machine: service URLs and container paths mapped to local ones."""
    documents = list(yaml.safe_load_all(path.read_text()))
    for doc in documents:
        spec = (doc or {}).get("spec")
        if not isinstance(spec, dict):
            continue
        for key, value in list(spec.items()):
            if isinstance(value, str):
                spec[key] = _local_arg(value, service, topology)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


# --- k3s stand-ins ----------------------------------------------------------------------------------


def _k3s_stand_in(service: LocalService, command: list[str], workdir: Path, python: str, *, tls: bool) -> None:
    token_file = None
    for arg in command:
        match = _TOKEN_AUTH_ARG.match(arg)
        if match:
            token_file = service.local_path(match.group("path"))
            if token_file is None:
                raise ComposeError(f"service {service.name}: {arg}: no volume mounts {match.group('path')}")
    if token_file is None:
        raise ComposeError(f"service {service.name}: no --kube-apiserver-arg=token-auth-file=…: vwproxy could not authenticate to it")
    service.token = _masters_token(service.name, token_file)
    home = workdir / "services" / service.name
    home.mkdir(parents=True, exist_ok=True)
    token_path = home / "token"
    token_path.write_text(service.token + "\n")
    token_path.chmod(0o600)
    service.argv = [python, "-m", "vwproxy.cli", "shard", "--data-dir", str(home / "data"), "--host", "127.0.0.1",
                    "--port", str(service.port), "--token-file", str(token_path)]
    if tls:
        tls_dir = service.local_path(K3S_TLS_DIR)
        if tls_dir is None:
            raise ComposeError(f"service {service.name}: reached over https, but no volume is mounted at {K3S_TLS_DIR} to share its CA")
        tls_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_pem, ca_key = new_ca(now, common_name=f"{service.name}-server-ca")
        cert, key = new_serving_certificate(ca_pem, ca_key, ["127.0.0.1", "localhost"], now)
        service.ca_file = tls_dir / K3S_SERVER_CA
        service.ca_file.write_bytes(ca_pem)
        (home / "serving.crt").write_bytes(cert)
        (home / "serving.key").write_bytes(key)
        (home / "serving.key").chmod(0o600)
        service.argv += ["--tls-cert-file", str(home / "serving.crt"), "--tls-private-key-file", str(home / "serving.key")]


def _masters_token(name: str, token_file: Path) -> str:
    """The first token of kube-apiserver's token CSV (token,user,uid[,"groups"]) in system:masters."""
    with token_file.open(newline="") as handle:
        for row in csv.reader(handle):
            if len(row) >= 4 and MASTERS in [group.strip() for group in row[3].split(",")]:
                return row[0].strip()
    raise ComposeError(f"service {name}: {token_file} grants no token the group {MASTERS}")


__all__ = ["ComposeError", "LocalService", "LocalTopology", "Mount", "local_topology", "K3S_TLS_DIR", "K3S_SERVER_CA"]
