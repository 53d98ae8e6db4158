"""Server-side printing: `meta.k8s.io` Tables (what `kubectl get` shows) and PartialObjectMetadata.

Built-in kinds get the columns kube-apiserver prints for them; custom resources get Name plus
their CRD version's `additionalPrinterColumns` (or Name and Age when it has none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import orjson

from vwproxy.kube import jsonpath
from vwproxy.kube.resources import RBAC, ResourceInfo

Obj = dict[str, Any]
Cell = Callable[[Obj, datetime], Any]

_NAME_DESCRIPTION = "Name must be unique within a namespace. Cannot be updated."
_AGE_DESCRIPTION = "CreationTimestamp is a timestamp representing the server time when this object was created."


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration: `45s`, `3m20s`, `5h`, `3d4h`, `2y10d`."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24
        return f"{days // 365}y" if days % 365 == 0 else f"{days // 365}y{days % 365}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _since(value: Any, now: datetime) -> str:
    when = _parse_time(value)
    return "<unknown>" if when is None else human_duration((now - when).total_seconds())


def _meta(obj: Obj) -> Obj:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def _name(obj: Obj, now: datetime) -> Any:
    return _meta(obj).get("name", "")


def _age(obj: Obj, now: datetime) -> Any:
    return _since(_meta(obj).get("creationTimestamp"), now)


def _count(field: str) -> Cell:
    return lambda obj, now: len(obj.get(field) or {})


def _path(*fields: str, default: Any = "") -> Cell:
    def cell(obj: Obj, now: datetime) -> Any:
        value: Any = obj
        for f in fields:
            value = value.get(f) if isinstance(value, dict) else None
        return default if value is None else value

    return cell


def _role_ref(obj: Obj, now: datetime) -> Any:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _involved(obj: Obj, now: datetime) -> Any:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _last_seen(obj: Obj, now: datetime) -> Any:
    for key in ("lastTimestamp", "deprecatedLastTimestamp", "eventTime"):
        if obj.get(key):
            return _since(obj[key], now)
    return _age(obj, now)


def _col(name: str, kind: str = "string", description: str = "", fmt: str = "", priority: int = 0) -> Obj:
    return {"name": name, "type": kind, "format": fmt, "description": description, "priority": priority}


NAME_COLUMN = _col("Name", fmt="name", description=_NAME_DESCRIPTION)
AGE_COLUMN = _col("Age", description=_AGE_DESCRIPTION)

# (group, resource) → columns after Name: (definition, cell)
_BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[Obj, Cell]]] = {
    ("", "configmaps"): [(_col("Data", "integer", "Data contains the configuration data."), _count("data")), (AGE_COLUMN, _age)],
    ("", "secrets"): [
        (_col("Type", description="The type of secret"), _path("type")),
        (_col("Data", "integer", "Data contains the secret data."), _count("data")),
        (AGE_COLUMN, _age),
    ],
    ("", "namespaces"): [(_col("Status", description="The status of the namespace"), _path("status", "phase")), (AGE_COLUMN, _age)],
    ("", "events"): [
        (_col("Last Seen"), _last_seen),
        (_col("Type"), _path("type")),
        (_col("Reason"), _path("reason")),
        (_col("Object"), _involved),
        (_col("Message"), lambda o, now: o.get("message") or o.get("note") or ""),
    ],
    ("events.k8s.io", "events"): [
        (_col("Last Seen"), _last_seen),
        (_col("Type"), _path("type")),
        (_col("Reason"), _path("reason")),
        (_col("Object"), _involved),
        (_col("Message"), lambda o, now: o.get("note") or o.get("message") or ""),
    ],
    (RBAC, "roles"): [(_col("Created At", "date"), _path("metadata", "creationTimestamp"))],
    (RBAC, "clusterroles"): [(_col("Created At", "date"), _path("metadata", "creationTimestamp"))],
    (RBAC, "rolebindings"): [(_col("Role"), _role_ref), (AGE_COLUMN, _age)],
    (RBAC, "clusterrolebindings"): [(_col("Role"), _role_ref), (AGE_COLUMN, _age)],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [(_col("Created At", "date"), _path("metadata", "creationTimestamp"))],
    ("tenancy.kcp.io", "workspaces"): [
        (_col("Type"), lambda o, now: (o.get("spec") or {}).get("type", {}).get("name", "") if isinstance((o.get("spec") or {}).get("type"), dict) else ""),
        (_col("Phase"), _path("status", "phase")),
        (_col("URL"), _path("spec", "URL")),
        (AGE_COLUMN, _age),
    ],
    ("core.kcp.io", "shards"): [
        (_col("URL"), _path("spec", "baseURL")),
        (_col("Virtual Workspace URL"), _path("spec", "virtualWorkspaceURL")),
        (_col("Partition"), lambda o, now: ((o.get("metadata") or {}).get("annotations") or {}).get("vwproxy.dev/partition", "")),
        (AGE_COLUMN, _age),
    ],
    ("core.kcp.io", "logicalclusters"): [(_col("Phase"), _path("status", "phase")), (_col("URL"), _path("status", "URL")), (AGE_COLUMN, _age)],
}


def _printer_column(spec: Obj) -> tuple[Obj, Cell]:
    kind = str(spec.get("type") or "string")
    steps = jsonpath.compile_path(str(spec.get("jsonPath") or ""))
    definition = _col(str(spec.get("name") or ""), kind, str(spec.get("description") or ""), str(spec.get("format") or ""), int(spec.get("priority") or 0))

    def cell(obj: Obj, now: datetime) -> Any:
        found = jsonpath.find(obj, steps)
        if not found:
            return None
        value = found[0]
        if kind == "date":
            return _since(value, now)
        if isinstance(value, (dict, list)):
            return orjson.dumps(value).decode()
        return value

    return definition, cell


def _columns(info: ResourceInfo) -> list[tuple[Obj, Cell]]:
    name: list[tuple[Obj, Cell]] = [(NAME_COLUMN, _name)]
    if info.crd:
        specs = info.crd_version.get("additionalPrinterColumns") or []
        if specs:
            return name + [_printer_column(s) for s in specs if isinstance(s, dict)]
        return name + [(AGE_COLUMN, _age)]
    return name + _BUILTIN_COLUMNS.get((info.group, info.resource), [(AGE_COLUMN, _age)])


def partial_metadata(obj: Obj, api_version: str = "meta.k8s.io/v1") -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": _meta(obj)}


class TablePrinter:
    """Turns objects of one resource into Table rows (columns computed once)."""

    def __init__(self, info: ResourceInfo, api_version: str = "meta.k8s.io/v1", include_object: str = "Metadata") -> None:
        self._columns = _columns(info)
        self.api_version = api_version
        self.include_object = include_object if include_object in ("None", "Object", "Metadata") else "Metadata"

    def row(self, obj: Obj, now: datetime | None = None) -> Obj:
        now = now or datetime.now(timezone.utc)
        row: Obj = {"cells": [cell(obj, now) for _, cell in self._columns]}
        if self.include_object == "Object":
            row["object"] = obj
        elif self.include_object == "Metadata":
            row["object"] = partial_metadata(obj, self.api_version)
        return row

    def table(self, objs: Iterable[Obj], list_meta: Obj) -> Obj:
        now = datetime.now(timezone.utc)
        return {
            "kind": "Table",
            "apiVersion": self.api_version,
            "metadata": list_meta,
            "columnDefinitions": [definition for definition, _ in self._columns],
            "rows": [self.row(o, now) for o in objs],
        }
