"""The APIExport virtual workspace: `/services/apiexport/<export cluster>/<export>/clusters/<*|name>/…`.

Reads (list, watch, get) are served from the views; writes go to the workspace's backend (the
embedded shard in-process, or a kube backend), with a client's proxy resourceVersion translated
to the backend's, and the response is the object as the view holds it: proxy RV, `kcp.io/cluster`.
See kcp-reference.md sections 1.2, 2 and 5.
"""

from __future__ import annotations

import logging
from typing import Any
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode

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
from vwproxy.core.claims import ClaimRef, ClaimSelector, accepted, allowed_verbs, claim_group, claim_label, export_claims, permits
from vwproxy.kube import conversion, errors, kcp, protobuf, vwpaths
from vwproxy.kube import patch as patching
from vwproxy.kube.apply import APPLY_PATCH
from vwproxy.kube.paths import DiscoveryPath, ResourcePath, parse_api_path, verb_of, wants_watch
from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.server import http
from vwproxy.server.guard import user_of
from vwproxy.server import watchstream
from vwproxy.server.reads import ReadHandler, ReadScope
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

    def resources(self, export_cluster: str, export: Obj) -> tuple[list[ResourceInfo], dict[tuple[str, str], ClaimRef]]:
        """What the export serves: its schemas' versions, every resource it claims (whether or not
        a binding accepted the claim; a claim shadowed by its own resource is dropped), and
        apibindings in both versions; with the claim each claimed (group, resource) is served by."""
        infos: list[ResourceInfo] = []
        identity = str((export.get("status") or {}).get("identityHash"))
        for name in export_schema_names(export):
            schema = self.store.get(SCHEMAS, export_cluster, name)
            if schema is not None:
                infos += crd_resources(crd_from_schema(schema, identity, ""))
        own = {(i.group, i.resource) for i in infos}
        claimed: dict[tuple[str, str], ClaimRef] = {}
        for ref in export_claims(export):
            for info in self._claimable(ref):
                if (info.group, info.resource) not in own and not (info.group == "apis.kcp.io" and info.resource == "apibindings"):
                    infos.append(info)
                    claimed[(info.group, info.resource)] = ref
        return infos + _BINDING_INFOS, claimed

    def _claimable(self, ref: ClaimRef) -> list[ResourceInfo]:
        """The resources a claim names: another export's (by identity) or a built-in kind's, both
        event groups for a core events claim."""
        if ref.identity:
            for cluster, other in self.store.all(API_EXPORTS):
                if (other.get("status") or {}).get("identityHash") != ref.identity:
                    continue
                for name in export_schema_names(other):
                    schema = self.store.get(SCHEMAS, cluster, name)
                    if schema is not None:
                        found = [i for i in crd_resources(crd_from_schema(schema, ref.identity, "")) if (i.group, i.resource) == (ref.group, ref.resource)]
                        if found:
                            return found
            return []
        return [r for r in BUILTIN_RESOURCES if r.resource == ref.resource and claim_group(r.group, r.resource) == ref.group]

    async def _handle(self, request: Request) -> Response:
        vw = vwpaths.parse(unquote(request.url.path))
        export = self._export(vw.owner_cluster, vw.owner_name)
        infos, claimed = self.resources(vw.owner_cluster, export)
        target = parse_api_path(vw.rest)
        if isinstance(target, DiscoveryPath):
            return serve_discovery(target, infos, vw.prefix)
        info = resolve_resource(infos, target)
        params = http.query(request)
        verb = verb_of(request.method, target, params)
        # One view per stored resource: core and events.k8s.io events share theirs.
        key = ViewKey(vw.owner_cluster, vw.owner_name, info.group if info.storage_group is None else info.storage_group, info.resource)
        ref = claimed.get((info.group, info.resource))
        scope = ReadScope(claim_requirement(vw.owner_cluster, vw.owner_name, ref)) if ref is not None else None
        # The name the guard authenticated (never a client-sent one) for the denial message.
        caller = user_of(request.scope)
        user = caller.name if caller is not None else "system:anonymous"
        if vw.wildcard:
            check_wildcard(verb, info, target)
            return await self._read(request, key, info, None, target, params, scope)
        claim = self._authorize(key, info, vw.cluster, verb, user, target.namespace, export, ref)
        if verb in ("get", "list", "watch"):
            return await self._read(request, key, info, vw.cluster, target, params, scope)
        return await self._write(request, key, info, vw.cluster, target, params, verb, claim)

    def _authorize(
        self, key: ViewKey, info: ResourceInfo, cluster: str, verb: str, user: str, namespace: str, export: Obj, ref: ClaimRef | None,
    ) -> ClaimedWrite | None:
        """kcp's binding authorizer (§7.1): the cluster must bind the export, and the resource with its
        identity, or have accepted the claim with the request's verb in export ∩ binding verbs.
        A claimed resource answers with what its writes must respect."""
        bindings = [b for _, b in self.store.all(API_BINDINGS, cluster) if binds(b, key.export_cluster, key.export_name)]
        if not bindings:
            log.info("denied %s %s in %s: no binding to export %s:%s", verb, info.group_resource, cluster, key.export_cluster, key.export_name)
            raise denied(verb, info, user, namespace)
        if info.group == "apis.kcp.io" and info.resource == "apibindings":
            if verb in _WRITE_VERBS:
                log.info("denied %s apibindings in %s: write access to APIBinding is not allowed from virtual workspace", verb, cluster)
                raise denied(verb, info, user, namespace)
            return None
        claim: ClaimedWrite | None = None
        if ref is not None:
            answer = next((c for c in (accepted(b, ref) for b in bindings) if c is not None), None)
            export_claim = export_claims(export).get(ref)
            if answer is None or export_claim is None or not permits(allowed_verbs(export_claim, answer), verb):
                log.info("denied %s %s in %s: claim not accepted or verb not in export and binding verbs", verb, info.group_resource, cluster)
                raise denied(verb, info, user, namespace)
            claim = ClaimedWrite(ClaimSelector.of(answer), claim_label(key.export_cluster, key.export_name, ref))
        self.hub.view(key)
        if cluster not in self.hub.engaged.get(key, set()):
            log.info("denied %s %s in %s: not bound with the export's identity", verb, info.group_resource, cluster)
            raise denied(verb, info, user, namespace)
        return claim

    # -- reads -----------------------------------------------------------------------------------

    async def _read(
        self, request: Request, key: ViewKey, info: ResourceInfo, cluster: str | None, target: ResourcePath, params: dict[str, str], scope: ReadScope | None,
    ) -> Response:
        view = self.hub.view(key)
        if wants_watch(target, params):
            expired = self.hub.faults.take_expired_watch(view, cluster)
            if expired is not None:
                return watchstream.expired_watch(errors.expired(f"too old resource version (fault injected on workspace {expired})"))
        if params.get("resourceVersion", "") == "":
            # A consistent read: wait (bounded) for every backend of the view to have listed.
            await self.hub.wait_synced(key, SYNC_WAIT_SECONDS)
        return self.reads.read(view, info, cluster, target, params, request.headers.get("accept"), warning_headers(self.hub.stale_warnings(key)), scope)

    # -- writes ----------------------------------------------------------------------------------

    async def _write(
        self, request: Request, key: ViewKey, info: ResourceInfo, cluster: str, target: ResourcePath, params: dict[str, str], verb: str,
        claim: ClaimedWrite | None = None,
    ) -> Response:
        view = self.hub.view(key)
        body = await http.read_body(request)
        content_type = http.media_type(request)
        method = request.method
        query = request.url.query
        if claim is not None:
            method, body, content_type, query = self._claimed(view, info, cluster, target, claim, verb, method, body, content_type, query)
            verb = verb_of(method, target, params)
        if body.strip() and (verb in ("create", "update") or (verb == "patch" and content_type in ("application/merge-patch+json", "application/apply-patch+yaml"))):
            body, content_type = self._translate_body(view, cluster, target, body, content_type, verb)
        elif body.strip() and verb == "patch" and content_type == patching.JSON_PATCH:
            body = self._translate_json_patch(view, cluster, target, body)
        elif body.strip() and verb == "delete":
            body = self._translate_delete_options(view, cluster, target, body, content_type)
            content_type = http.JSON
        client = self.control.client_for(cluster)
        backend = client if client is not None else None
        headers = {"content-type": content_type, "accept": "application/json", "user-agent": request.headers.get("user-agent", "vwproxy")}
        path = target_path(info, target)
        await self.hub.faults.before_write(cluster)
        if backend is None:
            resp = await self.embedded.request(method, f"/clusters/{cluster}{path}", params=query, headers=headers, content=body)
            status, payload = resp.status_code, resp.content
            if 200 <= status < 300 and (target.name or verb == "create") and self.hub.faults.gating(cluster):
                await self._visible(key, cluster, target, payload, verb, status)  # its event may reach the view late
        else:
            upstream = await backend.request(method, path, query, headers, body)
            status, payload = upstream.status, upstream.body
            if 200 <= status < 300 and (target.name or verb == "create"):
                await self._visible(key, cluster, target, payload, verb, status)
        warnings = warning_headers(self.hub.stale_warnings(key))
        if not 200 <= status < 300:
            return http.json_response(payload, status, warnings)
        return http.json_response(self._as_held(view, cluster, payload, info), status, warnings)

    def _claimed(
        self, view: Any, info: ResourceInfo, cluster: str, target: ResourcePath, claim: ClaimedWrite, verb: str, method: str,
        body: bytes, content_type: str, query: str,
    ) -> tuple[str, bytes, str, str]:
        """kcp's admission for writes of claimed objects (§8.4) and the claim label that keeps
        them visible: (method, body, content type, query) to send instead. A patch is applied
        here to the held object (GET → patch → UPDATE, as kcp's VW runs it) so the result can be
        checked; deletes must find a matching object; deletecollection is scoped to the claim."""
        if verb == "deletecollection":
            return method, body, content_type, scoped_query(query, claim)
        held = view.get(cluster, target.namespace, target.name) if target.name else None
        if verb == "delete":
            if held is not None:
                claim.selector.require(held.labels)
            return method, body, content_type, query
        if verb == "patch" and content_type != APPLY_PATCH:
            if held is None:
                raise errors.not_found(info.resource, target.name, info.group)
            obj = patching.apply_patch(held.decode(), body, content_type, info.api_version, info.kind)
            obj.setdefault("metadata", {})["resourceVersion"] = str(held.rv)
            method, content_type = "PUT", http.JSON
        elif content_type == APPLY_PATCH:
            obj = http.decode_object(body, http.YAML)
        else:
            obj = http.decode_object(body, content_type)
            content_type = http.JSON
        claim.admit(obj)
        return method, orjson.dumps(obj), content_type, query

    async def _visible(self, key: ViewKey, cluster: str, target: ResourcePath, payload: bytes, verb: str, status: int) -> None:
        """Wait (bounded) until the reflector has brought a kube backend's write into the view."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        gone = verb == "delete" and status == 200
        found = obj.get("metadata")
        md: Obj = found if isinstance(found, dict) else {}
        rv = "" if obj.get("kind") == "Status" else str(md.get("resourceVersion") or "")
        # A create names its object in the answer (generateName included), not in the path.
        namespace, name = (target.namespace, target.name) if target.name else (str(md.get("namespace") or ""), str(md.get("name") or ""))
        if name and (rv or gone):
            await self.hub.wait_for(key, cluster, namespace, name, rv, gone, WRITE_VISIBLE_SECONDS)

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

    def _translate_json_patch(self, view: Any, cluster: str, target: ResourcePath, body: bytes) -> bytes:
        """A JSON patch that tests or sets `/metadata/resourceVersion` names a proxy RV: the backend's instead."""
        ops = patching.parse_patch_body(body, patching.JSON_PATCH)
        changed = False
        for op in ops:
            if not (isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" and op.get("value") not in (None, "")):
                continue
            if op.get("op") in ("replace", "add"):
                op["value"] = view.translate_precondition(cluster, target.namespace, target.name, str(op["value"]))
                changed = True
            elif op.get("op") == "test":
                # Only the held version's proxy RV passes the test; any other value fails it at the
                # backend (422), since proxy and backend RVs never coincide.
                held = view.get(cluster, target.namespace, target.name)
                if held is not None and str(op["value"]) == str(held.rv):
                    op["value"] = view.backend_rv(cluster, target.namespace, target.name)
                    changed = True
        return orjson.dumps(ops) if changed else body

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





@dataclass(frozen=True)
class ClaimedWrite:
    """What a write of a claimed resource must respect: the binding's selector, and the claim label."""

    selector: ClaimSelector
    label: tuple[str, str]

    def admit(self, obj: Obj) -> None:
        self.selector.admit(obj)
        md = obj.setdefault("metadata", {})
        if not isinstance(md.get("labels"), dict):
            md["labels"] = {}
        md["labels"][self.label[0]] = self.label[1]


def claim_requirement(export_cluster: str, export_name: str, ref: ClaimRef) -> str:
    """The label requirement a claimed resource's reads are scoped by (§8.3)."""
    key, value = claim_label(export_cluster, export_name, ref)
    return f"{key} in ({value})"


def scoped_query(query: str, claim: ClaimedWrite) -> str:
    """`query` with the claim label and the binding's selector ANDed into its labelSelector."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    parts = [p for p in (params.get("labelSelector", ""), f"{claim.label[0]}={claim.label[1]}", str(claim.selector.selector)) if p.strip()]
    params["labelSelector"] = ",".join(parts)
    return urlencode(params)
