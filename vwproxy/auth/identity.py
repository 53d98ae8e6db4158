"""Who is asking: the authenticated user, and the names Kubernetes and kcp give to groups and extras.

kcp scopes a ServiceAccount to the workspace it lives in through two extras on the user
(kcp-reference §7; kcp `pkg/authorization`): `authentication.kubernetes.io/cluster-name`
names the SA's logical cluster, and `authentication.kcp.io/scopes` = `cluster:<name>` limits
the user to that cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Groups every authenticated or anonymous caller gets (Kubernetes `user` package).
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS_NAME = "system:anonymous"
MASTERS = "system:masters"  # always allowed, kcp's default always-allow group
SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"  # user name: system:serviceaccount:<ns>:<name>

# Extras kcp reads (kcp `pkg/authorization`, k8s `authentication/serviceaccount`).
CLUSTER_NAME_EXTRA = "authentication.kubernetes.io/cluster-name"
SCOPES_EXTRA = "authentication.kcp.io/scopes"
SCOPE_CLUSTER_PREFIX = "cluster:"


@dataclass(frozen=True)
class User:
    """An authenticated (or anonymous) caller, as Kubernetes' `user.Info`.

    `cluster` is the logical cluster a ServiceAccount belongs to ("" for everyone else);
    `extra` carries it again under kcp's keys so authorizers read one place.
    """

    name: str
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uid: str = ""
    cluster: str = ""

    @property
    def is_service_account(self) -> bool:
        return self.name.startswith(SERVICE_ACCOUNT_PREFIX)

    @property
    def service_account_cluster(self) -> str:
        """The logical cluster of a ServiceAccount, from kcp's cluster-name extra; "" otherwise."""
        values = self.extra.get(CLUSTER_NAME_EXTRA, ())
        return values[0] if values and self.is_service_account else ""


ANONYMOUS = User(ANONYMOUS_NAME, (UNAUTHENTICATED,))


def service_account_user(cluster: str, namespace: str, name: str, uid: str) -> User:
    """The user a ServiceAccount token authenticates as, scoped to its workspace as kcp scopes it."""
    return User(
        name=f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
        groups=(SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}", AUTHENTICATED),
        extra={CLUSTER_NAME_EXTRA: (cluster,), SCOPES_EXTRA: (f"{SCOPE_CLUSTER_PREFIX}{cluster}",)},
        uid=uid,
        cluster=cluster,
    )


def in_scope(user: User, cluster: str) -> bool:
    """Whether `cluster` is inside the user's scopes (kcp: every scopes value is a comma list;
    several values intersect; no scopes extra means unscoped)."""
    values = user.extra.get(SCOPES_EXTRA)
    if values is None:
        return True
    for value in values:
        clusters = {part.strip()[len(SCOPE_CLUSTER_PREFIX):] for part in value.split(",")
                    if part.strip().startswith(SCOPE_CLUSTER_PREFIX)}
        if cluster not in clusters:
            return False
    return True


def out_of_scope_view(user: User) -> User:
    """What a user is outside its scopes: kcp falls back to `system:anonymous` with
    `system:authenticated` (docs, "Scopes")."""
    return User(ANONYMOUS_NAME, (AUTHENTICATED,))


# kcp records who created a Workspace in this annotation (JSON of an authentication/v1 UserInfo);
# the LogicalCluster copies it into `spec.createdBy`, and the creator is bound to cluster-admin.
OWNER_ANNOTATION = "experimental.tenancy.kcp.io/owner"

# Groups only the lifecycle VWs' content proxy may add (kcp's bootstrap prefixes); any a client
# brings are dropped at authentication, as kcp's front proxy drops them.
INITIALIZER_GROUP_PREFIX = "system:kcp:initializer:"
TERMINATOR_GROUP_PREFIX = "system:kcp:terminator:"


def owner_info(user: User) -> dict[str, object]:
    """The user as kcp's owner annotation and `LogicalCluster.spec.createdBy` carry it."""
    info: dict[str, object] = {"username": user.name}
    if user.uid:
        info["uid"] = user.uid
    if user.groups:
        info["groups"] = list(user.groups)
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra.items()}
    return info


def user_from_owner_info(info: Mapping[str, object]) -> User | None:
    """The user a `createdBy` names (None when it names nobody)."""
    name = info.get("username")
    if not isinstance(name, str) or not name:
        return None
    groups = info.get("groups")
    extra = info.get("extra")
    return User(
        name=name,
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        extra={str(k): tuple(str(x) for x in v) for k, v in extra.items() if isinstance(v, list)} if isinstance(extra, Mapping) else {},
        uid=str(info.get("uid") or ""),
    )


def without_lifecycle_groups(user: User) -> User:
    """The user without self-asserted initializer/terminator groups."""
    kept = tuple(g for g in user.groups if not g.startswith((INITIALIZER_GROUP_PREFIX, TERMINATOR_GROUP_PREFIX)))
    if kept == user.groups:
        return user
    return User(user.name, kept, user.extra, user.uid, user.cluster)
