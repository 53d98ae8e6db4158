"""Which lists of a kind merge by key, as a set, or atomically: read from its OpenAPI schema.

Server-side apply needs this per field path (`x-kubernetes-list-type` and
`x-kubernetes-list-map-keys`, or the older `x-kubernetes-patch-merge-key` with
`x-kubernetes-patch-strategy: merge`). Lists the schema says nothing about are atomic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

ListKeys = Callable[[tuple[str, ...]], "tuple[str, ...] | None"]

# ObjectMeta's lists, for kinds whose schema we do not have (custom resources).
_META_LISTS: dict[tuple[str, ...], tuple[str, ...] | None] = {
    ("metadata", "finalizers"): (),
    ("metadata", "ownerReferences"): ("uid",),
}


def _resolve(schema: Any, components: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any]:
    """Follow `$ref` and single-entry `allOf` wrappers (how Kubernetes attaches descriptions)."""
    while isinstance(schema, Mapping) and depth < 32:
        depth += 1
        ref = schema.get("$ref")
        if isinstance(ref, str):
            schema = components.get(ref.rsplit("/", 1)[-1], {})
            continue
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and "properties" not in schema and "items" not in schema:
            schema = all_of[0]
            continue
        return schema
    return schema if isinstance(schema, Mapping) else {}


def _list_kind(schema: Mapping[str, Any]) -> tuple[str, ...] | None:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        return tuple(str(k) for k in keys) or None
    if list_type == "set":
        return ()
    if list_type == "atomic":
        return None
    if schema.get("x-kubernetes-patch-strategy") and "merge" in str(schema.get("x-kubernetes-patch-strategy")):
        key = schema.get("x-kubernetes-patch-merge-key")
        return (str(key),) if key else ()
    return None


def list_keys_for(root: Mapping[str, Any] | None, components: Mapping[str, Any] | None = None) -> ListKeys:
    """A `ListKeys` for the kind whose schema is `root` (references resolved in `components`)."""
    refs = components or {}
    cache: dict[tuple[str, ...], tuple[str, ...] | None] = {}

    def lookup(path: tuple[str, ...]) -> tuple[str, ...] | None:
        if path in cache:
            return cache[path]
        schema = _resolve(root or {}, refs)
        for name in path:
            if schema.get("type") == "array" or "items" in schema:
                schema = _resolve(schema.get("items") or {}, refs)  # list elements are not in the path
            props = schema.get("properties")
            if isinstance(props, Mapping) and name in props:
                schema = _resolve(props[name], refs)
            elif isinstance(schema.get("additionalProperties"), Mapping):
                schema = _resolve(schema["additionalProperties"], refs)
            else:
                schema = {}
                break
        found = _list_kind(schema) if schema else _META_LISTS.get(path)
        if found is None and path in _META_LISTS:
            found = _META_LISTS[path]
        cache[path] = found
        return found

    return lookup
