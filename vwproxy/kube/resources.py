"""What a served resource is: group, version, kind, scope, subresources; and the built-in table.

A `ResourceInfo` is one resource in one version, as a discovery document lists it. Several
versions of a resource share one `storage_key`, so they read and write the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS: tuple[str, ...] = ("get", "patch", "update")


@dataclass(frozen=True)
class ResourceInfo:
    """One served resource in one version."""

    group: str
    version: str
    resource: str  # plural, lowercase
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # serves the /status subresource; main writes then ignore .status
    generation: bool = False  # metadata.generation is kept and bumped on spec changes
    storage_version: str = ""  # the version objects are stored in ("" = this one)
    storage_group: str | None = None  # shared storage across groups (core and events.k8s.io events)
    verbs: tuple[str, ...] = ALL_VERBS
    status_verbs: tuple[str, ...] = STATUS_VERBS  # what discovery lists for the /status subresource
    crd: bool = False
    # For custom resources: the CRD's version entry (schema, printer columns) and its names.
    crd_version: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> str:
        group = self.group if self.storage_group is None else self.storage_group
        return f"{group}/{self.resource}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def stored_in(self) -> str:
        return self.storage_version or self.version

    @property
    def group_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def with_singular(self) -> str:
        return self.singular or self.kind.lower()


def _r(
    group: str,
    versions: tuple[str, ...],
    resource: str,
    kind: str,
    *,
    namespaced: bool,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = False,
    generation: bool = False,
    storage_group: str | None = None,
) -> list[ResourceInfo]:
    storage = versions[-1]
    return [
        ResourceInfo(
            group=group,
            version=v,
            resource=resource,
            kind=kind,
            namespaced=namespaced,
            singular=kind.lower(),
            short_names=short,
            categories=categories,
            status=status,
            generation=generation,
            storage_version=storage,
            storage_group=storage_group,
        )
        for v in versions
    ]


RBAC = "rbac.authorization.k8s.io"

BUILTIN_RESOURCES: tuple[ResourceInfo, ...] = tuple(
    _r("", ("v1",), "namespaces", "Namespace", namespaced=False, short=("ns",), status=True)
    + _r("", ("v1",), "configmaps", "ConfigMap", namespaced=True, short=("cm",))
    + _r("", ("v1",), "secrets", "Secret", namespaced=True)
    + _r("", ("v1",), "serviceaccounts", "ServiceAccount", namespaced=True, short=("sa",))
    + _r("", ("v1",), "events", "Event", namespaced=True, short=("ev",))
    + _r("events.k8s.io", ("v1",), "events", "Event", namespaced=True, short=("ev",), storage_group="")
    + _r(RBAC, ("v1",), "roles", "Role", namespaced=True)
    + _r(RBAC, ("v1",), "rolebindings", "RoleBinding", namespaced=True)
    + _r(RBAC, ("v1",), "clusterroles", "ClusterRole", namespaced=False)
    + _r(RBAC, ("v1",), "clusterrolebindings", "ClusterRoleBinding", namespaced=False)
    + _r(
        "apiextensions.k8s.io",
        ("v1",),
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        categories=("api-extensions",),
        status=True,
        generation=True,
    )
    + _r("apis.kcp.io", ("v1alpha1", "v1alpha2"), "apiexports", "APIExport", namespaced=False, categories=("kcp",), status=True, generation=True)
    + _r("apis.kcp.io", ("v1alpha1",), "apiexportendpointslices", "APIExportEndpointSlice", namespaced=False, categories=("kcp",), status=True, generation=True)
    + _r("apis.kcp.io", ("v1alpha1",), "apiresourceschemas", "APIResourceSchema", namespaced=False, categories=("kcp",), generation=True)
    + _r("apis.kcp.io", ("v1alpha1", "v1alpha2"), "apibindings", "APIBinding", namespaced=False, categories=("kcp",), status=True, generation=True)
    + _r("core.kcp.io", ("v1alpha1",), "logicalclusters", "LogicalCluster", namespaced=False, categories=("kcp",), status=True, generation=True)
    + _r("core.kcp.io", ("v1alpha1",), "shards", "Shard", namespaced=False, categories=("kcp",), status=True, generation=True)
    + _r("tenancy.kcp.io", ("v1alpha1",), "workspaces", "Workspace", namespaced=False, short=("ws",), categories=("kcp",), status=True, generation=True)
    + _r("tenancy.kcp.io", ("v1alpha1",), "workspacetypes", "WorkspaceType", namespaced=False, categories=("kcp",), status=True, generation=True)
)

# Group versions in the order discovery lists them (core first, then as Kubernetes orders groups).
BUILTIN_GROUP_ORDER: tuple[str, ...] = (
    "",
    "events.k8s.io",
    RBAC,
    "apiextensions.k8s.io",
    "apis.kcp.io",
    "core.kcp.io",
    "tenancy.kcp.io",
)
