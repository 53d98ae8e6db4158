"""The RBAC evaluator against a matrix of users × verbs × resources × namespaces: every cell is
either in the expected-allow table or must be refused; zero unexpected allows or denies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from vwproxy.auth.decision import (
    Attributes,
    Verdict,
    non_resource_attributes,
    resource_attributes,
)
from vwproxy.auth.identity import (
    ANONYMOUS,
    AUTHENTICATED,
    CLUSTER_NAME_EXTRA,
    MASTERS,
    SCOPES_EXTRA,
    User,
    service_account_user,
)
from vwproxy.auth.policy import (
    DEFAULT_POLICY_DIR,
    load_bootstrap_policy,
    read_policy_objects,
    workspace_owner_binding,
)
from vwproxy.auth.rbac import (
    DECISION_CACHE_TTL_SECONDS,
    Policy,
    RBACAuthorizer,
    Subject,
    subject_matches,
)

WS = "wsaaaaaaaaaaaaaa"
OTHER_WS = "wsbbbbbbbbbbbbbb"

LOCAL_POLICY = """
kind: Role
metadata: {name: pod-reader, namespace: team}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}]
---
kind: RoleBinding
metadata: {name: alice-reads, namespace: team}
roleRef: {kind: Role, name: pod-reader}
subjects: [{kind: User, name: alice}]
---
kind: ClusterRole
metadata: {name: secret-getter}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [db], verbs: [get]}]
---
kind: RoleBinding
metadata: {name: devs-db, namespace: team}
roleRef: {kind: ClusterRole, name: secret-getter}
subjects: [{kind: Group, name: devs}]
---
kind: ClusterRole
metadata: {name: logs}
rules: [{apiGroups: [""], resources: [pods/log], verbs: [get]}]
---
kind: ClusterRoleBinding
metadata: {name: bob-logs}
roleRef: {kind: ClusterRole, name: logs}
subjects: [{kind: User, name: bob}]
---
kind: ClusterRole
metadata: {name: any-status}
rules: [{apiGroups: ["*"], resources: ["*/status"], verbs: [update]}]
---
kind: ClusterRoleBinding
metadata: {name: carol-status}
roleRef: {kind: ClusterRole, name: any-status}
subjects: [{kind: User, name: carol}]
---
kind: ClusterRole
metadata: {name: widgets-view, labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}}
rules: [{apiGroups: [example.dev], resources: [widgets], verbs: [get, list, watch]}]
---
kind: ClusterRoleBinding
metadata: {name: dave-view}
roleRef: {kind: ClusterRole, name: view}
subjects: [{kind: User, name: dave}]
---
kind: ClusterRole
metadata: {name: metrics}
rules: [{nonResourceURLs: [/metrics, /logs/*], verbs: [get]}]
---
kind: ClusterRoleBinding
metadata: {name: erin-metrics}
roleRef: {kind: ClusterRole, name: metrics}
subjects: [{kind: User, name: erin}]
---
kind: RoleBinding
metadata: {name: frank-metrics, namespace: team}
roleRef: {kind: ClusterRole, name: metrics}
subjects: [{kind: User, name: frank}]
---
kind: RoleBinding
metadata: {name: robot-edit, namespace: team}
roleRef: {kind: ClusterRole, name: edit}
subjects: [{kind: ServiceAccount, name: robot}]
"""


def _source(policies: Mapping[str, list[dict[str, Any]]]) -> Any:
    def source(cluster: str) -> Iterable[Mapping[str, Any]]:
        return policies.get(cluster, [])
    return source


def _authed(name: str, *groups: str) -> User:
    return User(name, (*groups, AUTHENTICATED))


USERS: dict[str, User] = {
    "alice": _authed("alice"), "bob": _authed("bob"), "carol": _authed("carol"), "dave": _authed("dave"),
    "erin": _authed("erin"), "frank": _authed("frank"), "gina": _authed("gina", "devs"),
    "admin": _authed("admin", MASTERS), "robot": service_account_user(WS, "team", "robot", "u1"),
    "foreign-robot": service_account_user(OTHER_WS, "team", "robot", "u2"),
    "anonymous": ANONYMOUS, "nobody": _authed("nobody"),
    # alice scoped to another workspace: here she is only system:anonymous in system:authenticated.
    "scoped-alice": User("alice", (AUTHENTICATED,), {SCOPES_EXTRA: (f"cluster:{OTHER_WS}",)}),
}

REQUESTS: dict[str, Attributes] = {
    "get-pods-team": resource_attributes("get", "", "pods", namespace="team", name="p"),
    "list-pods-team": resource_attributes("list", "", "pods", namespace="team"),
    "get-pods-other": resource_attributes("get", "", "pods", namespace="other", name="p"),
    "delete-pods-team": resource_attributes("delete", "", "pods", namespace="team", name="p"),
    "log-pods-team": resource_attributes("get", "", "pods", subresource="log", namespace="team", name="p"),
    "log-pods-other": resource_attributes("get", "", "pods", subresource="log", namespace="other", name="p"),
    "status-pods-team": resource_attributes("update", "", "pods", subresource="status", namespace="team", name="p"),
    "status-deploy-team": resource_attributes("update", "apps", "deployments", subresource="status", namespace="team", name="d"),
    "update-pods-team": resource_attributes("update", "", "pods", namespace="team", name="p"),
    "get-secret-db-team": resource_attributes("get", "", "secrets", namespace="team", name="db"),
    "get-secret-x-team": resource_attributes("get", "", "secrets", namespace="team", name="x"),
    "list-secrets-team": resource_attributes("list", "", "secrets", namespace="team"),
    "get-secret-db-other": resource_attributes("get", "", "secrets", namespace="other", name="db"),
    "list-widgets-all": resource_attributes("list", "example.dev", "widgets"),
    "get-widget-team": resource_attributes("get", "example.dev", "widgets", namespace="team", name="w"),
    "delete-widget-team": resource_attributes("delete", "example.dev", "widgets", namespace="team", name="w"),
    "get-cm-team": resource_attributes("get", "", "configmaps", namespace="team", name="c"),
    "create-cm-team": resource_attributes("create", "", "configmaps", namespace="team"),
    "get-metrics": non_resource_attributes("get", "/metrics"),
    "get-logs-x": non_resource_attributes("get", "/logs/x"),
    "get-logs": non_resource_attributes("get", "/logs"),  # "/logs/*" does not cover "/logs"
    "get-metrics-sub": non_resource_attributes("get", "/metrics/x"),  # "/metrics" is exact
    # A non-resource request that (wrongly) carries a namespace still never reaches RoleBindings.
    "get-metrics-in-team": Attributes("get", path="/metrics", namespace="team"),
    "post-metrics": non_resource_attributes("post", "/metrics"),
    "get-api": non_resource_attributes("get", "/api"),
    "get-apis-group": non_resource_attributes("get", "/apis/example.dev/v1"),
    "get-healthz": non_resource_attributes("get", "/healthz"),
    "get-secret-path": non_resource_attributes("get", "/secret-path"),
    "access-root": non_resource_attributes("access", "/"),
}

SIGNED_IN = {"get-api", "get-apis-group", "get-healthz"}
EXPECTED_ALLOWS: dict[str, set[str]] = {
    "alice": SIGNED_IN | {"get-pods-team", "list-pods-team"},
    "bob": SIGNED_IN | {"log-pods-team", "log-pods-other"},
    "carol": SIGNED_IN | {"status-pods-team", "status-deploy-team"},
    "dave": SIGNED_IN | {"list-widgets-all", "get-widget-team", "get-cm-team"},
    "erin": SIGNED_IN | {"get-metrics", "get-logs-x", "get-metrics-in-team"},
    "frank": SIGNED_IN,  # a RoleBinding never grants non-resource URLs
    "gina": SIGNED_IN | {"get-secret-db-team"},
    "admin": set(REQUESTS),
    "robot": SIGNED_IN | {"get-widget-team", "get-cm-team", "create-cm-team", "get-secret-db-team",
                          "get-secret-x-team", "list-secrets-team"},
    "foreign-robot": SIGNED_IN,  # same name, other workspace: out of scope here, only system:authenticated
    "anonymous": {"get-healthz"},
    "nobody": SIGNED_IN,
    "scoped-alice": SIGNED_IN,
}


def _objects(text: str) -> list[dict[str, Any]]:
    return [dict(doc, apiVersion="rbac.authorization.k8s.io/v1") for doc in yaml.safe_load_all(text)]


@pytest.fixture
def rbac() -> RBACAuthorizer:
    return RBACAuthorizer(_source({WS: _objects(LOCAL_POLICY)}), load_bootstrap_policy())


def test_matrix_has_no_unexpected_allow_or_deny(rbac: RBACAuthorizer) -> None:
    unexpected = []
    for user_key, user in USERS.items():
        for request_key, attributes in REQUESTS.items():
            decision = rbac.authorize(user, WS, attributes)
            assert decision.verdict in (Verdict.ALLOW, Verdict.NO_OPINION)  # RBAC never denies
            expected = request_key in EXPECTED_ALLOWS[user_key]
            if decision.allowed != expected:
                unexpected.append(f"{user_key} {request_key}: {'allowed' if decision.allowed else 'refused'} ({decision.reason})")
    assert not unexpected, "\n".join(unexpected)


def test_other_workspaces_policy_does_not_leak(rbac: RBACAuthorizer) -> None:
    for user_key in ("alice", "dave", "robot"):
        for request_key, attributes in REQUESTS.items():
            allowed = rbac.authorize(USERS[user_key], OTHER_WS, attributes).allowed
            assert allowed == (request_key in SIGNED_IN), (user_key, request_key)


def test_reason_names_the_binding(rbac: RBACAuthorizer) -> None:
    decision = rbac.authorize(USERS["alice"], WS, REQUESTS["get-pods-team"])
    assert 'RoleBinding "team/alice-reads" of Role "pod-reader"' in decision.reason


def test_service_account_in_its_own_workspace_via_user_subject() -> None:
    objects = _objects("""
kind: ClusterRoleBinding
metadata: {name: by-name}
roleRef: {kind: ClusterRole, name: view}
subjects: [{kind: User, name: "system:serviceaccount:team:robot"}]
""")
    rbac = RBACAuthorizer(_source({WS: objects, OTHER_WS: objects}), load_bootstrap_policy())
    get_cm = REQUESTS["get-cm-team"]
    assert rbac.authorize(USERS["robot"], WS, get_cm).allowed
    # The same binding in the other workspace does not admit this workspace's robot there.
    assert not rbac.authorize(USERS["robot"], OTHER_WS, get_cm).allowed


def test_decisions_are_cached_until_the_generation_is_bumped() -> None:
    policies: dict[str, list[dict[str, Any]]] = {WS: []}
    now = [0.0]
    rbac = RBACAuthorizer(_source(policies), load_bootstrap_policy(), clock=lambda: now[0])
    get_pods = REQUESTS["get-pods-team"]
    assert not rbac.authorize(USERS["alice"], WS, get_pods).allowed
    policies[WS] = _objects(LOCAL_POLICY)
    assert not rbac.authorize(USERS["alice"], WS, get_pods).allowed  # cached
    generation = rbac.generation
    rbac.invalidate()
    assert rbac.generation == generation + 1
    assert rbac.authorize(USERS["alice"], WS, get_pods).allowed
    policies[WS] = []
    assert rbac.authorize(USERS["alice"], WS, get_pods).allowed  # cached again
    now[0] += DECISION_CACHE_TTL_SECONDS + 0.1
    assert not rbac.authorize(USERS["alice"], WS, get_pods).allowed  # no bump: stale only for the TTL


def test_decision_cache_expires_on_its_own() -> None:
    now = [0.0]
    calls = []
    def source(cluster: str) -> list[dict[str, Any]]:
        calls.append(cluster)
        return []
    rbac = RBACAuthorizer(source, load_bootstrap_policy(), clock=lambda: now[0])
    rbac.authorize(USERS["nobody"], WS, REQUESTS["get-pods-team"])
    rbac.authorize(USERS["nobody"], WS, REQUESTS["get-pods-team"])
    assert len(calls) == 1
    now[0] += DECISION_CACHE_TTL_SECONDS + 0.1
    rbac.authorize(USERS["nobody"], WS, REQUESTS["get-pods-team"])
    assert len(calls) == 2


def test_aggregation_cycle_terminates() -> None:
    objects = _objects("""
kind: ClusterRole
metadata: {name: a, labels: {agg: b}}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {agg: a}}]}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: b, labels: {agg: a}}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {agg: b}}]}
rules: [{apiGroups: [""], resources: [services], verbs: [get]}]
---
kind: ClusterRoleBinding
metadata: {name: x}
roleRef: {kind: ClusterRole, name: a}
subjects: [{kind: User, name: alice}]
""")
    rbac = RBACAuthorizer(_source({WS: objects}), load_bootstrap_policy())
    assert rbac.authorize(USERS["alice"], WS, resource_attributes("get", "", "services", namespace="n", name="s")).allowed


def test_owner_binding_makes_the_owner_admin_with_access() -> None:
    rbac = RBACAuthorizer(_source({WS: [workspace_owner_binding("jane")]}), load_bootstrap_policy())
    jane = _authed("jane")
    assert rbac.authorize(jane, WS, non_resource_attributes("access", "/")).allowed
    assert rbac.authorize(jane, WS, resource_attributes("delete", "apps", "deployments", namespace="n", name="d")).allowed
    assert not rbac.authorize(jane, OTHER_WS, non_resource_attributes("access", "/")).allowed


def test_bootstrap_policy_files_load_and_a_path_replaces_them(tmp_path: Path) -> None:
    names = {obj["metadata"]["name"] for obj in read_policy_objects(sorted(DEFAULT_POLICY_DIR.glob("*.yaml")))}
    assert {"cluster-admin", "system:discovery", "system:kcp:workspace:access", "view"} <= names
    custom = tmp_path / "mine.yaml"
    custom.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: only}\nrules: []\n")
    assert list(load_bootstrap_policy([custom]).cluster_roles) == ["only"]
    custom.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: n}\n")
    with pytest.raises(ValueError, match="kind"):
        load_bootstrap_policy([custom])


def test_a_service_account_subject_matches_only_in_its_own_workspace() -> None:
    """Even without scopes, kcp's cluster-name extra keeps a ServiceAccount out of other workspaces' bindings."""
    unscoped = User("system:serviceaccount:team:robot", (AUTHENTICATED,), {CLUSTER_NAME_EXTRA: (WS,)})
    for subject in (Subject("ServiceAccount", "robot", "team"), Subject("User", "system:serviceaccount:team:robot")):
        assert subject_matches(subject, unscoped, WS, WS)
        assert not subject_matches(subject, unscoped, OTHER_WS, OTHER_WS)
        assert not subject_matches(subject, unscoped, "", OTHER_WS)  # a bootstrap binding evaluated elsewhere
    assert subject_matches(Subject("Group", AUTHENTICATED), unscoped, OTHER_WS, OTHER_WS)


def test_system_masters_is_allowed_without_any_policy() -> None:
    rbac = RBACAuthorizer(_source({}), Policy())
    admin = _authed("root", MASTERS)
    for attributes in REQUESTS.values():
        assert rbac.authorize(admin, "anywhere", attributes).allowed
    assert not rbac.authorize(_authed("root"), "anywhere", REQUESTS["get-api"]).allowed
