"""Authentication and authorization through `serve`'s real HTTPS stack (kcp-reference.md §0, §7):
anonymous callers, bad tokens, ServiceAccount tokens from the TokenRequest API scoped to their
workspace, RBAC in the workspace, `apiexports/content` for the APIExport VW, `initialize` for the
lifecycle VWs, and a Workspace's backend as an admin's choice."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from support import eventually
from test_apiexport_vw import WIDGETS, vw_url
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.proxy import RunningProxy

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def service_account(front: httpx.Client, workspace: str, name: str) -> str:
    """A ServiceAccount in `default` of `workspace` and a token for it from the TokenRequest API."""
    made = front.post(f"/clusters/{workspace}/api/v1/namespaces/default/serviceaccounts", json={"metadata": {"name": name}})
    assert made.status_code == 201, made.text
    issued = front.post(f"/clusters/{workspace}/api/v1/namespaces/default/serviceaccounts/{name}/token", json={"spec": {"expirationSeconds": 3600}})
    assert issued.status_code == 201, issued.text
    token = issued.json()["status"]["token"]
    assert isinstance(token, str) and token.count(".") == 2
    return token


def grant(front: httpx.Client, workspace: str, name: str, rules: list[dict[str, Any]], subject: str) -> None:
    """A ClusterRole with `rules` bound to the ServiceAccount `default/<subject>` of `workspace`."""
    role = {"metadata": {"name": name}, "rules": rules}
    assert front.post(f"/clusters/{workspace}{RBAC}/clusterroles", json=role).status_code == 201
    binding = {"metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "namespace": "default", "name": subject}]}
    assert front.post(f"/clusters/{workspace}{RBAC}/clusterrolebindings", json=binding).status_code == 201


def test_anonymous_is_403_a_bad_token_401_health_open(proxy: RunningProxy) -> None:
    with proxy.client(token="") as anonymous:
        anonymous.headers.pop("Authorization", None)
        assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/readyz").status_code == 200
        denied = anonymous.get("/clusters/root:consumer-1/api/v1/namespaces/default/configmaps")
        assert denied.status_code == 403 and denied.json()["message"].endswith("access denied")
        assert 'User "system:anonymous"' in denied.json()["message"]
        vw = anonymous.get(f"{proxy.url}/services/apiexport/{proxy.cluster_of('root:provider')}/widgets/clusters/*/{WIDGETS}/widgets")
        assert vw.status_code == 403
    for token in ("not-a-token", "a.b.c", jwt.encode({"sub": "system:serviceaccount:default:x"}, "s" * 32, algorithm="HS256")):
        with proxy.client(token=token) as bad:
            resp = bad.get("/clusters/root/api/v1/namespaces")
            assert resp.status_code == 401 and resp.json()["reason"] == "Unauthorized", token


def test_a_service_account_token_is_scoped_to_its_workspace_and_its_rbac(proxy: RunningProxy, front: httpx.Client) -> None:
    token = service_account(front, "root:consumer-1", "robot")
    with proxy.client(token=token) as robot:
        path = "/clusters/root:consumer-1/api/v1/namespaces/default/configmaps"
        assert robot.get(path).status_code == 403, "in its workspace, but no RBAC yet"
        grant(front, "root:consumer-1", "read-configmaps", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}], "robot")
        assert eventually(lambda: robot.get(path).status_code == 200, "RBAC takes effect")
        assert robot.post(path, json={"metadata": {"name": "x"}}).status_code == 403, "only what the role grants"
        other = robot.get("/clusters/root:consumer-2/api/v1/namespaces/default/configmaps")
        assert other.status_code == 403, "a ServiceAccount token in another workspace"
    assert front.delete("/clusters/root:consumer-1/api/v1/namespaces/default/serviceaccounts/robot").status_code == 200
    with proxy.client(token=token) as gone:
        assert gone.get("/clusters/root:consumer-1/api/v1/namespaces/default/configmaps").status_code == 401, "the ServiceAccount was deleted"


def test_forged_and_expired_service_account_tokens_are_401(proxy: RunningProxy, front: httpx.Client) -> None:
    token = service_account(front, "root:consumer-1", "victim")
    header, payload, _ = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    unsigned = base64.urlsafe_b64encode(orjson.dumps({"alg": "none", "typ": "JWT"})).decode().rstrip("=")
    forged_admin = base64.urlsafe_b64encode(orjson.dumps({**claims, "sub": "system:serviceaccount:kube-system:admin"})).decode().rstrip("=")
    attacks = {
        "alg none": f"{unsigned}.{payload}.",
        "changed claims, old signature": f"{header}.{forged_admin}.{token.split('.')[2]}",
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 60}, "k" * 32, algorithm="HS256"),
    }
    for what, bad in attacks.items():
        with proxy.client(token=bad) as client:
            assert client.get("/clusters/root:consumer-1/api/v1/namespaces/default/configmaps").status_code == 401, what


def test_the_vw_needs_apiexports_content_with_the_request_verb(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    base = vw_url(front)
    token = service_account(front, "root:provider", "controller")
    wildcard = f"{base}/clusters/*/{WIDGETS}/widgets"
    consumer = proxy.cluster_of("root:consumer-1")
    one = f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets"
    with proxy.client(token=token) as controller:
        refused = controller.get(wildcard)
        assert refused.status_code == 403 and refused.json()["message"].endswith("access denied")
        grant(front, "root:provider", "widgets-reader", [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "resourceNames": ["widgets"],
                                                           "verbs": ["get", "list", "watch"]}], "controller")
        assert eventually(lambda: controller.get(wildcard).status_code == 200, "content access takes effect")
        assert controller.get(f"{one}/red").status_code == 200
        assert controller.post(one, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "no"}}).status_code == 403, "create is not granted"
        rival = f"{front.get('/clusters/root:rival/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets').json()['status']['endpoints'][0]['url']}/clusters/*/{WIDGETS}/widgets"
        assert controller.get(rival).status_code == 403, "another provider's export"
    # kubectl over TLS with the ServiceAccount's token, through the VW.
    kubeconfig = proxy.kubeconfig(f"{base}/clusters/*", token=token)
    got = Kubectl(tmp_path, kubeconfig=kubeconfig).run("get", "widgets", "-A", "-o", "name")
    assert got.returncode == 0, got.stderr
    assert len(got.stdout.split()) == 5


def test_lifecycle_vws_need_initialize_on_the_workspace_type(proxy: RunningProxy, front: httpx.Client) -> None:
    url = f"{proxy.url}/services/initializingworkspaces/root:team/clusters/*/apis/core.kcp.io/v1alpha1/logicalclusters"
    token = service_account(front, "root", "initializer")
    with proxy.client(token=token) as initializer:
        assert initializer.get(url).status_code == 403
        grant(front, "root", "team-initializer", [{"apiGroups": ["tenancy.kcp.io"], "resources": ["workspacetypes"], "resourceNames": ["team"],
                                                    "verbs": ["initialize"]}], "initializer")
        listed = eventually(lambda: (lambda r: r if r.status_code == 200 else None)(initializer.get(url)), "initialize takes effect")
        assert [i["metadata"]["annotations"]["kcp.io/path"] for i in listed.json()["items"]] == ["root:team-a"]
        assert initializer.get(url.replace("initializingworkspaces", "terminatingworkspaces")).status_code == 403, "terminate is another verb"


def test_choosing_a_workspace_backend_is_for_admins(proxy: RunningProxy, front: httpx.Client) -> None:
    token = service_account(front, "root", "tenant-admin")
    grant(front, "root", "workspace-maker", [{"apiGroups": ["tenancy.kcp.io"], "resources": ["workspaces"], "verbs": ["create", "get", "list"]}], "tenant-admin")
    workspaces = "/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces"
    with proxy.client(token=token) as tenant:
        eventually(lambda: tenant.get(workspaces).status_code == 200, "RBAC takes effect")
        sneaky = {"metadata": {"name": "sneaky", "annotations": {"vwproxy.dev/backend": "embedded"}}}
        refused = tenant.post(workspaces, json=sneaky)
        assert refused.status_code == 403 and "vwproxy.dev/backend" in refused.json()["message"]
        assert front.get(f"{workspaces}/sneaky").status_code == 404, "nothing was written"
        elsewhere = {"metadata": {"name": "elsewhere", "annotations": {"vwproxy.dev/backend-cluster": "someone-elses"}}}
        refused = tenant.post(workspaces, json=elsewhere)
        assert refused.status_code == 403, "naming a cluster on a shard backend is choosing a backend too"
        assert tenant.post(workspaces, json={"metadata": {"name": "plain"}}).status_code == 201
    with proxy.client() as admin:
        assert admin.post(workspaces, json={"metadata": {"name": "chosen", "annotations": {"vwproxy.dev/backend": "embedded"}}}).status_code == 201


def test_impersonation_headers_are_refused(proxy: RunningProxy, front: httpx.Client) -> None:
    resp = front.get("/clusters/root/api/v1/namespaces", headers={"Impersonate-User": "someone"})
    assert resp.status_code == 403
