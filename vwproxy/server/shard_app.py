"""The embedded shard's HTTP API: the Kubernetes REST verbs over `Shard`, per logical cluster.

Paths are `/clusters/<name>/api…` and `/clusters/<name>/apis…`; `/clusters/*/…` lists and
watches across every logical cluster. Paths without a `/clusters/` prefix address `root`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from vwproxy.kube import apply as ssa
from vwproxy.kube import bodies, conversion, discovery, errors, managedfields, negotiation, strategic
from vwproxy.kube import patch as patching
from vwproxy.kube.kcp import ROOT_CLUSTER, WILDCARD_CLUSTER
from vwproxy.kube.listoptions import parse_list_options
from vwproxy.kube.negotiation import Representation
from vwproxy.kube.paths import DiscoveryPath, ResourcePath, parse_api_path, split_cluster, verb_of
from vwproxy.kube.resources import BUILTIN_GROUP_ORDER, ResourceInfo
from vwproxy.server import http
from vwproxy.server.discovery import serve_discovery
from vwproxy.server.reads import DEFAULT_BOOKMARK_INTERVAL, ReadHandler, encoder_for
from vwproxy.store.shard import Shard, WriteChecks

log = logging.getLogger(__name__)

# The admission step of writes: (ASGI scope, resource, cluster, namespace, the object as it will be
# stored, the current object or None). It may change the object or raise a StatusError.
Admit = Callable[[Scope, ResourceInfo, str, str, dict[str, Any], "dict[str, Any] | None"], None]

_DISCOVERY_TRANSFORMS = frozenset({negotiation.DISCOVERY})


_FIELD_VALIDATION = ("Ignore", "Warn", "Strict")


def _manager(request: Request, params: dict[str, str]) -> str:
    return managedfields.manager_name(params.get("fieldManager"), request.headers.get("user-agent"))


def _write_checks(params: dict[str, str]) -> WriteChecks:
    value = params.get("fieldValidation") or "Warn"
    if value not in _FIELD_VALIDATION:
        raise errors.bad_request(f'fieldValidation parameter unsupported: "{value}", must be one of Ignore, Warn, Strict')
    return WriteChecks(field_validation=value)


def _warning_headers(checks: WriteChecks) -> dict[str, str] | None:
    """Kubernetes `Warning` headers (RFC 7234 code 299) for what the write let through."""
    if not checks.warnings:
        return None
    return {"Warning": ", ".join('299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in checks.warnings)}


def _dry_run(params: dict[str, str]) -> bool:
    value = params.get("dryRun", "")
    if value and value != "All":
        raise errors.invalid("DryRun", "", [errors.Cause("FieldValueNotSupported", f'Unsupported value: "{value}": supported values: "All"', "dryRun")], "meta.k8s.io")
    return value == "All"


class ShardAPI:
    """Request handling for one `Shard`."""

    def __init__(self, shard: Shard, reads: ReadHandler, admit: Admit | None = None) -> None:
        self.shard = shard
        self.reads = reads
        self.admit = admit

    def _admit(self, request: Request, info: ResourceInfo, cluster: str, target: ResourcePath, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """The admission step, on the object as it will be stored (main resource only)."""
        if self.admit is not None and not target.subresource:
            self.admit(request.scope, info, cluster, target.namespace, obj, old)

    async def handle(self, request: Request) -> Response:
        path = request.scope["path"]  # as uvicorn decoded it (request.url would build and parse a whole URL for it)
        if path.startswith("/clusters/"):
            cluster, rest = split_cluster(path, allow_paths=True)
            if ":" in cluster and not cluster.startswith("system:"):
                resolved = self.shard.cluster_for_path(cluster)
                if resolved is None:
                    raise errors.workspace_not_found(cluster)
                cluster = resolved
        else:
            cluster, rest = ROOT_CLUSTER, path
        target = parse_api_path(rest)
        if isinstance(target, DiscoveryPath):
            if request.method not in ("GET", "HEAD"):
                raise errors.method_not_supported(f"{request.method} is not supported on {rest}")
            rep = negotiation.choose(request.headers.get("accept"), _DISCOVERY_TRANSFORMS if target.what in ("api", "apis") else frozenset())
            return self._discovery(cluster, target, path[: len(path) - len(rest)], rep)
        return await self._resource(request, cluster, target)

    # -- discovery -----------------------------------------------------------------------------

    def _discovery(self, cluster: str, target: DiscoveryPath, prefix: str, rep: Representation) -> Response:
        wildcard = cluster == WILDCARD_CLUSTER
        if not wildcard:
            self.shard.require_cluster(cluster)
        resources = self.shard.resources(None if wildcard else cluster)
        if rep.kind == negotiation.DISCOVERY:
            aggregated = discovery.aggregated(resources, target.what == "api", rep.api_version, BUILTIN_GROUP_ORDER)
            return http.json_response(orjson.dumps(aggregated), media_type=discovery.aggregated_content_type(rep.version))
        return serve_discovery(target, resources, prefix, BUILTIN_GROUP_ORDER)

    # -- resources -----------------------------------------------------------------------------

    async def _resource(self, request: Request, cluster: str, target: ResourcePath) -> Response:
        wildcard = cluster == WILDCARD_CLUSTER
        info = self.shard.resolve(None if wildcard else cluster, target.group, target.version, target.resource)
        if target.namespace and not info.namespaced:
            raise errors.path_not_found()
        if target.subresource and not (target.subresource == "status" and info.status):
            raise errors.path_not_found()
        params = http.query(request)
        method = request.method
        if wildcard:
            verb = verb_of(method, target, params)
            if verb not in ("list", "watch"):
                raise errors.method_not_allowed(verb, info.resource, info.group, "in the `*` logical cluster")
            if target.namespace:
                raise errors.bad_request(f"cross-cluster LIST and WATCH are required to be cross-namespace, not scoped to namespace {target.namespace}")
        if method in ("GET", "HEAD"):
            if not wildcard:
                self.shard.require_cluster(cluster)
            return self.reads.read(self.shard.reader(info), info, None if wildcard else cluster, target, params, request.headers.get("accept"))
        if target.legacy_watch:
            raise errors.method_not_supported(f"{method} is not supported on watch paths")
        if method == "POST":
            if target.name:
                raise errors.method_not_supported(f"POST is not supported on a named {info.resource} path")
            return await self._create(request, info, cluster, target, params)
        if method == "PUT":
            if not target.name:
                raise errors.method_not_supported(f"PUT is not supported on a {info.resource} collection")
            return await self._update(request, info, cluster, target, params)
        if method == "PATCH":
            if not target.name:
                raise errors.method_not_supported(f"PATCH is not supported on a {info.resource} collection")
            return await self._patch(request, info, cluster, target, params)
        if method == "DELETE":
            if target.subresource:
                raise errors.method_not_supported(f"DELETE is not supported on {info.resource}/{target.subresource}")
            return await self._delete(request, info, cluster, target, params)
        raise errors.method_not_supported(f"{method} is not supported")

    # -- writes --------------------------------------------------------------------------------

    def _incoming(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        """Check kind and apiVersion of a written object and bring it to storage form."""
        api_version = obj.get("apiVersion")
        if api_version not in (None, "") and api_version != info.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API version ({info.api_version})")
        kind = obj.get("kind")
        if kind not in (None, "") and kind != info.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({info.kind})")
        md = obj.get("metadata")
        if md is not None and not isinstance(md, dict):
            raise errors.bad_request("the object provided is unrecognized or malformed: metadata must be an object")
        obj = {"apiVersion": info.api_version, "kind": info.kind, **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}}
        return conversion.to_stored(obj, info) if conversion.needs_conversion(info) else obj

    def _check_identity(self, obj: dict[str, Any], target: ResourcePath) -> None:
        md = obj.get("metadata")
        if md is None:
            md = obj["metadata"] = {}
        if not isinstance(md, dict):
            raise errors.bad_request("the object provided is unrecognized or malformed: metadata must be an object")
        name, namespace = md.get("name"), md.get("namespace")
        if target.name and name not in (None, "") and name != target.name:
            raise errors.bad_request(f"the name of the object ({name}) does not match the name on the URL ({target.name})")
        if target.namespace and namespace not in (None, "") and namespace != target.namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")

    def _known(self, info: ResourceInfo, obj: dict[str, Any], checks: WriteChecks) -> dict[str, Any]:
        """Unknown fields dropped before anything walks the object, as kube-apiserver's decoder
        does; what is left must fit the depth the shard stores (else a 400)."""
        self.shard.drop_unknown_fields(info, obj, checks)
        bodies.require_depth(obj)
        return obj

    async def _create(self, request: Request, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str]) -> Response:
        obj = http.decode_object(await http.read_body(request), http.media_type(request), allow_deep=True)
        checks = _write_checks(params)
        obj = self._known(info, obj, checks)
        self._check_identity(obj, target)
        obj = managedfields.track(info, None, obj, _manager(request, params))
        self._admit(request, info, cluster, target, obj, None)
        stored = self.shard.create(info, cluster, target.namespace, self._incoming(info, obj), _dry_run(params), checks)
        return http.json_response(encoder_for(info)(stored), 201, _warning_headers(checks))

    async def _update(self, request: Request, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str]) -> Response:
        obj = http.decode_object(await http.read_body(request), http.media_type(request), allow_deep=True)
        checks = _write_checks(params)
        obj = self._known(info, obj, checks)
        self._check_identity(obj, target)
        current = self.shard.table(info.storage_key).get(cluster, target.namespace, target.name)
        old = orjson.loads(encoder_for(info)(current)) if current is not None else None
        if old is not None:
            obj = managedfields.track(info, old, obj, _manager(request, params), target.subresource)
        self._admit(request, info, cluster, target, obj, old)
        stored = self.shard.update(info, cluster, target.namespace, target.name, self._incoming(info, obj), target.subresource, _dry_run(params), checks)
        return http.json_response(encoder_for(info)(stored), 200, _warning_headers(checks))

    async def _patch(self, request: Request, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str]) -> Response:
        content_type = http.media_type(request)
        if content_type == strategic.STRATEGIC_MERGE_PATCH and not strategic.supports(info.api_version, info.kind):
            raise errors.unsupported_patch(
                f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is supported only for built-in kinds, not {info.group_resource})",
            )
        if content_type == ssa.APPLY_PATCH:
            return await self._apply(request, info, cluster, target, params)
        body = await http.read_body(request)
        self.shard.require_cluster(cluster)
        current = self.shard.get(info, cluster, target.namespace, target.name)
        raw = encoder_for(info)(current)
        served = orjson.loads(raw)
        # A second decode is the patch's to change: cheaper than copying `served`.
        patched = patching.apply_patch(orjson.loads(raw), body, content_type, info.api_version, info.kind, owned=True)
        checks = _write_checks(params)
        patched = self._known(info, patched, checks)
        self._check_identity(patched, target)
        patched = managedfields.track(info, served, patched, _manager(request, params), target.subresource)
        self._admit(request, info, cluster, target, patched, served)
        stored = self.shard.update(info, cluster, target.namespace, target.name, self._incoming(info, patched), target.subresource, _dry_run(params), checks)
        return http.json_response(encoder_for(info)(stored), 200, _warning_headers(checks))

    async def _apply(self, request: Request, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str]) -> Response:
        """Server-side apply: create the object if missing, else merge the configuration, tracking owners."""
        manager = managedfields.manager_name(params.get("fieldManager"), None, required=True)
        force = params.get("force", "").lower() in ("true", "1")
        checks = _write_checks(params)
        applied = self._known(info, http.decode_object(await http.read_body(request), http.YAML, allow_deep=True), checks)
        self._check_identity(applied, target)
        for required in ("apiVersion", "kind"):
            if not applied.get(required):
                raise errors.bad_request(f"invalid object: {required} must be set in an apply configuration")
        self.shard.require_cluster(cluster)
        table = self.shard.table(info.storage_key)
        current = table.get(cluster, target.namespace, target.name)
        live = orjson.loads(encoder_for(info)(current)) if current is not None else None
        wanted_rv = (applied.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and current is not None and str(wanted_rv) != str(current.rv):
            raise errors.conflict(info.resource, target.name, info.group)
        merged = managedfields.server_side_apply(info, live, applied, manager, force, target.subresource)
        merged.setdefault("metadata", {}).setdefault("name", target.name)
        self._admit(request, info, cluster, target, merged, live)
        dry_run = _dry_run(params)
        if current is None:
            if target.subresource:
                raise errors.not_found(info.resource, target.name, info.group)
            merged.setdefault("metadata", {})["name"] = target.name
            stored = self.shard.create(info, cluster, target.namespace, self._incoming(info, merged), dry_run, checks)
            return http.json_response(encoder_for(info)(stored), 201, _warning_headers(checks))
        merged.setdefault("metadata", {})["resourceVersion"] = str(current.rv)
        stored = self.shard.update(info, cluster, target.namespace, target.name, self._incoming(info, merged), target.subresource, dry_run, checks)
        return http.json_response(encoder_for(info)(stored), 200, _warning_headers(checks))

    async def _delete(self, request: Request, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str]) -> Response:
        body = await http.read_body(request)
        options: dict[str, Any] = http.decode_object(body, http.media_type(request)) if body.strip() else {}
        policy = params.get("propagationPolicy") or options.get("propagationPolicy")
        if policy not in (None, "", "Background", "Foreground", "Orphan"):
            raise errors.bad_request(f'invalid propagationPolicy "{policy}": must be one of Background, Foreground, Orphan')
        if policy:
            options["propagationPolicy"] = policy
        dry_run = _dry_run(params) or options.get("dryRun") == ["All"]
        if not target.name:
            opts = parse_list_options(params)
            gone = self.shard.delete_collection(info, cluster, target.namespace, opts, options, dry_run)
            head = orjson.dumps({"kind": info.list_kind, "apiVersion": info.api_version, "metadata": {"resourceVersion": str(self.shard.revision)}})[:-1]
            encode = encoder_for(info)
            return http.json_response(http.list_body(head + b',"items":[', (encode(o) for o in gone)))
        stored, gone_now = self.shard.delete(info, cluster, target.namespace, target.name, options, dry_run)
        if not gone_now:
            # Still there (finalizers): kube-apiserver answers 200 with the object, 202 only when
            # the client asked for cascading deletion the legacy way (orphanDependents: false).
            return http.json_response(encoder_for(info)(stored), 202 if options.get("orphanDependents") is False else 200)
        if info.crd:
            return http.json_response(encoder_for(info)(stored))
        uid = (stored.decode().get("metadata") or {}).get("uid", "")
        return http.object_response(errors.success_status(target.name, info.resource, uid, info.group))



def build_shard_app(
    shard: Shard, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL, close_on_shutdown: bool = True, reads: ReadHandler | None = None,
    admit: Admit | None = None,
) -> Starlette:
    """The embedded shard as an ASGI app (standalone or mounted by the proxy and the fixture).

    With `close_on_shutdown` the app owns the shard and closes it when the server stops (before
    uvicorn re-raises a SIGTERM, which would skip any cleanup after `uvicorn.run`).
    """
    api = ShardAPI(shard, reads or ReadHandler(bookmark_interval), admit)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            shard.close()

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def version(request: Request) -> Response:
        return http.object_response(discovery.version_info())

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/healthz", healthz),
        Route("/livez", healthz),
        Route("/readyz", healthz),
        Route("/version", version),
        Route("/version/", version),
        Route("/{rest:path}", api.handle, methods=methods),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(http.StatusErrors)])
    app.state.shard = shard
    app.state.reads = api.reads
    app.state.started = time.time()
    return app
