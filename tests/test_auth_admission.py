"""Admission through `serve`'s HTTPS stack: RBAC escalation prevention (Kubernetes' rules), a
workspace's creator as its admin (kcp's owner annotation, `createdBy`, `workspace-admin`), and the
lifecycle VWs' content access by `initializerPermissions`/`terminatorPermissions` or as the
workspace's creator (kcp-reference §1.3, §1.4; conformance items 19 and 25)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from support import eventually
from test_auth_http import RBAC, grant, service_account
from vwproxy.testing.proxy import RunningProxy

TENANCY = "/apis/tenancy.kcp.io/v1alpha1"
OWNER_ANNOTATION = "experimental.tenancy.kcp.io/owner"
SA_GROUPS = '["system:serviceaccounts" "system:serviceaccounts:default" "system:authenticated"]'
RBAC_WRITES = [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings", "roles", "rolebindings"],
                "verbs": ["get", "list", "create", "update", "patch"]},
               {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
USERS = {"alice": ("team",), "bob": (), "mallory": ("system:kcp:initializer:root:sneaky",)}


def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


def binding(name: str, role: str, subject: dict[str, str], kind: str = "ClusterRoleBinding", role_kind: str = "ClusterRole") -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}, "subjects": [subject]}


SA_EDITOR = {"kind": "ServiceAccount", "namespace": "default", "name": "editor"}
SECRETS_GET = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


# -- 1. escalation prevention ---------------------------------------------------------------------

def test_rbac_writes_cannot_grant_more_than_the_writer_holds(proxy: RunningProxy, front: httpx.Client) -> None:
    ws = "/clusters/root:consumer-1"
    token = service_account(front, "root:consumer-1", "editor")
    grant(front, "root:consumer-1", "rbac-editor", RBAC_WRITES, "editor")
    with proxy.client(token=token) as editor:
        steal = editor.post(f"{ws}{RBAC}/clusterroles", json=cluster_role("steal", SECRETS_GET))
        assert steal.status_code == 403, steal.text
        status = steal.json()
        assert status["reason"] == "Forbidden" and status["details"] == {"name": "steal", "group": "rbac.authorization.k8s.io", "kind": "clusterroles"}
        assert status["message"] == (
            f'clusterroles.rbac.authorization.k8s.io "steal" is forbidden: user "system:serviceaccount:default:editor" (groups={SA_GROUPS}) '
            'is attempting to grant RBAC permissions not currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}')
        # What it holds it may hand on.
        assert editor.post(f"{ws}{RBAC}/clusterroles", json=cluster_role("readers", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])).status_code == 201
        # Widening a role it may write, by PUT, merge patch or server-side apply: refused alike.
        current = editor.get(f"{ws}{RBAC}/clusterroles/readers").json()
        assert editor.put(f"{ws}{RBAC}/clusterroles/readers", json={**current, "rules": current["rules"] + SECRETS_GET}).status_code == 403
        assert editor.patch(f"{ws}{RBAC}/clusterroles/readers", content=orjson.dumps({"rules": SECRETS_GET}),
                            headers={"content-type": "application/merge-patch+json"}).status_code == 403
        applied = editor.patch(f"{ws}{RBAC}/clusterroles/readers?fieldManager=me&force=true", content=orjson.dumps(cluster_role("readers", SECRETS_GET)),
                               headers={"content-type": "application/apply-patch+yaml"})
        assert applied.status_code == 403, applied.text
        # Bindings: to cluster-admin no, to what it holds yes; a RoleBinding to a Role with more, no.
        admin = editor.post(f"{ws}{RBAC}/clusterrolebindings", json=binding("me-admin", "cluster-admin", SA_EDITOR))
        assert admin.status_code == 403 and "is attempting to grant RBAC permissions not currently held" in admin.json()["message"]
        assert editor.post(f"{ws}{RBAC}/clusterrolebindings", json=binding("me-readers", "readers", SA_EDITOR)).status_code == 201
        role = {"metadata": {"name": "secret-reader"}, "rules": SECRETS_GET}
        assert front.post(f"{ws}{RBAC}/namespaces/default/roles", json=role).status_code == 201
        rb = editor.post(f"{ws}{RBAC}/namespaces/default/rolebindings", json=binding("me-secrets", "secret-reader", SA_EDITOR, "RoleBinding", "Role"))
        assert rb.status_code == 403 and rb.json()["message"].startswith('rolebindings.rbac.authorization.k8s.io "me-secrets" is forbidden')
        assert editor.get(f"{ws}/api/v1/namespaces/default/secrets").status_code == 403, "nothing was granted"
        # `escalate` on roles and `bind` on a role are the ways around, as in Kubernetes.
        grant(front, "root:consumer-1", "may-escalate", [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]}], "editor")
        assert eventually(lambda: editor.post(f"{ws}{RBAC}/clusterroles", json=cluster_role("steal", SECRETS_GET)).status_code == 201, "escalate allows it")
        grant(front, "root:consumer-1", "may-bind", [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "resourceNames": ["secret-reader"], "verbs": ["bind"]}], "editor")
        assert eventually(lambda: editor.post(f"{ws}{RBAC}/namespaces/default/rolebindings",
                                              json=binding("me-secrets", "secret-reader", SA_EDITOR, "RoleBinding", "Role")).status_code == 201, "bind allows it")
        assert editor.post(f"{ws}{RBAC}/clusterrolebindings", json=binding("me-admin", "cluster-admin", SA_EDITOR)).status_code == 403, "bind on one role only"
        # An aggregated ClusterRole can gather anything: only for those holding everything.
        aggregated = {**cluster_role("gatherer", []), "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}
        refused = editor.post(f"{ws}{RBAC}/clusterroles", json=aggregated)
        assert refused.status_code == 201, "escalate on clusterroles covers aggregation too"
    # system:masters is exempt.
    assert front.post(f"{ws}{RBAC}/clusterrolebindings", json=binding("editor-admin", "cluster-admin", SA_EDITOR)).status_code == 201


# -- 2. a workspace's creator is its admin --------------------------------------------------------

@pytest.fixture
def users_proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    with RunningProxy(tmp_path / "data", users=USERS) as running:
        yield running


def grant_user(front: httpx.Client, workspace: str, name: str, rules: list[dict[str, Any]], user: str) -> None:
    assert front.post(f"/clusters/{workspace}{RBAC}/clusterroles", json=cluster_role(name, rules)).status_code == 201
    assert front.post(f"/clusters/{workspace}{RBAC}/clusterrolebindings",
                      json=binding(name, name, {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user})).status_code == 201


WORKSPACE_CREATOR = [{"apiGroups": ["tenancy.kcp.io"], "resources": ["workspaces"], "verbs": ["create", "get", "list", "update", "patch"]},
                     {"nonResourceURLs": ["/"], "verbs": ["access"]}]


def test_a_workspace_creator_becomes_its_admin(users_proxy: RunningProxy) -> None:
    proxy = users_proxy
    with proxy.client() as front, proxy.client(token=proxy.user_token("alice")) as alice, proxy.client(token=proxy.user_token("bob")) as bob:
        grant_user(front, "root", "ws-creator", WORKSPACE_CREATOR, "alice")
        forged = orjson.dumps({"username": "bob"}).decode()
        ws = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "alices", "annotations": {OWNER_ANNOTATION: forged}}}
        made = alice.post(f"/clusters/root{TENANCY}/workspaces", json=ws)
        assert made.status_code == 201, made.text
        owner = orjson.loads(made.json()["metadata"]["annotations"][OWNER_ANNOTATION])
        assert owner == {"username": "alice", "uid": "uid-alice", "groups": ["team", "system:authenticated"]} or owner["username"] == "alice"
        cluster = eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/alices").json()["spec"].get("cluster"), "scheduled")
        lc = eventually(lambda: (lambda o: o if o.get("spec", {}).get("createdBy") else None)(
            front.get(f"/clusters/{cluster}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json()), "createdBy")
        assert lc["spec"]["createdBy"]["username"] == "alice" and lc["metadata"]["annotations"][OWNER_ANNOTATION]
        crb = eventually(lambda: (lambda r: r.json() if r.status_code == 200 else None)(front.get(f"/clusters/{cluster}{RBAC}/clusterrolebindings/workspace-admin")), "workspace-admin")
        assert crb["roleRef"]["name"] == "cluster-admin" and crb["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
        # The creator works there with her static token; others do not.
        cm = {"metadata": {"name": "mine"}, "data": {"k": "v"}}
        assert eventually(lambda: alice.post("/clusters/root:alices/api/v1/namespaces/default/configmaps", json=cm).status_code == 201, "alice is admin")
        assert alice.get("/clusters/root:alices/api/v1/namespaces/default/secrets").status_code == 200
        assert alice.post(f"/clusters/root:alices{RBAC}/clusterroles", json=cluster_role("anything", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])).status_code == 201
        assert bob.get("/clusters/root:alices/api/v1/namespaces/default/configmaps").status_code == 403
        # The record stays hers: an update by her cannot rename the owner; a deleted binding comes back.
        current = alice.get(f"/clusters/root{TENANCY}/workspaces/alices").json()
        current["metadata"]["annotations"][OWNER_ANNOTATION] = forged
        updated = alice.put(f"/clusters/root{TENANCY}/workspaces/alices", json=current)
        assert updated.status_code == 200 and orjson.loads(updated.json()["metadata"]["annotations"][OWNER_ANNOTATION])["username"] == "alice"
        # An admin's workspace gets no owner binding (system:masters needs none).
        admin_ws = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "admins"}}
        assert front.post(f"/clusters/root{TENANCY}/workspaces", json=admin_ws).status_code == 201
        admin_cluster = eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/admins").json()["spec"].get("cluster"), "scheduled")
        eventually(lambda: front.get(f"/clusters/{admin_cluster}/api/v1/namespaces/default").status_code == 200, "ready")
        assert front.get(f"/clusters/{admin_cluster}{RBAC}/clusterrolebindings/workspace-admin").status_code == 404


# -- 3. lifecycle VW content access ---------------------------------------------------------------

def test_self_asserted_lifecycle_groups_are_dropped(users_proxy: RunningProxy) -> None:
    """A group only the lifecycle VWs add (and which lets a request past escalation checks) cannot
    come from a client's credentials."""
    proxy = users_proxy
    with proxy.client() as front, proxy.client(token=proxy.user_token("mallory")) as mallory:
        grant_user(front, "root:consumer-1", "rbac-writer", RBAC_WRITES + [{"nonResourceURLs": ["/"], "verbs": ["access"]}], "mallory")
        subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}
        made = mallory.post(f"/clusters/root:consumer-1{RBAC}/clusterrolebindings", json=binding("mallory-admin", "cluster-admin", subject))
        assert made.status_code == 403, made.text
        assert '(groups=["system:authenticated"])' in made.json()["message"]


