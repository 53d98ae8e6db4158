"""The virtual-workspace URL grammar, parsed and built in one place (kcp-reference.md §1).

```
/services/apiexport/<export cluster>/<export name>/clusters/<* | cluster name>/<kube path>
/services/initializingworkspaces/<type cluster>:<type name>/clusters/<* | cluster name>/<kube path>
/services/terminatingworkspaces/<type cluster>:<type name>/clusters/<* | cluster name>/<kube path>
         └─ kind ──────────────┘ └─ owner ────────────────┘          └─ cluster ─────┘ └─ rest ──┘
```
The router parses request paths with `parse`; the reconcilers that publish URLs (endpoint
slices, `WorkspaceType.status.virtualWorkspaces`) build them with `apiexport_url` and
`lifecycle_url`, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from vwproxy.kube import errors
from vwproxy.kube.kcp import WILDCARD_CLUSTER, is_logical_cluster_name

SERVICES_PREFIX = "/services/"
APIEXPORT = "apiexport"
INITIALIZING = "initializingworkspaces"
TERMINATING = "terminatingworkspaces"
LIFECYCLE_KINDS = (INITIALIZING, TERMINATING)
# WorkspaceType.status.virtualWorkspaces[].type of each lifecycle kind.
LIFECYCLE_TYPE = {INITIALIZING: "initializing", TERMINATING: "terminating"}

_MISSING_CLUSTER = "this is a virtual workspace URL: append /clusters/* (every workspace) or /clusters/<logical cluster name> to it"


@dataclass(frozen=True)
class VWPath:
    """A request path inside a virtual workspace."""

    kind: str  # APIEXPORT, INITIALIZING or TERMINATING
    owner_cluster: str  # the export's (or the WorkspaceType's) logical cluster
    owner_name: str  # the export's (or the WorkspaceType's) name
    cluster: str  # WILDCARD_CLUSTER or a logical cluster name
    rest: str  # the Kubernetes path after /clusters/<cluster>, starting with "/"
    prefix: str  # everything before `rest`: what OpenAPI links are relative to

    @property
    def wildcard(self) -> bool:
        return self.cluster == WILDCARD_CLUSTER

    @property
    def owner(self) -> str:
        """`<cluster>:<name>`: an initializer's or terminator's name, or the export's reference."""
        return f"{self.owner_cluster}:{self.owner_name}"


def parse(path: str) -> VWPath:
    """A percent-decoded `/services/…` path; anything outside the grammar is a 404 Status."""
    if not path.startswith(SERVICES_PREFIX):
        raise errors.path_not_found()
    parts = path[len(SERVICES_PREFIX) :].split("/")
    kind = parts[0]
    if kind == APIEXPORT:
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise errors.path_not_found("an APIExport virtual workspace URL is /services/apiexport/<export logical cluster>/<export name>")
        owner_cluster, owner_name, tail = parts[1], parts[2], parts[3:]
        if not is_logical_cluster_name(owner_cluster):
            raise errors.path_not_found(f'"{owner_cluster}" is not a logical cluster name (the export\'s workspace is named by its logical cluster, not its path)')
    elif kind in LIFECYCLE_KINDS:
        owner_cluster, _, owner_name = parts[1].rpartition(":") if len(parts) > 1 else ("", "", "")
        if not owner_cluster or not owner_name or not is_logical_cluster_name(owner_cluster):
            raise errors.path_not_found(f"a {kind} virtual workspace URL is /services/{kind}/<WorkspaceType logical cluster>:<WorkspaceType name>")
        tail = parts[2:]
    else:
        raise errors.path_not_found()
    if len(tail) < 2 or tail[0] != "clusters" or not tail[1]:
        raise errors.path_not_found(_MISSING_CLUSTER)
    cluster = tail[1]
    if cluster != WILDCARD_CLUSTER and not is_logical_cluster_name(cluster):
        raise errors.path_not_found(f'"{cluster}" is not a logical cluster name; virtual workspaces address workspaces by name, not path')
    rest = "/" + "/".join(tail[2:])
    return VWPath(kind, owner_cluster, owner_name, cluster, rest, path[: len(path) - len(rest)] if rest != "/" else path.rstrip("/"))


def apiexport_url(base_url: str, export_cluster: str, export_name: str) -> str:
    """The endpoint-slice URL of an export's virtual workspace on the server at `base_url`."""
    return f"{base_url.rstrip('/')}{SERVICES_PREFIX}{APIEXPORT}/{export_cluster}/{export_name}"


def lifecycle_url(base_url: str, kind: str, type_cluster: str, type_name: str) -> str:
    """A WorkspaceType's initializing or terminating virtual-workspace URL."""
    return f"{base_url.rstrip('/')}{SERVICES_PREFIX}{kind}/{type_cluster}:{type_name}"
