"""The initializing and terminating virtual workspaces (kcp-reference.md §1.3, §1.4, §6.3):

```
/services/initializingworkspaces/<type cluster>:<type name>/clusters/<* | name>/…
/services/terminatingworkspaces/<type cluster>:<type name>/clusters/<* | name>/…
```
Both serve `core.kcp.io/v1alpha1` `logicalclusters` (and its `/status`) read from the embedded
shard through the one read path, scoped by a label requirement ANDed into every read: the
initializer's label and phase `Initializing`, or the terminator's label and a deleting phase. The
initializing view turns an object leaving the scope into DELETED; the terminating view passes or
drops events by what they carry, as kcp's does. A status write may only remove the caller's own
entry (422 otherwise); the main resource is read-only (405). Every other path under a cluster
name reaches the workspace's content through the front, while the workspace is in that phase and
still lists the entry (403 otherwise), so an initializer can bootstrap it and a terminator clean up.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from vwproxy.auth.authorizers import RBACCheck, checked, forbidden_error, workspace_chain
from vwproxy.auth.decision import deny
from vwproxy.auth.identity import ANONYMOUS, INITIALIZER_GROUP_PREFIX, TERMINATOR_GROUP_PREFIX, User, user_from_owner_info, without_lifecycle_groups
from vwproxy.auth.rbac import Rule
from vwproxy.auth.requestattributes import attributes_for
from vwproxy.control.objects import LOGICAL_CLUSTERS, WORKSPACE_TYPES, ControlStore
from vwproxy.kube import errors, kcp, vwpaths
from vwproxy.kube import patch as patching
from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME
from vwproxy.kube.paths import DiscoveryPath, ResourcePath, parse_api_path, verb_of
from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.server import http
from vwproxy.server.discovery import serve_discovery
from vwproxy.server.guard import USER_SCOPE_KEY, user_of
from vwproxy.server.reads import ReadHandler, ReadScope
from vwproxy.server.vw.common import check_wildcard, resolve_resource
from vwproxy.store.shard import Shard

log = logging.getLogger(__name__)

_LOGICAL_CLUSTERS = next(r for r in BUILTIN_RESOURCES if (r.group, r.resource) == ("core.kcp.io", "logicalclusters"))
# What both lifecycle VWs serve, as kcp's discovery shows it: read-only logicalclusters and a
# status subresource with no verbs listed (its update and patch are still served).
LIFECYCLE_RESOURCES = [
    ResourceInfo(
        group=_LOGICAL_CLUSTERS.group, version=_LOGICAL_CLUSTERS.version, resource=_LOGICAL_CLUSTERS.resource, kind=_LOGICAL_CLUSTERS.kind,
        namespaced=False, singular="logicalcluster", categories=("kcp",), status=True, generation=True,
        verbs=("get", "list", "watch"), status_verbs=(),
    )
]
_DELETING_PHASES = ("Terminating", "Deleting")


class Lifecycle:
    """What tells one lifecycle VW's objects apart: the entry's list, label and phases."""

    def __init__(self, kind: str, owner: str) -> None:
        self.kind = kind
        self.owner = owner
        initializing = kind == vwpaths.INITIALIZING
        self.role = "initializer" if initializing else "terminator"
        self.field = "initializers" if initializing else "terminators"
        self.permissions_field = "initializerPermissions" if initializing else "terminatorPermissions"
        key, value = kcp.lifecycle_label(kcp.INITIALIZER_LABEL_PREFIX if initializing else kcp.TERMINATOR_LABEL_PREFIX, owner)
        phases = "Initializing" if initializing else f"in ({','.join(_DELETING_PHASES)})"
        phase_requirement = f"{kcp.PHASE_LABEL}={phases}" if initializing else f"{kcp.PHASE_LABEL} {phases}"
        self.scope = ReadScope(f"{phase_requirement},{key}={value}", transitions=initializing)

    def in_phase(self, lc: dict[str, Any]) -> bool:
        """Whether the workspace is in this VW's phase and still lists the caller's entry."""
        md = lc.get("metadata") or {}
        status = lc.get("status") or {}
        if self.kind == vwpaths.INITIALIZING:
            phase_ok = status.get("phase") == "Initializing" and not md.get("deletionTimestamp")
        else:
            phase_ok = bool(md.get("deletionTimestamp"))
        return phase_ok and self.owner in (status.get(self.field) or [])

    def check_removal(self, current: list[str], wanted: Any) -> None:
        """A status write may remove exactly the caller's own entry and change nothing else."""
        expected = [entry for entry in current if entry != self.owner]
        if self.owner not in current or wanted != expected:
            raise errors.invalid(
                "LogicalCluster", LOGICAL_CLUSTER_OBJECT_NAME,
                [errors.Cause("FieldValueInvalid", f'only removing the "{self.owner}" {self.role} is supported', f"status.{self.field}")],
                "core.kcp.io",
            )


