"""`vwproxy kubeconfig`: a kubeconfig for the front, a workspace, or an export's virtual workspace.

The credentials come from the data dir `serve` wrote (the CA in ca.crt, the admin's token in
tokens.csv, the server URL in admin.kubeconfig) unless `--server`, `--token` or `--token-file`
say otherwise. The URLs come from the running server, as a kcp user finds them: a workspace's
`spec.URL` from its Workspace object, an export's virtual-workspace URL from its endpoint slice
(then `/clusters/*`, or `/clusters/<name>` with `--cluster`). Every failure is one line naming the
file or flag to look at.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from vwproxy.auth.tls import ADMIN_KUBECONFIG, ADMIN_USER, CA_CERT, TOKEN_FILE
from vwproxy.kube.kcp import ROOT_CLUSTER, WILDCARD_CLUSTER, is_logical_cluster_name

# The server answers these reads from memory in milliseconds; ten seconds is a server that is
# not there (or not the one meant), and the command should say so rather than hang.
REQUEST_TIMEOUT_SECONDS = 10.0
WORKSPACES = "/apis/tenancy.kcp.io/v1alpha1/workspaces"
ENDPOINT_SLICES = "/apis/apis.kcp.io/v1alpha1/apiexportendpointslices"
DEFAULT_DATA_DIR = ".vwproxy"

DESCRIPTION = """\
Print a kubeconfig for a running `vwproxy serve`: its front, one workspace, or an APIExport's
virtual workspace (the URL from the export's endpoint slice). It trusts the data dir's CA and uses
the admin's token from the data dir, or yours (--token-file)."""

EXAMPLES = """\
examples:
  vwproxy kubeconfig > front.kubeconfig
      the front (root's API, and /clusters/<path> for any workspace), as the admin
  vwproxy kubeconfig --workspace root:consumer-1 > consumer.kubeconfig
  vwproxy kubeconfig --export root:provider/widgets > vw.kubeconfig
      the APIExport virtual workspace, /clusters/* (every bound workspace)
  vwproxy kubeconfig --export root:provider/widgets --cluster root:consumer-1 --token-file sa.token
      one workspace through the virtual workspace, as a ServiceAccount"""


class KubeconfigError(Exception):
    """Why no kubeconfig could be made: one line, naming the file or flag to fix."""


class Forbidden(KubeconfigError):
    """The token may not read what names the URL (a user's token, scoped to its own workspace)."""


@dataclass(frozen=True)
class Credentials:
    server: str  # the front's base URL
    ca_pem: bytes | None  # None: plain HTTP, nothing to trust
    token: str
    user: str  # the kubeconfig's user entry name


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "kubeconfig", help="print a kubeconfig for the front, a workspace or an export's virtual workspace",
        description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR), help=f"the data dir of `vwproxy serve` (default: {DEFAULT_DATA_DIR})")
    parser.add_argument("--server", default="", help=f"the front's URL (default: the one in DATA_DIR/{ADMIN_KUBECONFIG})")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--workspace", default="", help="a workspace path, e.g. root:consumer-1")
    target.add_argument("--export", default="", help="an APIExport as <workspace path>/<name>, e.g. root:provider/widgets")
    parser.add_argument("--cluster", default="", help="with --export: one workspace (path or logical cluster name) instead of /clusters/*")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", default="", help="your bearer token instead of the admin's (visible in the process list: prefer --token-file)")
    token.add_argument("--token-file", type=Path, default=None, help="a file holding your bearer token")


def run(args: argparse.Namespace) -> str:
    """The kubeconfig asked for, as YAML; raises KubeconfigError."""
    if args.cluster and not args.export:
        raise KubeconfigError("--cluster: only with --export")
    creds = credentials(args.data_dir, args.server, args.token, args.token_file)
    with _client(creds) as client:
        if args.export:
            name, url = f"{args.export}", export_url(client, args.export, args.cluster)
        elif args.workspace:
            name, url = args.workspace, workspace_url(client, args.workspace)
        else:
            name, url = "vwproxy", creds.server
            _get(client, "/version", "--server", creds.server)
    return render(name, url, creds)


