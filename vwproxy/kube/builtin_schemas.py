"""OpenAPI v3 component schemas of the built-in kinds, shipped as `data/openapi/builtin.json`.

Kubernetes kinds are Kubernetes' own published schemas (with descriptions, list types and patch
strategies); kcp kinds are compact hand-written ones. `tools/openapi-gen` regenerates the file.
The file holds the closure over `$ref` of the served kinds, their lists, Status and DeleteOptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import orjson

_DATA_FILE = "data/openapi/builtin.json"
REF_PREFIX = "#/components/schemas/"


@cache
def _load() -> tuple[dict[str, Any], dict[str, str]]:
    path = resources.files("vwproxy") / "data" / "openapi" / "builtin.json"
    doc = orjson.loads(path.read_bytes())
    schemas, kinds = doc.get("schemas"), doc.get("kinds")
    if not isinstance(schemas, dict) or not isinstance(kinds, dict):
        raise ValueError(f"{_DATA_FILE}: want an object with 'schemas' and 'kinds' objects")
    return schemas, {str(k): str(v) for k, v in kinds.items()}


def component_schemas() -> dict[str, Any]:
    """Every shipped component schema by name. A new dict each call; the schemas are shared, don't mutate them."""
    return dict(_load()[0])


def kind_schema_name(group: str, version: str, kind: str) -> str | None:
    """The component name of a built-in kind (or its `…List`), e.g. `io.k8s.api.rbac.v1.Role`; None if unknown."""
    return _load()[1].get(f"{group}/{version}/{kind}")


@cache
def top_level_fields(group: str, version: str, kind: str) -> frozenset[str] | None:
    """The top-level property names of a built-in kind's schema; None for a kind not shipped."""
    name = kind_schema_name(group, version, kind)
    if name is None:
        return None
    properties = _load()[0].get(name, {}).get("properties")
    return frozenset(properties) if isinstance(properties, dict) else None


def refs(schema: Any) -> set[str]:
    """The component names a schema refers to through `$ref` (JSONSchemaProps has a property named `$ref`)."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    found.add(value.removeprefix(REF_PREFIX))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


def schema_closure(names: Iterable[str]) -> dict[str, Any]:
    """The named components and every component they reach through `$ref`, for one OpenAPI document."""
    schemas = _load()[0]
    out: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        schema = schemas.get(name)
        if schema is None:
            raise KeyError(f"no built-in component schema {name!r}")
        out[name] = schema
        todo.extend(refs(schema) - out.keys())
    return out


# kcp serves its own kinds as CRDs, so they are validated against their schemas like any custom
# resource. kcp's CRDs mark these fields required (`+required` in its Go types); the compact
# shipped schemas leave `required` out, so it is laid over them here: kind → {object path: fields}.
_KCP_GROUPS = frozenset({"apis.kcp.io", "core.kcp.io", "tenancy.kcp.io"})
_KCP_REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "APIBinding": {"": ("spec",), "spec": ("reference",)},
    "APIExportEndpointSlice": {"": ("spec",), "spec": ("export",), "spec.export": ("name",)},
    "APIResourceSchema": {"": ("spec",), "spec": ("group", "names", "scope", "versions")},
}
_OPEN_OBJECT: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


@cache
def kcp_validation_schema(group: str, version: str, kind: str) -> dict[str, Any] | None:
    """A kcp kind's schema as a CRD's `openAPIV3Schema` (references inlined, metadata left to
    the metadata rules, kcp's required fields); None for a kind that is not kcp's."""
    if group not in _KCP_GROUPS:
        return None
    name = kind_schema_name(group, version, kind)
    if name is None:
        return None
    schemas = _load()[0]

    def inline(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if ref is None and isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1 and isinstance(node["allOf"][0], dict):
            ref = node["allOf"][0].get("$ref")
        if isinstance(ref, str):
            target = ref.removeprefix(REF_PREFIX)
            if target in seen or target not in schemas:
                return dict(_OPEN_OBJECT)
            return inline(schemas[target], seen | {target})
        return {key: inline(value, seen) for key, value in node.items() if key not in ("description", "default")}

    schema: dict[str, Any] = inline(schemas[name], frozenset({name}))
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    for path, fields in _KCP_REQUIRED.get(kind, {}).items():
        node = schema
        for part in filter(None, path.split(".")):
            node = node.setdefault("properties", {}).setdefault(part, {"type": "object"})
        node["required"] = list(fields)
    return schema
