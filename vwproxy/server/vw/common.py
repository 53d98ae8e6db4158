"""What every virtual workspace does alike: resolving a request to one of its resources, the
wildcard rules, denials in kcp's words, stale-workspace warnings."""

from __future__ import annotations

from vwproxy.kube import errors
from vwproxy.kube.paths import ResourcePath
from vwproxy.kube.resources import ResourceInfo


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
