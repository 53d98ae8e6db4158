"""Discovery documents (the legacy, non-aggregated forms) built from `ResourceInfo`s."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

from vwproxy.kube.resources import ResourceInfo
from vwproxy.kube.versions import by_priority

# The Kubernetes version this server reports; kubectl warns when it is skewed by more than one.
KUBE_MAJOR = "1"
KUBE_MINOR = "33"
GIT_VERSION = "v1.33.0+vwproxy"


def version_info() -> dict[str, str]:
    return {
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "python",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


def storage_version_hash(group: str, version: str, kind: str) -> str:
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _group_versions(resources: Iterable[ResourceInfo]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = {}
    for info in resources:
        found.setdefault(info.group, set()).add(info.version)
    return {group: by_priority(list(versions)) for group, versions in found.items()}


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(resources: Iterable[ResourceInfo], group_order: Iterable[str] = ()) -> dict[str, Any]:
    groups = _group_versions(resources)
    groups.pop("", None)
    order = [g for g in group_order if g in groups]
    order += sorted(g for g in groups if g not in order)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_doc(g, groups[g]) for g in order]}


def api_group(resources: Iterable[ResourceInfo], group: str) -> dict[str, Any] | None:
    versions = _group_versions(r for r in resources if r.group == group).get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def api_resource_list(resources: Iterable[ResourceInfo], group: str, version: str) -> dict[str, Any] | None:
    chosen = sorted((r for r in resources if r.group == group and r.version == version), key=lambda r: r.resource)
    if not chosen:
        return None
    entries: list[dict[str, Any]] = []
    for info in chosen:
        entry: dict[str, Any] = {
            "name": info.resource,
            "singularName": info.singular or info.kind.lower(),
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": sorted(info.verbs),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        entry["storageVersionHash"] = storage_version_hash(info.group, info.stored_in, info.kind)
        entries.append(entry)
        if info.status:
            entries.append(
                {
                    "name": f"{info.resource}/status",
                    "singularName": "",
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": sorted(info.status_verbs),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def aggregated_content_type(version: str) -> str:
    return f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"


def _discovery_resource(info: ResourceInfo) -> dict[str, Any]:
    kind = {"group": info.group, "version": info.version, "kind": info.kind}
    entry: dict[str, Any] = {
        "resource": info.resource,
        "responseKind": kind,
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular or info.kind.lower(),
        "verbs": sorted(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    if info.status:
        entry["subresources"] = [{"subresource": "status", "responseKind": kind, "verbs": sorted(info.status_verbs)}]
    return entry


def aggregated(resources: Iterable[ResourceInfo], legacy: bool, api_version: str, group_order: Iterable[str] = ()) -> dict[str, Any]:
    """`apidiscovery.k8s.io` APIGroupDiscoveryList: `/api` (legacy=True, the core group) or `/apis`."""
    infos = [r for r in resources if (r.group == "") == legacy]
    versions = _group_versions(infos)
    order = [g for g in group_order if g in versions]
    order += sorted(g for g in versions if g not in order)
    items = []
    for group in order:
        entries = []
        for version in versions[group]:
            chosen = sorted((r for r in infos if r.group == group and r.version == version), key=lambda r: r.resource)
            entries.append({"version": version, "resources": [_discovery_resource(r) for r in chosen], "freshness": "Current"})
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": entries})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
