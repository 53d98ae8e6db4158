"""Faults per workspace (issue 15): a test makes one workspace misbehave for the APIExport
virtual workspaces while every other workspace keeps working.

A workspace on the embedded shard has no backend client to fail, so a workspace fault bites where
its content meets the virtual workspaces, whatever its backend:
- on the way into the views: every change of the workspace reaches the views through
  `GatedView`, which holds it back (`down`, `hung`: until the fault is cleared, the workspace
  shown stale meanwhile), delivers it late (`slow` by `ms`, `delay` by `ms` for one resource), in
  commit order per (view, workspace): a later change never overtakes a held one;
- on the VW's writes to the workspace (`before_write`): `down` answers 503, `hung` answers 504
  after the request timeout (or goes on if cleared first), `slow` sends the write `ms` late;
- on the VW's watches covering the workspace (its own, or a `*` watch of a view it is engaged
  in): `expire-next-watch` answers the next one an in-stream 410 Expired (the client relists),
  `drop-watches` ends the open ones now (the client re-watches from its last RV).
Clearing delivers whatever was held back at once, in order, and the workspace is current again.
The front (`/clusters/<path>/…`) and the lifecycle virtual workspaces are not affected.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vwproxy.control.objects import Obj
from vwproxy.core.objects import ChangeEvent, StoredObject
from vwproxy.core.view import View
from vwproxy.kube import errors
from vwproxy.upstream import client as upstream_client
from vwproxy.upstream.faults import DOWN, DROP_WATCHES, EXPIRE_NEXT_WATCH, HUNG, MAX_SLOW_MS, SLOW, FaultError

log = logging.getLogger(__name__)

DELAY = "delay"
KINDS = (DOWN, HUNG, SLOW, EXPIRE_NEXT_WATCH, DROP_WATCHES, DELAY)
DROPPED_REASON = "watch dropped (fault injected)"
# `<resource>.<group>` as kubectl names it (`logicalclusters.core.kcp.io`), or `<resource>` for the core group.
_GROUP_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _ms(args: dict[str, Any], kind: str) -> int:
    ms = args.get("ms")
    if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= MAX_SLOW_MS:
        raise FaultError(f"fault {kind} needs an integer ms between 0 and {MAX_SLOW_MS}")
    return ms


def group_resource(value: Any) -> tuple[str, str]:
    """`widgets.example.dev` → ("example.dev", "widgets"); `configmaps` → ("", "configmaps")."""
    if not isinstance(value, str) or not _GROUP_RESOURCE.match(value):
        raise FaultError('fault delay needs a "resource" such as "logicalclusters.core.kcp.io" or "configmaps"')
    resource, _, group = value.partition(".")
    return group, resource


@dataclass
class WorkspaceFault:
    """The faults set on one workspace: kind → its arguments; delays by group-resource."""

    path: str
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    delays: dict[tuple[str, str], int] = field(default_factory=dict)
    # Set when the faults are cleared: a write held by `hung` goes on at once.
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held_writes: int = 0  # VW writes `hung` holds right now

    def described(self) -> list[dict[str, Any]]:
        out = [{"fault": kind, **args} for kind, args in sorted(self.kinds.items())]
        out += [{"fault": DELAY, "resource": f"{r}.{g}" if g else r, "ms": ms} for (g, r), ms in sorted(self.delays.items())]
        return out


class WorkspaceFaults:
    """Every workspace's faults, and the views they gate. `active` is False whenever no workspace
    has a fault, so the views' ingestion skips the rest."""

    def __init__(self) -> None:
        self.by_cluster: dict[str, WorkspaceFault] = {}
        self.active = False
        # Logical cluster → why a fault makes it stale: kept apart from the backends' marks, so
        # a healthy reflector of the workspace cannot clear what the fault says.
        self.stale: dict[str, str] = {}
        self._views: weakref.WeakSet[GatedView] = weakref.WeakSet()

    def view(self, wake: Callable[[list[ChangeEvent]], None], *args: Any, **kwargs: Any) -> GatedView:
        """A view whose ingestion these faults gate; `wake` is told of events delivered late."""
        view = GatedView(self, wake, *args, **kwargs)
        self._views.add(view)
        return view

    # -- setting and clearing -----------------------------------------------------------------

    def set(self, cluster: str, path: str, kind: str, args: dict[str, Any]) -> int | None:
        """Switch a fault on for a workspace; `drop-watches` acts now and answers how many
        watches it ended (a one-shot action, nothing is kept)."""
        if kind not in KINDS:
            raise FaultError(f"unknown fault {kind!r}: one of {', '.join(KINDS)}")
        if kind == DROP_WATCHES:
            dropped = sum(view.drop_watchers(cluster) for view in list(self._views))
            log.warning("fault on workspace %s (%s): dropped %d open watch streams of the virtual workspaces", path, cluster, dropped)
            return dropped
        fault = self.by_cluster.get(cluster) or WorkspaceFault(path)
        if kind == DELAY:
            gr = group_resource(args.get("resource"))
            fault.delays[gr] = _ms(args, kind)
            described = f"{args['resource']} by {fault.delays[gr]} ms"
        else:
            fault.kinds[kind] = {"ms": _ms(args, kind)} if kind == SLOW else {}
            described = f"{fault.kinds[kind]['ms']} ms" if kind == SLOW else ""
        self.by_cluster[cluster] = fault
        self.active = True
        if kind in (DOWN, HUNG):
            self.stale[cluster] = self._stale_reason(fault)
        log.warning("fault set on workspace %s (%s): %s %s", path, cluster, kind, described)
        return None

    def clear(self, cluster: str) -> None:
        """Clear every fault of a workspace: what was held back is delivered now, in order."""
        fault = self.by_cluster.pop(cluster, None)
        self.active = bool(self.by_cluster)
        if fault is None:
            return
        fault.released.set()
        self.stale.pop(cluster, None)
        log.warning("faults cleared on workspace %s (%s): %s", fault.path, cluster, ", ".join(f["fault"] for f in fault.described()) or "none")
        for view in list(self._views):
            view.release(cluster)

    @staticmethod
    def _stale_reason(fault: WorkspaceFault) -> str:
        return f"workspace {fault.path} is {'hung' if HUNG in fault.kinds else 'down'} (fault injected)"

    def described(self, cluster: str) -> list[dict[str, Any]]:
        fault = self.by_cluster.get(cluster)
        return fault.described() if fault is not None else []

    def metric_lines(self) -> list[str]:
        """`vwproxy_faults_active` samples, one per workspace fault (delays name their resource)."""
        lines = []
        for fault in sorted(self.by_cluster.values(), key=lambda f: f.path):
            for described in fault.described():
                resource = f',resource="{described["resource"]}"' if described["fault"] == DELAY else ""
                lines.append(f'vwproxy_faults_active{{workspace="{fault.path}",fault="{described["fault"]}"{resource}}} 1\n')
        return lines

    # -- where they bite ----------------------------------------------------------------------

    def due(self, cluster: str, group: str, resource: str, now: float) -> float:
        """When a change of `cluster`'s `group/resource` may enter the views: 0 at once, `inf`
        while held back."""
        fault = self.by_cluster.get(cluster)
        if fault is None:
            return 0.0
        if DOWN in fault.kinds or HUNG in fault.kinds:
            return math.inf
        ms = (fault.kinds.get(SLOW) or {}).get("ms", 0) + fault.delays.get((group, resource), 0)
        return now + ms / 1000 if ms else 0.0

    def gating(self, cluster: str) -> bool:
        """Whether changes of `cluster` may reach the views late (a write then waits for its own)."""
        return self.active and cluster in self.by_cluster

    async def before_write(self, cluster: str) -> None:
        """Apply down, hung and slow to a VW write into `cluster`."""
        fault = self.by_cluster.get(cluster) if self.active else None
        if fault is None:
            return
        if DOWN in fault.kinds:
            raise errors.service_unavailable(f"workspace {fault.path} is unreachable: connection refused (fault injected)")
        if HUNG in fault.kinds:
            fault.held_writes += 1
            try:
                await asyncio.wait_for(fault.released.wait(), upstream_client.READ_TIMEOUT_SECONDS)
            except TimeoutError:
                raise errors.timeout(f"workspace {fault.path} did not answer in time (fault injected)") from None
            finally:
                fault.held_writes -= 1
            return  # cleared while it waited: the write goes on
        if SLOW in fault.kinds:
            await asyncio.sleep(fault.kinds[SLOW]["ms"] / 1000)

    def take_expired_watch(self, view: View, cluster: str | None) -> str | None:
        """The workspace whose expire-next-watch this watch (of `cluster`, or of every cluster the
        view covers) consumes, once; None when there is none."""
        if not self.active:
            return None
        covered = view.clusters if cluster is None else {cluster}
        for name in sorted(covered):
            fault = self.by_cluster.get(name)
            if fault is not None and fault.kinds.pop(EXPIRE_NEXT_WATCH, None) is not None:
                if not fault.kinds and not fault.delays:
                    self.by_cluster.pop(name)
                    self.active = bool(self.by_cluster)
                log.warning("fault on workspace %s (%s): this watch answers 410 Expired", fault.path, name)
                return fault.path
        return None


