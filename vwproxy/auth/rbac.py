"""An RBAC evaluator with Kubernetes' semantics, per logical cluster (kcp's local policy
authorizer plus its bootstrap policy authorizer).

The objects of a cluster come from an injected source (the control plane's Role, ClusterRole,
RoleBinding and ClusterRoleBinding dicts of that cluster); the bootstrap policy applies in every
cluster, and a local binding may refer to a bootstrap ClusterRole. Aggregated ClusterRoles are
resolved at evaluation time from their `aggregationRule.clusterRoleSelectors`.

RBAC only ever allows or has no opinion; it never denies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from vwproxy.auth.decision import Attributes, Decision, allow, no_opinion
from vwproxy.auth.identity import (
    MASTERS,
    SERVICE_ACCOUNT_PREFIX,
    User,
    in_scope,
    out_of_scope_view,
)
from vwproxy.kube.selectors import LabelSelector

DECISION_CACHE_TTL_SECONDS = 5.0  # kcp caches lifecycle-VW denials 5 s; a bumped generation wins sooner
DECISION_CACHE_SIZE = 16384  # (user, cluster, request) triples kept
COMPILED_CLUSTERS = 1024  # clusters whose indexed policy is kept between generations

# cluster -> its Role, ClusterRole, RoleBinding and ClusterRoleBinding objects (each with `kind`).
RBACSource = Callable[[str], Iterable[Mapping[str, Any]]]

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


@dataclass(frozen=True)
class Rule:
    """One PolicyRule, normalised."""

    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str]
    non_resource_urls: tuple[str, ...]

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            frozenset(rule.get("verbs") or ()),
            frozenset(rule.get("apiGroups") or ()),
            frozenset(rule.get("resources") or ()),
            frozenset(rule.get("resourceNames") or ()),
            tuple(rule.get("nonResourceURLs") or ()),
        )

    def allows(self, attributes: Attributes) -> bool:
        if not ("*" in self.verbs or attributes.verb in self.verbs):
            return False
        if not attributes.is_resource_request:
            return _path_matches(self.non_resource_urls, attributes.path)
        return (
            ("*" in self.api_groups or attributes.api_group in self.api_groups)
            and _resource_matches(self.resources, attributes.resource, attributes.subresource)
            and (not self.resource_names or attributes.name in self.resource_names)
        )


def _resource_matches(rule_resources: frozenset[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    if "*" in rule_resources or combined in rule_resources:
        return True
    return bool(subresource) and f"*/{subresource}" in rule_resources


def _path_matches(urls: Sequence[str], path: str) -> bool:
    for url in urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


@dataclass(frozen=True)
class Subject:
    kind: str  # User, Group, ServiceAccount
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class Binding:
    """A RoleBinding (namespace set) or ClusterRoleBinding (namespace "")."""

    kind: str
    name: str
    namespace: str
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]
    cluster: str  # where the binding lives; "" for the bootstrap policy

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], cluster: str) -> Binding:
        meta = obj.get("metadata") or {}
        ref = obj.get("roleRef") or {}
        namespace = str(meta.get("namespace") or "") if obj.get("kind") == "RoleBinding" else ""
        subjects = tuple(
            Subject(str(s.get("kind", "")), str(s.get("name", "")), str(s.get("namespace") or namespace))
            for s in obj.get("subjects") or ()
        )
        return cls(str(obj.get("kind")), str(meta.get("name", "")), namespace,
                   str(ref.get("kind", "")), str(ref.get("name", "")), subjects, cluster)

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f'{self.kind} "{where}{self.name}" of {self.role_kind} "{self.role_name}"'


@dataclass(frozen=True)
class RoleObject:
    kind: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    rules: tuple[Rule, ...]
    aggregation: tuple[LabelSelector, ...] | None  # ClusterRole.aggregationRule.clusterRoleSelectors

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> RoleObject:
        meta = obj.get("metadata") or {}
        aggregation_rule = obj.get("aggregationRule")
        aggregation = None
        if obj.get("kind") == "ClusterRole" and isinstance(aggregation_rule, Mapping):
            aggregation = tuple(LabelSelector.from_dict(s) for s in aggregation_rule.get("clusterRoleSelectors") or ())
        return cls(str(obj.get("kind")), str(meta.get("name", "")), str(meta.get("namespace") or ""),
                   dict(meta.get("labels") or {}), tuple(Rule.from_dict(r) for r in obj.get("rules") or ()), aggregation)


@dataclass
class Policy:
    """The RBAC objects of one cluster (or of the bootstrap policy), indexed."""

    cluster_roles: dict[str, RoleObject] = field(default_factory=dict)
    roles: dict[tuple[str, str], RoleObject] = field(default_factory=dict)
    cluster_role_bindings: list[Binding] = field(default_factory=list)
    role_bindings: dict[str, list[Binding]] = field(default_factory=dict)  # by namespace

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]], cluster: str = "") -> Policy:
        policy = cls()
        for obj in objects:
            kind = obj.get("kind")
            if kind == "ClusterRole":
                role = RoleObject.from_dict(obj)
                policy.cluster_roles[role.name] = role
            elif kind == "Role":
                role = RoleObject.from_dict(obj)
                policy.roles[(role.namespace, role.name)] = role
            elif kind == "ClusterRoleBinding":
                policy.cluster_role_bindings.append(Binding.from_dict(obj, cluster))
            elif kind == "RoleBinding":
                binding = Binding.from_dict(obj, cluster)
                policy.role_bindings.setdefault(binding.namespace, []).append(binding)
        return policy


class _Compiled:
    """A cluster's policy joined with the bootstrap one, with aggregated rules resolved once."""

    def __init__(self, local: Policy, bootstrap: Policy) -> None:
        self.local, self.bootstrap = local, bootstrap
        self._cluster_rules: dict[tuple[bool, str], tuple[Rule, ...]] = {}
        # Bindings by the subject names they mention, so a request looks only at bindings that
        # could apply to its user instead of scanning the whole cluster's RBAC.
        self.cluster_bindings: dict[str, list[tuple[Binding, bool]]] = {}
        self.namespace_bindings: dict[tuple[str, str], list[tuple[Binding, bool]]] = {}
        for binding, local_binding in [*((b, False) for b in bootstrap.cluster_role_bindings),
                                       *((b, True) for b in local.cluster_role_bindings)]:
            for key in {_subject_key(s) for s in binding.subjects}:
                self.cluster_bindings.setdefault(key, []).append((binding, local_binding))
        for namespace, bindings in local.role_bindings.items():
            for binding in bindings:
                for key in {_subject_key(s) for s in binding.subjects}:
                    self.namespace_bindings.setdefault((namespace, key), []).append((binding, True))

    def cluster_role_rules(self, name: str, local_first: bool) -> tuple[Rule, ...] | None:
        """Rules of a ClusterRole; a local binding sees local roles first, then bootstrap ones."""
        key = (local_first, name)
        if key not in self._cluster_rules:
            pools = (self.local.cluster_roles, self.bootstrap.cluster_roles) if local_first else (self.bootstrap.cluster_roles,)
            role = next((pool[name] for pool in pools if name in pool), None)
            if role is None:
                return None
            self._cluster_rules[key] = self._resolve(role, pools, set())
        return self._cluster_rules[key]

    def _resolve(self, role: RoleObject, pools: Sequence[Mapping[str, RoleObject]], seen: set[str]) -> tuple[Rule, ...]:
        if role.aggregation is None:
            return role.rules
        seen = seen | {role.name}
        rules: list[Rule] = list(role.rules)
        names: set[str] = set()
        for pool in pools:
            for candidate in pool.values():
                if candidate.name in seen or candidate.name in names:
                    continue
                if any(selector.matches(candidate.labels) for selector in role.aggregation):
                    names.add(candidate.name)
                    rules.extend(self._resolve(candidate, pools, seen))
        return tuple(rules)