class LifecycleVirtualWorkspace:
    """ASGI app for `/services/initializingworkspaces/…` and `/services/terminatingworkspaces/…`."""

    def __init__(self, shard: Shard, store: ControlStore, embedded: httpx.AsyncClient, reads: ReadHandler, content: ASGIApp,
                 rbac: RBACCheck | None = None) -> None:
        self.rbac = rbac  # None: a server started without authentication forwards as itself
        self.shard = shard
        self.store = store
        self.embedded = embedded  # the embedded shard's HTTP API, in-process
        self.reads = reads
        self.content = content  # the front: workspaces by name, whatever their backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        vw = vwpaths.parse(unquote(scope["path"]))
        lifecycle = Lifecycle(vw.kind, vw.owner)
        target = parse_api_path(vw.rest) if vw.rest != "/" else DiscoveryPath("none")
        if isinstance(target, ResourcePath) and (target.group, target.resource) == (_LOGICAL_CLUSTERS.group, _LOGICAL_CLUSTERS.resource):
            response = await self._logical_clusters(Request(scope, receive), lifecycle, vw, target)
        elif vw.wildcard:
            if not isinstance(target, DiscoveryPath):
                raise errors.path_not_found()
            response = serve_discovery(target, LIFECYCLE_RESOURCES, vw.prefix)
        else:
            # Under a cluster name everything else, discovery included, is the workspace's own (as
            # on kcp): a controller resolves the workspace's kinds there before it writes them.
            await self._to_content(scope, receive, send, lifecycle, vw)
            return
        await response(scope, receive, send)

    async def _logical_clusters(self, request: Request, lifecycle: Lifecycle, vw: vwpaths.VWPath, target: ResourcePath) -> Response:
        info = resolve_resource(LIFECYCLE_RESOURCES, target)
        params = http.query(request)
        verb = verb_of(request.method, target, params)
        if vw.wildcard:
            check_wildcard(verb, info, target)
        if verb in ("get", "list", "watch"):
            cluster = None if vw.wildcard else vw.cluster
            if cluster is not None and not self.shard.cluster_exists(cluster):
                raise errors.not_found(info.resource, target.name or LOGICAL_CLUSTER_OBJECT_NAME, info.group)
            return self.reads.read(self.shard.reader(info), info, cluster, target, params, request.headers.get("accept"), scope=lifecycle.scope)
        if target.subresource != "status" or verb not in ("update", "patch"):
            raise errors.method_not_allowed(verb, info.resource, info.group, f"through the {vw.kind} virtual workspace (only the status of {lifecycle.field} may change)")
        return await self._write_status(request, lifecycle, vw.cluster, target, info)

    async def _write_status(self, request: Request, lifecycle: Lifecycle, cluster: str, target: ResourcePath, info: ResourceInfo) -> Response:
        current = self.store.get(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME) if self.shard.cluster_exists(cluster) else None
        if current is None or target.name != LOGICAL_CLUSTER_OBJECT_NAME or not lifecycle.scope.selector.matches((current.get("metadata") or {}).get("labels") or {}):
            raise errors.not_found(info.resource, target.name, info.group)
        body = await http.read_body(request)
        content_type = http.media_type(request)
        if request.method == "PUT":
            wanted = http.decode_object(body, content_type)
        elif content_type in (patching.MERGE_PATCH, patching.JSON_PATCH):
            wanted = patching.apply_patch(current, body, content_type, info.api_version, info.kind)
            # A patch applies to what is held now: carry its RV so a concurrent change is a 409.
            wanted.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        else:
            raise errors.unsupported_patch(f'the body of the request was in an unknown format - accepted media types include: {patching.JSON_PATCH}, {patching.MERGE_PATCH} (got "{content_type}")')
        current_entries = list((current.get("status") or {}).get(lifecycle.field) or [])
        lifecycle.check_removal(current_entries, (wanted.get("status") or {}).get(lifecycle.field) or [])
        # Only the entry list moves; whatever else the client sent in status is not its to change.
        update = {**current, "status": {**(current.get("status") or {}), lifecycle.field: [e for e in current_entries if e != lifecycle.owner]}}
        md = wanted.get("metadata")
        if isinstance(md, dict) and md.get("resourceVersion"):
            update["metadata"] = {**current["metadata"], "resourceVersion": str(md["resourceVersion"])}
        log.info("%s %s removed itself from logical cluster %s", lifecycle.role, lifecycle.owner, cluster)
        resp = await self.embedded.put(
            f"/clusters/{cluster}/apis/core.kcp.io/v1alpha1/logicalclusters/{LOGICAL_CLUSTER_OBJECT_NAME}/status",
            content=orjson.dumps(update), headers={"content-type": http.JSON},
        )
        return http.json_response(resp.content, resp.status_code)

    async def _to_content(self, scope: Scope, receive: Receive, send: Send, lifecycle: Lifecycle, vw: vwpaths.VWPath) -> None:
        lc = self.store.get(LOGICAL_CLUSTERS, vw.cluster, LOGICAL_CLUSTER_OBJECT_NAME) if self.shard.cluster_exists(vw.cluster) else None
        if lc is None or not lifecycle.in_phase(lc):
            log.info("%s %s denied access to %s: not in its phase or not listed", lifecycle.role, lifecycle.owner, vw.cluster)
            raise errors.forbidden(f'{lifecycle.role} "{lifecycle.owner}" cannot access this workspace')
        inner = dict(scope)
        inner["path"] = f"/clusters/{vw.cluster}{vw.rest}"
        inner["raw_path"] = inner["path"].encode()
        if self.rbac is not None:
            inner[USER_SCOPE_KEY] = self._content_user(scope, lifecycle, vw, lc)
        await self.content(inner, receive, send)

    def _content_user(self, scope: Scope, lifecycle: Lifecycle, vw: vwpaths.VWPath, lc: dict[str, Any]) -> User:
        """Authorize a content request (kcp-reference §1.3) and say who it goes on as.

        With the WorkspaceType's `initializerPermissions`/`terminatorPermissions`, the request must
        fit those rules and goes on as the caller plus the synthetic initializer/terminator group.
        Without them it acts as the workspace's creator (`spec.createdBy`): allowed only where RBAC
        lets the creator in. No recorded creator, or a type that no longer exists: refused.
        """
        caller = without_lifecycle_groups(user_of(scope) or ANONYMOUS)
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        attributes = attributes_for(scope["method"], vw.rest, params)
        rules = self._permissions(lifecycle, vw)
        if rules is not None:
            if not any(rule.allows(attributes) for rule in rules):
                log.info("%s %s: %s %s denied by %s", lifecycle.role, lifecycle.owner, caller.name, attributes, lifecycle.permissions_field)
                raise forbidden_error(caller, vw.cluster, attributes, deny(f"denied by {lifecycle.permissions_field}"))
            group = (INITIALIZER_GROUP_PREFIX if lifecycle.kind == vwpaths.INITIALIZING else TERMINATOR_GROUP_PREFIX) + lifecycle.owner
            return User(caller.name, (group, *caller.groups), caller.extra, caller.uid, caller.cluster)
        creator = user_from_owner_info((lc.get("spec") or {}).get("createdBy") or {})
        if creator is None:
            log.info("%s %s: logical cluster %s records no creator to act as", lifecycle.role, lifecycle.owner, vw.cluster)
            raise errors.forbidden(f'{lifecycle.role} "{lifecycle.owner}" cannot access this workspace: it has no {lifecycle.permissions_field} and the workspace records no creator')
        assert self.rbac is not None
        creator = without_lifecycle_groups(creator)  # a record made through a lifecycle VW confers nothing
        checked(workspace_chain(self.rbac), creator, vw.cluster, attributes)
        return creator

    def _permissions(self, lifecycle: Lifecycle, vw: vwpaths.VWPath) -> list[Rule] | None:
        """The rules of the WorkspaceType behind the entry; None when it sets none (or is a
        system entry such as `system:apibindings`, which no WorkspaceType declares)."""
        if vw.owner_cluster == "system":
            return None
        wst = self.store.get(WORKSPACE_TYPES, vw.owner_cluster, vw.owner_name)
        if wst is None:
            raise errors.service_unavailable(f'{lifecycle.role} "{lifecycle.owner}": its WorkspaceType is not found; refusing to act as the workspace owner')
        rules = (wst.get("spec") or {}).get(lifecycle.permissions_field)
        if not isinstance(rules, list) or not rules:
            return None
        return [Rule.from_dict(r) for r in rules if isinstance(r, dict)]