def lifecycle_type(front: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, str]:
    wst = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "WorkspaceType", "metadata": {"name": name}, "spec": spec}
    assert front.post(f"/clusters/root{TENANCY}/workspacetypes", json=wst).status_code == 201
    urls = eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspacetypes/{name}").json().get("status", {}).get("virtualWorkspaces"), "VW URLs")
    return {entry["type"]: entry["url"] for entry in urls}


def typed_workspace(client: httpx.Client, front: httpx.Client, name: str, type_name: str) -> str:
    ws = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name}, "spec": {"type": {"name": type_name, "path": "root"}}}
    made = client.post(f"/clusters/root{TENANCY}/workspaces", json=ws)
    assert made.status_code == 201, made.text
    return str(eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/{name}").json().get("spec", {}).get("cluster"), "scheduled"))


CONFIGMAPS_ONLY = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}]


def test_initializer_and_terminator_permissions_bound_content_access(proxy: RunningProxy, front: httpx.Client) -> None:
    urls = lifecycle_type(front, "scoped", {"initializer": True, "terminator": True,
                                            "initializerPermissions": CONFIGMAPS_ONLY, "terminatorPermissions": CONFIGMAPS_ONLY})
    token = service_account(front, "root", "lifecycle")
    grant(front, "root", "scoped-lifecycle", [{"apiGroups": ["tenancy.kcp.io"], "resources": ["workspacetypes"], "resourceNames": ["scoped"],
                                               "verbs": ["initialize", "terminate"]}], "lifecycle")
    cluster = typed_workspace(front, front, "scoped-1", "scoped")
    for kind in ("secrets", "configmaps"):
        assert front.post(f"/clusters/{cluster}/api/v1/namespaces/default/{kind}", json={"metadata": {"name": "x"}}).status_code == 201
    with proxy.client(token=token) as controller:
        base = f"{urls['initializing']}/clusters/{cluster}/api/v1/namespaces/default"
        assert eventually(lambda: controller.get(f"{base}/configmaps/x").status_code == 200, "configmap GET through the initializing VW")
        denied = controller.get(f"{base}/secrets/x")
        assert denied.status_code == 403 and denied.json()["reason"] == "Forbidden", denied.text
        assert controller.post(f"{base}/configmaps", json={"metadata": {"name": "made"}}).status_code == 201
        assert controller.post(f"{base}/secrets", json={"metadata": {"name": "made"}}).status_code == 403
        assert controller.delete(f"{base}/configmaps/x").status_code == 403, "delete is not in the rules"
        # Terminating: the mirror (item 25).
        assert front.delete(f"/clusters/root{TENANCY}/workspaces/scoped-1").status_code in (200, 202)
        tbase = f"{urls['terminating']}/clusters/{cluster}/api/v1/namespaces/default"
        # (Content is being deleted meanwhile: ask for the collections, which stay answerable.)
        assert eventually(lambda: controller.get(f"{tbase}/configmaps").status_code == 200, "configmap list through the terminating VW")
        assert controller.get(f"{tbase}/secrets").status_code == 403


def test_without_permissions_content_acts_as_the_creator(users_proxy: RunningProxy) -> None:
    proxy = users_proxy
    with proxy.client() as front, proxy.client(token=proxy.user_token("alice")) as alice:
        urls = lifecycle_type(front, "plain", {"initializer": True})
        grant_user(front, "root", "ws-creator", WORKSPACE_CREATOR, "alice")
        token = service_account(front, "root", "init")
        grant(front, "root", "plain-init", [{"apiGroups": ["tenancy.kcp.io"], "resources": ["workspacetypes"], "resourceNames": ["plain"], "verbs": ["initialize"]}], "init")
        cluster = typed_workspace(alice, front, "alices-plain", "plain")
        with proxy.client(token=token) as controller:
            base = f"{urls['initializing']}/clusters/{cluster}"
            # As alice, the workspace's admin: what it writes records her as the acting user.
            child = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "child"}}
            made = eventually(lambda: (lambda r: r if r.status_code == 201 else None)(controller.post(f"{base}{TENANCY}/workspaces", json=child)), "as alice")
            assert orjson.loads(made.json()["metadata"]["annotations"][OWNER_ANNOTATION])["username"] == "alice"
        # A workspace whose creator record names nobody: refused, never the proxy's own authority.
        ws = {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "nobodys", "annotations": {OWNER_ANNOTATION: "{}"}},
              "spec": {"type": {"name": "plain", "path": "root"}}}
        assert front.post(f"/clusters/root{TENANCY}/workspaces", json=ws).status_code == 201
        nobody = eventually(lambda: front.get(f"/clusters/root{TENANCY}/workspaces/nobodys").json().get("spec", {}).get("cluster"), "scheduled")
        with proxy.client(token=token) as controller:
            eventually(lambda: front.get(f"/clusters/{nobody}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster").json().get("status", {}).get("phase") == "Initializing", "initializing")
            refused = controller.get(f"{urls['initializing']}/clusters/{nobody}/api/v1/namespaces/default/configmaps")
            assert refused.status_code == 403, refused.text
