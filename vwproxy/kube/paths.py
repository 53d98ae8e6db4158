"""The Kubernetes REST path grammar: what a request path names.

`parse_api_path` reads the part of a path after any `/clusters/<name>` prefix, the way
kube-apiserver's RequestInfoFactory does, including the legacy `/watch/` prefix and the
namespace subresources (`namespaces/<ns>/status`, `namespaces/<ns>/finalize`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vwproxy.kube import errors
from vwproxy.kube.kcp import WILDCARD_CLUSTER, is_logical_cluster_name, is_workspace_path

_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class DiscoveryPath:
    """A discovery or metadata endpoint: version, api, apis, a group, a group version, openapi."""

    what: str  # "version" | "api" | "apis" | "group" | "groupversion" | "openapi"
    group: str = ""
    version: str = ""
    rest: str = ""  # for openapi: what follows /openapi/


@dataclass(frozen=True)
class ResourcePath:
    """A request for a resource: collection, object or subresource."""

    group: str
    version: str
    resource: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    legacy_watch: bool = False  # came in through /…/watch/…

    @property
    def is_collection(self) -> bool:
        return not self.name


ApiPath = DiscoveryPath | ResourcePath


def split_cluster(path: str, allow_paths: bool = False) -> tuple[str, str]:
    """`/clusters/<name>/rest` → (`name`, `/rest`); bad or missing names are errors.

    With `allow_paths`, a workspace path (`root:org:ws`) is accepted too, as kcp's front proxy
    accepts it; the caller resolves it to a logical cluster name.
    """
    if not path.startswith("/clusters/"):
        raise errors.path_not_found()
    rest = path[len("/clusters/") :]
    cluster, slash, tail = rest.partition("/")
    if cluster != WILDCARD_CLUSTER and not is_logical_cluster_name(cluster):
        if not (allow_paths and is_workspace_path(cluster)):
            raise errors.path_not_found(f'"{cluster}" is not a logical cluster name')
    return cluster, slash + tail


def parse_api_path(path: str) -> ApiPath:
    """Parse `/api/…`, `/apis/…`, `/version`, `/openapi/…` (already percent-decoded)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise errors.path_not_found()
    head = parts[0]
    if head == "version" and len(parts) == 1:
        return DiscoveryPath("version")
    if head == "openapi":
        return DiscoveryPath("openapi", rest="/".join(parts[1:]))
    if head == "api":
        if len(parts) == 1:
            return DiscoveryPath("api")
        group, version, rest = "", parts[1], parts[2:]
        if not rest:
            return DiscoveryPath("groupversion", "", version)
    elif head == "apis":
        if len(parts) == 1:
            return DiscoveryPath("apis")
        if len(parts) == 2:
            return DiscoveryPath("group", parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return DiscoveryPath("groupversion", group, version)
    else:
        raise errors.path_not_found()
    return _parse_resource(group, version, rest)


def _parse_resource(group: str, version: str, rest: list[str]) -> ResourcePath:
    legacy_watch = False
    if rest[0] == "watch":
        legacy_watch = True
        rest = rest[1:]
        if not rest:
            raise errors.path_not_found()
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
        else:
            # The namespace object itself (or its status/finalize subresource).
            namespace = ""
            rest = ["namespaces", *rest[1:]]
    if len(rest) > 3:
        raise errors.path_not_found()
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    return ResourcePath(group, version, resource, namespace, name, subresource, legacy_watch)


_TRUE = frozenset({"true", "1", "t", "yes", "y", "on"})


def is_true(value: str | None) -> bool:
    """A query flag as Kubernetes reads it (`watch=True`, any case, counts)."""
    return (value or "").strip().lower() in _TRUE


def wants_watch(target: ResourcePath, params: Mapping[str, str]) -> bool:
    return target.legacy_watch or is_true(params.get("watch"))


def verb_of(method: str, target: ResourcePath, params: Mapping[str, str]) -> str:
    """The Kubernetes verb of a request (get, list, watch, create, update, patch, delete, deletecollection)."""
    if method in ("GET", "HEAD"):
        if wants_watch(target, params):
            return "watch"
        return "get" if target.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or ("delete" if target.name else "deletecollection")
