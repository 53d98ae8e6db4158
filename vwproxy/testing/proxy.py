"""`vwproxy serve` as a test fixture: the front, the control plane and the example topology
(or a config folder of yours), on a free loopback port, in well under a second."""

from __future__ import annotations

import csv
import io
import secrets
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from vwproxy.auth.stack import build_auth
from vwproxy.auth.tls import ADMIN_KUBECONFIG, ensure_admin_token, ensure_serving_certificate
from vwproxy.control.manifests import load_folder
from vwproxy.core.view import DEFAULT_HISTORY
from vwproxy.server.app import ServeApp
from vwproxy.server.guard import rbac_source, service_account_lookup
from vwproxy.server.reads import DEFAULT_BOOKMARK_INTERVAL
from vwproxy.store.shard import Shard
from vwproxy.testing.server import ServerThread
from vwproxy.upstream.backends import Backend, load_backends
from vwproxy.upstream.client import BackendClient

# How long `start()` waits for the control plane to settle after seeding.
SETTLE_TIMEOUT_SECONDS = 10.0


def example_topology() -> Path:
    from importlib import resources

    return Path(str(resources.files("vwproxy") / "data" / "example"))


class RunningProxy:
    """A running `vwproxy serve`: `url`, `workspace_url(path)`, `cluster_of(path)`."""

    def __init__(self, data_dir: Path, config: Path | None = None, *, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL, backends: dict[str, Backend] | None = None, reseed: bool = False,
                 view_history: int = DEFAULT_HISTORY, users: Mapping[str, Sequence[str]] | None = None, deterministic: bool = False) -> None:
        """`reseed` applies the config again over a data dir seeded before (`serve --reseed`);
        `view_history` bounds the virtual workspaces' event history (a small one makes 410 easy to reach);
        `users` (name -> groups) are static token users, as `--token-auth-file` declares them;
        `user_token(name)` hands out their tokens; `deterministic` is `serve --deterministic` (logical
        cluster names from workspace paths, a fixed proxy RV base)."""
        self.data_dir = data_dir
        folder = config if config is not None else example_topology()
        manifests = load_folder(folder)
        if backends is None:
            backends_file = folder / "backends.yaml"
            backends = load_backends(backends_file) if backends_file.exists() else {}
        self.shard = Shard(data_dir)
        self._backends = backends
        # Secure as `serve` is: HTTPS with a CA of its own, and the admin's token for the clients below.
        self.serving = ensure_serving_certificate(data_dir, ("127.0.0.1", "localhost"))
        self._token = ensure_admin_token(data_dir)[1]
        self._user_tokens = {name: secrets.token_urlsafe(32) for name in users or {}}
        token_files: list[Path] = []
        if users:
            data_dir.mkdir(parents=True, exist_ok=True)
            token_file = data_dir / "test-users.csv"
            rows = io.StringIO()
            writer = csv.writer(rows)
            for name, groups in users.items():
                writer.writerow([self._user_tokens[name], name, f"uid-{name}", ",".join(groups)])
            token_file.write_text(rows.getvalue())
            token_files.append(token_file)

        def build(url: str) -> ServeApp:
            clients = {name: BackendClient(backend) for name, backend in self._backends.items()}
            auth = build_auth(data_dir, sa_lookup=service_account_lookup(self.shard), rbac_source=rbac_source(self.shard),
                              server_url=url, hosts=("127.0.0.1", "localhost"), token_files=token_files)
            return ServeApp(self.shard, url, manifests, clients, bookmark_interval, reseed=reseed, auth=auth, view_history=view_history,
                            deterministic=deterministic)

        self.server = ServerThread(app_factory=build, tls=(str(self.serving.cert), str(self.serving.key)))
        self.app: ServeApp = self.server.app

    @property
    def url(self) -> str:
        return self.server.url

    # -- clients: every test reaches the server through these, so they carry whatever
    # -- credentials and trust the server asks for.

    def fault(self, backend: str, kind: str, **args: Any) -> dict[str, Any]:
        """Switch a fault on for a kube backend while the proxy runs (`down`, `hung`, `slow` with
        `ms=`, `expire-next-watch`, `drop-watches`), through the admin API; returns its answer."""
        return self._faults_api("POST", backend, f"fault {kind} on backend {backend}", {"fault": kind, **args})

    def clear_faults(self, backend: str) -> None:
        """Clear every fault of a kube backend."""
        self._faults_api("DELETE", backend, f"clearing the faults of backend {backend}")

    def workspace_fault(self, workspace: str, kind: str, **args: Any) -> dict[str, Any]:
        """Switch a fault on for one workspace (a path or logical cluster name) as the virtual
        workspaces see it: `down`, `hung`, `slow` with `ms=`, `expire-next-watch`, `drop-watches`,
        or `delay` with `resource="logicalclusters.core.kcp.io", ms=`; returns the admin API's answer."""
        return self._faults_api("POST", f"workspaces/{workspace}", f"fault {kind} on workspace {workspace}", {"fault": kind, **args})

    def clear_workspace_faults(self, workspace: str) -> None:
        """Clear every fault of a workspace; what its faults held back reaches the views now."""
        self._faults_api("DELETE", f"workspaces/{workspace}", f"clearing the faults of workspace {workspace}")

    def _faults_api(self, method: str, target: str, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.client() as admin:
            resp = admin.request(method, f"/vwproxy/faults/{target}", json=body)
        if resp.status_code != 200:
            raise AssertionError(f"{what}: {resp.status_code} {resp.text}")
        answer: dict[str, Any] = resp.json()
        return answer

    def user_token(self, name: str) -> str:
        """The static token of a user given to the constructor."""
        return self._user_tokens[name]

    @property
    def token(self) -> str | None:
        """The admin's bearer token (system:masters), which the clients below present."""
        return self._token

    @property
    def ca_file(self) -> str | None:
        """The CA that signed the server's certificate."""
        return str(self.serving.ca_cert)

    @property
    def admin_kubeconfig(self) -> Path:
        """The admin kubeconfig `serve` writes into its data dir."""
        return self.data_dir / ADMIN_KUBECONFIG

    def client(self, *, timeout: float | httpx.Timeout = 10.0, token: str | None = None) -> httpx.Client:
        """An httpx client for the front (absolute URLs reach the VWs the same way)."""
        bearer = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        trust = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers, verify=trust)

    def kubeconfig(self, server: str | None = None, *, token: str | None = None) -> dict[str, Any]:
        """A kubeconfig document for `server` (the front by default) with this server's credentials."""
        cluster: dict[str, Any] = {"server": server or self.url}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        user: dict[str, Any] = {}
        bearer = token if token is not None else self.token
        if bearer:
            user["token"] = bearer
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "vwproxy",
            "clusters": [{"name": "vwproxy", "cluster": cluster}],
            "users": [{"name": "vwproxy", "user": user}],
            "contexts": [{"name": "vwproxy", "context": {"cluster": "vwproxy", "user": "vwproxy"}}],
        }

    def api_client(self, server: str | None = None, *, token: str | None = None) -> Any:
        """A `kubernetes` Python client (`kubernetes.client.ApiClient`) for `server`."""
        import kubernetes  # the test extra; only the tests that use the official client need it

        config = kubernetes.client.Configuration()
        config.host = server or self.url
        if self.ca_file:
            config.ssl_ca_cert = self.ca_file
        bearer = token if token is not None else self.token
        if bearer:
            config.api_key = {"authorization": f"Bearer {bearer}"}
        return kubernetes.client.ApiClient(config)

    def workspace_url(self, path: str) -> str:
        return f"{self.server.url}/clusters/{path}"

    def cluster_of(self, path: str) -> str:
        """The logical cluster name of a workspace path."""
        name = self.server.call(lambda: self.app.control.store.resolve_path(path))
        if name is None:
            raise KeyError(path)
        return name

    def endpoint_url(self, path: str, name: str) -> str:
        """The first virtual-workspace URL of endpoint slice `name` in workspace `path` (an export's
        VW: add `/clusters/*` for every bound workspace)."""
        with self.client() as front:
            response = front.get(f"{self.workspace_url(path)}/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/{name}")
        endpoints = (response.json().get("status") or {}).get("endpoints") or [] if response.status_code == 200 else []
        if not endpoints:
            raise KeyError(f"endpoint slice {path}/{name} has no endpoint (HTTP {response.status_code})")
        return str(endpoints[0]["url"])

    def settle(self, timeout: float = SETTLE_TIMEOUT_SECONDS) -> bool:
        """Wait until the control plane has nothing left to do."""
        return bool(self.server.run(self.app.control.wait_idle(timeout)))

    def start(self) -> RunningProxy:
        try:
            self.server.start()
        except RuntimeError:
            if self.app.startup_error is not None:
                raise self.app.startup_error from None
            raise
        return self

    def stop(self) -> None:
        if self.server.stop():
            self.shard.close()  # never from this thread while the server's loop may still use it

    def __enter__(self) -> RunningProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
