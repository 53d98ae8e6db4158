"""Admission of writes to the embedded shard, on the object as it will be stored, for requests the
guard let in (the user rides in the ASGI scope; the control plane's own writes carry none):

- Roles, ClusterRoles and their bindings: Kubernetes' escalation prevention (`auth.escalation`);
- Workspaces: kcp's owner annotation records who created one (a client's own value is replaced,
  and kept as it was on later writes by anyone but `system:masters`); the control plane copies it
  into the LogicalCluster's `spec.createdBy` and binds the creator to cluster-admin there.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Scope

from vwproxy.auth.escalation import RBAC_GROUP, RulesSource, check_rbac_write
from vwproxy.auth.identity import INITIALIZER_GROUP_PREFIX, MASTERS, OWNER_ANNOTATION, TERMINATOR_GROUP_PREFIX, User, owner_info
from vwproxy.kube.resources import ResourceInfo
from vwproxy.server.guard import user_of


class Admission:
    def __init__(self, rbac: RulesSource) -> None:
        self.rbac = rbac

    def __call__(self, scope: Scope, info: ResourceInfo, cluster: str, namespace: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        user = user_of(scope)
        if user is None:
            return
        if info.group == RBAC_GROUP and not any(g.startswith((INITIALIZER_GROUP_PREFIX, TERMINATOR_GROUP_PREFIX)) for g in user.groups):
            # (A lifecycle VW's synthetic group marks a request already held to its WorkspaceType's
            # rules; kcp's authorizer lets it do whatever those rules allowed, RBAC included.)
            md = obj.setdefault("metadata", {})
            if namespace and isinstance(md, dict):
                md.setdefault("namespace", namespace)
            check_rbac_write(self.rbac, user, cluster, info.resource, obj)
        elif (info.group, info.resource) == ("tenancy.kcp.io", "workspaces"):
            _record_owner(user, obj, old)


def _record_owner(user: User, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    md = obj.setdefault("metadata", {})
    annotations = md.get("annotations")
    if not isinstance(annotations, dict):
        annotations = md["annotations"] = {}
    privileged = MASTERS in user.groups
    if old is None:
        if not privileged or not annotations.get(OWNER_ANNOTATION):
            # An admin may name someone else; everyone else is recorded as themselves.
            annotations[OWNER_ANNOTATION] = orjson.dumps(owner_info(user)).decode()
        return
    if privileged:
        return
    previous = ((old.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)
    if previous is None:
        annotations.pop(OWNER_ANNOTATION, None)
    else:
        annotations[OWNER_ANNOTATION] = previous
