"""Conversion between the versions (and groups) that share one storage.

Most multi-version resources here convert by rewriting `apiVersion` (the CRD "None" strategy).
Events are stored as core `v1` Events and served as `events.k8s.io/v1` too, with the field
renames Kubernetes defines between the two. kcp's APIExport and APIBinding convert their
permission claims (and schemas) between v1alpha1 and the stored v1alpha2 (`kcp_conversion`).
"""

from __future__ import annotations

from typing import Any

from vwproxy.kube import kcp_conversion
from vwproxy.kube.resources import ResourceInfo

Obj = dict[str, Any]

# core/v1 Event field → events.k8s.io/v1 Event field
_EVENT_FIELDS = {
    "involvedObject": "regarding",
    "message": "note",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "reportingComponent": "reportingController",
}
_EVENT_FIELDS_BACK = {v: k for k, v in _EVENT_FIELDS.items()}

# (group, resource, version) → (to stored, to served) for kinds with a real conversion.
_KCP_V1ALPHA1 = {
    ("apis.kcp.io", "apiexports", "v1alpha1"): (kcp_conversion.export_to_v1alpha2, kcp_conversion.export_to_v1alpha1),
    ("apis.kcp.io", "apibindings", "v1alpha1"): (kcp_conversion.binding_to_v1alpha2, kcp_conversion.binding_to_v1alpha1),
}


def needs_conversion(info: ResourceInfo) -> bool:
    """Whether objects served as `info` differ from how they are stored."""
    return info.version != info.stored_in or info.storage_group not in (None, info.group)


def stored_api_version(info: ResourceInfo) -> str:
    group = info.group if info.storage_group is None else info.storage_group
    return f"{group}/{info.stored_in}" if group else info.stored_in


def to_served(obj: Obj, info: ResourceInfo) -> Obj:
    """A stored object as `info`'s version shows it (a new dict; `obj` is not changed)."""
    if info.storage_group is not None and info.storage_group != info.group and info.resource == "events":
        obj = {_EVENT_FIELDS.get(k, k): v for k, v in obj.items()}
    elif (converters := _KCP_V1ALPHA1.get((info.group, info.resource, info.version))) is not None and info.crd is False:
        obj = converters[1](obj)
    else:
        obj = dict(obj)
    obj["apiVersion"] = info.api_version
    return obj


def to_stored(obj: Obj, info: ResourceInfo) -> Obj:
    """An object written as `info`'s version, in its storage form."""
    if info.storage_group is not None and info.storage_group != info.group and info.resource == "events":
        obj = {_EVENT_FIELDS_BACK.get(k, k): v for k, v in obj.items()}
    elif (converters := _KCP_V1ALPHA1.get((info.group, info.resource, info.version))) is not None and info.crd is False:
        obj = converters[0](obj)
    else:
        obj = dict(obj)
    obj["apiVersion"] = stored_api_version(info)
    return obj
