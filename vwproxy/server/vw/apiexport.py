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

from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, SCHEMAS, Obj
from vwproxy.control.plane import ControlPlane
from vwproxy.control.reconcilers import crd_from_schema, export_schema_names
from vwproxy.core.history import TooOld
from vwproxy.core.objects import StoredObject
from vwproxy.kube import conversion, discovery, errors, kcp, negotiation, openapi, protobuf
from vwproxy.kube import watch as wire
from vwproxy.kube.kcp import WILDCARD_CLUSTER, is_logical_cluster_name
from vwproxy.kube.listoptions import ListOptions, parse_list_options, with_name
from vwproxy.kube.paths import DiscoveryPath, ResourcePath, parse_api_path, verb_of, wants_watch
from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.server import http, watchstream
from vwproxy.server.shard_app import DEFAULT_BOOKMARK_INTERVAL, representation_encoder
from vwproxy.server.vw.hub import ViewHub, ViewKey, binds
from vwproxy.store.registry import crd_resources
from vwproxy.store.watchers import Watcher

log = logging.getLogger(__name__)

PREFIX = "/services/apiexport/"
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
_LIST_TRANSFORMS = frozenset({negotiation.PARTIAL_LIST})
_WATCH_TRANSFORMS = frozenset({negotiation.PARTIAL, negotiation.PARTIAL_LIST})
_SINGLE_TRANSFORMS = frozenset({negotiation.PARTIAL})


def _denied(verb: str, info: ResourceInfo, user: str, namespace: str) -> errors.StatusError:
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return errors.forbidden(
        f'{info.group_resource} is forbidden: User "{user}" cannot {verb} resource "{info.resource}" in API group "{info.group}" {scope}: access denied',
        info.resource, info.group,
    )


