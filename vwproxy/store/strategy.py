"""Per-resource write rules: defaults, validation, status/spec separation, selectable fields.

Kubernetes calls these REST strategies; the generic rules live in `shard.py`, and this module
holds what differs between kinds.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

from vwproxy.kube import builtin_schemas, validation
from vwproxy.kube.errors import Cause
from vwproxy.kube.schema import CRSchema
from vwproxy.kube.kcp import APIBINDING_FINALIZER, LOGICAL_CLUSTER_OBJECT_NAME
from vwproxy.kube.resources import RBAC, ResourceInfo
from vwproxy.kube.versions import by_priority

Obj = dict[str, Any]

NAMESPACE_FINALIZER = "kubernetes"
KCP_GROUPS = frozenset({"apis.kcp.io", "core.kcp.io", "tenancy.kcp.io"})


def name_rule(info: ResourceInfo) -> str:
    if info.group == "" and info.resource in ("namespaces", "serviceaccounts"):
        return validation.NAME_LABEL if info.resource == "namespaces" else validation.NAME_SUBDOMAIN
    if info.group == RBAC:
        return validation.NAME_PATH_SEGMENT
    if info.group == "core.kcp.io":
        return validation.NAME_PATH_SEGMENT  # LogicalCluster names are fixed; checked below
    return validation.NAME_SUBDOMAIN


_REFERENCE_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
# Field labels per storage key beyond metadata.name/namespace, as kube-apiserver registers them.
# Events are stored as core/v1; events.k8s.io/v1 names the same fields `regarding.*` etc.
_EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "/namespaces": ("status.phase",),
    "/secrets": ("type",),
    "/events": tuple(f"involvedObject.{f}" for f in _REFERENCE_FIELDS)
    + ("reason", "reportingComponent", "source", "type")
    + tuple(f"regarding.{f}" for f in _REFERENCE_FIELDS)
    + ("reportingController",),
}


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def selectable_fields(storage_key: str, obj: Obj, namespace: str, name: str) -> dict[str, str]:
    """The fields a field selector may name, as strings (kube's GetAttrs)."""
    fields = {"metadata.name": name, "metadata.namespace": namespace}
    if storage_key == "/namespaces":
        fields["status.phase"] = _text((obj.get("status") or {}).get("phase"))
    elif storage_key == "core.kcp.io/logicalclusters":
        # Not a field label clients may select on: it lets the shard resolve workspace paths.
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        fields["kcp.io/path"] = _text(annotations.get("kcp.io/path"))
    elif storage_key == "/secrets":
        fields["type"] = _text(obj.get("type"))
    elif storage_key == "/events":
        raw_ref = obj.get("involvedObject")
        ref: Obj = raw_ref if isinstance(raw_ref, dict) else {}
        for f in _REFERENCE_FIELDS:
            fields[f"involvedObject.{f}"] = fields[f"regarding.{f}"] = _text(ref.get(f))
        fields["reason"] = _text(obj.get("reason"))
        fields["reportingComponent"] = fields["reportingController"] = _text(obj.get("reportingComponent"))
        raw_source = obj.get("source")
        source: Obj = raw_source if isinstance(raw_source, dict) else {}
        fields["source"] = _text(source.get("component"))
        fields["type"] = _text(obj.get("type"))
    return fields


def supported_fields(info: ResourceInfo) -> frozenset[str]:
    """Field labels a field selector may use on `info` (others are a 400, as in Kubernetes)."""
    return frozenset({"metadata.name", "metadata.namespace", *_EXTRA_FIELDS.get(info.storage_key, ())})


def prepare_create(info: ResourceInfo, obj: Obj) -> None:
    """Defaults the server fills in on create."""
    if info.group == "":
        if info.resource == "namespaces":
            obj.setdefault("spec", {}).setdefault("finalizers", [NAMESPACE_FINALIZER])
            obj["status"] = {"phase": "Active"}
        elif info.resource == "secrets":
            _fold_string_data(obj)
            obj.setdefault("type", "Opaque")
    elif info.group == "apiextensions.k8s.io" and info.resource == "customresourcedefinitions":
        _accept_crd(obj)
    elif info.group == "apis.kcp.io" and info.resource == "apibindings":
        _hold_binding(obj)


def prepare_update(info: ResourceInfo, obj: Obj, old: Obj) -> None:
    if info.group == "" and info.resource == "secrets":
        _fold_string_data(obj)
        obj.setdefault("type", old.get("type", "Opaque"))
    elif info.group == "apiextensions.k8s.io" and info.resource == "customresourcedefinitions":
        _accept_crd(obj)
    elif info.group == "apis.kcp.io" and info.resource == "apibindings":
        _hold_binding(obj)


def _hold_binding(obj: Obj) -> None:
    """kcp's admission puts its finalizer on every APIBinding not being deleted: the control plane
    deletes the bound objects before the binding goes (kcp-reference.md section 0)."""
    md = obj.get("metadata")
    if not isinstance(md, dict) or md.get("deletionTimestamp"):
        return
    finalizers = md.get("finalizers")
    if not isinstance(finalizers, list):
        finalizers = []
    if APIBINDING_FINALIZER not in finalizers:
        md["finalizers"] = [*finalizers, APIBINDING_FINALIZER]


def _fold_string_data(obj: Obj) -> None:
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        if isinstance(data, dict):
            for key, value in string_data.items():
                if isinstance(value, str):
                    data[key] = base64.b64encode(value.encode()).decode()


def _accept_crd(obj: Obj) -> None:
    """Names are accepted and the CRD established at once: there is no other CRD to race with."""
    spec = obj.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    versions = [v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")]
    status = obj.get("status")
    if not isinstance(status, dict):
        status = {}
        obj["status"] = status
    stored = list(status.get("storedVersions") or [])
    for version in versions:
        if version not in stored:
            stored.append(version)
    status["acceptedNames"] = names
    status["storedVersions"] = stored
    status["conditions"] = [
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
    ]


def drop_unknown_top_level(info: ResourceInfo, obj: Obj) -> list[str]:
    """Remove the top-level fields a built-in kind's schema does not name; their names, sorted."""
    known = builtin_schemas.top_level_fields(info.group, info.version, info.kind)
    if known is None:
        return []
    unknown = sorted(key for key in obj if key not in known)
    for key in unknown:
        del obj[key]
    return unknown


@functools.cache
def _kcp_schema(group: str, version: str, kind: str) -> CRSchema | None:
    schema = builtin_schemas.kcp_validation_schema(group, version, kind)
    return CRSchema(schema) if schema is not None else None


def validate(info: ResourceInfo, obj: Obj) -> list[Cause]:
    """Kind-specific validation; metadata is checked by the caller."""
    if info.group in KCP_GROUPS:
        # The stored form's own version: a v1alpha1 write may be stored as v1alpha2.
        group, _, version = str(obj.get("apiVersion") or info.api_version).rpartition("/")
        schema = _kcp_schema(group, version, str(obj.get("kind") or info.kind))
        causes = schema.validate(obj) if schema is not None else []
        if causes:
            return causes
    if info.group == "":
        if info.resource == "secrets":
            return _validate_secret(obj)
        if info.resource == "configmaps":
            return _validate_configmap(obj)
    if info.group == "apiextensions.k8s.io":
        return _validate_crd(obj)
    if info.group == "core.kcp.io" and info.resource == "logicalclusters":
        name = (obj.get("metadata") or {}).get("name")
        if name != LOGICAL_CLUSTER_OBJECT_NAME:
            return [Cause("FieldValueInvalid", f'Invalid value: "{name}": must be "{LOGICAL_CLUSTER_OBJECT_NAME}"', "metadata.name")]
    return []


def _check_data_keys(obj: Obj, field: str) -> list[Cause]:
    data = obj.get(field)
    if data is None:
        return []
    if not isinstance(data, dict):
        return [Cause("FieldValueInvalid", "must be a map", field)]
    causes = []
    for key in data:
        if not key or len(key) > 253 or not all(c.isalnum() or c in "-._" for c in key):
            causes.append(
                Cause("FieldValueInvalid", f"Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'", f"{field}[{key}]")
            )
    return causes


def _validate_configmap(obj: Obj) -> list[Cause]:
    causes = _check_data_keys(obj, "data") + _check_data_keys(obj, "binaryData")
    data = obj.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(value, str):
                causes.append(Cause("FieldValueInvalid", "must be a string", f"data[{key}]"))
    return causes


def _validate_secret(obj: Obj) -> list[Cause]:
    causes = _check_data_keys(obj, "data")
    data = obj.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            try:
                if not isinstance(value, str):
                    raise ValueError
                base64.b64decode(value, validate=True)
            except (ValueError, binascii.Error):
                causes.append(Cause("FieldValueInvalid", "must be base64-encoded bytes", f"data[{key}]"))
    return causes


def _validate_crd(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("FieldValueRequired", "Required value", "spec")]
    group = spec.get("group")
    raw_names = spec.get("names")
    names: dict[str, Any] = raw_names if isinstance(raw_names, dict) else {}
    plural = names.get("plural")
    if not isinstance(group, str) or not group or validation.dns1123_subdomain(group) or "." not in group:
        causes.append(Cause("FieldValueInvalid", f'Invalid value: "{group}": should be a domain with at least one dot', "spec.group"))
    if not isinstance(plural, str) or validation.dns1123_label(plural or "-"):
        causes.append(Cause("FieldValueInvalid", f'Invalid value: "{plural}": must be a lowercase RFC 1123 label', "spec.names.plural"))
    if not isinstance(names.get("kind"), str) or not names.get("kind"):
        causes.append(Cause("FieldValueRequired", "Required value", "spec.names.kind"))
    name = (obj.get("metadata") or {}).get("name")
    if isinstance(group, str) and isinstance(plural, str) and name != f"{plural}.{group}":
        causes.append(Cause("FieldValueInvalid", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group', "metadata.name"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(Cause("FieldValueNotSupported", f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"', "spec.scope"))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(Cause("FieldValueRequired", "must have exactly one version marked as storage version", "spec.versions"))
        return causes
    seen: set[str] = set()
    storage = 0
    for i, version in enumerate(versions):
        if not isinstance(version, dict) or not isinstance(version.get("name"), str) or not version.get("name"):
            causes.append(Cause("FieldValueRequired", "Required value", f"spec.versions[{i}].name"))
            continue
        if version["name"] in seen:
            causes.append(Cause("FieldValueDuplicate", f'Duplicate value: "{version["name"]}"', f"spec.versions[{i}].name"))
        seen.add(version["name"])
        storage += 1 if version.get("storage") else 0
    if storage != 1:
        causes.append(Cause("FieldValueInvalid", "must have exactly one version marked as storage version", "spec.versions"))
    return causes


def preferred_version(versions: list[str]) -> str:
    return by_priority(versions)[0]
