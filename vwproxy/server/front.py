"""The front: one URL for every workspace, as kcp's front proxy, plus the virtual workspaces.

`/clusters/<path-or-name>/…` is a workspace. Its control-plane groups (`apis.kcp.io`,
`core.kcp.io`, `tenancy.kcp.io`) and everything of an `embedded` workspace are served by the
embedded shard in-process; the rest of a `kube`-backed workspace is forwarded to its backend with
the proxy's credentials for it, and comes back with `kcp.io/cluster` stamped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from vwproxy.auth.reviews import REVIEW_GROUPS
from vwproxy.control.plane import ControlPlane
from vwproxy.kube import discovery, errors
from vwproxy.kube import watch as wire
from vwproxy.kube.kcp import KCP_GROUPS, WILDCARD_CLUSTER, is_logical_cluster_name
from vwproxy.kube.paths import ApiPath, DiscoveryPath, ResourcePath, parse_api_path, split_cluster, wants_watch
from vwproxy.server import http
from vwproxy.upstream import stamp
from vwproxy.upstream.client import BackendClient

log = logging.getLogger(__name__)

ASGIApp = Any

_RELAYED_RESPONSE_HEADERS = ("content-type", "warning", "audit-id", "retry-after")


class Front:
    """An ASGI app routing workspace requests to the embedded shard or a workspace's backend."""

    def __init__(self, shard_app: ASGIApp, control: ControlPlane, services: ASGIApp | None = None) -> None:
        self.shard_app = shard_app
        self.control = control
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.shard_app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/services/") or path == "/services":
            if self.services is None:
                raise errors.path_not_found()
            await self.services(scope, receive, send)
            return
        if not path.startswith("/clusters/"):
            await self.shard_app(scope, receive, send)  # /healthz, /version, and root's API
            return
        segment, rest = split_cluster(path, allow_paths=True)
        cluster = segment if segment == WILDCARD_CLUSTER else self._resolve(segment)
        if cluster == WILDCARD_CLUSTER or self._served_by_shard(cluster, rest):
            # The shard resolves workspace paths itself; keeping the segment keeps the links
            # it builds (OpenAPI serverRelativeURLs) under the URL the client used.
            await self._to_shard(scope, receive, send, segment, rest)
            return
        response = await self._forward(Request(scope, receive), cluster, segment, rest)
        await response(scope, receive, send)

    def _resolve(self, segment: str) -> str:
        if is_logical_cluster_name(segment):
            return segment
        cluster = self.control.store.resolve_path(segment)
        if cluster is None:
            raise errors.workspace_not_found(segment)
        return cluster

    def _served_by_shard(self, cluster: str, rest: str) -> bool:
        try:
            target: ApiPath | None = parse_api_path(rest)
        except errors.StatusError:
            target = None
        try:
            if self.control.client_for(cluster) is None:
                return True
        except errors.StatusError:
            # An undeclared backend: discovery comes from the shard (its built-in and kcp kinds),
            # because kubectl shows a failed discovery only as "the server is currently unable to
            # handle the request"; the resource request after it gets the Status naming the
            # backend and backends.yaml. Everything else raises that Status here.
            if isinstance(target, DiscoveryPath) or (target is not None and target.group in KCP_GROUPS):
                return True
            raise
        if target is None:
            return True
        if isinstance(target, DiscoveryPath):
            return target.what in ("group", "groupversion") and target.group in KCP_GROUPS
        return target.group in KCP_GROUPS

    async def _to_shard(self, scope: Scope, receive: Receive, send: Send, cluster: str, rest: str) -> None:
        inner = dict(scope)
        inner["path"] = f"/clusters/{cluster}{rest}"
        inner["raw_path"] = inner["path"].encode()
        await self.shard_app(inner, receive, send)

    async def _forward(self, request: Request, cluster: str, segment: str, rest: str) -> Response:
        client = self.control.client_for(cluster)
        assert client is not None
        if _is_review(rest):
            # A review sent on to the backend would be answered for the proxy's own credentials there
            # (who it is, what it may do, whose tokens are good). The self reviews are answered by
            # the guard for the caller; no other review is served.
            raise errors.path_not_found()
        body = await http.read_body(request)
        if body and http.media_type(request) != http.PROTOBUF:
            body = stamp.strip_cluster_annotation(body)  # the backend never stores a client's value
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type", "user-agent")}
        query = request.url.query
        target = parse_api_path(rest) if rest.strip("/") else None
        if isinstance(target, DiscoveryPath) and target.what == "apis":
            return await self._merged_groups(client, cluster, headers)
        if isinstance(target, DiscoveryPath) and target.what == "api":
            headers["accept"] = "application/json"  # aggregated discovery is not merged across the two
        watching = isinstance(target, ResourcePath) and wants_watch(target, dict(request.query_params))
        if watching:
            upstream = await client.stream(request.method, rest, query, headers, body)
            if upstream.status != 200:
                payload = b"".join([chunk async for chunk in upstream.chunks()])
                await upstream.aclose()
                return Response(payload, upstream.status, headers=_relayed(upstream.headers))

            async def lines() -> AsyncIterator[bytes]:
                try:
                    async for line in upstream.lines():
                        if line.strip():
                            yield stamp.stamp_watch_line(line, cluster) + b"\n"
                except errors.StatusError as exc:
                    # The backend went away mid-stream: say so in-stream; the client re-watches.
                    yield wire.error_frame(exc.to_status())
                finally:
                    await upstream.aclose()

            return StreamingResponse(lines(), 200, headers=_relayed(upstream.headers))
        resp = await client.request(request.method, rest, query, headers, body)
        payload = resp.body
        if 200 <= resp.status < 300:
            if isinstance(target, ResourcePath):
                payload = stamp.stamp_object(payload, cluster)
            elif isinstance(target, DiscoveryPath) and target.what == "openapi":
                payload = _relink_openapi(payload, client.base_path, f"/clusters/{segment}")
        return Response(payload, resp.status, headers=_relayed(resp.headers))

    async def _merged_groups(self, client: BackendClient, cluster: str, headers: dict[str, str]) -> Response:
        """The backend's API groups plus the control-plane groups this workspace has in the shard."""
        resp = await client.request("GET", "/apis", "", {**headers, "accept": "application/json"}, b"")
        if resp.status != 200:
            return Response(resp.body, resp.status, headers=_relayed(resp.headers))
        backend_groups = orjson.loads(resp.body)
        kcp = discovery.api_group_list([r for r in self.control.shard.resources(cluster) if r.group in KCP_GROUPS])
        names = {g.get("name") for g in backend_groups.get("groups") or []}
        backend_groups["groups"] = list(backend_groups.get("groups") or []) + [g for g in kcp["groups"] if g["name"] not in names]
        return http.object_response(backend_groups)


def _relink_openapi(payload: bytes, backend_prefix: str, front_prefix: str) -> bytes:
    """The backend's OpenAPI index links under its own path; the client fetches them under ours."""
    try:
        index = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    paths = index.get("paths") if isinstance(index, dict) else None
    if not isinstance(paths, dict):
        return payload
    for entry in paths.values():
        url = entry.get("serverRelativeURL") if isinstance(entry, dict) else None
        if isinstance(url, str):
            tail = url[len(backend_prefix):] if backend_prefix and url.startswith(backend_prefix + "/") else url
            entry["serverRelativeURL"] = front_prefix + tail
    return orjson.dumps(index)



def _is_review(rest: str) -> bool:
    """A request for the authentication or authorization API (reviews, never stored objects)."""
    try:
        target = parse_api_path(rest)
    except errors.StatusError:
        return False
    return isinstance(target, ResourcePath) and target.group in REVIEW_GROUPS


def _relayed(headers: Any) -> dict[str, str]:
    return {k: v for k, v in dict(headers).items() if k.lower() in _RELAYED_RESPONSE_HEADERS}