class APIExportVirtualWorkspace:
    """ASGI app for `/services/apiexport/…`."""

    def __init__(self, control: ControlPlane, hub: ViewHub, embedded: httpx.AsyncClient, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL) -> None:
        self.control = control
        self.store = control.store
        self.hub = hub
        self.embedded = embedded  # the embedded shard's HTTP API, in-process
        self.bookmark_interval = bookmark_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._handle(request)
        except errors.StatusError as exc:
            response = http.status_response(exc)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.url.path)
            response = http.status_response(errors.internal_error())
        await response(scope, receive, send)

    # -- routing ---------------------------------------------------------------------------------

    def _export(self, export_cluster: str, export_name: str) -> Obj:
        if not is_logical_cluster_name(export_cluster):
            raise errors.path_not_found()
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
        path = unquote(request.url.path)
        parts = path[len(PREFIX):].split("/")
        if len(parts) < 4 or parts[2] != "clusters":
            raise errors.path_not_found()
        export_cluster, export_name, _, segment = parts[:4]
        rest = "/" + "/".join(parts[4:])
        export = self._export(export_cluster, export_name)
        if segment != WILDCARD_CLUSTER and not is_logical_cluster_name(segment):
            raise errors.path_not_found(f'"{segment}" is not a logical cluster name')
        infos = self.resources(export_cluster, export)
        target = parse_api_path(rest)
        if isinstance(target, DiscoveryPath):
            return self._discovery(target, infos, path[: len(path) - len(rest)])
        info = next((i for i in infos if (i.group, i.version, i.resource) == (target.group, target.version, target.resource)), None)
        if info is None:
            raise errors.path_not_found()
        if target.subresource and not (target.subresource == "status" and info.status):
            raise errors.path_not_found()
        if target.namespace and not info.namespaced:
            raise errors.path_not_found()
        params = http.query(request)
        verb = verb_of(request.method, target, params)
        key = ViewKey(export_cluster, export_name, info.group, info.resource)
        user = request.headers.get("x-remote-user", "system:anonymous")
        if segment == WILDCARD_CLUSTER:
            if verb not in ("list", "watch"):
                raise errors.method_not_allowed(verb, info.resource, info.group, "in the `*` logical cluster")
            if target.namespace:
                raise errors.bad_request(f"cross-cluster LIST and WATCH are required to be cross-namespace, not scoped to namespace {target.namespace}")
            return await self._read(request, key, info, None, target, params)
        self._authorize(key, info, segment, verb, user, target.namespace)
        if verb in ("get", "list", "watch"):
            return await self._read(request, key, info, segment, target, params)
        return await self._write(request, key, info, segment, target, params, verb)

    def _authorize(self, key: ViewKey, info: ResourceInfo, cluster: str, verb: str, user: str, namespace: str) -> None:
        """kcp's binding authorizer: the cluster must bind the export, and the resource with its identity."""
        bound = any(binds(b, key.export_cluster, key.export_name) for _, b in self.store.all(API_BINDINGS, cluster))
        if not bound:
            raise _denied(verb, info, user, namespace)
        if info.group == "apis.kcp.io" and info.resource == "apibindings":
            if verb in _WRITE_VERBS:
                raise _denied(verb, info, user, namespace)
            return
        self.hub.view(key)
        if cluster not in self.hub.engaged.get(key, set()):
            raise _denied(verb, info, user, namespace)

    # -- discovery -------------------------------------------------------------------------------

    def _discovery(self, target: DiscoveryPath, infos: list[ResourceInfo], prefix: str) -> Response:
        doc: dict[str, Any] | None
        if target.what == "version":
            doc = discovery.version_info()
        elif target.what == "api":
            doc = discovery.api_versions()
        elif target.what == "apis":
            doc = discovery.api_group_list(infos)
        elif target.what == "group":
            doc = discovery.api_group(infos, target.group)
        elif target.what == "groupversion":
            doc = discovery.api_resource_list(infos, target.group, target.version)
            if doc is None and target.group == "" and target.version == "v1":
                doc = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []}
        elif target.what == "openapi" and target.rest == "v3":
            doc = openapi.index(infos, prefix)
        elif target.what == "openapi" and target.rest.startswith("v3/apis/"):
            parts = target.rest.split("/")
            doc = openapi.group_version_document(infos, parts[2], parts[3]) if len(parts) == 4 else None
        else:
            doc = None
        if doc is None:
            raise errors.path_not_found()
        return http.object_response(doc)

    # -- reads -----------------------------------------------------------------------------------

    def _encoder(self, info: ResourceInfo, rep: negotiation.Representation, params: dict[str, str]) -> tuple[str, Any]:
        return representation_encoder(info, rep, params)

    async def _read(self, request: Request, key: ViewKey, info: ResourceInfo, cluster: str | None, target: ResourcePath, params: dict[str, str]) -> Response:
        view = self.hub.view(key)
        if params.get("resourceVersion", "") == "":
            # A consistent read: wait (bounded) for every backend of the view to have listed.
            await self.hub.wait_synced(key, SYNC_WAIT_SECONDS)
        accept = request.headers.get("accept")
        if target.name and not wants_watch(target, params):
            rep = negotiation.choose(accept, _SINGLE_TRANSFORMS)
            assert cluster is not None
            found = view.get(cluster, target.namespace, target.name)
            if found is None:
                raise errors.not_found(info.resource, target.name, info.group)
            _, encode = self._encoder(info, rep, params)
            return http.json_response(encode(found), 200, _warning_headers(self.hub.stale_warnings(key)))
        opts = parse_list_options(params, watch_path=target.legacy_watch)
        for name in opts.fields.field_names():
            if name not in ("metadata.name", "metadata.namespace"):
                raise errors.bad_request(f"field label not supported: {name}")
        if target.name:
            opts = with_name(opts, target.name)
        if opts.watch:
            return self._watch(key, info, cluster, target.namespace, opts, negotiation.choose(accept, _WATCH_TRANSFORMS), params)
        rep = negotiation.choose(accept, _LIST_TRANSFORMS)
        result = view.list(cluster, target.namespace, opts)
        list_meta: dict[str, Any] = {"resourceVersion": str(result.rv)}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        if result.remaining is not None:
            list_meta["remainingItemCount"] = result.remaining
        _, encode = self._encoder(info, rep, params)
        kind, api_version = (("PartialObjectMetadataList", rep.api_version) if rep.kind == negotiation.PARTIAL_LIST else (info.list_kind, info.api_version))
        head = orjson.dumps({"kind": kind, "apiVersion": api_version, "metadata": list_meta})[:-1] + b',"items":['
        return http.json_response(http.list_body(head, (encode(o) for o in result.items)), 200, _warning_headers(self.hub.stale_warnings(key)))

    def _watch(self, key: ViewKey, info: ResourceInfo, cluster: str | None, namespace: str, opts: ListOptions, rep: negotiation.Representation, params: dict[str, str]) -> Response:
        view = self.hub.view(key)
        encoding, encode = self._encoder(info, rep, params)
        if rep.kind == negotiation.PARTIAL or rep.kind == negotiation.PARTIAL_LIST:
            bookmark_as = (rep.api_version, "PartialObjectMetadata")
        else:
            bookmark_as = (info.api_version, info.kind)
        watcher = Watcher(cluster, namespace, opts.labels, opts.fields, encoding, encode)
        watcher.limit = 1 << 62  # the backlog below is bounded by the view and its history
        rv = opts.rv_number
        if rv > view.current_rv:
            raise errors.too_large_resource_version(rv, view.current_rv)
        initial = opts.send_initial_events if opts.send_initial_events is not None else opts.resource_version in ("", "0")
        if initial:
            for obj in view.initial_events(cluster, namespace, opts.labels, opts.fields):
                watcher.push(wire.frame(wire.ADDED, encode(obj)))
            if opts.send_initial_events:
                watcher.push(wire.bookmark_frame(bookmark_as[0], bookmark_as[1], view.current_rv, initial_events_end=True))
        elif opts.resource_version not in ("", "0"):
            try:
                replay = view.since(rv)
            except TooOld as exc:
                return watchstream.expired_watch(errors.expired(str(exc)))
            for event in replay:
                watcher.offer(event)
        watcher.allow_backlog()
        watchers = self.hub.watchers[key]
        watchers.add(watcher)
        return watchstream.stream_watch(
            watcher, opts, bookmark_as, lambda: view.current_rv, lambda: self.hub.stop_watch(key, watcher), self.bookmark_interval,
            _warning_headers(self.hub.stale_warnings(key)),
        )

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
        warnings = _warning_headers(self.hub.stale_warnings(key))
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


def _warning_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None
    return {"Warning": ", ".join('299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in warnings)}


def target_path(info: ResourceInfo, target: ResourcePath) -> str:
    prefix = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    out = prefix + (f"/namespaces/{target.namespace}" if target.namespace else "") + f"/{info.resource}"
    if target.name:
        out += f"/{target.name}"
    if target.subresource:
        out += f"/{target.subresource}"
    return out



