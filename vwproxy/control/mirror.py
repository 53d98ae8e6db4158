"""A proxy shard's copy of the control plane (DESIGN §7).

A `vwproxy serve --join` process holds no kcp objects of its own: it follows the control plane's
over HTTP, one wildcard list+watch (`/clusters/*/…`) per kind, and keeps them in a local,
throwaway embedded shard, so the views, the authorizers and the virtual workspace read them
exactly as they read the control plane's own (the same `ControlStore`, the same commit hooks).
Nothing else writes to that copy; the control plane's reconcilers own every status in it.

Mirrored: the kcp kinds the views and authorizers read (workspaces, logical clusters, exports,
bindings, schemas, endpoint slices, shards, workspace types), RBAC, and ServiceAccounts (for
ServiceAccount tokens issued by the control plane).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from vwproxy.kube import kcp
from vwproxy.kube import watch as wire
from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.store.shard import Shard
from vwproxy.upstream.client import BackendClient
from vwproxy.upstream.reflector import Change, Obj, Reflector, Replace, stale_tracker

log = logging.getLogger(__name__)

MIRRORED_KEYS = (
    "tenancy.kcp.io/workspaces",
    "tenancy.kcp.io/workspacetypes",
    "core.kcp.io/logicalclusters",
    "core.kcp.io/shards",
    "apis.kcp.io/apiexports",
    "apis.kcp.io/apiexportendpointslices",
    "apis.kcp.io/apiresourceschemas",
    "apis.kcp.io/apibindings",
    "rbac.authorization.k8s.io/clusterroles",
    "rbac.authorization.k8s.io/clusterrolebindings",
    "rbac.authorization.k8s.io/roles",
    "rbac.authorization.k8s.io/rolebindings",
    "/serviceaccounts",
)


def _storage_info(storage_key: str) -> ResourceInfo:
    """The built-in resource of `storage_key`, in the version the control plane stores it in."""
    return next(r for r in BUILTIN_RESOURCES if r.storage_key == storage_key and r.version == r.stored_in)


class Mirror:
    """Keeps `shard` a copy of the control plane's kcp objects, RBAC and ServiceAccounts."""

    def __init__(self, shard: Shard, control_plane: BackendClient) -> None:
        self.shard = shard
        self.client = control_plane
        self._tasks: list[asyncio.Task[None]] = []
        self._reflectors: list[Reflector] = []
        self.stale: dict[str, str] = {}  # storage key → why it is not current
        # The control plane's RV of every object held, so a relist rewrites only what changed.
        self._remote_rvs: dict[str, dict[tuple[str, str, str], str]] = {key: {} for key in MIRRORED_KEYS}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for storage_key in MIRRORED_KEYS:
            info = _storage_info(storage_key)
            prefix = f"/apis/{info.group}/{info.version}" if info.group else "/api/v1"
            reflector = Reflector(self.client, f"/clusters/*{prefix}/{info.resource}", self._replacer(storage_key), self._changer(storage_key), stale_tracker(self.stale, storage_key, f"the control plane's {storage_key}"))
            self._reflectors.append(reflector)
            self._tasks.append(loop.create_task(reflector.run(), name=f"mirror {storage_key}"))

    @property
    def synced(self) -> bool:
        return bool(self._reflectors) and all(r.synced.is_set() for r in self._reflectors)

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.gather(*(r.synced.wait() for r in self._reflectors)), timeout)
            return True
        except TimeoutError:
            return False

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # -- keeping the copy ------------------------------------------------------------------------

    def _replacer(self, storage_key: str) -> Replace:
        def replace(items: list[tuple[Obj, str]]) -> None:
            wanted: dict[tuple[str, str, str], tuple[Obj, str]] = {}
            for obj, rv in items:
                key = _identity(obj)
                if key is not None:
                    wanted[key] = (obj, rv)
            table = self.shard.table(storage_key)
            rvs = self._remote_rvs[storage_key]
            tx = self.shard.transaction()
            for gone in list(table.ordered(None)):
                if (gone.cluster, gone.namespace, gone.name) not in wanted:
                    tx.remove(storage_key, gone)
                    rvs.pop((gone.cluster, gone.namespace, gone.name), None)
            for key, (obj, rv) in wanted.items():
                held = table.get(*key)
                if held is None or rvs.get(key) != rv:
                    tx.put(storage_key, key[0], obj, held)
                    rvs[key] = rv
            tx.commit()
            log.debug("mirror %s: %d objects", storage_key, len(wanted))

        return replace

    def _changer(self, storage_key: str) -> Change:
        def change(kind: str, obj: Obj, rv: str) -> None:
            key = _identity(obj)
            if key is None:
                return
            cluster, namespace, name = key
            held = self.shard.table(storage_key).get(cluster, namespace, name)
            tx = self.shard.transaction()
            rvs = self._remote_rvs[storage_key]
            if kind == wire.DELETED:
                rvs.pop(key, None)
                if held is None:
                    return
                tx.remove(storage_key, held)
            else:
                if held is not None and rvs.get(key) == rv:
                    return  # already held at that version (a resumed watch)
                tx.put(storage_key, cluster, obj, held)
                rvs[key] = rv
            tx.commit()

        return change



def _identity(obj: Obj) -> tuple[str, str, str] | None:
    md = obj.get("metadata")
    if not isinstance(md, dict) or not md.get("name"):
        return None
    cluster = str((md.get("annotations") or {}).get(kcp.CLUSTER_ANNOTATION) or "")
    if not cluster:
        return None
    return cluster, str(md.get("namespace") or ""), str(md["name"])
