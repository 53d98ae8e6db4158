"""Which resources a logical cluster serves: the built-ins plus its established CRDs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from vwproxy.kube.resources import BUILTIN_RESOURCES, ResourceInfo
from vwproxy.kube.schema import CRSchema

CRD_STORAGE_KEY = "apiextensions.k8s.io/customresourcedefinitions"

_BUILTIN_BY_GVR = {(r.group, r.version, r.resource): r for r in BUILTIN_RESOURCES}
_BUILTIN_GROUP_RESOURCES = {(r.group, r.resource) for r in BUILTIN_RESOURCES}


def crd_resources(crd: dict[str, Any]) -> list[ResourceInfo]:
    """The served versions a (validated) CRD defines."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    plural = names.get("plural", "")
    if (group, plural) in _BUILTIN_GROUP_RESOURCES:
        return []  # a built-in always wins over a CRD of the same name
    versions = spec.get("versions") or []
    storage = next((v.get("name", "") for v in versions if v.get("storage")), "")
    out = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        out.append(
            ResourceInfo(
                group=group,
                version=version.get("name", ""),
                resource=plural,
                kind=names.get("kind", ""),
                namespaced=spec.get("scope") == "Namespaced",
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in subresources,
                generation=True,
                storage_version=storage,
                crd=True,
                crd_version=version,
            )
        )
    return out


class ResourceRegistry:
    """Per logical cluster: (group, version, resource) → ResourceInfo, CRDs included."""

    def __init__(self) -> None:
        self._crds: dict[str, dict[str, list[ResourceInfo]]] = {}  # cluster → CRD name → infos
        # Infos are immutable: clusters whose CRDs have the same spec (every consumer of one
        # APIExport gets the same CRD) share one list, by the digest of the spec's JSON, counted so it goes
        # with its last user. Thousands of workspaces then hold one parsed schema, not thousands.
        self._shared: dict[bytes, tuple[list[ResourceInfo], int]] = {}
        self._spec_of: dict[tuple[str, str], bytes] = {}  # (cluster, CRD name) → its spec's digest
        # Compiled schemas by the identity of the CRD version they came from (kept alive with it).
        self._schemas: dict[int, tuple[dict[str, Any], CRSchema]] = {}

    def schema_for(self, info: ResourceInfo) -> CRSchema:
        cached = self._schemas.get(id(info.crd_version))
        if cached is not None and cached[0] is info.crd_version:
            return cached[1]
        schema = CRSchema((info.crd_version.get("schema") or {}).get("openAPIV3Schema"))
        self._schemas[id(info.crd_version)] = (info.crd_version, schema)
        return schema

    def set_crd(self, cluster: str, name: str, crd: dict[str, Any] | None) -> None:
        per_cluster = self._crds.setdefault(cluster, {})
        self._release(cluster, name)
        if crd is None:
            per_cluster.pop(name, None)
        else:
            per_cluster[name] = self._acquire(cluster, name, crd)
        if not per_cluster:
            self._crds.pop(cluster, None)

    def drop_cluster(self, cluster: str) -> None:
        for name in list(self._crds.get(cluster, {})):
            self._release(cluster, name)
        self._crds.pop(cluster, None)

    def _acquire(self, cluster: str, name: str, crd: dict[str, Any]) -> list[ResourceInfo]:
        key = hashlib.sha256(orjson.dumps(crd.get("spec") or {}, option=orjson.OPT_SORT_KEYS)).digest()
        infos, users = self._shared.get(key, (None, 0))
        if infos is None:
            infos = crd_resources(crd)
        self._shared[key] = (infos, users + 1)
        self._spec_of[(cluster, name)] = key
        return infos

    def _release(self, cluster: str, name: str) -> None:
        key = self._spec_of.pop((cluster, name), None)
        if key is None:
            return
        infos, users = self._shared[key]
        if users > 1:
            self._shared[key] = (infos, users - 1)
            return
        del self._shared[key]
        for old in infos:
            self._schemas.pop(id(old.crd_version), None)

    def _custom(self, cluster: str | None) -> Iterable[ResourceInfo]:
        if cluster is None:
            seen: set[tuple[str, str, str]] = set()
            for per_cluster in self._crds.values():
                for infos in per_cluster.values():
                    for info in infos:
                        key = (info.group, info.version, info.resource)
                        if key not in seen:
                            seen.add(key)
                            yield info
            return
        for infos in self._crds.get(cluster, {}).values():
            yield from infos

    def resources(self, cluster: str | None) -> list[ResourceInfo]:
        """Everything served in `cluster` (None: in any cluster, for `/clusters/*`)."""
        return [*BUILTIN_RESOURCES, *self._custom(cluster)]

    def lookup(self, cluster: str | None, group: str, version: str, resource: str) -> ResourceInfo | None:
        builtin = _BUILTIN_BY_GVR.get((group, version, resource))
        if builtin is not None:
            return builtin
        for info in self._custom(cluster):
            if info.group == group and info.version == version and info.resource == resource:
                return info
        return None

    def crd_storage_keys(self, cluster: str, name: str) -> set[str]:
        return {info.storage_key for info in self._crds.get(cluster, {}).get(name, [])}
