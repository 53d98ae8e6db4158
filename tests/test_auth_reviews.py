"""The self reviews through `serve`'s HTTPS stack, with real clients: `kubectl auth can-i` (a
SelfSubjectAccessReview, which kubectl sends as protobuf), `kubectl auth can-i --list` (a
SelfSubjectRulesReview), `kubectl auth whoami` (a SelfSubjectReview), the `kubernetes` Python
client, and bodies that are not reviews."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import eventually
from test_auth_http import RBAC, grant, service_account
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.proxy import RunningProxy

WORKSPACE = "root:consumer-1"
ACCESS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
CONFIGMAPS = f"/clusters/{WORKSPACE}/api/v1/namespaces/default/configmaps"


def _robot(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> tuple[str, Kubectl]:
    """A ServiceAccount of WORKSPACE that may read configmaps there, and kubectl as it."""
    token = service_account(front, WORKSPACE, "robot")
    grant(front, WORKSPACE, "read-configmaps", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}], "robot")
    kubectl = Kubectl(tmp_path / "kubectl", kubeconfig=proxy.kubeconfig(proxy.workspace_url(WORKSPACE), token=token))
    with proxy.client(token=token) as robot:
        assert eventually(lambda: robot.get(CONFIGMAPS).status_code == 200, "the grant takes effect")
    return token, kubectl


def test_kubectl_auth_can_i_answers_what_the_request_itself_gets(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    token, kubectl = _robot(proxy, front, tmp_path)

    def can_i(*args: str) -> tuple[int, str]:
        done = kubectl.run("auth", "can-i", *args)
        assert "Error from server" not in done.stderr, done.stderr
        return done.returncode, done.stdout.strip()

    assert can_i("list", "configmaps", "-n", "default") == (0, "yes")
    assert can_i("get", "configmaps/anything", "-n", "default") == (0, "yes")
    assert can_i("create", "configmaps", "-n", "default") == (1, "no")
    assert can_i("delete", "secrets", "-n", "default") == (1, "no")
    assert can_i("get", "/api") == (0, "yes"), "discovery, from the bootstrap policy"
    assert can_i("get", "/metrics") == (1, "no")
    with proxy.client(token=token) as robot:  # the requests themselves agree with the answers
        assert robot.get(CONFIGMAPS).status_code == 200
        assert robot.post(CONFIGMAPS, json={"metadata": {"name": "x"}}).status_code == 403
        assert robot.delete(f"/clusters/{WORKSPACE}/api/v1/namespaces/default/secrets/x").status_code == 403
    # Another workspace: its ServiceAccount is a stranger there, so the review itself is refused.
    elsewhere = kubectl.run("auth", "can-i", "list", "configmaps", server=proxy.workspace_url("root:consumer-2"))
    assert elsewhere.returncode != 0 and "Forbidden" in elsewhere.stderr, elsewhere
    # The admin may do anything.
    admin = Kubectl(tmp_path / "admin", kubeconfig=proxy.kubeconfig(proxy.workspace_url(WORKSPACE)))
    assert admin.run("auth", "can-i", "delete", "secrets", "-A").stdout.strip() == "yes"


def test_kubectl_auth_can_i_list_gives_the_rules_of_the_namespace(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    _, kubectl = _robot(proxy, front, tmp_path)
    _read_secrets_in_default(front)
    assert front.post(f"/clusters/{WORKSPACE}/api/v1/namespaces", json={"metadata": {"name": "other"}}).status_code == 201

    def rules(namespace: str) -> dict[str, str]:
        lines = kubectl.ok("auth", "can-i", "--list", "-n", namespace).splitlines()
        assert lines[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"], lines
        return {line.split()[0]: line[line.rfind("["):] for line in lines[1:] if line and not line.startswith(" ")}  # verbs: the last column

    in_default = eventually(lambda: rules("default") if "secrets" in rules("default") else None, "the Role takes effect")
    assert in_default["configmaps"] == "[get list watch]" and in_default["secrets"] == "[get]", in_default
    assert in_default["selfsubjectaccessreviews.authorization.k8s.io"] == "[create]", in_default
    in_other = rules("other")
    assert "configmaps" in in_other and "secrets" not in in_other, "the Role holds in its namespace only"


def _read_secrets_in_default(front: httpx.Client) -> None:
    """A Role in namespace default of WORKSPACE letting the robot get secrets there, and only there."""
    role = {"metadata": {"name": "secrets", "namespace": "default"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
    binding = {"metadata": {"name": "secrets", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets"},
               "subjects": [{"kind": "ServiceAccount", "namespace": "default", "name": "robot"}]}
    assert front.post(f"/clusters/{WORKSPACE}{RBAC}/namespaces/default/roles", json=role).status_code == 201
    assert front.post(f"/clusters/{WORKSPACE}{RBAC}/namespaces/default/rolebindings", json=binding).status_code == 201


def test_kubectl_auth_whoami_names_the_caller(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    _, kubectl = _robot(proxy, front, tmp_path)
    review = json.loads(kubectl.ok("auth", "whoami", "-o", "json"))
    assert review["kind"] == "SelfSubjectReview" and review["apiVersion"] == "authentication.k8s.io/v1"
    info = review["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:default:robot", info
    assert {"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"} <= set(info["groups"]), info
    assert info["uid"], info
    admin = Kubectl(tmp_path / "admin", kubeconfig=proxy.kubeconfig(proxy.workspace_url(WORKSPACE)))
    assert "system:masters" in admin.json("auth", "whoami")["status"]["userInfo"]["groups"]


def test_the_python_client_asks_for_a_non_resource_path(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    token, _ = _robot(proxy, front, tmp_path)
    with proxy.api_client(proxy.workspace_url(WORKSPACE), token=token) as api:
        authorization = kubernetes.client.AuthorizationV1Api(api)

        def allowed(path: str) -> bool:
            body = kubernetes.client.V1SelfSubjectAccessReview(
                spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(non_resource_attributes=kubernetes.client.V1NonResourceAttributes(path=path, verb="get")))
            answer = authorization.create_self_subject_access_review(body)
            assert answer.spec.non_resource_attributes.path == path
            return bool(answer.status.allowed)

        assert allowed("/version") and allowed("/apis/example.dev") and not allowed("/logs")


@pytest.mark.parametrize(("body", "status", "said"), [
    (b"{not json", 400, "BadRequest"),
    (b"[]", 400, "BadRequest"),
    (b'{"kind": "Pod", "apiVersion": "v1", "spec": {}}', 400, "not a SelfSubjectAccessReview"),
    (b"{}", 422, "spec: Required value"),
    (b'{"spec": {}}', 422, "exactly one of nonResourceAttributes or resourceAttributes must be specified"),
    (b'{"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get", "path": "/"}}}', 422, "exactly one of"),
    (b'{"spec": {"resourceAttributes": {"verb": 5}}}', 422, "spec.resourceAttributes.verb: must be a string"),
    (b'{"spec": {"resourceAttributes": "get"}}', 422, "spec.resourceAttributes: must be an object"),
    (b'{"spec": {"nonResourceAttributes": {"verb": "get", "path": "' + b"x" * 5000 + b'"}}}', 422, "must be at most 1024 characters"),
])
def test_a_body_that_is_not_a_review_is_a_status(front: httpx.Client, body: bytes, status: int, said: str) -> None:
    answer = front.post(f"/clusters/{WORKSPACE}{ACCESS}", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    got: dict[str, Any] = answer.json()
    assert got["kind"] == "Status" and said in (got["message"] + got["reason"]), got


def test_reviews_are_created_only_and_bounded(proxy: RunningProxy, front: httpx.Client) -> None:
    assert front.get(f"/clusters/{WORKSPACE}{ACCESS}").status_code == 405
    assert front.post(f"/clusters/{WORKSPACE}{ACCESS}", content=b" " * (4 << 20), headers={"content-type": "application/json"}).status_code == 413
    with proxy.client(token="") as anonymous:
        anonymous.headers.pop("Authorization", None)
        asked = anonymous.post(f"/clusters/{WORKSPACE}{ACCESS}", json={"spec": {"nonResourceAttributes": {"verb": "get", "path": "/"}}})
        assert asked.status_code == 403, "the review is itself a request that must be allowed"
    with proxy.client(token="not-a-token") as stranger:
        assert stranger.post(f"/clusters/{WORKSPACE}{ACCESS}", json={}).status_code == 401


def test_a_resource_review_without_a_resource_is_still_a_resource_request() -> None:
    """kube reads `resourceAttributes` as a resource request even when `resource` is empty: a rule
    on every resource answers it, a rule on non-resource URLs does not."""
    from vwproxy.auth.rbac import Rule
    from vwproxy.auth.reviews import access_attributes

    asked = access_attributes({"resourceAttributes": {"verb": "get"}})
    assert asked.is_resource_request
    assert Rule.from_dict({"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}).allows(asked)
    assert not Rule.from_dict({"nonResourceURLs": ["*"], "verbs": ["get"]}).allows(asked)
    assert not access_attributes({"nonResourceAttributes": {"verb": "get", "path": "/"}}).is_resource_request


def test_a_rules_review_needs_a_namespace_and_reviews_are_not_namespaced(front: httpx.Client) -> None:
    rules = front.post(f"/clusters/{WORKSPACE}/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", json={"spec": {}})
    assert rules.status_code == 400 and rules.json()["message"] == "no namespace on request", rules.text
    namespaced = front.post(f"/clusters/{WORKSPACE}/apis/authorization.k8s.io/v1/namespaces/default/selfsubjectaccessreviews",
                            json={"spec": {"nonResourceAttributes": {"verb": "get", "path": "/"}}})
    assert namespaced.status_code == 404, namespaced.text
    whoami = front.post(f"/clusters/{WORKSPACE}/apis/authentication.k8s.io/v1/selfsubjectreviews", json={"metadata": {"name": "x"}})
    assert whoami.status_code == 201 and whoami.json()["metadata"]["creationTimestamp"], whoami.text


class _Backend:
    """Stands in for a workspace's kube backend client: records what reaches it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        self.asked.append((method, path))
        return type("Upstream", (), {"status": 200, "body": b'{"kind":"ConfigMapList","items":[]}', "headers": {}})()


