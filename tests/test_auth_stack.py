"""The auth layer assembled from a data dir as the server will assemble it, and the TokenRequest
subresource: §0's measured behaviour — anonymous 403, invalid token 401, a ServiceAccount token
in another workspace 403 unless granted — holds end to end (without HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from vwproxy.auth.authorizers import checked, workspace_chain
from vwproxy.auth.decision import non_resource_attributes, resource_attributes
from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.keys import SIGNING_KEY_FILE
from vwproxy.auth.stack import AuthStack, build_auth
from vwproxy.auth.tokenrequest import token_request
from vwproxy.kube.errors import StatusError

HOME, ELSEWHERE = "home0000000000aa", "else0000000000bb"
ACCOUNTS = {(HOME, "default", "robot"): "uid-1"}
RBAC: dict[str, list[dict[str, Any]]] = {HOME: [], ELSEWHERE: []}
GET_CM = resource_attributes("get", "", "configmaps", namespace="default", name="c")


def _lookup(cluster: str, namespace: str, name: str) -> str | None:
    return ACCOUNTS.get((cluster, namespace, name))


def _source(cluster: str) -> Iterable[Mapping[str, Any]]:
    return RBAC.get(cluster, [])


@pytest.fixture
def auth(tmp_path: Path) -> AuthStack:
    RBAC[HOME], RBAC[ELSEWHERE] = [], []
    return build_auth(tmp_path / "data", sa_lookup=_lookup, rbac_source=_source, server_url="https://127.0.0.1:6443")


def _robot_token(auth: AuthStack) -> str:
    response = token_request(auth.service_accounts, {"spec": {}}, cluster=HOME, namespace="default",
                             sa_name="robot", sa_uid="uid-1", now=time.time())
    return str(response["status"]["token"])


def test_admin_kubeconfig_token_is_system_masters(auth: AuthStack) -> None:
    assert auth.admin_kubeconfig is not None
    token = yaml.safe_load(auth.admin_kubeconfig.read_text())["users"][0]["user"]["token"]
    admin = auth.authenticator.authenticate(f"Bearer {token}")
    checked(workspace_chain(auth.rbac.authorize), admin, ELSEWHERE, GET_CM)


def test_measured_kcp_behaviour(auth: AuthStack) -> None:
    chain = workspace_chain(auth.rbac.authorize)
    anonymous = auth.authenticator.authenticate(None)
    with pytest.raises(StatusError) as refused:
        checked(chain, anonymous, HOME, GET_CM)
    assert refused.value.code == 403 and refused.value.message.endswith("access denied")
    with pytest.raises(AuthenticationFailed) as failed:
        auth.authenticator.authenticate("Bearer not-a-token")
    assert failed.value.to_status().code == 401

    robot = auth.authenticator.authenticate(f"Bearer {_robot_token(auth)}")
    with pytest.raises(StatusError) as foreign:
        checked(chain, robot, ELSEWHERE, non_resource_attributes("get", "/api"))
    assert foreign.value.code == 403
    # Granted in its own workspace, the robot gets in; granted "access" elsewhere it still does not:
    # a foreign ServiceAccount is denied outright, as on kcp.
    grant = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "g"},
             "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
             "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]}
    RBAC[HOME].append(grant)
    RBAC[ELSEWHERE].append(grant)
    auth.rbac.invalidate()
    checked(chain, robot, HOME, GET_CM)
    with pytest.raises(StatusError):
        checked(chain, robot, ELSEWHERE, GET_CM)


def test_token_request_response(auth: AuthStack) -> None:
    now = 1_800_000_000.0
    response = token_request(auth.service_accounts, {"spec": {"audiences": ["vault"], "expirationSeconds": 900}},
                             cluster=HOME, namespace="default", sa_name="robot", sa_uid="uid-1", now=now)
    assert response["kind"] == "TokenRequest" and response["apiVersion"] == "authentication.k8s.io/v1"
    assert response["spec"] == {"audiences": ["vault"], "expirationSeconds": 900, "boundObjectRef": None}
    assert response["status"]["expirationTimestamp"] == "2027-01-15T08:15:00Z"
    claims = jwt.decode(response["status"]["token"], options={"verify_signature": False})
    assert claims["aud"] == ["vault"] and claims["exp"] == now + 900


@pytest.mark.parametrize("spec, field", [
    ({"expirationSeconds": 599}, "spec.expirationSeconds"),
    ({"expirationSeconds": "1h"}, "spec.expirationSeconds"),
    ({"audiences": [""]}, "spec.audiences"),
    ({"boundObjectRef": {"kind": "Pod", "name": "p"}}, "spec.boundObjectRef"),
])
def test_token_request_validation(auth: AuthStack, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(StatusError) as refused:
        token_request(auth.service_accounts, {"spec": spec}, cluster=HOME, namespace="default",
                      sa_name="robot", sa_uid="uid-1", now=0)
    assert refused.value.code == 422
    assert refused.value.message.startswith('TokenRequest.authentication.k8s.io "robot" is invalid: ' + field)


def test_restart_reuses_keys_so_tokens_survive(tmp_path: Path) -> None:
    first = build_auth(tmp_path, sa_lookup=_lookup, rbac_source=_source)
    token = _robot_token(first)
    key_before = (tmp_path / SIGNING_KEY_FILE).read_bytes()
    again = build_auth(tmp_path, sa_lookup=_lookup, rbac_source=_source)
    assert (tmp_path / SIGNING_KEY_FILE).read_bytes() == key_before
    assert again.authenticator.authenticate(f"Bearer {token}").cluster == HOME


def test_extra_token_files_and_policy_override(tmp_path: Path) -> None:
    tokens = tmp_path / "fixtures.csv"
    tokens.write_text('fixture-token,fixture,9,"team"\n')
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "all-access"},
         "rules": [{"nonResourceURLs": ["/"], "verbs": ["access"]}, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "team"},
         "roleRef": {"kind": "ClusterRole", "name": "all-access"}, "subjects": [{"kind": "Group", "name": "team"}]},
    ]))
    auth = build_auth(tmp_path / "data", sa_lookup=_lookup, rbac_source=_source, token_files=[tokens], policy_paths=[policy])
    fixture = auth.authenticator.authenticate("Bearer fixture-token")
    checked(workspace_chain(auth.rbac.authorize), fixture, ELSEWHERE, GET_CM)
    assert "system:discovery" not in auth.rbac.bootstrap.cluster_roles  # the path replaced the defaults
