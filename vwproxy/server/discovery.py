"""Serving discovery documents and OpenAPI for a set of resources: the embedded shard's logical
clusters and every virtual workspace answer discovery the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.responses import Response

from vwproxy.kube import discovery, errors, openapi
from vwproxy.kube.paths import DiscoveryPath
from vwproxy.kube.resources import ResourceInfo
from vwproxy.server import http


def serve_discovery(target: DiscoveryPath, infos: list[ResourceInfo], prefix: str, group_order: Iterable[str] = ()) -> Response:
    """Discovery and OpenAPI of exactly `infos` (legacy, non-aggregated forms).

    A group-version with nothing served is a 404, as on kcp; `/api` lists `v1` only when
    something in core v1 is served (kcp lists it always, which makes `kubectl api-resources`
    through its virtual workspaces fail with "received empty response for: v1").
    """
    doc: dict[str, Any] | None
    if target.what == "version":
        doc = discovery.version_info()
    elif target.what == "api":
        doc = discovery.api_versions()
        if not any(i.group == "" for i in infos):
            doc["versions"] = []
    elif target.what == "apis":
        doc = discovery.api_group_list(infos, group_order)
    elif target.what == "group":
        doc = discovery.api_group(infos, target.group)
    elif target.what == "groupversion":
        doc = discovery.api_resource_list(infos, target.group, target.version)
    elif target.what == "openapi" and target.rest == "v3":
        doc = openapi.index(infos, prefix)
    elif target.what == "openapi" and target.rest.startswith("v3/"):
        parts = target.rest.split("/")[1:]
        if parts[:1] == ["api"] and len(parts) == 2:
            doc = openapi.group_version_document(infos, "", parts[1])
        elif parts[:1] == ["apis"] and len(parts) == 3:
            doc = openapi.group_version_document(infos, parts[1], parts[2])
        else:
            doc = None
    else:
        doc = None
    if doc is None:
        raise errors.path_not_found()
    return http.object_response(doc)
