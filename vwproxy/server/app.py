"""`vwproxy serve` as one ASGI app: the front over the embedded shard, the control plane, seeding."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from vwproxy.auth.stack import AuthStack
from vwproxy.control import shards
from vwproxy.control.manifests import Manifest
from vwproxy.control.mirror import Mirror
from vwproxy.control.objects import ENDPOINT_SLICES, SHARDS, WORKSPACES
from vwproxy.control.plane import ControlPlane
from vwproxy.control.seed import seed
from vwproxy.core.objects import ChangeEvent
from vwproxy.core.partition import EVERYTHING, Partition
from vwproxy.core.rv import DETERMINISTIC_BASE, RVSequence
from vwproxy.kube import errors, kcp, vwpaths
from vwproxy.server import http
from vwproxy.server.admission import Admission
from vwproxy.server.front import Front
from vwproxy.server.guard import RBAC_STORAGE_PREFIX, Guard
from vwproxy.server.vw.apiexport import APIExportVirtualWorkspace
from vwproxy.server.vw.lifecycle import LifecycleVirtualWorkspace
from vwproxy.cache.hub import ViewHub
from vwproxy.core.view import DEFAULT_HISTORY
from vwproxy.server.reads import DEFAULT_BOOKMARK_INTERVAL, ReadHandler
from vwproxy.server.shard_app import build_shard_app
from vwproxy.store.shard import Shard
from vwproxy.upstream import faults
from vwproxy.upstream.client import BackendClient

log = logging.getLogger(__name__)

# The admin API that switches backend faults on and off (issue 15).
FAULTS_PREFIX = "/vwproxy/faults/"
SERVICES_PREFIX = "/services/"
# A proxy shard looks at its registration this often, and retries a failed one sooner.
JOIN_CHECK_SECONDS = 10.0
JOIN_RETRY_SECONDS = 0.5
# ... and workspace faults, under it: `/vwproxy/faults/workspaces/<path or logical cluster>`.
WORKSPACE_FAULTS = "workspaces/"
# What a start on a seeded data dir reconciles before it listens: the few objects whose status
# names this process's URL, so the summary and the first readers see the current one.
START_FIRST = frozenset({"workspacetype", "export", "slice"})


def _fault_status(backend: str, kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"backend": backend, "faults": [{"fault": kind, **args} for kind, args in sorted(kinds.items())]}


def _workspace_fault_status(path: str, cluster: str, described: list[dict[str, Any]]) -> dict[str, Any]:
    return {"workspace": path, "cluster": cluster, "faults": described}


async def _fault_request(receive: Receive) -> dict[str, Any]:
    """The JSON object a fault is set with: `{"fault": kind, ...args}`, else a 400."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.bad_request('the fault must be a JSON object such as {"fault": "down"}') from None
    if not isinstance(request, dict) or not isinstance(request.get("fault"), str):
        raise errors.bad_request('the fault must be a JSON object with a "fault" string')
    return request