class GatedView(View):
    """A view whose changes of a faulted workspace wait in a queue per workspace until due.

    Returns no events for a change it holds back; the events it delivers later go to the view's
    watchers as usual and to `wake` (the hub's read-your-writes waits)."""

    def __init__(self, faults: WorkspaceFaults, wake: Callable[[list[ChangeEvent]], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._faults = faults
        self._wake = wake
        self._pending: dict[str, deque[tuple[float, Callable[[], list[ChangeEvent]]]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def upsert(self, cluster: str, obj: Obj, backend_rv: str) -> list[ChangeEvent]:
        if not (self._faults.active or self._pending):
            return super().upsert(cluster, obj, backend_rv)
        return self._gate(cluster, lambda: View.upsert(self, cluster, obj, backend_rv))

    def delete(self, cluster: str, namespace: str, name: str, backend_rv: str) -> list[ChangeEvent]:
        if not (self._faults.active or self._pending):
            return super().delete(cluster, namespace, name, backend_rv)
        return self._gate(cluster, lambda: View.delete(self, cluster, namespace, name, backend_rv))

    def replace_cluster(self, cluster: str, objects: list[tuple[Obj, str]]) -> list[ChangeEvent]:
        if not (self._faults.active or self._pending):
            return super().replace_cluster(cluster, objects)
        return self._gate(cluster, lambda: View.replace_cluster(self, cluster, objects))

    # An embedded shard workspace's objects come in as stored (shared bytes): gated the same way.
    def upsert_stored(self, source: StoredObject) -> list[ChangeEvent]:
        if not (self._faults.active or self._pending):
            return super().upsert_stored(source)
        return self._gate(source.cluster, lambda: View.upsert_stored(self, source))

    def replace_cluster_stored(self, cluster: str, objects: list[StoredObject]) -> list[ChangeEvent]:
        if not (self._faults.active or self._pending):
            return super().replace_cluster_stored(cluster, objects)
        return self._gate(cluster, lambda: View.replace_cluster_stored(self, cluster, objects))

    def fill_stored(self, cluster: str, objects: list[StoredObject]) -> list[ChangeEvent]:
        if not (self._faults.active or self._pending):
            return super().fill_stored(cluster, objects)
        return self.replace_cluster_stored(cluster, objects)

    def drop_cluster(self, cluster: str) -> list[ChangeEvent]:
        """Disengagement is never held back, and forgets what was held of the cluster."""
        self._pending.pop(cluster, None)
        timer = self._timers.pop(cluster, None)
        if timer is not None:
            timer.cancel()
        return super().drop_cluster(cluster)

    def drop_watchers(self, cluster: str) -> int:
        """End the watches of `cluster`, and the `*` watches if this view covers it."""
        covered = cluster in self.clusters
        dropped = 0
        for watcher in list(self._watchers):
            if not watcher.closed and (watcher.cluster == cluster or (watcher.cluster is None and covered)):
                watcher.close(DROPPED_REASON)
                dropped += 1
        return dropped

    def release(self, cluster: str) -> None:
        """The workspace's faults were cleared: deliver everything held of it now."""
        if cluster in self._pending:
            self._deliver(cluster, everything=True)

    def _gate(self, cluster: str, apply: Callable[[], list[ChangeEvent]]) -> list[ChangeEvent]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to deliver later from (a unit test's direct call): at once
            return apply()
        queue = self._pending.get(cluster)
        due = self._faults.due(cluster, self.group, self.resource, loop.time())
        if not due and not queue:
            return apply()
        if queue is None:
            queue = self._pending[cluster] = deque()
        queue.append((max(due, queue[-1][0]) if queue else due, apply))
        self._schedule(cluster, loop)
        return []

    def _schedule(self, cluster: str, loop: asyncio.AbstractEventLoop) -> None:
        queue = self._pending.get(cluster)
        if not queue or cluster in self._timers or queue[0][0] == math.inf:
            return
        self._timers[cluster] = loop.call_at(queue[0][0], self._deliver, cluster)

    def _deliver(self, cluster: str, everything: bool = False) -> None:
        timer = self._timers.pop(cluster, None)
        if timer is not None:
            timer.cancel()
        queue = self._pending.get(cluster)
        if queue is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        events: list[ChangeEvent] = []
        while queue and (everything or queue[0][0] <= now):
            events += queue.popleft()[1]()
        if not queue:
            self._pending.pop(cluster, None)
        else:
            self._schedule(cluster, loop)
        self._wake(events)
