"""Field ownership for every write: which manager a request writes as, and the schema facts
server-side apply needs (list types) for a resource. The merge itself is `kube.apply`."""

from __future__ import annotations

from typing import Any

from vwproxy.kube import apply as ssa
from vwproxy.kube import builtin_schemas, errors
from vwproxy.kube.listkeys import ListKeys, list_keys_for
from vwproxy.kube.meta import now_rfc3339
from vwproxy.kube.resources import ResourceInfo

Obj = dict[str, Any]
MAX_MANAGER_LENGTH = 128  # kube-apiserver's limit on fieldManager

_list_keys_cache: dict[tuple[str, str, str, int], ListKeys] = {}


def list_keys(info: ResourceInfo) -> ListKeys:
    key = (info.group, info.version, info.kind, id(info.crd_version) if info.crd else 0)
    found = _list_keys_cache.get(key)
    if found is None:
        if info.crd:
            root = (info.crd_version.get("schema") or {}).get("openAPIV3Schema")
            found = list_keys_for(root if isinstance(root, dict) else None)
        else:
            components = builtin_schemas.component_schemas()
            name = builtin_schemas.kind_schema_name(info.group, info.version, info.kind)
            found = list_keys_for(components.get(name or "", {}), components)
        if len(_list_keys_cache) > 4096:
            _list_keys_cache.clear()
        _list_keys_cache[key] = found
    return found


def manager_name(field_manager: str | None, user_agent: str | None, required: bool = False) -> str:
    """The `fieldManager` parameter, or (like kube-apiserver) the user agent up to its first `/`."""
    if field_manager:
        if len(field_manager) > MAX_MANAGER_LENGTH:
            raise errors.invalid("PatchOptions", "", [errors.Cause("FieldValueTooLong", f"Too long: may not be longer than {MAX_MANAGER_LENGTH}", "fieldManager")], "meta.k8s.io")
        return field_manager
    if required:
        raise errors.bad_request("PATCH with application/apply-patch+yaml requires a fieldManager parameter")
    return (user_agent or "unknown").split("/", 1)[0][:MAX_MANAGER_LENGTH] or "unknown"


def _as_the_server_keeps_it(info: ResourceInfo, old: Obj | None, new: Obj, subresource: str) -> Obj:
    """What the write changes, with the part it cannot change (status, or all but status) as before."""
    if old is None or not info.status:
        return new
    if subresource == "status":
        out = dict(old)
        if "status" in new:
            out["status"] = new["status"]
        else:
            out.pop("status", None)
        return out
    out = dict(new)
    if "status" in old:
        out["status"] = old["status"]
    else:
        out.pop("status", None)
    return out


def track(info: ResourceInfo, old: Obj | None, new: Obj, manager: str, subresource: str = "") -> Obj:
    """`new` with metadata.managedFields updated for a create, update or non-apply patch."""
    effective = _as_the_server_keeps_it(info, old, new, subresource)
    tracked = ssa.record_update(old, effective, manager, api_version=info.api_version, now=now_rfc3339(), subresource=subresource, list_keys=list_keys(info))
    out = dict(new)
    out["metadata"] = {**(new.get("metadata") or {}), "managedFields": tracked["metadata"].get("managedFields", [])}
    if not out["metadata"]["managedFields"]:
        del out["metadata"]["managedFields"]
    return out


def server_side_apply(info: ResourceInfo, live: Obj | None, applied: Obj, manager: str, force: bool, subresource: str = "") -> Obj:
    """The object after `manager` applies `applied` (a configuration) to `live` (None: create)."""
    config = dict(applied)
    if info.status:
        if subresource == "status":
            config = {k: v for k, v in config.items() if k in ("apiVersion", "kind", "metadata", "status")}
        else:
            config.pop("status", None)  # the main resource ignores status, as its writes do
    return ssa.apply(live, config, manager, force=force, api_version=info.api_version, now=now_rfc3339(), list_keys=list_keys(info), subresource=subresource)
