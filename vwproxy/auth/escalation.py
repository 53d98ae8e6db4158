"""RBAC escalation prevention, as Kubernetes' RBAC storage enforces it (and kcp with it).

Writing a Role or ClusterRole is allowed when the writer already holds every permission it grants,
or has the verb `escalate` on it. Writing a RoleBinding or ClusterRoleBinding is allowed when the
writer holds every permission of the role it references, or has the verb `bind` on that role.
`system:masters` is exempt. A refusal is a 403 whose message lists the permissions not held, in
Kubernetes' words:

    clusterroles.rbac.authorization.k8s.io "x" is forbidden: user "u" (groups=["a" "b"]) is
    attempting to grant RBAC permissions not currently held:
    {APIGroups:[""], Resources:["secrets"], Verbs:["get"]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vwproxy.auth.decision import Attributes, Decision
from vwproxy.auth.identity import MASTERS, User
from vwproxy.auth.rbac import Rule
from vwproxy.kube.errors import StatusError, forbidden

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLE_RESOURCES = frozenset({"roles", "clusterroles"})
BINDING_RESOURCES = frozenset({"rolebindings", "clusterrolebindings"})
FULL_AUTHORITY = (Rule(frozenset({"*"}), frozenset({"*"}), frozenset({"*"}), frozenset(), ()),
                  Rule(frozenset({"*"}), frozenset(), frozenset(), frozenset(), ("*",)))


class RulesSource(Protocol):
    """What the checks need from the RBAC evaluator (RBACAuthorizer offers all three)."""

    def authorize(self, user: User, cluster: str, attributes: Attributes) -> Decision: ...

    def rules_for(self, user: User, cluster: str, namespace: str) -> tuple[Rule, ...]: ...

    def role_rules(self, cluster: str, kind: str, name: str, namespace: str) -> tuple[Rule, ...] | None: ...


# -- covering, as k8s.io/component-helpers/auth/rbac/validation --------------------------------------

def _atoms(rule: Rule) -> list[Rule]:
    """A rule split into one rule per verb and group/resource/name (or per verb and URL)."""
    atoms: list[Rule] = []
    if rule.resources:
        names: Sequence[str] = sorted(rule.resource_names) or [""]
        for group in sorted(rule.api_groups):
            for resource in sorted(rule.resources):
                for verb in sorted(rule.verbs):
                    for name in names:
                        atoms.append(Rule(frozenset({verb}), frozenset({group}), frozenset({resource}),
                                          frozenset({name}) if name else frozenset(), ()))
    for url in rule.non_resource_urls:
        for verb in sorted(rule.verbs):
            atoms.append(Rule(frozenset({verb}), frozenset(), frozenset(), frozenset(), (url,)))
    return atoms


def _resources_cover(owned: frozenset[str], wanted: frozenset[str]) -> bool:
    if "*" in owned:
        return True
    for resource in wanted:
        if resource in owned:
            continue
        if "/" not in resource or f"*/{resource.split('/', 1)[1]}" not in owned:
            return False
    return True


def _url_covers(owned: str, wanted: str) -> bool:
    return owned == wanted or (owned.endswith("*") and wanted.startswith(owned.rstrip("*")))


def _rule_covers(owner: Rule, wanted: Rule) -> bool:
    verbs = "*" in owner.verbs or wanted.verbs <= owner.verbs
    groups = "*" in owner.api_groups or wanted.api_groups <= owner.api_groups
    urls = all(any(_url_covers(o, w) for o in owner.non_resource_urls) for w in wanted.non_resource_urls)
    if wanted.resource_names:
        names = not owner.resource_names or wanted.resource_names <= owner.resource_names
    else:
        names = not owner.resource_names
    return verbs and groups and _resources_cover(owner.resources, wanted.resources) and names and urls


def uncovered(owned: Sequence[Rule], wanted: Sequence[Rule]) -> list[Rule]:
    """The pieces of `wanted` that no rule of `owned` covers (Kubernetes' Covers)."""
    return [atom for rule in wanted for atom in _atoms(rule) if not any(_rule_covers(o, atom) for o in owned)]


def _quoted(values: Sequence[str]) -> str:
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def compact_string(rule: Rule) -> str:
    """A rule as Kubernetes prints it in escalation errors (rbacv1helpers.CompactString)."""
    parts = []
    if rule.api_groups:
        parts.append(f"APIGroups:{_quoted(sorted(rule.api_groups))}")
    if rule.resources:
        parts.append(f"Resources:{_quoted(sorted(rule.resources))}")
    if rule.non_resource_urls:
        parts.append(f"NonResourceURLs:{_quoted(list(rule.non_resource_urls))}")
    if rule.resource_names:
        parts.append(f"ResourceNames:{_quoted(sorted(rule.resource_names))}")
    if rule.verbs:
        parts.append(f"Verbs:{_quoted(sorted(rule.verbs))}")
    return "{" + ", ".join(parts) + "}"


def _compacted(rules: Sequence[Rule]) -> list[Rule]:
    """Atoms differing only by verb merged into one rule, sorted, as Kubernetes reports them."""
    merged: dict[tuple[Any, ...], set[str]] = {}
    for rule in rules:
        key = (tuple(sorted(rule.api_groups)), tuple(sorted(rule.resources)), tuple(sorted(rule.resource_names)), rule.non_resource_urls)
        merged.setdefault(key, set()).update(rule.verbs)
    out = [Rule(frozenset(verbs), frozenset(k[0]), frozenset(k[1]), frozenset(k[2]), k[3]) for k, verbs in merged.items()]
    return sorted(out, key=compact_string)


def escalation_message(user: User, missing: Sequence[Rule]) -> str:
    listed = "\n".join(compact_string(r) for r in _compacted(missing))
    return (f'user "{user.name}" (groups={_quoted(list(user.groups))}) is attempting to grant RBAC permissions '
            f"not currently held:\n{listed}")


# -- the checks on a write --------------------------------------------------------------------------

def _refused(resource: str, name: str, message: str) -> StatusError:
    return forbidden(f'{resource}.{RBAC_GROUP} "{name}" is forbidden: {message}', resource, RBAC_GROUP, name)


def _rules_of(obj: Mapping[str, Any]) -> list[Rule]:
    return [Rule.from_dict(r) for r in obj.get("rules") or () if isinstance(r, Mapping)]


def check_rbac_write(rbac: RulesSource, user: User, cluster: str, resource: str, obj: Mapping[str, Any]) -> None:
    """Raise the 403 when writing `obj` (a Role, ClusterRole or binding, as it will be stored) would
    give out permissions the writer lacks. Other resources pass untouched."""
    if resource not in ROLE_RESOURCES | BINDING_RESOURCES or MASTERS in user.groups:
        return
    md = obj.get("metadata") or {}
    name = str(md.get("name") or "")
    namespace = str(md.get("namespace") or "") if resource in ("roles", "rolebindings") else ""
    if resource in ROLE_RESOURCES:
        if rbac.authorize(user, cluster, Attributes("escalate", RBAC_GROUP, resource, name=name, namespace=namespace)).allowed:
            return
        missing = uncovered(rbac.rules_for(user, cluster, namespace), _rules_of(obj))
        if missing:
            raise _refused(resource, name, escalation_message(user, missing))
        aggregation = obj.get("aggregationRule") if resource == "clusterroles" else None
        if isinstance(aggregation, Mapping) and aggregation.get("clusterRoleSelectors") and uncovered(rbac.rules_for(user, cluster, ""), FULL_AUTHORITY):
            # What an aggregated role grants is whatever its selectors pick up, now or later.
            raise _refused(resource, name, "must have cluster-admin privileges to use the aggregationRule")
        return
    ref = obj.get("roleRef") or {}
    kind, role = str(ref.get("kind") or ""), str(ref.get("name") or "")
    role_resource = "clusterroles" if kind == "ClusterRole" else "roles"
    if rbac.authorize(user, cluster, Attributes("bind", RBAC_GROUP, role_resource, name=role, namespace=namespace)).allowed:
        return
    rules = rbac.role_rules(cluster, kind, role, namespace)
    if rules is None:
        raise _refused(resource, name, f'{role_resource}.{RBAC_GROUP} "{role}" not found')
    missing = uncovered(rbac.rules_for(user, cluster, namespace), rules)
    if missing:
        raise _refused(resource, name, escalation_message(user, missing))