# -- credentials -----------------------------------------------------------------------------------


def credentials(data_dir: Path, server: str, token: str, token_file: Path | None) -> Credentials:
    server = server.rstrip("/") or _server_of(data_dir / ADMIN_KUBECONFIG)
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"--server: {server!r} is not an http:// or https:// URL")
    ca_pem = None
    if server.startswith("https://"):
        ca_pem = _read(data_dir / CA_CERT, "the CA that signed the server's certificate")
    if token_file is not None:
        token = _read(token_file, "your token", flag="--token-file").decode(errors="replace").strip()
        if not token:
            raise KubeconfigError(f"--token-file: {token_file} is empty")
        return Credentials(server, ca_pem, token, "user")
    if token.strip():
        return Credentials(server, ca_pem, token.strip(), "user")
    if token:
        raise KubeconfigError("--token: must not be blank")
    return Credentials(server, ca_pem, _admin_token(data_dir / TOKEN_FILE), ADMIN_USER)


def _read(path: Path, what: str, flag: str = "--data-dir") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        hint = f"; is {flag} the data dir of a `vwproxy serve` that has started?" if flag == "--data-dir" else ""
        raise KubeconfigError(f"{path}: does not exist (it should hold {what}){hint}") from None
    except OSError as exc:
        raise KubeconfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None


def _server_of(admin_kubeconfig: Path) -> str:
    """The front URL in admin.kubeconfig: its `base` cluster (else the current context's, minus /clusters/…)."""
    try:
        config = yaml.safe_load(_read(admin_kubeconfig, "the server URL, else give --server"))
    except yaml.YAMLError:
        raise KubeconfigError(f"{admin_kubeconfig}: not valid YAML; give --server") from None
    clusters = {c.get("name"): (c.get("cluster") or {}) for c in (config or {}).get("clusters") or [] if isinstance(c, dict)} if isinstance(config, dict) else {}
    server = str((clusters.get("base") or next(iter(clusters.values()), {})).get("server") or "")
    if not server:
        raise KubeconfigError(f"{admin_kubeconfig}: names no server; give --server")
    return server.split("/clusters/", 1)[0].rstrip("/")


def _admin_token(path: Path) -> str:
    """The admin's token from the static token file (`token,user,uid,"groups"`)."""
    text = _read(path, "the admin's token, else give --token-file").decode(errors="replace")
    for cells in csv.reader(io.StringIO(text)):
        if len(cells) >= 2 and cells[1].strip() == ADMIN_USER and cells[0].strip():
            return cells[0].strip()
    raise KubeconfigError(f"{path}: has no line for user {ADMIN_USER!r}; give --token-file")


# -- asking the server -----------------------------------------------------------------------------


def _client(creds: Credentials) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if creds.ca_pem is not None:
        try:
            verify = ssl.create_default_context(cadata=creds.ca_pem.decode(errors="replace"))
        except (ssl.SSLError, ValueError):
            raise KubeconfigError(f"{CA_CERT} in the data dir: not a PEM certificate") from None
    return httpx.Client(base_url=creds.server, verify=verify, trust_env=False, timeout=REQUEST_TIMEOUT_SECONDS,
                        headers={"Authorization": f"Bearer {creds.token}"})