class ServeApp:
    """Starts the control plane and applies the manifests on startup; routes requests through the front."""

    def __init__(
        self,
        shard: Shard,
        external_url: str,
        manifests: Sequence[Manifest] = (),
        clients: dict[str, BackendClient] | None = None,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
        services: Any = None,
        reseed: bool = False,
        auth: AuthStack | None = None,
        view_history: int = DEFAULT_HISTORY,
        deterministic: bool = False,
        shard_name: str = shards.DEFAULT_SHARD_NAME,
        partition: Partition = EVERYTHING,
        join: BackendClient | None = None,
    ) -> None:
        """`shard_name` and `partition` are what this process registers as its `Shard` (DESIGN §7):
        its virtual workspaces serve the logical clusters of `partition`. With `join` (a client
        for a control plane's front) this process is a proxy shard: `shard` is a throwaway copy
        of the control plane's objects, kept by a `Mirror`, and nothing is seeded or reconciled here."""
        self.shard = shard
        self.clients = clients or {}
        self.external_url = external_url
        self.shard_name = shard_name
        self.partition = partition
        self.join = join
        self.mirror = Mirror(shard, join) if join is not None else None
        self.registered = join is None
        self.control = ControlPlane(shard, external_url, self.clients, deterministic=deterministic, embedded_client=join)
        self.manifests = list(manifests)
        self.reseed = reseed
        # One read handler for the embedded shard and every virtual workspace.
        self.reads = ReadHandler(bookmark_interval)
        shard_app = build_shard_app(shard, bookmark_interval, close_on_shutdown=False, reads=self.reads,
                                    admit=Admission(auth.rbac) if auth is not None else None)
        seq = RVSequence(DETERMINISTIC_BASE) if deterministic else None
        self.hub = ViewHub(shard, self.control.store, seq, history_size=view_history, client_for=self.control.client_for, partition=partition)
        # The virtual workspace writes to the embedded shard through its own HTTP API, in-process.
        self.embedded = httpx.AsyncClient(transport=httpx.ASGITransport(app=shard_app), base_url="http://embedded")
        self.apiexport = APIExportVirtualWorkspace(self.control, self.hub, self.embedded, self.reads)
        self.front = http.StatusErrors(Front(shard_app, self.control, services or self._services))
        self.lifecycle = LifecycleVirtualWorkspace(shard, self.control.store, self.embedded, self.reads, self.front,
                                                   auth.rbac.authorize if auth is not None else None)
        # Every request is authenticated and authorized first, unless the server was started open.
        self.auth = auth
        self.entry: ASGIApp = http.StatusErrors(self._routes)
        if auth is not None:
            self.entry = http.StatusErrors(Guard(self._routes, auth, shard, self.control.store))
            shard.on_commit.append(self._rbac_changed)
        self._loop_task: asyncio.Task[None] | None = None
        self.startup_error: Exception | None = None

    async def _services(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/services/…`: the virtual workspaces, by the URL grammar's kind."""
        vw = vwpaths.parse(unquote(scope["path"]))
        if vw.kind == vwpaths.APIEXPORT:
            await self.apiexport(scope, receive, send)
        elif self.join is not None:
            raise errors.path_not_found(f"this is proxy shard {self.shard_name}: the {vw.kind} virtual workspace is served by the control plane at {self.join.backend.url}")
        else:
            await self.lifecycle(scope, receive, send)

    async def startup(self) -> None:
        if self.mirror is not None:
            # A proxy shard: listen at once, ready once the copy is synced and the shard registered.
            await self.mirror.start()
            self._loop_task = asyncio.create_task(self._join(), name="vwproxy-join")
            log.info("proxy shard %s (partition %s) joining the control plane at %s", self.shard_name, self.partition, self.join.backend.url if self.join else "")
            return
        shards.register(self.control.store, self.shard_name, self.external_url, self.partition)
        # The config seeds a new data dir once; after that users' changes stick (DESIGN §5).
        if self.shard.seeded and not self.reseed:
            log.info("data dir %s was seeded before: not applying the config again (--reseed does)", self.shard.data_dir)
            if self.control.enqueue_start():
                log.info("the control plane settled at revision %d when it last stopped: reconciling only what may have changed", self.shard.revision)
            else:
                log.info("reconciling every object of the data dir (the last run did not stop settled at revision %d)", self.shard.revision)
            # Before listening only the few objects that carry this process's address (the
            # endpoint slices' and workspace types' URLs, after a restart on another address):
            # the rest is reconciled while serving, as kcp's controllers resync beside its
            # servers. The store is consistent as it is (every commit was whole); what the pass
            # finds is what changed while no process ran, or what a killed one left undone.
            await self.control.drain(only=START_FIRST)
        else:
            await seed(self.control, self.manifests)
            self.shard.mark_seeded()
        self.manifests = []  # applied or not, never read again: at 20,000 documents they are tens of MiB
        for cluster, ws in self.control.store.each(WORKSPACES) if log.isEnabledFor(logging.INFO) else ():
            path = f"{self.control.store.path_of(cluster)}:{ws['metadata']['name']}"
            log.info("workspace %s: logical cluster %s, %s", path, (ws.get("spec") or {}).get("cluster", "?"), (ws.get("spec") or {}).get("URL", ""))
        self._loop_task = asyncio.create_task(self.control.run(), name="vwproxy-control-plane")
        for line in self.summary():
            log.info("%s", line)

    async def _join(self) -> None:
        """Register this proxy shard with the control plane once its copy is synced, and again
        whenever its `Shard` goes missing or changes there (someone deleted it, a restart of the
        control plane with a fresh data dir)."""
        assert self.join is not None and self.mirror is not None
        wanted = shards.shard_object(self.shard_name, self.external_url, self.partition)
        path = "/clusters/root/apis/core.kcp.io/v1alpha1/shards"
        backoff = JOIN_RETRY_SECONDS
        while True:
            await self.mirror.wait_synced(JOIN_CHECK_SECONDS)
            held = self.control.store.get(SHARDS, kcp.ROOT_CLUSTER, self.shard_name)
            if self.mirror.synced and held is not None and shards.matches(held, wanted):
                if not self.registered:
                    log.info("proxy shard %s registered with the control plane", self.shard_name)
                self.registered = True
                backoff = JOIN_RETRY_SECONDS
                await asyncio.sleep(JOIN_CHECK_SECONDS)
                continue
            try:
                await self._put_shard(path, wanted)
            except errors.StatusError as exc:
                log.warning("proxy shard %s: registering with the control plane failed: %s (will retry)", self.shard_name, exc.message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, JOIN_CHECK_SECONDS)
                continue
            await asyncio.sleep(JOIN_RETRY_SECONDS)  # the mirror brings the result back

    async def _put_shard(self, path: str, wanted: dict[str, Any]) -> None:
        assert self.join is not None
        headers = {"content-type": "application/json", "accept": "application/json"}
        current = await self.join.request("GET", f"{path}/{self.shard_name}", [], headers)
        if current.status == 404:
            answer = await self.join.request("POST", path, [], headers, orjson.dumps(wanted))
        elif current.status == 200:
            body = orjson.loads(current.body)
            body["metadata"].setdefault("annotations", {}).update(wanted["metadata"]["annotations"])
            body["spec"] = wanted["spec"]
            answer = await self.join.request("PUT", f"{path}/{self.shard_name}", [], headers, orjson.dumps(body))
        else:
            answer = current
        if answer.status not in (200, 201):
            raise errors.from_status({"code": answer.status, "message": f"HTTP {answer.status}: {answer.body[:200].decode(errors='replace')}"})

    def summary(self) -> list[str]:
        """What a user needs at start: the front URL, each endpoint slice's VW URL, the data dir,
        a kubectl command that works as is."""
        lines = [f"front: {self.external_url}  (workspaces at {self.external_url}/clusters/<path>)"]
        for cluster, endpoint_slice in self.control.store.all(ENDPOINT_SLICES):
            where = f"{self.control.store.path_of(cluster)}/{endpoint_slice['metadata']['name']}"
            for endpoint in (endpoint_slice.get("status") or {}).get("endpoints") or []:
                lines.append(f"virtual workspace (endpoint slice {where}): {endpoint.get('url', '')}")
        lines.append(f"data dir: {self.shard.data_dir.resolve()}")
        if self.auth is not None and self.auth.admin_kubeconfig is not None:
            lines.append(f"admin kubeconfig: {self.auth.admin_kubeconfig}")
            lines.append(f"try: kubectl --kubeconfig {self.auth.admin_kubeconfig} get workspaces")
        else:
            insecure = " --insecure-skip-tls-verify" if self.external_url.startswith("https:") else ""
            lines.append(f"try: kubectl --server {self.external_url}/clusters/root{insecure} get workspaces")
        return lines

    def begin_shutdown(self) -> None:
        """The server stops: end the watch streams now so in-flight requests can finish."""
        self.reads.end_watches()

    async def shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self.control.record_settled()
        if self.mirror is not None:
            await self.mirror.aclose()
        await self.hub.aclose()
        if self.join is not None:
            await self.join.aclose()
        for client in self.clients.values():
            await client.aclose()
        await self.embedded.aclose()
        self.shard.close()

    def _rbac_changed(self, events: list[ChangeEvent]) -> None:
        assert self.auth is not None
        if any(e.storage_key.startswith(RBAC_STORAGE_PREFIX) for e in events):
            self.auth.rbac.invalidate()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.entry(scope, receive, send)

    async def _routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/readyz", "/metrics"):
            response = self._readyz() if scope["path"] == "/readyz" else self._metrics()
            await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith(FAULTS_PREFIX):
            await (await self._faults(scope, receive))(scope, receive, send)
            return
        if self.join is not None and not scope["path"].startswith(SERVICES_PREFIX) and scope["path"] not in ("/healthz", "/livez", "/version"):
            raise errors.path_not_found(f"this is proxy shard {self.shard_name}, which serves only /services/apiexport/…; workspaces are served by the control plane at {self.join.backend.url}")
        await self.front(scope, receive, send)

    async def _faults(self, scope: Scope, receive: Receive) -> Response:
        """`POST /vwproxy/faults/<backend>` `{"fault": kind, ...args}` sets a fault, `DELETE` clears
        them all (issue 15). The guard has authorized it as a non-resource path (admins only by default)."""
        name = unquote(scope["path"][len(FAULTS_PREFIX):])
        if name.startswith(WORKSPACE_FAULTS):
            return await self._workspace_faults(scope, receive, name[len(WORKSPACE_FAULTS):])
        client = self.clients.get(name)
        if client is None:
            raise errors.not_found("backends", name)
        if scope["method"] == "DELETE":
            client.faults.clear()
            return http.object_response(_fault_status(name, client.faults.kinds), 200)
        if scope["method"] != "POST":
            raise errors.method_not_supported(f"{scope['method']} is not supported on {FAULTS_PREFIX}<backend>: POST or DELETE")
        request = await _fault_request(receive)
        kind = request.pop("fault")
        if kind == faults.DROP_WATCHES:
            dropped = await client.drop_watches()
            return http.object_response({**_fault_status(name, client.faults.kinds), "dropped": dropped}, 200)
        try:
            client.faults.set(kind, request)
        except faults.FaultError as exc:
            raise errors.bad_request(str(exc)) from None
        if kind in (faults.DOWN, faults.HUNG):
            await client.drop_watches()  # a backend that went down or hung takes its open streams with it
        return http.object_response(_fault_status(name, client.faults.kinds), 200)

    async def _workspace_faults(self, scope: Scope, receive: Receive, workspace: str) -> Response:
        """`POST /vwproxy/faults/workspaces/<path or logical cluster>` `{"fault": kind, ...args}`
        sets a fault on one workspace as the virtual workspaces see it (`cache/faults.py`),
        `DELETE` clears them all, `GET` shows them."""
        cluster = self.control.store.resolve_path(workspace) if workspace else None
        if cluster is None:
            raise errors.workspace_not_found(workspace or "(none)")
        path = self.control.store.path_of(cluster)
        registry = self.hub.faults
        if scope["method"] == "GET":
            return http.object_response(_workspace_fault_status(path, cluster, registry.described(cluster)), 200)
        if scope["method"] == "DELETE":
            registry.clear(cluster)
            return http.object_response(_workspace_fault_status(path, cluster, registry.described(cluster)), 200)
        if scope["method"] != "POST":
            raise errors.method_not_supported(f"{scope['method']} is not supported on {FAULTS_PREFIX}{WORKSPACE_FAULTS}<workspace>: GET, POST or DELETE")
        request = await _fault_request(receive)
        kind = request.pop("fault")
        try:
            dropped = registry.set(cluster, path, kind, request)
        except faults.FaultError as exc:
            raise errors.bad_request(str(exc)) from None
        answer = _workspace_fault_status(path, cluster, registry.described(cluster))
        return http.object_response(answer if dropped is None else {**answer, "dropped": dropped}, 200)

    def _readyz(self) -> Response:
        """Ready once seeded. Stale workspaces and workspaces whose backend is undeclared or
        unreachable are listed with `[-]` but do not fail the check, unlike kube-apiserver's
        failed checks: everything else is served (DESIGN §4, one bad backend never blocks the
        rest), and a readiness probe taking the whole proxy out of rotation would block it."""
        if self.mirror is not None:
            return self._shard_readyz()
        if self._loop_task is None:
            return PlainTextResponse("[-]control-plane: seeding\nreadyz check failed\n", 503)
        # Informative like the lines below: `vwproxy up` waits for "settled" before it answers.
        settled = "[+]control-plane settled" if self.control.idle else "[-]control-plane: reconciling"
        lines = ["[+]shard ok", "[+]control-plane ok", settled]
        for path, backend, why in self.control.backend_problems():
            lines.append(f'[-]workspace {path}: backend "{backend}" {why}')
        for cluster, why in sorted(self.hub.stale_workspaces().items()):
            lines.append(f"[-]workspace {cluster}: stale: {why}")
        lines.append("readyz check passed")
        return PlainTextResponse("\n".join(lines) + "\n")

    def _shard_readyz(self) -> Response:
        """A proxy shard is ready once its copy of the control plane is synced and it is registered."""
        assert self.mirror is not None
        lines = ["[+]mirror synced" if self.mirror.synced else "[-]mirror: syncing with the control plane",
                 "[+]registered" if self.registered else f"[-]registered: not yet registered as shard {self.shard_name}"]
        for storage_key, why in sorted(self.mirror.stale.items()):
            lines.append(f"[-]control plane {storage_key}: stale: {why}")
        for cluster, why in sorted(self.hub.stale_workspaces().items()):
            lines.append(f"[-]workspace {cluster}: stale: {why}")
        ready = self.mirror.synced and self.registered
        lines.append("readyz check passed" if ready else "readyz check failed")
        return PlainTextResponse("\n".join(lines) + "\n", 200 if ready else 503)

    def _metrics(self) -> Response:
        """Prometheus text exposition of the proxy's gauges and counters."""
        values = {**self.hub.metrics(), "vwproxy_slow_watchers_closed_total": self.reads.slow_watchers_closed, "vwproxy_shard_revision": self.shard.revision, "vwproxy_shard_watchers": self.shard.watcher_count()}
        body = "".join(f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}\n{name} {value}\n" for name, value in values.items())
        faulty = [(name, kind) for name, client in sorted(self.clients.items()) for kind in sorted(client.faults.kinds)]
        samples = [f'vwproxy_faults_active{{backend="{name}",fault="{kind}"}} 1\n' for name, kind in faulty] + self.hub.faults.metric_lines()
        if samples:
            body += "# TYPE vwproxy_faults_active gauge\n" + "".join(samples)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # reported to uvicorn, which exits before listening
                    self.startup_error = exc
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
