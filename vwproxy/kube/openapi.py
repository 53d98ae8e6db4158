"""OpenAPI v3 documents built from served resources: the index and one document per group version.

kubectl reads these to learn whether the server validates fields (`fieldValidation` on the
PATCH operation of a kind) and for `kubectl explain`. Custom resources carry their CRD's
`openAPIV3Schema`; built-in kinds carry a permissive object schema with their metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from vwproxy.kube import builtin_schemas
from vwproxy.kube.discovery import GIT_VERSION
from vwproxy.kube.resources import ResourceInfo

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
_STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"

_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "pretty")
_LIST_PARAMS = (
    "allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "pretty",
    "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch",
)


def gv_path(group: str, version: str) -> str:
    """The index key of a group version: `api/v1`, `apis/<group>/<version>`."""
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _reverse_domain(group: str) -> str:
    return ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"


def schema_name(info: ResourceInfo) -> str:
    if not info.crd:
        known = builtin_schemas.kind_schema_name(info.group, info.version, info.kind)
        if known is not None:
            return known
    return f"{_reverse_domain(info.group)}.{info.version}.{info.kind}"


def list_schema_name(info: ResourceInfo) -> str:
    if not info.crd:
        known = builtin_schemas.kind_schema_name(info.group, info.version, info.list_kind)
        if known is not None:
            return known
    return f"{schema_name(info)}List"


def _param(name: str) -> dict[str, Any]:
    kind = "boolean" if name in ("allowWatchBookmarks", "sendInitialEvents", "watch") else "integer" if name in ("limit", "timeoutSeconds") else "string"
    return {"name": name, "in": "query", "schema": {"type": kind, "uniqueItems": True}}


def _operation(info: ResourceInfo, action: str, params: Iterable[str], body: bool, response_ref: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{info.kind}",
        "parameters": [_param(p) for p in params],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response_ref}"}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
    }
    if body:
        if action == "patch":
            schema: dict[str, Any] = {"type": "object"}
            # kubectl apply sends a strategic merge patch only where this lists it, as Kubernetes
            # lists it: for built-in kinds, never for custom resources.
            content_types = ["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json"]
            if not info.crd:
                content_types.append("application/strategic-merge-patch+json")
        else:
            schema = {"$ref": f"#/components/schemas/{schema_name(info)}"}
            content_types = ["application/json", "application/yaml"]
        op["requestBody"] = {"content": {ct: {"schema": schema} for ct in content_types}}
    return op


def _paths(info: ResourceInfo) -> dict[str, Any]:
    prefix = "/" + gv_path(info.group, info.version)
    collection = f"{prefix}/namespaces/{{namespace}}/{info.resource}" if info.namespaced else f"{prefix}/{info.resource}"
    item = f"{collection}/{{name}}"
    name = schema_name(info)
    paths: dict[str, Any] = {
        collection: {
            "get": _operation(info, "list", _LIST_PARAMS, False, list_schema_name(info)),
            "post": _operation(info, "post", _QUERY_PARAMS, True, name),
            "delete": _operation(info, "deletecollection", _LIST_PARAMS, False, _STATUS),
        },
        item: {
            "get": _operation(info, "get", ("pretty",), False, name),
            "put": _operation(info, "put", _QUERY_PARAMS, True, name),
            "patch": _operation(info, "patch", (*_QUERY_PARAMS, "force"), True, name),
            "delete": _operation(info, "delete", ("dryRun", "gracePeriodSeconds", "propagationPolicy"), False, _STATUS),
        },
    }
    if info.namespaced:
        paths[f"{prefix}/{info.resource}"] = {"get": _operation(info, "list", _LIST_PARAMS, False, list_schema_name(info))}
    if info.status:
        paths[f"{item}/status"] = {
            "get": _operation(info, "get", ("pretty",), False, name),
            "put": _operation(info, "put", _QUERY_PARAMS, True, name),
            "patch": _operation(info, "patch", (*_QUERY_PARAMS, "force"), True, name),
        }
    return paths


def _kind_schema(info: ResourceInfo) -> dict[str, Any]:
    crd_schema = (info.crd_version.get("schema") or {}).get("openAPIV3Schema") if info.crd else None
    schema: dict[str, Any] = dict(crd_schema) if isinstance(crd_schema, dict) else {
        "type": "object",
        "description": f"{info.kind} is a {info.group or 'core'} {info.version} object.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}
    props["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{_OBJECT_META}"}], "default": {}, "description": "Standard object's metadata."}
    schema["properties"] = props
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = [{"group": info.group, "version": info.version, "kind": info.kind}]
    return schema


def _list_schema(info: ResourceInfo) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{info.kind}List is a list of {info.kind}.",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{schema_name(info)}"}},
            "metadata": {"allOf": [{"$ref": f"#/components/schemas/{_LIST_META}"}], "default": {}},
        },
        "x-kubernetes-group-version-kind": [{"group": info.group, "version": info.version, "kind": info.list_kind}],
    }



def group_version_document(resources: Iterable[ResourceInfo], group: str, version: str) -> dict[str, Any] | None:
    chosen = [r for r in resources if r.group == group and r.version == version]
    if not chosen:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    builtin_roots = [_STATUS]
    for info in sorted(chosen, key=lambda r: r.resource):
        paths.update(_paths(info))
        if not info.crd and builtin_schemas.kind_schema_name(info.group, info.version, info.kind) is not None:
            builtin_roots += [schema_name(info), list_schema_name(info)]
        else:
            schemas[schema_name(info)] = _kind_schema(info)
            schemas[list_schema_name(info)] = _list_schema(info)
            builtin_roots += [_OBJECT_META, _LIST_META]
    schemas.update(builtin_schemas.schema_closure(builtin_roots))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:128].upper()


def index(resources: Iterable[ResourceInfo], url_prefix: str = "") -> dict[str, Any]:
    """`/openapi/v3`: a map of group-version paths to their documents' URLs (with content hashes)."""
    infos = list(resources)
    gvs = sorted({(r.group, r.version) for r in infos})
    paths: dict[str, Any] = {}
    for group, version in gvs:
        doc = group_version_document(infos, group, version)
        assert doc is not None
        key = gv_path(group, version)
        paths[key] = {"serverRelativeURL": f"{url_prefix}/openapi/v3/{key}?hash={document_hash(doc)}"}
    return {"paths": paths}
