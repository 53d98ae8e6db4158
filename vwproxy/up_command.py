"""`vwproxy up` and `vwproxy down`: `serve` in the background for tests in any language.

`up` starts `serve` as a detached child (its own session, its log in the data dir), waits until
`/readyz` passes and says the control plane is settled (every workspace, binding and endpoint
slice reconciled), and prints one JSON document: the front URL, each endpoint slice's
virtual-workspace URL (and an admin kubeconfig for it), the admin kubeconfig, the CA, the pid, the data dir and the log,
and with `--service-account` a kubeconfig per ServiceAccount (its TokenRequest token) and per export it may read. The child
tells which URL it serves (with `--port 0`, the port it bound) in `serve.json` in the data dir,
which it removes when it stops. `down` sends that pid SIGTERM and waits for it to go. Every
failure is one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vwproxy.auth.keys import write_private_file
from vwproxy.auth.tls import ADMIN_KUBECONFIG, CA_CERT
from vwproxy.kubeconfig_command import (
    DEFAULT_DATA_DIR,
    ENDPOINT_SLICES,
    Credentials,
    KubeconfigError,
    credentials,
    render,
)

# Written by `serve` once its socket is bound: the URL it serves and its pid.
SERVE_STATE_FILE = "serve.json"
SERVE_LOG_FILE = "serve.log"
# `serve` settles the example topology in well under a second; a minute is a config of thousands
# of workspaces or a machine under heavy load, and past that `up` should say where to look.
UP_TIMEOUT_SECONDS = 60.0
# How long `down` waits for the graceful stop (watches ended, in-flight writes finished: 5 s).
DOWN_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.05
# The settled line must hold on this many polls in a row: one quiet instant between two commits
# is not settled.
SETTLED_POLLS = 3
LOGICAL_CLUSTERS = "/apis/core.kcp.io/v1alpha1/logicalclusters"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
# A ServiceAccount token from `up --service-account` outlives any test run on the proxy.
SERVICE_ACCOUNT_TOKEN_SECONDS = 24 * 3600


class UpError(Exception):
    """Why `up` or `down` failed: one line."""


def write_serve_state(data_dir: Path, url: str) -> Path:
    """What `serve` tells `up`: the URL it serves (the bound port with `--port 0`) and its pid."""
    path = data_dir / SERVE_STATE_FILE
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    return path


def add_parsers(sub: Any) -> None:
    up = sub.add_parser("up", help="start `serve` in the background, wait until it is settled, print its URLs as JSON")
    up.add_argument("--config", type=Path, default=None, help="folder of kcp YAML manifests (default: the example topology)")
    up.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR), help=f"serve's data dir; its log and kubeconfigs go there (default: {DEFAULT_DATA_DIR})")
    up.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    up.add_argument("--port", type=int, default=0, help="listen port (default: 0, a free one)")
    up.add_argument("--deterministic", action="store_true", help="logical cluster names from workspace paths, a fixed RV base")
    up.add_argument("--json", action="store_true", help="print the JSON document (the only output format today)")
    up.add_argument("--timeout", type=float, default=UP_TIMEOUT_SECONDS, help="seconds to wait for readiness (default: %(default)s)")
    up.add_argument(
        "--service-account", dest="service_accounts", type=service_account_spec, action="append", default=[], metavar="WORKSPACE/NAME[=EXPORT,...]",
        help="create ServiceAccount default/NAME in WORKSPACE with a TokenRequest token and a kubeconfig for it; with =EXPORT, "
             "grant it apiexports/content of those exports there (and reading endpoint slices) and a kubeconfig for each "
             "export's virtual workspace (repeatable; e.g. root:provider/controller=widgets)",
    )
    down = sub.add_parser("down", help="stop the `serve` that `up` started in --data-dir")
    down.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR), help=f"the data dir given to `up` (default: {DEFAULT_DATA_DIR})")
    down.add_argument("--timeout", type=float, default=DOWN_TIMEOUT_SECONDS, help="seconds to wait for it to exit (default: %(default)s)")


@dataclass(frozen=True)
class ServiceAccountSpec:
    """`--service-account WORKSPACE/NAME[=EXPORT,...]`."""

    workspace: str
    name: str
    exports: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.workspace}/{self.name}"


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_WORKSPACE_PATH = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(:[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def service_account_spec(value: str) -> ServiceAccountSpec:
    """Parse `root:provider/controller=widgets,gadgets`; argparse reports a bad one as a usage error."""
    target, _, exports = value.partition("=")
    workspace, _, name = target.rpartition("/")
    names = tuple(e.strip() for e in exports.split(",")) if exports else ()
    if not _WORKSPACE_PATH.match(workspace) or not _DNS_LABEL.match(name) or not all(_DNS_LABEL.match(e) for e in names):
        raise argparse.ArgumentTypeError(f"{value!r}: expected WORKSPACE/NAME[=EXPORT,...], e.g. root:provider/controller=widgets")
    return ServiceAccountSpec(workspace, name, names)


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "up":
            print(json.dumps(up(args), indent=2))
        else:
            down(args.data_dir, args.timeout)
    except UpError as exc:
        print(f"vwproxy {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def serve_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "vwproxy.cli", "serve", "--data-dir", str(args.data_dir), "--host", args.host, "--port", str(args.port)]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    if args.deterministic:
        argv.append("--deterministic")
    return argv


def up(args: argparse.Namespace) -> dict[str, Any]:
    data_dir: Path = args.data_dir.resolve()
    args.data_dir = data_dir
    if args.config is not None and not args.config.is_dir():
        raise UpError(f"--config {args.config}: not a folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    state_path = data_dir / SERVE_STATE_FILE
    if state_path.exists():
        pid = _state(data_dir).get("pid")
        if isinstance(pid, int) and _alive(pid):
            raise UpError(f"{data_dir}: already served by pid {pid} (vwproxy down --data-dir {data_dir})")
        state_path.unlink()
    log_path = data_dir / SERVE_LOG_FILE
    with log_path.open("ab") as log:
        child = subprocess.Popen(serve_argv(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + args.timeout
    url = _wait_for_url(child, data_dir, log_path, deadline)
    try:
        creds = credentials(data_dir, url, "", None)
    except KubeconfigError as exc:
        raise _gave_up(child, log_path, str(exc)) from None
    trust = ssl.create_default_context(cafile=str(data_dir / CA_CERT))
    with httpx.Client(base_url=url, verify=trust, headers={"Authorization": f"Bearer {creds.token}"}, timeout=5.0) as client:
        _wait_settled(child, client, log_path, deadline)
        endpoints = _endpoint_urls(client)
        try:
            accounts = {spec.key: _service_account(client, data_dir, spec, endpoints, creds) for spec in getattr(args, "service_accounts", [])}
        except UpError as exc:
            raise _gave_up(child, log_path, str(exc)) from None
    document = {
        "url": url, "endpoints": endpoints, "kubeconfig": str(data_dir / ADMIN_KUBECONFIG),
        "endpointKubeconfigs": _endpoint_kubeconfigs(data_dir, endpoints, creds), "ca": str(data_dir / CA_CERT),
        "pid": child.pid, "dataDir": str(data_dir), "log": str(log_path),
    }
    if accounts:
        document["serviceAccounts"] = accounts
    return document


def _apply(client: httpx.Client, path: str, obj: dict[str, Any], what: str) -> None:
    """Server-side apply as `vwproxy-up`, so a second `up` on the same data dir changes nothing."""
    try:
        resp = client.patch(path, params={"fieldManager": "vwproxy-up", "force": "true"}, content=json.dumps(obj),
                            headers={"content-type": "application/apply-patch+yaml"})
    except httpx.TransportError as exc:
        raise UpError(f"{what}: {exc.__class__.__name__}") from None
    if resp.status_code not in (200, 201):
        raise UpError(f"{what}: HTTP {resp.status_code}: {_message(resp)}")


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message") or resp.text)
    except ValueError:
        return resp.text.strip()[:200]


def _service_account(client: httpx.Client, data_dir: Path, spec: ServiceAccountSpec, endpoints: dict[str, list[str]], admin: Credentials) -> dict[str, Any]:
    """ServiceAccount default/NAME in the workspace, granted apiexports/content of its exports
    there (a ClusterRole and binding named `vwproxy-up:NAME`), a TokenRequest token, and its
    kubeconfigs: the workspace, and each export's virtual workspace (`/clusters/*`)."""
    base = f"/clusters/{spec.workspace}"
    if client.get(f"{base}/api/v1/namespaces/default").status_code != 200:
        raise UpError(f"--service-account {spec.key}: workspace {spec.workspace} not found (or it has no default namespace yet)")
    what = f"--service-account {spec.key}"
    _apply(client, f"{base}/api/v1/namespaces/default/serviceaccounts/{spec.name}",
           {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": spec.name, "namespace": "default"}}, f"{what}: the ServiceAccount")
    if spec.exports:
        role = f"vwproxy-up:{spec.name}"
        rules = [
            {"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "resourceNames": list(spec.exports), "verbs": ["*"]},
            {"apiGroups": ["apis.kcp.io"], "resources": ["apiexports"], "resourceNames": list(spec.exports), "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apis.kcp.io"], "resources": ["apiexportendpointslices"], "verbs": ["get", "list", "watch"]},
        ]
        _apply(client, f"{base}{RBAC}/clusterroles/{role}",
               {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules}, f"{what}: the ClusterRole")
        _apply(client, f"{base}{RBAC}/clusterrolebindings/{role}", {
            "apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "namespace": "default", "name": spec.name}],
        }, f"{what}: the ClusterRoleBinding")
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": SERVICE_ACCOUNT_TOKEN_SECONDS}}
    issued = client.post(f"{base}/api/v1/namespaces/default/serviceaccounts/{spec.name}/token", json=request)
    if issued.status_code != 201:
        raise UpError(f"{what}: TokenRequest: HTTP {issued.status_code}: {_message(issued)}")
    creds = Credentials(admin.server, admin.ca_pem, str(issued.json()["status"]["token"]), f"{spec.workspace}/{spec.name}")
    stem = f"sa-{spec.workspace.replace(':', '_')}-{spec.name}"
    workspace_config = data_dir / f"{stem}.kubeconfig"
    write_private_file(workspace_config, render(spec.workspace, f"{admin.server}{base}", creds).encode())
    account: dict[str, Any] = {"kubeconfig": str(workspace_config), "endpointKubeconfigs": {}}
    for export in spec.exports:
        key = f"{spec.workspace}/{export}"
        urls = endpoints.get(key)
        if not urls:
            raise UpError(f"{what}: no endpoint slice {key} with a URL (is {export} exported there, and bound?)")
        path = data_dir / f"{stem}-vw-{export}.kubeconfig"
        write_private_file(path, render(key, f"{urls[0]}/clusters/*", creds).encode())
        account["endpointKubeconfigs"][key] = str(path)
    return account


def _state(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / SERVE_STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _gave_up(child: subprocess.Popen[bytes], log_path: Path, why: str) -> UpError:
    if child.poll() is None:
        child.terminate()
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(empty log)"
    return UpError(f"{why}; last log line ({log_path}): {last}")


def _wait_for_url(child: subprocess.Popen[bytes], data_dir: Path, log_path: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise _gave_up(child, log_path, f"serve exited with {child.returncode}")
        state = _state(data_dir)
        if state.get("pid") == child.pid and isinstance(state.get("url"), str):
            return str(state["url"])
        time.sleep(POLL_SECONDS)
    raise _gave_up(child, log_path, "serve did not bind its port in time")


def _wait_settled(child: subprocess.Popen[bytes], client: httpx.Client, log_path: Path, deadline: float) -> None:
    settled = 0
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise _gave_up(child, log_path, f"serve exited with {child.returncode}")
        try:
            ready = client.get("/readyz")
            ok = ready.status_code == 200 and "[+]control-plane settled" in ready.text
        except httpx.TransportError:
            ok = False
        settled = settled + 1 if ok else 0
        if settled >= SETTLED_POLLS:
            return
        time.sleep(POLL_SECONDS)
    raise _gave_up(child, log_path, "serve did not settle in time")


def _endpoint_urls(client: httpx.Client) -> dict[str, list[str]]:
    """`<workspace path>/<slice name>` -> the slice's virtual-workspace URLs."""
    try:
        clusters = client.get(f"/clusters/*{LOGICAL_CLUSTERS}")
        slices = client.get(f"/clusters/*{ENDPOINT_SLICES}")
    except httpx.TransportError as exc:
        raise UpError(f"reading the endpoint slices: {exc.__class__.__name__}") from None
    if clusters.status_code != 200 or slices.status_code != 200:
        raise UpError(f"reading the endpoint slices: HTTP {slices.status_code}")
    paths = {_annotation(lc, "kcp.io/cluster"): _annotation(lc, "kcp.io/path") for lc in clusters.json()["items"]}
    endpoints: dict[str, list[str]] = {}
    for item in slices.json()["items"]:
        cluster = _annotation(item, "kcp.io/cluster")
        key = f"{paths.get(cluster) or cluster}/{item['metadata']['name']}"
        endpoints[key] = [str(e["url"]) for e in (item.get("status") or {}).get("endpoints") or [] if e.get("url")]
    return dict(sorted(endpoints.items()))


def _endpoint_kubeconfigs(data_dir: Path, endpoints: dict[str, list[str]], creds: Credentials) -> dict[str, str]:
    """An admin kubeconfig per endpoint slice, its server the first VW URL plus `/clusters/*`
    (what `vwproxy kubeconfig --export` prints), written next to admin.kubeconfig."""
    written: dict[str, str] = {}
    for key, urls in endpoints.items():
        if not urls:
            continue
        path = data_dir / f"vw-{key.replace(':', '_').replace('/', '-')}.kubeconfig"
        write_private_file(path, render(key, f"{urls[0]}/clusters/*", creds).encode())
        written[key] = str(path)
    return written


def _annotation(obj: dict[str, Any], key: str) -> str:
    return str((obj.get("metadata", {}).get("annotations") or {}).get(key, ""))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def down(data_dir: Path, timeout: float = DOWN_TIMEOUT_SECONDS) -> None:
    """SIGTERM the `serve` recorded in the data dir and wait (bounded) for it to exit."""
    pid = _state(data_dir).get("pid")
    if not isinstance(pid, int):
        raise UpError(f"{data_dir / SERVE_STATE_FILE}: no running serve recorded there")
    if not _alive(pid):
        (data_dir / SERVE_STATE_FILE).unlink(missing_ok=True)
        raise UpError(f"pid {pid} from {data_dir / SERVE_STATE_FILE} is not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) or _reaped_zombie(pid):
            return
        time.sleep(POLL_SECONDS)
    raise UpError(f"pid {pid} still running {timeout:g} s after SIGTERM")


def _reaped_zombie(pid: int) -> bool:
    """A child of this very process (a test running `up` and `down` in-process) stays a zombie
    until reaped; reap it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid
