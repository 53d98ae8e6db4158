"""kcp's authorizers: workspace access, apiexports/content, bind, the maximal permission policy,
the lifecycle verbs, composition, and the anonymised 403 on the wire."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import yaml

from vwproxy.auth.authorizers import (
    ExportPolicy,
    all_of,
    always_allow_groups,
    always_allow_paths,
    apiexport_bind,
    apiexport_content,
    binding_user,
    checked,
    first_opinion,
    forbidden_error,
    lifecycle,
    maximal_permission_policy,
    workspace_chain,
    workspace_content,
)
from vwproxy.auth.decision import (
    Attributes,
    Verdict,
    allow,
    deny,
    no_opinion,
    non_resource_attributes,
    resource_attributes,
)
from vwproxy.auth.identity import (
    ANONYMOUS,
    AUTHENTICATED,
    MASTERS,
    SCOPES_EXTRA,
    User,
    service_account_user,
)
from vwproxy.auth.policy import load_bootstrap_policy
from vwproxy.auth.rbac import RBACAuthorizer
from vwproxy.auth.vwbinding import apiexport_binding, apiexport_chain, claim_verbs
from vwproxy.kube.errors import StatusError

PROVIDER = "1a2b3c4d5e6f7g8h"
CONSUMER = "yqzkjxmzl9turgsf"
EXPORT = "today-cowboys"

POLICIES = {
    PROVIDER: """
kind: ClusterRole
metadata: {name: content-read}
rules: [{apiGroups: [apis.kcp.io], resources: [apiexports/content], resourceNames: [today-cowboys], verbs: [get, list, watch]}]
---
kind: ClusterRoleBinding
metadata: {name: provider-content}
roleRef: {kind: ClusterRole, name: content-read}
subjects: [{kind: User, name: provider}, {kind: ServiceAccount, name: controller, namespace: default}]
---
kind: ClusterRole
metadata: {name: bind}
rules: [{apiGroups: [apis.kcp.io], resources: [apiexports], resourceNames: [today-cowboys], verbs: [bind]}]
---
kind: ClusterRoleBinding
metadata: {name: consumers-bind}
roleRef: {kind: ClusterRole, name: bind}
subjects: [{kind: User, name: consumer-admin}]
---
kind: ClusterRole
metadata: {name: maximal}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
kind: ClusterRoleBinding
metadata: {name: maximal}
roleRef: {kind: ClusterRole, name: maximal}
subjects: [{kind: User, name: "apis.kcp.io:binding:provider"}]
---
kind: ClusterRole
metadata: {name: team-init}
rules: [{apiGroups: [tenancy.kcp.io], resources: [workspacetypes], resourceNames: [team], verbs: [initialize]}]
---
kind: ClusterRoleBinding
metadata: {name: team-init}
roleRef: {kind: ClusterRole, name: team-init}
subjects: [{kind: User, name: initializer}]
""",
    CONSUMER: """
kind: ClusterRoleBinding
metadata: {name: alice-access}
roleRef: {kind: ClusterRole, name: "system:kcp:workspace:access"}
subjects: [{kind: User, name: alice}]
---
kind: RoleBinding
metadata: {name: alice-view, namespace: team}
roleRef: {kind: ClusterRole, name: view}
subjects: [{kind: User, name: alice}]
---
kind: RoleBinding
metadata: {name: bob-view, namespace: team}
roleRef: {kind: ClusterRole, name: view}
subjects: [{kind: User, name: bob}]
""",
}

LIST_COWBOYS = resource_attributes("list", "wildwest.dev", "cowboys")
DISCOVERY = non_resource_attributes("get", "/apis/wildwest.dev/v1alpha1")
GET_CM = resource_attributes("get", "", "configmaps", namespace="team", name="c")


def _user(name: str, *groups: str) -> User:
    return User(name, (*groups, AUTHENTICATED))


@pytest.fixture
def rbac() -> RBACAuthorizer:
    objects = {cluster: [dict(d, apiVersion="rbac.authorization.k8s.io/v1") for d in yaml.safe_load_all(text)]
               for cluster, text in POLICIES.items()}

    def source(cluster: str) -> Iterable[Mapping[str, Any]]:
        return objects.get(cluster, [])
    return RBACAuthorizer(source, load_bootstrap_policy())


# --- composition ---------------------------------------------------------------------------


def _fixed(decision: Any) -> Any:
    return lambda user, cluster, attributes: decision


def test_first_opinion_and_all_of() -> None:
    user, attributes = _user("u"), GET_CM
    assert first_opinion(_fixed(no_opinion("a")), _fixed(deny("b")), _fixed(allow("c")))(user, "x", attributes).reason == "b"
    assert first_opinion(_fixed(no_opinion("a")), _fixed(no_opinion("b")))(user, "x", attributes).verdict is Verdict.NO_OPINION
    assert all_of(_fixed(allow("a")), _fixed(no_opinion("b")), _fixed(allow("c")))(user, "x", attributes).reason == "b"
    assert all_of(_fixed(allow("a")), _fixed(allow("c")))(user, "x", attributes).reason == "c"
    assert not all_of()(user, "x", attributes).allowed


def test_always_allowed_paths_and_groups() -> None:
    assert always_allow_paths()(ANONYMOUS, "x", non_resource_attributes("get", "/readyz/ping")).allowed
    assert not always_allow_paths()(ANONYMOUS, "x", non_resource_attributes("get", "/metrics")).allowed
    assert not always_allow_paths()(ANONYMOUS, "x", resource_attributes("get", "", "healthz")).allowed
    assert always_allow_groups()(_user("root", MASTERS), "x", GET_CM).allowed
    assert not always_allow_groups()(_user("root"), "x", GET_CM).allowed


# --- workspace content ---------------------------------------------------------------------


@pytest.mark.parametrize("user, verdict, reason", [
    (_user("alice"), Verdict.ALLOW, "delegating due to user logical cluster access"),
    (_user("bob"), Verdict.NO_OPINION, "no verb=access permission on /"),
    (ANONYMOUS, Verdict.NO_OPINION, "no verb=access permission on /"),
    (service_account_user(CONSUMER, "default", "robot", "u"), Verdict.ALLOW, "delegating due to local service account access"),
    (service_account_user(PROVIDER, "default", "robot", "u"), Verdict.DENY, "foreign service account"),
    (User("alice", (AUTHENTICATED,), {SCOPES_EXTRA: (f"cluster:{CONSUMER}",)}), Verdict.ALLOW,
     "delegating due to user logical cluster access"),
    (User("alice", (AUTHENTICATED,), {SCOPES_EXTRA: ("cluster:elsewhere",)}), Verdict.NO_OPINION, "out of scope"),
    (_user("lc-admin", "system:kcp:logical-cluster-admin"), Verdict.ALLOW, "delegating due to logical cluster admin access"),
])
def test_workspace_content(rbac: RBACAuthorizer, user: User, verdict: Verdict, reason: str) -> None:
    decision = workspace_content(rbac.authorize)(user, CONSUMER, GET_CM)
    assert (decision.verdict, decision.reason) == (verdict, reason)


def test_workspace_content_phases(rbac: RBACAuthorizer) -> None:
    phases = {CONSUMER: "Ready", "sched": "Scheduling"}
    authorizer = workspace_content(rbac.authorize, phases.get)
    assert authorizer(_user("alice"), CONSUMER, GET_CM).allowed
    assert authorizer(_user("alice"), "gone", GET_CM).reason == "LogicalCluster not found"
    assert authorizer(_user("alice"), "gone", GET_CM).denied
    assert authorizer(service_account_user("sched", "d", "r", "u"), "sched", GET_CM).verdict is Verdict.NO_OPINION


def test_workspace_chain(rbac: RBACAuthorizer) -> None:
    chain = workspace_chain(rbac.authorize)
    assert chain(_user("alice"), CONSUMER, GET_CM).allowed  # access + view in team
    assert not chain(_user("bob"), CONSUMER, GET_CM).allowed  # view in team, but no access to the workspace
    assert not chain(ANONYMOUS, CONSUMER, GET_CM).allowed
    assert chain(ANONYMOUS, CONSUMER, non_resource_attributes("get", "/healthz")).allowed
    assert chain(_user("root", MASTERS), "anywhere", GET_CM).allowed
    robot = service_account_user(CONSUMER, "team", "robot", "u")
    assert not chain(robot, CONSUMER, GET_CM).allowed  # in, but nothing granted
    assert chain(robot, CONSUMER, non_resource_attributes("get", "/api")).allowed  # discovery for signed-in users


# --- APIExport VW --------------------------------------------------------------------------


@pytest.mark.parametrize("user, attributes, allowed", [
    (_user("provider"), LIST_COWBOYS, True),
    (_user("provider"), DISCOVERY, True),  # discovery counts as get
    (_user("provider"), resource_attributes("create", "wildwest.dev", "cowboys", namespace="n"), False),
    (_user("alice"), LIST_COWBOYS, False),
    (service_account_user(PROVIDER, "default", "controller", "u"), LIST_COWBOYS, True),
    (service_account_user(CONSUMER, "default", "controller", "u"), LIST_COWBOYS, False),  # same name, other workspace
    (ANONYMOUS, DISCOVERY, False),
])
def test_apiexport_content(rbac: RBACAuthorizer, user: User, attributes: Attributes, allowed: bool) -> None:
    decision = apiexport_content(rbac.authorize, PROVIDER, EXPORT)(user, "*", attributes)
    assert decision.allowed is allowed
    assert decision.verdict is (Verdict.ALLOW if allowed else Verdict.DENY)


def test_apiexport_content_names_the_export(rbac: RBACAuthorizer) -> None:
    assert not apiexport_content(rbac.authorize, PROVIDER, "another-export")(_user("provider"), "*", LIST_COWBOYS).allowed


def test_bind(rbac: RBACAuthorizer) -> None:
    assert apiexport_bind(rbac.authorize, _user("consumer-admin"), PROVIDER, EXPORT).allowed
    assert apiexport_bind(rbac.authorize, _user("consumer-admin"), PROVIDER, "other").denied
    assert apiexport_bind(rbac.authorize, _user("alice"), PROVIDER, EXPORT).denied


def test_maximal_permission_policy(rbac: RBACAuthorizer) -> None:
    provider = _user("provider")
    local = [ExportPolicy(PROVIDER, EXPORT, True)]
    assert maximal_permission_policy(rbac.authorize, None)(provider, CONSUMER, GET_CM).allowed
    assert maximal_permission_policy(rbac.authorize, local)(provider, CONSUMER, GET_CM).allowed
    delete = resource_attributes("delete", "", "configmaps", namespace="team", name="c")
    assert maximal_permission_policy(rbac.authorize, local)(provider, CONSUMER, delete).denied
    assert maximal_permission_policy(rbac.authorize, [])(provider, CONSUMER, GET_CM).denied  # unknown identity
    # Exports without a local policy do not restrict; every export with one must agree.
    assert maximal_permission_policy(rbac.authorize, [ExportPolicy(CONSUMER, "x", False)])(provider, CONSUMER, delete).allowed
    both = [*local, ExportPolicy(CONSUMER, "x", True)]
    assert maximal_permission_policy(rbac.authorize, both)(provider, CONSUMER, GET_CM).denied
    # The unprefixed name is not what the policy grants.
    assert maximal_permission_policy(rbac.authorize, local)(_user("apis.kcp.io:binding:provider"), CONSUMER, GET_CM).denied


def test_binding_user_prefixes_name_and_groups() -> None:
    prefixed = binding_user(User("u", ("g", AUTHENTICATED), {SCOPES_EXTRA: ("cluster:x",)}))
    assert prefixed == User("apis.kcp.io:binding:u", ("apis.kcp.io:binding:g", "apis.kcp.io:binding:system:authenticated"))


# --- lifecycle VWs -------------------------------------------------------------------------


def test_lifecycle_verbs(rbac: RBACAuthorizer) -> None:
    list_lc = resource_attributes("list", "core.kcp.io", "logicalclusters")
    assert lifecycle(rbac.authorize, "initialize", PROVIDER, "team")(_user("initializer"), "*", list_lc).allowed
    assert lifecycle(rbac.authorize, "terminate", PROVIDER, "team")(_user("initializer"), "*", list_lc).denied
    assert lifecycle(rbac.authorize, "initialize", PROVIDER, "other")(_user("initializer"), "*", list_lc).denied
    assert lifecycle(rbac.authorize, "initialize", CONSUMER, "team")(_user("initializer"), "*", list_lc).denied
    with pytest.raises(ValueError):
        lifecycle(rbac.authorize, "admin", PROVIDER, "team")


# --- the 403 -------------------------------------------------------------------------------


def test_forbidden_error_is_anonymised_and_the_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    user = _user("service-provider-2-admin")
    attributes = resource_attributes("list", "wild.wild.west", "sheriffs")
    with caplog.at_level(logging.INFO, logger="vwproxy.auth"):
        error = forbidden_error(user, "*", attributes, deny("no list permission on apiexports/content secret-export"))
    assert error.to_status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": 'sheriffs.wild.wild.west is forbidden: User "service-provider-2-admin" cannot list resource "sheriffs" '
                   'in API group "wild.wild.west" at the cluster scope: access denied',
        "details": {"group": "wild.wild.west", "kind": "sheriffs"},
    }
    assert "secret-export" not in str(error.to_status()) and "secret-export" in caplog.text


def test_forbidden_messages_for_namespaces_subresources_and_paths() -> None:
    named = forbidden_error(ANONYMOUS, "c", resource_attributes("get", "", "pods", subresource="log", namespace="n", name="p"), deny("x"))
    assert named.message == ('pods "p" is forbidden: User "system:anonymous" cannot get resource "pods/log" '
                             'in API group "" in the namespace "n": access denied')
    assert named.details == {"name": "p", "kind": "pods"}
    path = forbidden_error(ANONYMOUS, "c", non_resource_attributes("get", "/api"), deny("x"))
    assert path.message == 'forbidden: User "system:anonymous" cannot get path "/api": access denied'


def test_checked_raises_unless_allowed(rbac: RBACAuthorizer) -> None:
    chain = workspace_chain(rbac.authorize)
    checked(chain, _user("alice"), CONSUMER, GET_CM)
    with pytest.raises(StatusError) as refused:
        checked(chain, ANONYMOUS, CONSUMER, GET_CM)
    assert refused.value.code == 403


# --- APIExport VW binding authorizer (§7.1) ------------------------------------------------

BINDING = {
    "apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": EXPORT},
    "spec": {"reference": {"export": {"path": "root:provider", "name": EXPORT}},
             "permissionClaims": [
                 {"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch", "update"], "state": "Accepted",
                  "selector": {"matchAll": True}},
                 {"group": "", "resource": "secrets", "verbs": ["*"], "state": "Rejected", "selector": {"matchAll": True}},
                 {"group": "", "resource": "events", "verbs": ["*"], "state": "Accepted", "selector": {"matchAll": True}},
             ]},
    "status": {"apiExportClusterName": PROVIDER,
               "boundResources": [{"group": "wildwest.dev", "resource": "cowboys"}]},
}
EXPORT_CLAIMS = [
    {"group": "", "resource": "configmaps", "verbs": ["get", "list", "watch", "create"]},
    {"group": "", "resource": "secrets", "verbs": ["*"]},
    {"group": "", "resource": "events", "verbs": ["create"]},
]


@pytest.mark.parametrize("cluster, attributes, allowed", [
    (CONSUMER, resource_attributes("delete", "wildwest.dev", "cowboys", namespace="n", name="c"), True),  # bound
    (CONSUMER, resource_attributes("get", "", "configmaps", namespace="n", name="c"), True),  # claim ∩ = get, list, watch
    (CONSUMER, resource_attributes("update", "", "configmaps", namespace="n", name="c"), False),  # binding only
    (CONSUMER, resource_attributes("create", "", "configmaps", namespace="n"), False),  # export only
    (CONSUMER, resource_attributes("get", "", "secrets", namespace="n", name="s"), False),  # rejected claim
    (CONSUMER, resource_attributes("create", "events.k8s.io", "events", namespace="n"), True),  # events count as core
    (CONSUMER, resource_attributes("delete", "", "events", namespace="n", name="e"), False),
    (CONSUMER, resource_attributes("list", "apis.kcp.io", "apibindings"), True),
    (CONSUMER, resource_attributes("update", "apis.kcp.io", "apibindings", name=EXPORT), False),
    (CONSUMER, resource_attributes("get", "", "pods", namespace="n", name="p"), False),
    ("2x9kq0z8vbc1ab3d", resource_attributes("get", "wildwest.dev", "cowboys", namespace="n", name="c"), False),  # no binding
    ("*", resource_attributes("list", "", "secrets"), True),  # wildcard: only labels, content and MPP limit it
    (CONSUMER, DISCOVERY, True),
])
def test_apiexport_binding(cluster: str, attributes: Attributes, allowed: bool) -> None:
    bindings = [BINDING] if cluster == CONSUMER else []
    assert apiexport_binding(bindings, PROVIDER, EXPORT, EXPORT_CLAIMS)(_user("provider"), cluster, attributes).allowed is allowed


def test_binding_found_by_path_while_status_is_empty() -> None:
    pending = {**BINDING, "status": {}}
    get_cowboy = resource_attributes("get", "", "configmaps", namespace="n", name="c")
    assert apiexport_binding([pending], "root:provider", EXPORT, EXPORT_CLAIMS)(_user("p"), CONSUMER, get_cowboy).allowed
    assert apiexport_binding([pending], PROVIDER, EXPORT, EXPORT_CLAIMS)(_user("p"), CONSUMER, get_cowboy).denied
    assert apiexport_binding([BINDING], PROVIDER, "other", EXPORT_CLAIMS)(_user("p"), CONSUMER, get_cowboy).denied


def test_claim_verbs() -> None:
    assert claim_verbs(["*"], ["get"]) == {"get"} and claim_verbs(["get", "list"], ["*"]) == {"get", "list"}
    assert claim_verbs(["get", "list"], ["list", "watch"]) == {"list"} and claim_verbs(["*"], ["*"]) == {"*"}


def test_apiexport_chain(rbac: RBACAuthorizer) -> None:
    chain = apiexport_chain(rbac.authorize, PROVIDER, EXPORT, [BINDING], EXPORT_CLAIMS)
    get_cm = resource_attributes("get", "", "configmaps", namespace="n", name="c")
    assert chain(_user("provider"), CONSUMER, get_cm).allowed
    assert not chain(_user("provider"), CONSUMER, resource_attributes("delete", "", "configmaps", namespace="n", name="c")).allowed
    assert not chain(_user("alice"), CONSUMER, get_cm).allowed  # no apiexports/content
    assert chain(_user("root", MASTERS), CONSUMER, resource_attributes("delete", "", "pods", namespace="n", name="p")).allowed
    assert chain(ANONYMOUS, "*", non_resource_attributes("get", "/healthz")).allowed
    mpp = apiexport_chain(rbac.authorize, PROVIDER, EXPORT, [BINDING], EXPORT_CLAIMS, [ExportPolicy(PROVIDER, EXPORT, True)])
    assert mpp(_user("provider"), CONSUMER, get_cm).allowed
    assert not mpp(_user("provider"), CONSUMER, resource_attributes("watch", "", "configmaps", namespace="n")).allowed