def _subject_key(subject: Subject) -> str:
    """The user name or group a subject names (a ServiceAccount by its user name)."""
    if subject.kind == "ServiceAccount":
        return f"{SERVICE_ACCOUNT_PREFIX}{subject.namespace}:{subject.name}"
    return f"{subject.kind}:{subject.name}" if subject.kind == "Group" else subject.name


def _user_keys(user: User) -> list[str]:
    return [user.name, *(f"Group:{group}" for group in user.groups)]


def subject_matches(subject: Subject, user: User, binding_cluster: str, cluster: str) -> bool:
    """Kubernetes' appliesTo, with kcp's rule that a ServiceAccount only matches in its own workspace
    (otherwise equal names in two workspaces would share permissions)."""
    home = user.service_account_cluster
    foreign = bool(home) and home != (binding_cluster or cluster)
    if subject.kind == "User":
        return subject.name == user.name and not foreign
    if subject.kind == "Group":
        return subject.name in user.groups
    if subject.kind == "ServiceAccount":
        return user.name == f"{SERVICE_ACCOUNT_PREFIX}{subject.namespace}:{subject.name}" and not foreign
    return False


class RBACAuthorizer:
    """`authorize(user, cluster, attributes)` over the cluster's RBAC and the bootstrap policy.

    Decisions (and each cluster's indexed policy) are cached for DECISION_CACHE_TTL_SECONDS under
    the current generation; whoever writes RBAC objects calls `invalidate()` so the next request
    sees the change at once rather than within the TTL.
    """

    def __init__(self, source: RBACSource, bootstrap: Policy, *, clock: Callable[[], float] = time.monotonic,
                 cache_ttl: float = DECISION_CACHE_TTL_SECONDS) -> None:
        self._source = source
        self._bootstrap = bootstrap
        self._generation = 0
        self._decisions: TTLCache[tuple[Any, ...], Decision] = TTLCache(DECISION_CACHE_SIZE, cache_ttl, timer=clock)
        # Same TTL as decisions: a writer that forgets invalidate() is stale for seconds, not forever.
        self._compiled: TTLCache[tuple[int, str], _Compiled] = TTLCache(COMPILED_CLUSTERS, cache_ttl, timer=clock)
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> Policy:
        return self._bootstrap

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self) -> None:
        """RBAC objects changed somewhere: forget every cached decision and compiled policy."""
        with self._lock:
            self._generation += 1
            self._decisions.clear()
            self._compiled.clear()

    def authorize(self, user: User, cluster: str, attributes: Attributes) -> Decision:
        if MASTERS in user.groups:
            return allow(f"RBAC: {user.name} is in {MASTERS}")
        key = (self._generation, cluster, user.name, user.groups, tuple(sorted(user.extra.items())), attributes)
        with self._lock:
            cached = self._decisions.get(key)
        if cached is not None:
            return cached
        decision = self._evaluate(user, cluster, attributes)
        with self._lock:
            if key[0] == self._generation:
                self._decisions[key] = decision
        return decision

    def _policy(self, cluster: str) -> _Compiled:
        key = (self._generation, cluster)
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is None:
            compiled = _Compiled(Policy.from_objects(self._source(cluster), cluster), self._bootstrap)
            with self._lock:
                self._compiled[key] = compiled
        return compiled

    def _evaluate(self, user: User, cluster: str, attributes: Attributes) -> Decision:
        if not in_scope(user, cluster):
            # kcp: outside its scopes a user is only system:anonymous in system:authenticated.
            user = out_of_scope_view(user)
        policy = self._policy(cluster)
        for binding, local in self._bindings(policy, user, attributes):
            if not any(subject_matches(s, user, binding.cluster, cluster) for s in binding.subjects):
                continue
            rules = self._rules(policy, binding, local)
            if any(rule.allows(attributes) for rule in rules):
                return allow(f'RBAC: allowed by {binding.describe()} to "{user.name}" in cluster "{cluster}"')
        return no_opinion(f'RBAC: no rule allows "{user.name}" in cluster "{cluster}"')

    def rules_for(self, user: User, cluster: str, namespace: str) -> tuple[Rule, ...]:
        """Every rule the user holds in the cluster (and in `namespace`, when given): the rules of
        each binding that applies to it, as Kubernetes' RulesFor gathers them for escalation checks."""
        if not in_scope(user, cluster):
            user = out_of_scope_view(user)
        policy = self._policy(cluster)
        probe = Attributes("get", resource="*", namespace=namespace)
        rules: list[Rule] = []
        for binding, local in self._bindings(policy, user, probe):
            if any(subject_matches(s, user, binding.cluster, cluster) for s in binding.subjects):
                rules.extend(self._rules(policy, binding, local))
        return tuple(rules)

    def role_rules(self, cluster: str, kind: str, name: str, namespace: str) -> tuple[Rule, ...] | None:
        """The rules a roleRef grants (a Role of `namespace`, or a ClusterRole local or bootstrap,
        aggregation resolved); None when the role does not exist."""
        policy = self._policy(cluster)
        if kind == "ClusterRole":
            return policy.cluster_role_rules(name, True)
        if kind == "Role" and namespace:
            role = policy.local.roles.get((namespace, name))
            return role.rules if role is not None else None
        return None

    @staticmethod
    def _bindings(policy: _Compiled, user: User, attributes: Attributes) -> list[tuple[Binding, bool]]:
        """Bindings naming the user, a group of it, or it as a ServiceAccount; bootstrap first,
        then local ClusterRoleBindings, then RoleBindings of the request's namespace (never for
        non-resource URLs). Each binding once."""
        candidates: dict[int, tuple[Binding, bool]] = {}
        keys = _user_keys(user)
        for key in keys:
            for entry in policy.cluster_bindings.get(key, ()):
                candidates.setdefault(id(entry[0]), entry)
        if attributes.is_resource_request and attributes.namespace:
            for key in keys:
                for entry in policy.namespace_bindings.get((attributes.namespace, key), ()):
                    candidates.setdefault(id(entry[0]), entry)
        return list(candidates.values())

    @staticmethod
    def _rules(policy: _Compiled, binding: Binding, local: bool) -> tuple[Rule, ...]:
        if binding.role_kind == "ClusterRole":
            return policy.cluster_role_rules(binding.role_name, local) or ()
        if binding.role_kind == "Role" and binding.namespace:
            role = policy.local.roles.get((binding.namespace, binding.role_name))
            return role.rules if role is not None else ()
        return ()
