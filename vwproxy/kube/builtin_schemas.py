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