def _get(client: httpx.Client, path: str, flag: str, value: str) -> dict[str, Any] | None:
    """GET `path` (None for a 404); any other failure names the flag it came from."""
    try:
        resp = client.get(path)
    except httpx.HTTPError as exc:
        raise KubeconfigError(f"--server {client.base_url}: cannot reach the server: {type(exc).__name__}: {exc}") from None
    if resp.status_code == 404:
        return None
    if resp.status_code == 401:
        raise KubeconfigError(f"--token: the server at {client.base_url} does not accept the token (401)")
    if resp.status_code == 403:
        raise Forbidden(f"{flag} {value}: the token may not read {path} (403)")
    if resp.status_code != 200:
        raise KubeconfigError(f"{flag} {value}: the server answered {resp.status_code} for {path}")
    try:
        body = resp.json()
    except ValueError:
        raise KubeconfigError(f"--server {client.base_url}: not a vwproxy or kcp server (GET {path} is not JSON)") from None
    return body if isinstance(body, dict) else None


def _split_path(path: str, flag: str) -> tuple[str, str]:
    """`root:a:b` → (`root:a`, `b`)."""
    parent, _, name = path.rpartition(":")
    if not parent or not name:
        raise KubeconfigError(f"{flag} {path}: not a workspace path below root (e.g. root:consumer-1)")
    return parent, name


def workspace_url(client: httpx.Client, path: str) -> str:
    if path == ROOT_CLUSTER:
        return f"{client.base_url}".rstrip("/") + f"/clusters/{ROOT_CLUSTER}"
    parent, name = _split_path(path, "--workspace")
    try:
        ws = _get(client, f"/clusters/{parent}{WORKSPACES}/{name}", "--workspace", path)
    except Forbidden:
        # A user's token may see its workspace but not the parent's Workspace objects: the front
        # serves every workspace at /clusters/<path>, which is what spec.URL holds anyway.
        return f"{client.base_url}".rstrip("/") + f"/clusters/{path}"
    if ws is None:
        raise KubeconfigError(f"--workspace {path}: no such workspace on {client.base_url}")
    url = str((ws.get("spec") or {}).get("URL") or "")
    if not url:
        raise KubeconfigError(f"--workspace {path}: not scheduled yet (its spec.URL is empty); try again shortly")
    return url


def _cluster_name(client: httpx.Client, cluster: str) -> str:
    """A logical cluster name as is; a workspace path resolved through its Workspace's spec.cluster."""
    if cluster == WILDCARD_CLUSTER or is_logical_cluster_name(cluster):
        return cluster
    parent, name = _split_path(cluster, "--cluster")
    ws = _get(client, f"/clusters/{parent}{WORKSPACES}/{name}", "--cluster", cluster)
    resolved = str(((ws or {}).get("spec") or {}).get("cluster") or "")
    if not resolved:
        raise KubeconfigError(f"--cluster {cluster}: no such workspace (give a workspace path or a logical cluster name)")
    return resolved


def export_url(client: httpx.Client, export: str, cluster: str) -> str:
    where, _, name = export.rpartition("/")
    if not where or not name:
        raise KubeconfigError(f"--export {export}: give <workspace path>/<export name>, e.g. root:provider/widgets")
    endpoint_slice = _get(client, f"/clusters/{where}{ENDPOINT_SLICES}/{name}", "--export", export)
    if endpoint_slice is None:
        raise KubeconfigError(f"--export {export}: no APIExportEndpointSlice {name!r} in {where} (is the export there?)")
    urls = [str(e.get("url")) for e in (endpoint_slice.get("status") or {}).get("endpoints") or [] if isinstance(e, dict) and e.get("url")]
    if not urls:
        raise KubeconfigError(f"--export {export}: the endpoint slice lists no URL yet (an export gets one once something binds it)")
    return f"{urls[0].rstrip('/')}/clusters/{_cluster_name(client, cluster or WILDCARD_CLUSTER)}"


# -- the kubeconfig ----------------------------------------------------------------------------------


def render(name: str, url: str, creds: Credentials) -> str:
    cluster: dict[str, Any] = {"server": url}
    if creds.ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(creds.ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": creds.user, "user": {"token": creds.token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": creds.user}}],
        "current-context": name,
    }
    return yaml.safe_dump(config, sort_keys=False)
