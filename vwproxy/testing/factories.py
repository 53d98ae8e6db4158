"""Test factories over a `RunningProxy`: workspaces, bindings, ServiceAccount kubeconfigs, and a
bounded wait for "this object is visible through that virtual workspace".

Each factory writes through the front as the admin, the way a test's setup would with kubectl,
and returns only once what it made is usable (a workspace scheduled, a binding Ready), so tests
never sleep. The pytest plugin hands them out bound to its proxies (`make_workspace`, ...).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from vwproxy.kube.kcp import ROOT_CLUSTER
from vwproxy.testing.proxy import RunningProxy

# Every factory's wait: the control plane reconciles a new object in milliseconds; five seconds
# is a proxy that will not get there, and the test should fail saying what it waited for.
WAIT_SECONDS = 5.0
# Between two looks: short enough that waits cost nothing noticeable, long enough not to spin.
POLL_SECONDS = 0.02
# A ServiceAccount kubeconfig's token outlives any test run.
TOKEN_SECONDS = 3600
WORKSPACES = "/apis/tenancy.kcp.io/v1alpha1/workspaces"
API_BINDINGS = "/apis/apis.kcp.io/v1alpha2/apibindings"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"


class NotVisible(AssertionError):
    """A wait ran out: what was waited for, and what was last seen."""


def _created(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 201:
        raise AssertionError(f"creating {what}: HTTP {response.status_code}: {response.text}")
    created: dict[str, Any] = response.json()
    return created


def _wait(what: str, look: Any, timeout: float = WAIT_SECONDS) -> Any:
    """Call `look()` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = look()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise NotVisible(f"{what}: not within {timeout:g} s")
        time.sleep(POLL_SECONDS)


def make_workspace(proxy: RunningProxy, path: str, type: str | None = None) -> str:  # `type`: kcp's field name
    """Create Workspace `path` (its parent must exist) of WorkspaceType `type` (`name`, in the
    parent, or `<path>:<name>`); wait until it has its logical cluster; return that name."""
    parent, _, name = path.rpartition(":")
    if not parent:
        raise ValueError(f"{path!r} is not a workspace path under {ROOT_CLUSTER}")
    workspace: dict[str, Any] = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name}, "spec": {}}
    if type is not None:
        type_path, _, type_name = type.rpartition(":")
        workspace["spec"]["type"] = {"name": type_name, **({"path": type_path} if type_path else {})}
    with proxy.client() as front:
        _created(front.post(f"/clusters/{parent}{WORKSPACES}", json=workspace), f"workspace {path}")

        def scheduled() -> str | None:
            ws = front.get(f"/clusters/{parent}{WORKSPACES}/{name}").json()
            phase = (ws.get("status") or {}).get("phase")
            cluster = (ws.get("spec") or {}).get("cluster")
            return str(cluster) if cluster and phase in ("Initializing", "Ready") else None

        cluster: str = _wait(f"workspace {path} scheduled", scheduled)
    return cluster


def make_binding(proxy: RunningProxy, workspace: str, export_path: str, export_name: str) -> dict[str, Any]:
    """Bind `export_path`'s APIExport `export_name` in `workspace` (an APIBinding of that name);
    wait until it is Ready; return it."""
    binding = {
        "apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": export_name},
        "spec": {"reference": {"export": {"path": export_path, "name": export_name}}},
    }
    with proxy.client() as front:
        _created(front.post(f"/clusters/{workspace}{API_BINDINGS}", json=binding), f"binding {workspace}/{export_name}")

        def ready() -> dict[str, Any] | None:
            obj: dict[str, Any] = front.get(f"/clusters/{workspace}{API_BINDINGS}/{export_name}").json()
            conditions = (obj.get("status") or {}).get("conditions") or []
            return obj if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions) else None

        bound: dict[str, Any] = _wait(f"binding {workspace}/{export_name} Ready", ready)
    return bound


def service_account_kubeconfig(proxy: RunningProxy, workspace: str, name: str, rules: list[dict[str, Any]], server: str | None = None) -> Path:
    """ServiceAccount `default/<name>` in `workspace`, granted `rules` there (a ClusterRole and
    ClusterRoleBinding of that name), a token from the TokenRequest API, and a kubeconfig for
    `server` (the workspace by default) written into the data dir; returns its path."""
    subject = {"kind": "ServiceAccount", "namespace": "default", "name": name}
    with proxy.client() as front:
        base = f"/clusters/{workspace}"
        _created(front.post(f"{base}/api/v1/namespaces/default/serviceaccounts", json={"metadata": {"name": name}}), f"serviceaccount {name}")
        _created(front.post(f"{base}{RBAC}/clusterroles", json={"metadata": {"name": name}, "rules": rules}), f"clusterrole {name}")
        role_binding = {"metadata": {"name": name}, "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name}, "subjects": [subject]}
        _created(front.post(f"{base}{RBAC}/clusterrolebindings", json=role_binding), f"clusterrolebinding {name}")
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": TOKEN_SECONDS}}
        issued = _created(front.post(f"{base}/api/v1/namespaces/default/serviceaccounts/{name}/token", json=request), f"a token for {name}")
    config = proxy.kubeconfig(server or proxy.workspace_url(workspace), token=str(issued["status"]["token"]))
    path = proxy.data_dir / f"{workspace.replace(':', '_')}-{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_visible(proxy: RunningProxy, vw_url: str, resource_path: str, name: str, cluster: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
    """Wait until `<vw_url>/clusters/<cluster>/<resource_path>/<name>` answers (the object is in
    that virtual workspace's view), e.g. `resource_path="apis/example.dev/v1alpha1/namespaces/default/widgets"`;
    `cluster` is a logical cluster name or a workspace path. Returns the object as the VW shows it."""
    cluster_name = proxy.cluster_of(cluster) if ":" in cluster else cluster
    url = f"{vw_url.rstrip('/')}/clusters/{cluster_name}/{resource_path.strip('/')}/{name}"
    with proxy.client() as client:

        def seen() -> dict[str, Any] | None:
            response = client.get(url)
            if response.status_code == 200:
                obj: dict[str, Any] = response.json()
                return obj
            return None

        found: dict[str, Any] = _wait(f"{name} through {url}", seen, timeout)
    return found
