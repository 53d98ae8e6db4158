"""What every virtual workspace serves alike: discovery and OpenAPI of its resources, resolving a
request to one of them, the wildcard rules, denials in kcp's words, stale-workspace warnings."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from vwproxy.kube import discovery, errors, openapi
from vwproxy.kube.paths import DiscoveryPath, ResourcePath
from vwproxy.kube.resources import ResourceInfo
from vwproxy.server import http


def serve_discovery(target: DiscoveryPath, infos: list[ResourceInfo], prefix: str) -> Response:
    """Discovery of exactly `infos`, the same under `*` and a cluster name (kcp-reference.md §2).

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
        doc = discovery.api_group_list(infos)
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


def resolve_resource(infos: list[ResourceInfo], target: ResourcePath) -> ResourceInfo:
    """The served resource a path names, with its scope and subresource checked; else 404."""
    info = next((i for i in infos if (i.group, i.version, i.resource) == (target.group, target.version, target.resource)), None)
    if info is None:
        raise errors.path_not_found()
    if target.subresource and not (target.subresource == "status" and info.status):
        raise errors.path_not_found()
    if target.namespace and not info.namespaced:
        raise errors.path_not_found()
    return info


def check_wildcard(verb: str, info: ResourceInfo, target: ResourcePath) -> None:
    """`/clusters/*` serves only cross-namespace list and watch (kcp-reference.md §1.2)."""
    if verb not in ("list", "watch"):
        raise errors.method_not_allowed(verb, info.resource, info.group, "in the `*` logical cluster")
    if target.namespace:
        raise errors.bad_request(f"cross-cluster LIST and WATCH are required to be cross-namespace, not scoped to namespace {target.namespace}")


def denied(verb: str, info: ResourceInfo, user: str, namespace: str) -> errors.StatusError:
    """kcp's anonymised 403: the reason stays in the log, the wire says "access denied"."""
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return errors.forbidden(
        f'{info.group_resource} is forbidden: User "{user}" cannot {verb} resource "{info.resource}" in API group "{info.group}" {scope}: access denied',
        info.resource, info.group,
    )


def warning_headers(warnings: list[str]) -> dict[str, str] | None:
    """Kubernetes `Warning` headers (RFC 7234 code 299)."""
    if not warnings:
        return None
    return {"Warning": ", ".join('299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in warnings)}
