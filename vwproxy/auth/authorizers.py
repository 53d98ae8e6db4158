"""kcp's authorizers as small functions, composed outermost-first.

An `Authorizer` takes (user, cluster, attributes) — `cluster` is the logical cluster the request
targets — and returns a Decision. Two combinators build chains:

- `first_opinion(a, b, ...)`: kube's union; the first allow or deny wins, no opinion falls through.
- `all_of(a, b, ...)`: kcp's delegation chain; each step must allow ("delegating ...") and the
  first deny or no opinion ends the chain with that answer.

The factories that need the request's virtual-workspace coordinates (export cluster and name,
WorkspaceType) take them as arguments and return an Authorizer; build them per request, they are
closures and cost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vwproxy.auth.decision import Attributes, Decision, allow, deny, no_opinion
from vwproxy.auth.identity import MASTERS, User, in_scope
from vwproxy.kube.errors import StatusError, forbidden

Authorizer = Callable[[User, str, Attributes], Decision]
# What an RBAC evaluator offers: RBACAuthorizer.authorize, or anything with its signature.
RBACCheck = Callable[[User, str, Attributes], Decision]

ALWAYS_ALLOWED_PATHS = ("/healthz", "/healthz/*", "/readyz", "/readyz/*", "/livez", "/livez/*")  # kcp-reference §7
BINDING_PREFIX = "apis.kcp.io:binding:"  # kcp's maximal permission policy prefix (§7.3)
LOGICAL_CLUSTER_ADMIN = "system:kcp:logical-cluster-admin"
ACCESS_DENIED = "access denied"  # the anonymised reason every denial carries on the wire (§7.4)
APIS_GROUP = "apis.kcp.io"
TENANCY_GROUP = "tenancy.kcp.io"

# Phases a LogicalCluster lets callers in (kcp: Scheduling is not yet accessible).
ACCESSIBLE_PHASES = frozenset({"Ready", "Initializing", "Terminating"})
# cluster -> its LogicalCluster phase, or None when the cluster does not exist.
PhaseLookup = Callable[[str], "str | None"]

log = logging.getLogger("vwproxy.auth")


def first_opinion(*authorizers: Authorizer) -> Authorizer:
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        reasons = []
        for authorizer in authorizers:
            decision = authorizer(user, cluster, attributes)
            if decision.allowed or decision.denied:
                return decision
            reasons.append(decision.reason)
        return no_opinion("; ".join(reasons) or "no authorizer had an opinion")
    return authorize


def all_of(*authorizers: Authorizer) -> Authorizer:
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        decision = no_opinion("empty chain")
        for authorizer in authorizers:
            decision = authorizer(user, cluster, attributes)
            if not decision.allowed:
                return decision
        return decision
    return authorize


def always_allow_paths(paths: Sequence[str] = ALWAYS_ALLOWED_PATHS) -> Authorizer:
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        if not attributes.is_resource_request:
            for pattern in paths:
                if attributes.path == pattern or (pattern.endswith("*") and attributes.path.startswith(pattern[:-1])):
                    return allow(f"always allowed path {attributes.path}")
        return no_opinion("not an always-allowed path")
    return authorize


def always_allow_groups(groups: Sequence[str] = (MASTERS,)) -> Authorizer:
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        for group in groups:
            if group in user.groups:
                return allow(f"user {user.name!r} is in always-allowed group {group}")
        return no_opinion("not in an always-allowed group")
    return authorize


def workspace_content(rbac: RBACCheck, phase: PhaseLookup | None = None) -> Authorizer:
    """May the user enter the target workspace at all (kcp's workspace content authorizer)?

    A ServiceAccount of another workspace is denied outright; one of this workspace is let in;
    anyone else needs the verb `access` on `/` there (`system:kcp:workspace:access`).
    """
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        if phase is not None:
            current = phase(cluster)
            if current is None and not (LOGICAL_CLUSTER_ADMIN in user.groups and in_scope(user, cluster)):
                return deny("LogicalCluster not found")
            if current is not None and current not in ACCESSIBLE_PHASES:
                return no_opinion(f"not permitted due to phase {current!r}")
        if LOGICAL_CLUSTER_ADMIN in user.groups and in_scope(user, cluster):
            return allow("delegating due to logical cluster admin access")
        home = user.service_account_cluster
        if home:
            if home != cluster:
                return deny("foreign service account")
            return allow("delegating due to local service account access")
        if not in_scope(user, cluster):
            return no_opinion("out of scope")
        if rbac(user, cluster, Attributes("access", path="/")).allowed:
            return allow("delegating due to user logical cluster access")
        return no_opinion("no verb=access permission on /")
    return authorize


def rbac_authorizer(rbac: RBACCheck) -> Authorizer:
    """The local + bootstrap RBAC policy as a chain step."""
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        return rbac(user, cluster, attributes)
    return authorize


def content_verb(attributes: Attributes) -> str:
    """The verb checked on apiexports/content: the request's own; discovery counts as `get`."""
    return attributes.verb if attributes.is_resource_request else "get"


def apiexport_content(rbac: RBACCheck, export_cluster: str, export_name: str) -> Authorizer:
    """APIExport VW: `apiexports/content` named after the export, with the request's verb, in the
    export's workspace (kcp-reference §7.2). Applies to every request, discovery included."""
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        check = Attributes(content_verb(attributes), APIS_GROUP, "apiexports", "content", export_name)
        if rbac(user, export_cluster, check).allowed:
            return allow(f"delegating due to {check.verb} on apiexports/content {export_cluster}/{export_name}")
        return deny(f"no {check.verb} permission on apiexports/content {export_cluster}/{export_name}")
    return authorize


def apiexport_bind(rbac: RBACCheck, user: User, export_cluster: str, export_name: str) -> Decision:
    """May `user` bind the export (verb `bind` on `apiexports/<name>` in the export's workspace)?
    Asked when an APIBinding referencing the export is created or changed."""
    check = Attributes("bind", APIS_GROUP, "apiexports", name=export_name)
    if rbac(user, export_cluster, check).allowed:
        return allow(f"bind on apiexport {export_cluster}/{export_name} allowed")
    return deny(f"no bind permission on apiexport {export_cluster}/{export_name}")


def binding_user(user: User) -> User:
    """The user as the maximal permission policy sees it: name and groups prefixed, no extras
    (its scopes belong to the consumer's workspace, not the export's)."""
    return User(BINDING_PREFIX + user.name, tuple(BINDING_PREFIX + group for group in user.groups))


@dataclass(frozen=True)
class ExportPolicy:
    """One APIExport with a given identity: where it lives and whether it sets
    `spec.maximalPermissionPolicy.local`."""

    cluster: str
    name: str
    local_policy: bool


def maximal_permission_policy(rbac: RBACCheck, exports: Sequence[ExportPolicy] | None) -> Authorizer:
    """kcp-reference §7.3. `exports` are the APIExports with the identity of the requested
    resource's claim; None when the resource is exported, unclaimed or claimed without identity
    (the step then passes). An identity no known export has is denied; otherwise every export
    with a local policy must allow the prefixed user in its own workspace."""
    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        if exports is None:
            return allow("delegating: no maximal permission policy applies")
        if not exports:
            return deny("no APIExport with the claimed identity")
        prefixed = binding_user(user)
        for export in exports:
            if export.local_policy and not rbac(prefixed, export.cluster, attributes).allowed:
                return deny(f"maximal permission policy of apiexport {export.cluster}/{export.name} does not allow it")
        return allow("delegating: within every maximal permission policy")
    return authorize


def lifecycle(rbac: RBACCheck, verb: str, type_cluster: str, type_name: str) -> Authorizer:
    """Initializing/terminating VWs: verb `initialize` or `terminate` on tenancy.kcp.io
    `workspacetypes` named `type_name`, in the WorkspaceType's workspace (§7.5)."""
    if verb not in ("initialize", "terminate"):
        raise ValueError(f"lifecycle verb must be initialize or terminate, not {verb!r}")

    def authorize(user: User, cluster: str, attributes: Attributes) -> Decision:
        check = Attributes(verb, TENANCY_GROUP, "workspacetypes", name=type_name)
        if rbac(user, type_cluster, check).allowed:
            return allow(f"{verb} on workspacetype {type_cluster}/{type_name} allowed")
        return deny(f"no {verb} permission on workspacetype {type_cluster}/{type_name}")
    return authorize


def workspace_chain(rbac: RBACCheck, phase: PhaseLookup | None = None) -> Authorizer:
    """The chain for a request into a workspace (the shard's /clusters/<name>/ and the front's
    control-plane objects): health paths and system:masters, else access + RBAC."""
    return first_opinion(
        always_allow_paths(), always_allow_groups(),
        all_of(workspace_content(rbac, phase), rbac_authorizer(rbac)),
    )


def forbidden_message(user: User, attributes: Attributes) -> str:
    """kube's forbiddenMessage, with kcp's anonymised reason."""
    if not attributes.is_resource_request:
        return f'User "{user.name}" cannot {attributes.verb} path "{attributes.path}": {ACCESS_DENIED}'
    resource = f"{attributes.resource}/{attributes.subresource}" if attributes.subresource else attributes.resource
    where = f'in the namespace "{attributes.namespace}"' if attributes.namespace else "at the cluster scope"
    return (f'User "{user.name}" cannot {attributes.verb} resource "{resource}" '
            f'in API group "{attributes.api_group}" {where}: {ACCESS_DENIED}')


def forbidden_error(user: User, cluster: str, attributes: Attributes, decision: Decision) -> StatusError:
    """The 403 `Status` for a refused request. The decision's reason is logged here and never
    leaves the process (kcp-reference §7.4)."""
    log.info("forbidden: user=%r groups=%r cluster=%s attributes=%s reason=%s",
             user.name, user.groups, cluster, attributes, decision.reason)
    message = forbidden_message(user, attributes)
    if not attributes.is_resource_request:
        return forbidden(f"forbidden: {message}")
    qualified = f"{attributes.resource}.{attributes.api_group}" if attributes.api_group else attributes.resource
    subject = f'{qualified} "{attributes.name}"' if attributes.name else qualified
    return forbidden(f"{subject} is forbidden: {message}", resource=attributes.resource,
                     group=attributes.api_group, name=attributes.name)


def checked(authorizer: Authorizer, user: User, cluster: str, attributes: Attributes) -> None:
    """Run `authorizer`; raise the 403 unless it allows. The one call a handler makes."""
    decision = authorizer(user, cluster, attributes)
    if not decision.allowed:
        raise forbidden_error(user, cluster, attributes, decision)