@pytest.mark.parametrize("path", [
    "/apis/authentication.k8s.io/v1/tokenreviews",
    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews",
    "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews",
])
def test_no_review_is_sent_on_to_a_kube_backend(path: str) -> None:
    """Sent on, a review would be answered for the proxy's own credentials on the backend (whose
    tokens are good, what the proxy may do): the front refuses it with a 404; other requests to
    that backend go on as before."""
    import asyncio

    from vwproxy.kube.errors import StatusError
    from vwproxy.server.front import Front

    backend = _Backend()
    control = type("Control", (), {"client_for": lambda self, cluster: backend, "store": None})()
    front = Front(None, control)
    cluster = "2abcdefghijklmno"

    async def call(method: str, target: str) -> None:
        scope = {"type": "http", "method": method, "path": f"/clusters/{cluster}{target}", "raw_path": b"", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")], "root_path": ""}
        messages = iter([{"type": "http.request", "body": b"{}", "more_body": False}])

        async def receive() -> dict[str, Any]:
            return next(messages, {"type": "http.disconnect"})

        async def send(message: MutableMapping[str, Any]) -> None:
            pass

        await front(scope, receive, send)

    with pytest.raises(StatusError) as refused:
        asyncio.run(call("POST", path))
    assert refused.value.code == 404
    assert backend.asked == []
    asyncio.run(call("GET", "/api/v1/namespaces/default/configmaps"))
    assert backend.asked == [("GET", "/api/v1/namespaces/default/configmaps")], "other requests still reach the backend"


def test_an_admin_asks_about_another_user_and_gets_what_that_users_requests_get(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    """SubjectAccessReview and LocalSubjectAccessReview: about the user the spec names (here, the
    robot exactly as whoami describes it), answered as that user's own requests are; asked only by
    whoever may create them."""
    token, kubectl = _robot(proxy, front, tmp_path)
    _read_secrets_in_default(front)
    robot = json.loads(kubectl.ok("auth", "whoami", "-o", "json"))["status"]["userInfo"]
    subject = {"user": robot["username"], "groups": robot["groups"], "extra": robot.get("extra", {}), "uid": robot["uid"]}
    sar = f"/clusters/{WORKSPACE}/apis/authorization.k8s.io/v1/subjectaccessreviews"
    lsar = f"/clusters/{WORKSPACE}/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews"

    def asked(url: str, attributes: dict[str, Any]) -> bool:
        answer = front.post(url, json={"apiVersion": "authorization.k8s.io/v1", "spec": {**subject, "resourceAttributes": attributes}})
        assert answer.status_code == 201, answer.text
        return bool(answer.json()["status"]["allowed"])

    assert asked(sar, {"verb": "list", "resource": "configmaps", "namespace": "default"})
    assert not asked(sar, {"verb": "create", "resource": "configmaps", "namespace": "default"})
    assert asked(lsar, {"verb": "get", "resource": "configmaps", "name": "x"})
    assert eventually(lambda: asked(lsar, {"verb": "get", "resource": "secrets"}), "the Role in default takes effect"), "a local review asks in its namespace"
    assert not asked(lsar.replace("/default/", "/other/"), {"verb": "get", "resource": "secrets"})
    assert not asked(sar, {"verb": "get", "resource": "secrets"}), "the Role does not reach beyond its namespace"
    stranger = {**subject, "user": "someone-else", "groups": [], "extra": {}}
    refused = front.post(sar, json={"spec": {**stranger, "resourceAttributes": {"verb": "list", "resource": "configmaps", "namespace": "default"}}})
    assert refused.status_code == 201 and refused.json()["status"]["allowed"] is False
    with proxy.client(token=token) as itself:  # the robot may review itself, not ask about others
        assert itself.post(sar, json={"spec": {**subject, "resourceAttributes": {"verb": "list", "resource": "configmaps"}}}).status_code == 403


@pytest.mark.parametrize(("path", "spec", "status", "said"), [
    ("subjectaccessreviews", {"resourceAttributes": {"verb": "get"}}, 422, "at least one of user or group must be specified"),
    ("subjectaccessreviews", {"user": "u", "groups": "g", "resourceAttributes": {"verb": "get"}}, 422, "spec.groups"),
    ("subjectaccessreviews", {"user": "u", "extra": {"k": "v"}, "resourceAttributes": {"verb": "get"}}, 422, "spec.extra"),
    ("subjectaccessreviews", {"user": "u", "groups": ["g"] * 1000, "resourceAttributes": {"verb": "get"}}, 422, "spec.groups"),
    ("namespaces/default/localsubjectaccessreviews", {"user": "u", "nonResourceAttributes": {"verb": "get", "path": "/"}}, 422,
     "disallowed on this kind of request"),
    ("namespaces/default/localsubjectaccessreviews", {"user": "u", "resourceAttributes": {"verb": "get", "namespace": "other"}}, 400,
     "spec.resourceAttributes.namespace must match namespace: default"),
    ("localsubjectaccessreviews", {"user": "u", "resourceAttributes": {"verb": "get"}}, 404, "NotFound"),
    ("namespaces/default/subjectaccessreviews", {"user": "u", "resourceAttributes": {"verb": "get"}}, 404, "NotFound"),
])
def test_a_subject_access_review_that_is_not_one_is_a_status(front: httpx.Client, path: str, spec: dict[str, Any], status: int, said: str) -> None:
    answer = front.post(f"/clusters/{WORKSPACE}/apis/authorization.k8s.io/v1/{path}", json={"spec": spec})
    assert answer.status_code == status, answer.text
    assert said in answer.json()["message"] + answer.json()["reason"], answer.json()


def test_an_admin_reviews_a_token_as_a_request_carrying_it_would_be_taken(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    """TokenReview (kube-rbac-proxy's first question): the robot's token is its ServiceAccount's
    user, for this server's audiences; a bad or revoked token, or another audience, is not
    authenticated; the robot itself may not ask."""
    kubernetes = pytest.importorskip("kubernetes")
    token, kubectl = _robot(proxy, front, tmp_path)
    robot = json.loads(kubectl.ok("auth", "whoami", "-o", "json"))["status"]["userInfo"]
    with proxy.api_client(proxy.workspace_url(WORKSPACE)) as api:
        authentication = kubernetes.client.AuthenticationV1Api(api)

        def reviewed(token: str, audiences: list[str] | None = None) -> Any:
            body = kubernetes.client.V1TokenReview(spec=kubernetes.client.V1TokenReviewSpec(token=token, audiences=audiences))
            return authentication.create_token_review(body).status

        status = reviewed(token)
        assert status.authenticated and status.user.username == robot["username"] and status.user.groups == robot["groups"], status
        assert status.user.uid == robot["uid"] and status.audiences, status
        assert reviewed(token, status.audiences).authenticated
        elsewhere = reviewed(token, ["some-other-audience"])
        assert not elsewhere.authenticated and "API audiences only" in elsewhere.error, elsewhere
        forged = reviewed(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
        assert not forged.authenticated and forged.error, forged
        assert not reviewed("not-a-token").authenticated
    with proxy.client(token=token) as itself:
        asked = itself.post(f"/clusters/{WORKSPACE}/apis/authentication.k8s.io/v1/tokenreviews", json={"spec": {"token": token}})
        assert asked.status_code == 403, "only whoever may create token reviews asks"
    assert front.delete(f"/clusters/{WORKSPACE}/api/v1/namespaces/default/serviceaccounts/robot").status_code == 200
    gone = front.post(f"/clusters/{WORKSPACE}/apis/authentication.k8s.io/v1/tokenreviews", json={"spec": {"token": token}})
    assert gone.status_code == 201 and gone.json()["status"]["authenticated"] is False, gone.text
    empty = front.post(f"/clusters/{WORKSPACE}/apis/authentication.k8s.io/v1/tokenreviews", json={"spec": {}})
    assert empty.status_code == 400 and "token is required" in empty.json()["message"], empty.text


def test_a_token_review_sent_as_protobuf_is_read() -> None:
    """client-go may send a TokenReview as protobuf; its spec is read as JSON would give it."""
    from test_protobuf import envelope, ld

    from vwproxy.kube.protobuf import decode

    body = envelope("authentication.k8s.io/v1", "TokenReview", ld(2, ld(1, "a.b.c") + ld(2, "aud-1") + ld(2, "aud-2")))
    assert decode(body) == {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
                            "spec": {"token": "a.b.c", "audiences": ["aud-1", "aud-2"]}}
