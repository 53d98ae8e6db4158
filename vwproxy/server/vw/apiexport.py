"""The APIExport virtual workspace: `/services/apiexport/<export cluster>/<export>/clusters/<*|name>/…`.

Reads (list, watch, get) are served from the views; writes go to the workspace's backend (the
embedded shard in-process, or a kube backend), with a client's proxy resourceVersion translated
to the backend's, and the response is the object as the view holds it: proxy RV, `kcp.io/cluster`.
See kcp-reference.md sections 1.2, 2 and 5.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from vwproxy.cache.hub import ViewHub, ViewKey, binds
from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, SCHEMAS, Obj
from vwproxy.control.plane import ControlPlane
from vwproxy.control.reconcilers import crd_from_schema, export_schema_names
from vwproxy.core.objects import StoredObject
from vwproxy.kube import conversion, errors, kcp, protobuf, vwpaths
from vwproxy.kube.paths import DiscoveryPath, ResourcePath, parse_api_path, verb_of
from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.server import http
from vwproxy.server.reads import ReadHandler
from vwproxy.server.discovery import serve_discovery
from vwproxy.server.vw.common import check_wildcard, denied, resolve_resource, warning_headers
from vwproxy.store.registry import crd_resources

log = logging.getLogger(__name__)

# How long a write to a kube backend waits for its reflector to bring the result into the view,
# so the client reads its own write; past that the answer is the backend's, restamped.
WRITE_VISIBLE_SECONDS = 5.0
# How long a consistent read waits for a newly engaged backend's first list; past that it answers
# from what the view has, with a Warning naming the stale workspaces.
SYNC_WAIT_SECONDS = 5.0
_BINDING_INFOS = [
    ResourceInfo(group=r.group, version=r.version, resource=r.resource, kind=r.kind, namespaced=False, singular="apibinding",
                 categories=r.categories, status=False, storage_version=r.storage_version, verbs=("get", "list", "watch"))
    for r in BUILTIN_RESOURCES if r.group == "apis.kcp.io" and r.resource == "apibindings"
]
_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class APIExportVirtualWorkspace:
    """ASGI app for `/services/apiexport/…`; `StatusError`s become `Status` responses in `http.StatusErrors`."""

    def __init__(self, control: ControlPlane, hub: ViewHub, embedded: httpx.AsyncClient, reads: ReadHandler) -> None:
        self.control = control
        self.store = control.store
        self.hub = hub
        self.embedded = embedded  # the embedded shard's HTTP API, in-process
        self.reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._handle(request)
        await response(scope, receive, send)

    # -- routing ---------------------------------------------------------------------------------

    def _export(self, export_cluster: str, export_name: str) -> Obj:
        export = self.store.get(API_EXPORTS, export_cluster, export_name)
        if export is None or not (export.get("status") or {}).get("identityHash"):
            raise errors.path_not_found()
        return export

    def resources(self, export_cluster: str, export: Obj) -> list[ResourceInfo]:
        """What the export serves: its schemas' versions, and apibindings in both versions."""
        infos: list[ResourceInfo] = []
        identity = str((export.get("status") or {}).get("identityHash"))
        for name in export_schema_names(export):
            schema = self.store.get(SCHEMAS, export_cluster, name)
            if schema is not None:
                infos += crd_resources(crd_from_schema(schema, identity, ""))
        return infos + _BINDING_INFOS

    async def _handle(self, request: Request) -> Response:
        vw = vwpaths.parse(unquote(request.url.path))
        export = self._export(vw.owner_cluster, vw.owner_name)
        infos = self.resources(vw.owner_cluster, export)
        target = parse_api_path(vw.rest)
        if isinstance(target, DiscoveryPath):
            return serve_discovery(target, infos, vw.prefix)
        info = resolve_resource(infos, target)
        params = http.query(request)
        verb = verb_of(request.method, target, params)
        key = ViewKey(vw.owner_cluster, vw.owner_name, info.group, info.resource)
        # Authentication does not exist yet: every caller is anonymous (never a client-sent name).
        user = "system:anonymous"
        if vw.wildcard:
            check_wildcard(verb, info, target)
            return await self._read(request, key, info, None, target, params)
        self._authorize(key, info, vw.cluster, verb, user, target.namespace)
        if verb in ("get", "list", "watch"):
            return await self._read(request, key, info, vw.cluster, target, params)
        return await self._write(request, key, info, vw.cluster, target, params, verb)

    def _authorize(self, key: ViewKey, info: ResourceInfo, cluster: str, verb: str, user: str, namespace: str) -> None:
        """kcp's binding authorizer: the cluster must bind the export, and the resource with its identity."""
        bound = any(binds(b, key.export_cluster, key.export_name) for _, b in self.store.all(API_BINDINGS, cluster))
        if not bound:
            raise denied(verb, info, user, namespace)
        if info.group == "apis.kcp.io" and info.resource == "apibindings":
            if verb in _WRITE_VERBS:
                raise denied(verb, info, user, namespace)
            return
        self.hub.view(key)
        if cluster not in self.hub.engaged.get(key, set()):
            raise denied(verb, info, user, namespace)

    # -- reads -----------------------------------------------------------------------------------

    async def _read(self, request: Request, key: ViewKey, info: ResourceInfo, cluster: str | None, target: ResourcePath, params: dict[str, str]) -> Response:
        view = self.hub.view(key)
        if params.get("resourceVersion", "") == "":
            # A consistent read: wait (bounded) for every backend of the view to have listed.
            await self.hub.wait_synced(key, SYNC_WAIT_SECONDS)
        return self.reads.read(view, info, cluster, target, params, request.headers.get("accept"), warning_headers(self.hub.stale_warnings(key)))

    # -- writes ----------------------------------------------------------------------------------

    async def _write(self, request: Request, key: ViewKey, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str], verb: str) -> Response:
        view = self.hub.view(key)
        body = await http.read_body(request)
        content_type = http.media_type(request)
        if body.strip() and (verb in ("create", "update") or (verb == "patch" and content_type in ("application/merge-patch+json", "application/apply-patch+yaml"))):
            body, content_type = self._translate_body(view, cluster, target, body, content_type, verb)
        elif body.strip() and verb == "delete":
            body = self._translate_delete_options(view, cluster, target, body, content_type)
            content_type = http.JSON
        client = self.control.client_for(cluster)
        backend = client if client is not None else None
        headers = {"content-type": content_type, "accept": "application/json", "user-agent": request.headers.get("user-agent", "vwproxy")}
        path = target_path(info, target)
        query = request.url.query
        if backend is None:
            resp = await self.embedded.request(request.method, f"/clusters/{cluster}{path}", params=query, headers=headers, content=body)
            status, payload = resp.status_code, resp.content
        else:
            upstream = await backend.request(request.method, path, query, headers, body)
            status, payload = upstream.status, upstream.body
            if 200 <= status < 300 and target.name:
                await self._visible(key, cluster, target, payload, verb, status)
        warnings = warning_headers(self.hub.stale_warnings(key))
        if not 200 <= status < 300:
            return http.json_response(payload, status, warnings)
        return http.json_response(self._as_held(view, cluster, payload, info), status, warnings)

    async def _visible(self, key: ViewKey, cluster: str, target: ResourcePath, payload: bytes, verb: str, status: int) -> None:
        """Wait (bounded) until the reflector has brought a kube backend's write into the view."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        gone = verb == "delete" and status == 200
        rv = "" if obj.get("kind") == "Status" else str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if rv or gone:
            await self.hub.wait_for(key, cluster, target.namespace, target.name, rv, gone, WRITE_VISIBLE_SECONDS)

    def _translate_body(self, view: Any, cluster: str, target: ResourcePath, body: bytes, content_type: str, verb: str) -> tuple[bytes, str]:
        """Strip `kcp.io/cluster` and turn a proxy resourceVersion into the backend's (stale → 409 here)."""
        if content_type == protobuf.PROTOBUF:
            obj = protobuf.decode(body)
        elif content_type == "application/apply-patch+yaml":
            obj = http.decode_object(body, http.YAML)
        else:
            obj = http.decode_object(body, http.JSON)
        md = obj.get("metadata")
        if isinstance(md, dict):
            annotations = md.get("annotations")
            if isinstance(annotations, dict):
                annotations.pop(kcp.CLUSTER_ANNOTATION, None)
            wanted = md.get("resourceVersion")
            name = str(md.get("name") or target.name)
            if wanted not in (None, "") and verb != "create":
                md["resourceVersion"] = view.translate_precondition(cluster, target.namespace, name, str(wanted))
            elif verb == "create":
                md.pop("resourceVersion", None)
        out_type = http.JSON if content_type in (protobuf.PROTOBUF, http.YAML) else content_type
        if content_type == "application/apply-patch+yaml":
            out_type = content_type
        return orjson.dumps(obj), out_type

    def _translate_delete_options(self, view: Any, cluster: str, target: ResourcePath, body: bytes, content_type: str) -> bytes:
        options = http.decode_object(body, content_type)
        preconditions = options.get("preconditions")
        if isinstance(preconditions, dict) and preconditions.get("resourceVersion"):
            preconditions["resourceVersion"] = view.translate_precondition(cluster, target.namespace, target.name, str(preconditions["resourceVersion"]))
        return orjson.dumps(options)

    def _as_held(self, view: Any, cluster: str, payload: bytes, info: ResourceInfo) -> bytes:
        """The backend's answer as the view holds the object: proxy RV and the cluster stamp."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload
        if not isinstance(obj, dict) or obj.get("kind") == "Status":
            return payload
        if isinstance(obj.get("items"), list):  # deletecollection: each item, and the list, in proxy RVs
            obj["items"] = [self._held_item(view, cluster, item, info) if isinstance(item, dict) else item for item in obj["items"]]
            obj.setdefault("metadata", {})["resourceVersion"] = str(view.current_rv)
            return orjson.dumps(obj)
        return orjson.dumps(self._held_item(view, cluster, obj, info))

    def _held_item(self, view: Any, cluster: str, obj: Obj, info: ResourceInfo) -> Obj:
        md = obj.get("metadata") or {}
        held: StoredObject | None = view.get(cluster, str(md.get("namespace") or ""), str(md.get("name") or ""))
        if held is not None and view.backend_rv(cluster, held.namespace, held.name) == str(md.get("resourceVersion")):
            out: Obj = held.decode()
            return conversion.to_served(out, info) if conversion.needs_conversion(info) else out
        # Gone already (a delete): its last state at the view's newest revision.
        md["resourceVersion"] = str(view.current_rv)
        md.setdefault("annotations", {})[kcp.CLUSTER_ANNOTATION] = cluster
        obj["metadata"] = md
        return obj


def target_path(info: ResourceInfo, target: ResourcePath) -> str:
    prefix = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    out = prefix + (f"/namespaces/{target.namespace}" if target.namespace else "") + f"/{info.resource}"
    if target.name:
        out += f"/{target.name}"
    if target.subresource:
        out += f"/{target.subresource}"
    return out



