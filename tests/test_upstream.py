"""The upstream layer: backends.yaml, BackendClient against a real second shard process, stamping,
and the shard's bearer-token middleware."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import uvicorn

from vwproxy.kube.errors import StatusError
from vwproxy.server.auth_middleware import require_bearer_token
from vwproxy.upstream import client as client_module
from vwproxy.upstream.backends import Backend, BackendConfigError, load_backends, tls_context
from vwproxy.upstream.client import BackendClient
from vwproxy.testing.process import ShardProcess
from vwproxy.upstream.stamp import stamp_object, stamp_watch_line, strip_cluster_annotation

TOKEN = "s3cret-backend-token"
SECRET = "tok-DO-NOT-LEAK-7f3a"  # a credential that must never appear in a message or repr
# How long a test waits for its in-process TLS server to start before failing loudly.
STARTUP_SECONDS = 10.0
# Any single await in these tests; far above what loopback needs, far below the test timeout.
STEP_SECONDS = 5.0
CM = "/api/v1/namespaces/default/configmaps"
CLUSTER = "2x9vbt1ltd8f7gzq"

T = TypeVar("T")

# A throwaway test PKI (EC P-256, valid 2000-2999): a CA, a server certificate for 127.0.0.1 and
# a client certificate, both signed by the CA. Test data only; it protects nothing.
CA_CRT = b"""\
-----BEGIN CERTIFICATE-----
MIIBZjCCAQ2gAwIBAgIBATAKBggqhkjOPQQDAjAaMRgwFgYDVQQDDA92d3Byb3h5
LXRlc3QtY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjk5OTEyMzEwMDAwMDBaMBoxGDAW
BgNVBAMMD3Z3cHJveHktdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IA
BA9e066+QgqLL12Eb1VVWPJWqmUxw4tdIuoQZ3a75c9fVBGTUFyD1odlsaguBuRx
musifULPglCmrEyUeV0bWMGjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/
BAQDAgEGMB0GA1UdDgQWBBT82CU6vjyrybQUwEm+5WNqJNfv9TAKBggqhkjOPQQD
AgNHADBEAiA6+6SNSnuTTVZLoDOFaofgkv3dzqRTgrYI8EmpOnhEywIgDpWAyLUC
dHv8tCOZj2rbHqj3pFN6ZYgOG2OqvqEnRpk=
-----END CERTIFICATE-----
"""
SERVER_CRT = b"""\
-----BEGIN CERTIFICATE-----
MIIBvTCCAWKgAwIBAgIBAjAKBggqhkjOPQQDAjAaMRgwFgYDVQQDDA92d3Byb3h5
LXRlc3QtY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjk5OTEyMzEwMDAwMDBaMB4xHDAa
BgNVBAMME3Z3cHJveHktdGVzdC1zZXJ2ZXIwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAARKoZZi+odHb+crPROeAP6t60jRXPL0MCQ9zijq5epJX0iFpqTG4Qszs5Hk
ded/G4GUxUSfUXYjwTr0630l8U/mo4GSMIGPMAwGA1UdEwEB/wQCMAAwDgYDVR0P
AQH/BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMB0GA1UdDgQWBBSIL4ESDbeK
S/wML5EFux2O+JNcHzAfBgNVHSMEGDAWgBT82CU6vjyrybQUwEm+5WNqJNfv9TAa
BgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZIzj0EAwIDSQAwRgIhAJ8R
5R5hUQD6Nmq7w8vWC7al4AOJ3LxfX2Zs07bSyxeWAiEAijPmGnE/46qPhM6ShY8/
3Q45qoKbHPyYvsicV9BKohY=
-----END CERTIFICATE-----
"""
SERVER_KEY = b"""\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5wNC8JCMM/fj4ngp
gMGTTE/HYBDXSMLHqcN2FEYJUhChRANCAARKoZZi+odHb+crPROeAP6t60jRXPL0
MCQ9zijq5epJX0iFpqTG4Qszs5Hkded/G4GUxUSfUXYjwTr0630l8U/m
-----END PRIVATE KEY-----
"""
CLIENT_CRT = b"""\
-----BEGIN CERTIFICATE-----
MIIBnTCCAUSgAwIBAgIBAzAKBggqhkjOPQQDAjAaMRgwFgYDVQQDDA92d3Byb3h5
LXRlc3QtY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjk5OTEyMzEwMDAwMDBaMB4xHDAa
BgNVBAMME3Z3cHJveHktdGVzdC1jbGllbnQwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAASibGt5ZGMVJnbrcunq8UXa181zP3zH9KsesJ072IX3+w5KchkmGfuLaR6d
d7kzrb3l6xbsIq+U7pBfFfhT/uQ2o3UwczAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB
/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDAjAdBgNVHQ4EFgQUI9ZNU+W4cTvU
v4jw3HFdo8BpLV8wHwYDVR0jBBgwFoAU/NglOr48q8m0FMBJvuVjaiTX7/UwCgYI
KoZIzj0EAwIDRwAwRAIgFgAe3aeqhLzycvvnS55dfrqXJECUu3fjfNEFX+n7uHAC
IBxIJQd9WlfM1MxYoI4YC3GM6ronUcYtCTWhrvPUSvda
-----END CERTIFICATE-----
"""
CLIENT_KEY = b"""\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQga4Asm+TL0ZYHTiyr
zyPDsgiKBV/x+Lpa1L3f1Vws1mKhRANCAASibGt5ZGMVJnbrcunq8UXa181zP3zH
9KsesJ072IX3+w5KchkmGfuLaR6dd7kzrb3l6xbsIq+U7pBfFfhT/uQ2
-----END PRIVATE KEY-----
"""


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, STEP_SECONDS * 2)

    return asyncio.run(bounded())


# --- backends.yaml ------------------------------------------------------------------------------


def write_config(folder: Path, text: str, name: str = "backends.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def backend_doc(spec: str, name: str = "cluster-a") -> str:
    return f"apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n{spec}"


def test_url_and_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, backend_doc(f"  url: https://10.0.0.1:6443/clusters/root:org:ws/\n  token: {SECRET}\n  insecureSkipTLSVerify: true\n"))
    backends = load_backends(path)
    assert backends == {
        "cluster-a": Backend(name="cluster-a", url="https://10.0.0.1:6443/clusters/root:org:ws", token=SECRET, insecure=True)
    }
    assert SECRET not in repr(backends["cluster-a"])
    assert tls_context(backends["cluster-a"]).verify_mode == ssl.CERT_NONE


def test_token_file_and_relative_tls_files_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "creds").mkdir(parents=True)
    (config / "creds" / "token").write_text(f"  {SECRET}\n")
    (config / "ca.crt").write_bytes(CA_CRT)
    (config / "c.crt").write_bytes(CLIENT_CRT)
    (config / "c.key").write_bytes(CLIENT_KEY)
    spec = "  url: https://h:6443\n  tokenFile: creds/token\n  caFile: ca.crt\n  clientCertFile: c.crt\n  clientKeyFile: c.key\n"
    write_config(config, backend_doc(spec))
    backend = load_backends(config)["cluster-a"]  # the folder form finds backends.yaml
    assert backend.token == SECRET
    assert backend.ca_file == str((config / "ca.crt").resolve())
    assert (backend.cert_file, backend.key_file) == (str((config / "c.crt").resolve()), str((config / "c.key").resolve()))
    assert not backend.insecure
    ctx = tls_context(backend)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert any("vwproxy-test-ca" in str(cert["subject"]) for cert in ctx.get_ca_certs())


def test_folder_without_backends_yaml_declares_none(tmp_path: Path) -> None:
    assert load_backends(tmp_path) == {}


def test_multiple_documents_and_empty_ones(tmp_path: Path) -> None:
    text = "---\n" + backend_doc("  url: http://a:1\n", "a") + "---\n---\n" + backend_doc("  url: http://b:2\n", "b")
    backends = load_backends(write_config(tmp_path, text))
    assert {name: b.url for name, b in backends.items()} == {"a": "http://a:1", "b": "http://b:2"}
    assert backends["a"].token == ""


def kubeconfig(current: str = "kind-a", user_a: str = f"token: {SECRET}", cluster_a_extra: str = "") -> str:
    return f"""\
apiVersion: v1
kind: Config
current-context: {current}
clusters:
- name: kind-a
  cluster:
    server: https://127.0.0.1:6443/clusters/root:org
{cluster_a_extra}
- name: kind-b
  cluster:
    server: http://127.0.0.1:7000
    insecure-skip-tls-verify: true
contexts:
- name: kind-a
  context: {{cluster: kind-a, user: user-a}}
- name: kind-b
  context: {{cluster: kind-b, user: user-b}}
users:
- name: user-a
  user:
    {user_a}
- name: user-b
  user:
    tokenFile: ../tokens/b
"""


def test_kubeconfig_current_context_and_named_context(tmp_path: Path) -> None:
    kube = tmp_path / "kube"
    kube.mkdir()
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "b").write_text("token-b\n")  # relative to the kubeconfig's folder
    (kube / "ca.crt").write_bytes(CA_CRT)
    (kube / "config").write_text(kubeconfig(cluster_a_extra="    certificate-authority: ca.crt"))
    text = backend_doc("  kubeconfig: ../kube/config\n", "a") + "---\n" + backend_doc("  kubeconfig: ../kube/config\n  context: kind-b\n", "b")
    backends = load_backends(write_config(tmp_path / "config", text))
    a, b = backends["a"], backends["b"]
    assert (a.url, a.token, a.ca_file, a.insecure) == ("https://127.0.0.1:6443/clusters/root:org", SECRET, str((kube / "ca.crt").resolve()), False)
    assert (b.url, b.token, b.ca_file, b.insecure) == ("http://127.0.0.1:7000", "token-b", "", True)


def test_kubeconfig_inline_data_goes_to_private_files(tmp_path: Path) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    user = f"client-certificate-data: {b64(CLIENT_CRT)}\n    client-key-data: {b64(CLIENT_KEY)}"
    (tmp_path / "kubeconfig").write_text(kubeconfig(user_a=user, cluster_a_extra=f"    certificate-authority-data: {b64(CA_CRT)}"))
    backend = load_backends(write_config(tmp_path, backend_doc("  kubeconfig: ./kubeconfig\n")))["cluster-a"]
    assert backend.token == ""
    for file, content in ((backend.ca_file, CA_CRT), (backend.cert_file, CLIENT_CRT), (backend.key_file, CLIENT_KEY)):
        assert Path(file).read_bytes() == content
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(file).parent).st_mode) == 0o700
        assert not Path(file).is_relative_to(tmp_path)
    assert tls_context(backend).get_ca_certs()


@pytest.mark.parametrize(
    ("text", "files", "expected"),
    [
        ("apiVersion: v1\nkind: Backend\nmetadata: {name: a}\nspec: {url: http://a}\n", {}, "#1: apiVersion: must be vwproxy.dev/v1alpha1, got 'v1'"),
        ("apiVersion: vwproxy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec: {url: http://a}\n", {}, "#1: kind: must be Backend, got 'Cluster'"),
        ("apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nspec: {url: http://a}\n", {}, "#1: metadata.name: required"),
        (backend_doc("  url: http://a\n", "Bad_Name"), {}, "#1: metadata.name: 'Bad_Name' is not a valid name"),
        (backend_doc("  url: http://a\n", "embedded"), {}, "#1: metadata.name: 'embedded' is reserved"),
        (backend_doc("  url: http://a\n", "a") + "---\n" + backend_doc("  url: http://b\n", "a"), {}, "#2: metadata.name: duplicate backend 'a' (first declared in "),
        ("apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {name: a}\n", {}, "#1: spec: required"),
        (backend_doc("  token: x\n"), {}, "#1: spec: give either url or kubeconfig"),
        (backend_doc("  url: http://a\n  kubeconfig: k\n"), {}, "#1: spec: give either url or kubeconfig"),
        (backend_doc("  url: http://a\n  tokenfile: t\n"), {}, "#1: spec.tokenfile: unknown field"),
        (backend_doc("  url: ftp://a\n"), {}, "#1: spec.url: must be an http:// or https:// URL with a host"),
        (backend_doc(f"  url: https://admin:{SECRET}@a\n"), {}, "#1: spec.url: credentials in the URL are not supported"),
        (backend_doc("  url: http://a\n  token: x\n  tokenFile: t\n"), {"t": "x"}, "#1: spec.tokenFile: give either token or tokenFile"),
        (backend_doc("  url: http://a\n  tokenFile: missing\n"), {}, "#1: spec.tokenFile: missing (looked at "),
        (backend_doc("  url: http://a\n  tokenFile: t\n"), {"t": "\n"}, "#1: spec.tokenFile: "),
        (backend_doc("  url: http://a\n  caFile: ca.crt\n  insecureSkipTLSVerify: true\n"), {"ca.crt": CA_CRT.decode()}, "#1: spec.insecureSkipTLSVerify: cannot be combined with spec.caFile"),
        (backend_doc("  url: http://a\n  insecureSkipTLSVerify: 'yes'\n"), {}, "#1: spec.insecureSkipTLSVerify: must be true or false"),
        (backend_doc("  url: http://a\n  clientCertFile: c.crt\n"), {"c.crt": CLIENT_CRT.decode()}, "#1: spec.clientKeyFile: required with clientCertFile"),
        (backend_doc("  url: http://a\n  caFile: ca.crt\n"), {"ca.crt": "not a pem"}, "#1: spec.caFile: not a usable PEM CA bundle"),
        (backend_doc("  url: http://a\n  clientCertFile: c.crt\n  clientKeyFile: c.key\n"), {"c.crt": CLIENT_CRT.decode(), "c.key": SERVER_KEY.decode()}, "#1: spec.clientCertFile, spec.clientKeyFile: not a usable PEM certificate and matching key"),
        (backend_doc("  url: http://a\n  context: x\n"), {}, "#1: spec.context: only with spec.kubeconfig"),
        (backend_doc("  kubeconfig: ./nope\n"), {}, "#1: spec.kubeconfig: ./nope (looked at "),
        (backend_doc("  kubeconfig: k\n  token: x\n"), {"k": kubeconfig()}, "#1: spec.token: only with spec.url"),
        (backend_doc("  kubeconfig: k\n  context: kind-z\n"), {"k": kubeconfig()}, "#1: spec.context: context 'kind-z' not found in k (it has: kind-a, kind-b)"),
        (backend_doc("  kubeconfig: k\n"), {"k": kubeconfig(current="''")}, "#1: spec.context: k has no current-context"),
        (backend_doc("  kubeconfig: k\n"), {"k": kubeconfig(user_a=f"token: {SECRET}\n    exec: {{command: aws}}")}, "#1: spec.kubeconfig: k: users[user-a].user.exec: exec credential plugins are not supported"),
        (backend_doc("  kubeconfig: k\n"), {"k": kubeconfig(cluster_a_extra="    certificate-authority-data: '***'")}, "#1: spec.kubeconfig: k: clusters[kind-a].cluster.certificate-authority-data: not valid base64"),
        (backend_doc("  kubeconfig: k\n"), {"k": kubeconfig(user_a="client-certificate: nope.crt")}, "#1: spec.kubeconfig: k: users[user-a].user.client-certificate: nope.crt (looked at "),
        (backend_doc("  kubeconfig: k\n"), {"k": "clusters: [}"}, "#1: spec.kubeconfig: k: not valid YAML: "),
        (f"apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec: {{url: http://a, token: {SECRET}: x}}\n", {}, "backends.yaml: not valid YAML: "),
        (backend_doc(f"  url: http://a\n  token: [{SECRET}]\n"), {}, "#1: spec.token: must be a string"),
    ],
)
def test_errors_name_the_file_and_field_and_never_a_secret(tmp_path: Path, text: str, files: dict[str, str], expected: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    path = write_config(tmp_path, text)
    with pytest.raises(BackendConfigError) as caught:
        load_backends(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert SECRET not in message


def test_a_missing_backends_file_named_directly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match="backends.yaml: does not exist"):
        load_backends(tmp_path / "backends.yaml")


# --- a real second shard process as a kube backend ----------------------------------------------


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path_factory.mktemp("remote") / "data", token=TOKEN, bookmark_interval=0.2) as shard:
        yield shard


def root_backend(remote: ShardProcess, token: str = TOKEN, name: str = "remote") -> Backend:
    return Backend(name=name, url=f"{remote.url}/clusters/root", token=token)


def configmap(name: str, **annotations: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "annotations": annotations}, "data": {"k": "v"}})


def test_requests_with_the_backend_token_work_and_incoming_authorization_is_not_forwarded(remote: ShardProcess) -> None:
    async def scenario() -> None:
        async with BackendClient(root_backend(remote)) as client:
            # A caller's own (wrong) credentials ride along; the backend must see only vwproxy's.
            caller = {"Authorization": "Bearer caller-token", "Impersonate-User": "system:admin", "Content-Type": "application/json", "Accept": "application/json"}
            created = await client.request("POST", CM, [], caller, configmap("upstream-a"))
            assert created.status == 201, created.body
            assert created.headers["content-type"].startswith("application/json")
            got = await client.request("GET", f"{CM}/upstream-a", "", caller, b"")
            assert got.status == 200
            assert orjson.loads(got.body)["data"] == {"k": "v"}
            listed = await client.request("GET", CM, [("labelSelector", "missing notin (a,b)"), ("limit", "500")], {}, b"")
            assert listed.status == 200
            assert "upstream-a" in [item["metadata"]["name"] for item in orjson.loads(listed.body)["items"]]
            # Kubernetes answers other than 2xx are responses, not exceptions.
            missing = await client.request("GET", f"{CM}/nope", (), {}, b"")
            assert missing.status == 404 and orjson.loads(missing.body)["reason"] == "NotFound"

    run(scenario())


def test_a_backend_without_the_right_token_gets_the_backends_401(remote: ShardProcess) -> None:
    async def scenario() -> None:
        for token in ("", "wrong"):
            async with BackendClient(root_backend(remote, token=token)) as client:
                answer = await client.request("GET", CM, (), {"Authorization": f"Bearer {TOKEN}"}, b"")
                assert answer.status == 401
                assert orjson.loads(answer.body)["reason"] == "Unauthorized"

    run(scenario())


def test_only_the_headers_that_matter_are_forwarded() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Content-Type": "application/json", "Warning": '299 - "a"', "Connection": "keep-alive"}, content=b"{}")

    async def scenario() -> None:
        backend = Backend(name="kcp", url="https://kcp.example:6443/clusters/root:org:ws/", token=SECRET)
        async with BackendClient(backend, transport=httpx.MockTransport(handler)) as client:
            headers = {
                "authorization": "Bearer caller",
                "Impersonate-User": "admin",
                "Impersonate-Group": "system:masters",
                "Cookie": "c=1",
                "X-Forwarded-For": "1.2.3.4",
                "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
                "Content-Type": "application/merge-patch+json",
                "User-Agent": "kubectl/v1.33",
            }
            answer = await client.request("PATCH", "/api/v1/namespaces/default/configmaps/x", [("fieldManager", "a b"), ("dryRun", "All")], headers, b"{}")
            assert answer.status == 200 and answer.headers["warning"] == '299 - "a"' and "connection" not in answer.headers
            await client.request("GET", "/apis/apps/v1/deployments", "watch=1&labelSelector=a%3Db", {}, b"")

    run(scenario())
    first, second = seen
    assert str(first.url) == "https://kcp.example:6443/clusters/root:org:ws/api/v1/namespaces/default/configmaps/x?fieldManager=a%20b&dryRun=All"
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert first.headers["accept"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
    assert first.headers["content-type"] == "application/merge-patch+json"
    assert first.headers["user-agent"] == "kubectl/v1.33"
    assert not [name for name in first.headers if name.lower().startswith(("impersonate-", "cookie", "x-forwarded"))]
    assert first.content == b"{}"
    assert second.url.raw_path == b"/clusters/root:org:ws/apis/apps/v1/deployments?watch=1&labelSelector=a%3Db"
    assert second.headers["user-agent"].startswith("vwproxy/")
    assert SECRET not in repr(BackendClient(Backend(name="kcp", url="https://kcp.example", token=SECRET)))


@pytest.mark.parametrize("path", ["/../x", "/api/%2e%2e/%2E%2E/secret", "/api/./v1", "api/v1", "/api/v1?x=1"])
def test_paths_that_could_leave_the_backend_url_are_refused(path: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async def scenario() -> None:
        transport = httpx.MockTransport(handler)
        async with BackendClient(Backend(name="b", url="http://b/clusters/ws"), transport=transport) as client:
            with pytest.raises(StatusError) as caught:
                await client.request("GET", path, (), {}, b"")
            assert caught.value.code == 400

    run(scenario())
    assert sent == []


def test_a_stopped_backend_is_503_not_an_httpx_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    shard = ShardProcess(tmp_path / "data", token_file=tmp_path / "token", bookmark_interval=0.2).start()
    backend = Backend(name="gone", url=f"{shard.url}/clusters/root", token="file-token")

    async def scenario() -> None:
        async with BackendClient(backend) as client:
            assert (await client.request("GET", CM, (), {}, b"")).status == 200  # --token-file works
            await asyncio.get_running_loop().run_in_executor(None, shard.stop)
            for call in (client.request("GET", CM, (), {}, b""), client.stream("GET", CM, "watch=1", {}, b"")):
                with pytest.raises(StatusError) as caught:
                    await call
                assert caught.value.code == 503 and caught.value.reason == "ServiceUnavailable"
                assert caught.value.message.startswith("backend gone is unreachable: ")

    try:
        run(scenario())
    finally:
        shard.stop()


def test_a_backend_that_never_answers_is_504(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "READ_TIMEOUT_SECONDS", 0.3)
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        backend = Backend(name="slow", url=f"http://127.0.0.1:{silent.getsockname()[1]}")

        async def scenario() -> None:
            async with BackendClient(backend) as client:
                started = time.monotonic()
                with pytest.raises(StatusError) as caught:
                    await client.request("GET", "/api", (), {}, b"")
                assert caught.value.code == 504 and caught.value.reason == "Timeout"
                assert "backend slow did not answer in time" in caught.value.message
                assert time.monotonic() - started < 3

        run(scenario())


def test_watch_stream_relays_lines(remote: ShardProcess) -> None:
    async def scenario() -> None:
        async with BackendClient(root_backend(remote)) as client:
            listed = await client.request("GET", CM, (), {}, b"")
            rv = orjson.loads(listed.body)["metadata"]["resourceVersion"]
            watch = await client.stream("GET", CM, [("watch", "1"), ("resourceVersion", rv), ("allowWatchBookmarks", "true")], {}, b"")
            async with watch:
                assert watch.status == 200
                await client.request("POST", CM, (), {"Content-Type": "application/json"}, configmap("watched"))
                seen: dict[str, bytes] = {}
                lines = watch.lines()
                while not ("ADDED" in seen and "BOOKMARK" in seen):
                    line = await asyncio.wait_for(anext(lines), STEP_SECONDS)
                    event = orjson.loads(line)
                    assert not line.endswith(b"\n")
                    seen.setdefault(event["type"], line)
                added = orjson.loads(stamp_watch_line(seen["ADDED"], CLUSTER))
                assert added["object"]["metadata"]["name"] == "watched"
                assert added["object"]["metadata"]["annotations"]["kcp.io/cluster"] == CLUSTER
                assert stamp_watch_line(seen["BOOKMARK"], CLUSTER) is seen["BOOKMARK"]
            # After aclose the stream ends quietly instead of raising.
            assert [line async for line in watch.lines()] == []

    run(scenario())


def test_stream_chunks_and_error_bodies(remote: ShardProcess) -> None:
    async def scenario() -> None:
        async with BackendClient(root_backend(remote)) as client:
            await client.request("POST", CM, (), {"Content-Type": "application/json"}, configmap("chunked"))
            async with await client.stream("GET", CM, (), {}, b"", read_timeout=STEP_SECONDS) as listing:
                body = b"".join([chunk async for chunk in listing.chunks()])
            assert listing.status == 200
            assert "chunked" in [item["metadata"]["name"] for item in orjson.loads(body)["items"]]
            async with await client.stream("GET", "/api/v1/nothings", (), {}, b"") as missing:
                assert missing.status == 404
                assert orjson.loads(await missing.read())["kind"] == "Status"

    run(scenario())


def test_lines_split_across_chunks_and_overlong_lines() -> None:
    async def body() -> Any:
        for part in (b'{"a":', b'1}\n\n{"b"', b":2}\r\n", b'{"c":3}'):
            yield part

    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            async for part in body():
                yield part

    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Chunks()))
        async with BackendClient(Backend(name="b", url="http://b"), transport=transport) as client:
            async with await client.stream("GET", "/x", (), {}, b"") as stream:
                assert [line async for line in stream.lines()] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']

    run(scenario())


def test_an_endless_line_is_a_503_not_unbounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_LINE_BYTES", 1000)

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            while True:
                yield b"x" * 100

    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Endless()))
        async with BackendClient(Backend(name="noisy", url="http://b"), transport=transport) as client:
            async with await client.stream("GET", "/x", (), {}, b"") as stream:
                with pytest.raises(StatusError) as caught:
                    _ = [line async for line in stream.lines()]
                assert caught.value.code == 503 and "backend noisy sent a line longer than 1000 bytes" in caught.value.message

    run(scenario())


# --- TLS end to end -----------------------------------------------------------------------------


class TLSServer:
    """uvicorn with the test PKI on loopback, requiring a client certificate from the test CA."""

    def __init__(self, folder: Path) -> None:
        for name, data in (("ca.crt", CA_CRT), ("server.crt", SERVER_CRT), ("server.key", SERVER_KEY)):
            (folder / name).write_bytes(data)

        async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
            assert scope["type"] == "http"
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"kind":"APIVersions"}'})

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            log_level="critical",
            ssl_certfile=str(folder / "server.crt"),
            ssl_keyfile=str(folder / "server.key"),
            ssl_ca_certs=str(folder / "ca.crt"),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

    def __enter__(self) -> TLSServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)  # bounded by the deadline
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(STEP_SECONDS)
        self.sock.close()


def test_tls_with_a_ca_and_a_client_certificate_from_kubeconfig_data(tmp_path: Path) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    with TLSServer(tmp_path) as server:
        user = f"client-certificate-data: {b64(CLIENT_CRT)}\n    client-key-data: {b64(CLIENT_KEY)}"
        (tmp_path / "kubeconfig").write_text(kubeconfig(user_a=user, cluster_a_extra=f"    certificate-authority-data: {b64(CA_CRT)}").replace("https://127.0.0.1:6443", server.url))
        trusted = load_backends(write_config(tmp_path, backend_doc("  kubeconfig: ./kubeconfig\n")))["cluster-a"]
        no_ca = Backend(name="no-ca", url=server.url, cert_file=trusted.cert_file, key_file=trusted.key_file)
        insecure = Backend(name="insecure", url=server.url, cert_file=trusted.cert_file, key_file=trusted.key_file, insecure=True)
        no_cert = Backend(name="no-cert", url=server.url, ca_file=trusted.ca_file)

        async def scenario() -> None:
            for backend in (trusted, insecure):
                async with BackendClient(backend) as client:
                    answer = await client.request("GET", "/api", (), {}, b"")
                    assert (answer.status, answer.body) == (200, b'{"kind":"APIVersions"}'), backend.name
            for backend in (no_ca, no_cert):
                async with BackendClient(backend) as client:
                    with pytest.raises(StatusError) as caught:
                        await client.request("GET", "/api", (), {}, b"")
                    assert caught.value.code == 503, backend.name
                    assert caught.value.message.startswith(f"backend {backend.name} is unreachable: ")

        run(scenario())


# --- stamping -----------------------------------------------------------------------------------


def test_stamp_object_sets_the_annotation_and_keeps_the_rest() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "annotations": {"x": "y", "kcp.io/cluster": "stale"}}, "data": {"k": "v"}}
    stamped = orjson.loads(stamp_object(orjson.dumps(obj), CLUSTER))
    assert stamped["metadata"]["annotations"] == {"x": "y", "kcp.io/cluster": CLUSTER}
    assert stamped["data"] == {"k": "v"} and stamped["metadata"]["name"] == "a"
    bare = orjson.loads(stamp_object(b'{"kind":"Namespace","metadata":{"name":"n","annotations":null}}', CLUSTER))
    assert bare["metadata"]["annotations"] == {"kcp.io/cluster": CLUSTER}


def test_stamp_object_stamps_every_list_item_and_table_row() -> None:
    listing = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b", "annotations": {"q": "r"}}}]}
    stamped = orjson.loads(stamp_object(orjson.dumps(listing), CLUSTER))
    assert [item["metadata"]["annotations"]["kcp.io/cluster"] for item in stamped["items"]] == [CLUSTER, CLUSTER]
    assert stamped["items"][1]["metadata"]["annotations"]["q"] == "r"
    assert "annotations" not in stamped["metadata"]
    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": [{"cells": ["a"], "object": {"kind": "PartialObjectMetadata", "metadata": {"name": "a"}}}]}
    assert orjson.loads(stamp_object(orjson.dumps(table), CLUSTER))["rows"][0]["object"]["metadata"]["annotations"] == {"kcp.io/cluster": CLUSTER}


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "metadata": {}}),
        b"not json at all",
        b"",
        b"[1,2]",
        b'"text"',
        b'{"kind":"ConfigMapList","items":[]}',
        b'{"metadata":"garbage"}',
    ],
)
def test_stamp_object_passes_status_and_garbage_through_unchanged(body: bytes) -> None:
    assert stamp_object(body, CLUSTER) is body


def test_stamp_watch_line() -> None:
    line = b'{"type":"MODIFIED","object":{"kind":"ConfigMap","metadata":{"name":"a","resourceVersion":"9"}}}\n'
    stamped = stamp_watch_line(line, CLUSTER)
    assert stamped.endswith(b"}\n") and stamped.count(b"\n") == 1
    event = orjson.loads(stamped)
    assert event["type"] == "MODIFIED"
    assert event["object"]["metadata"] == {"name": "a", "resourceVersion": "9", "annotations": {"kcp.io/cluster": CLUSTER}}
    deleted = orjson.loads(stamp_watch_line(b'{"type":"DELETED","object":{"metadata":{"name":"a"}}}', CLUSTER))
    assert deleted["object"]["metadata"]["annotations"]["kcp.io/cluster"] == CLUSTER


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"BOOKMARK","object":{"kind":"ConfigMap","metadata":{"resourceVersion":"12"}}}\n',
        b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","metadata":{}}}\n',
        b'{"type":"ADDED","object":{"kind":"Status","metadata":{}}}',
        b"garbage\n",
        b'{"type":"ADDED"}',
        b"[]",
    ],
)
def test_stamp_watch_line_leaves_bookmarks_errors_and_garbage_alone(line: bytes) -> None:
    assert stamp_watch_line(line, CLUSTER) is line


def test_strip_cluster_annotation_from_request_bodies() -> None:
    cached = orjson.dumps({"kind": "ConfigMap", "metadata": {"name": "a", "annotations": {"kcp.io/cluster": "chosen", "keep": "me"}}})
    assert orjson.loads(strip_cluster_annotation(cached))["metadata"]["annotations"] == {"keep": "me"}
    escaped = b'{"metadata":{"annotations":{"kcp.io\\/cluster":"chosen"}}}'  # JSON may escape '/'
    assert orjson.loads(strip_cluster_annotation(escaped)) == {"metadata": {"annotations": {}}}
    yaml_body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations:\n    kcp.io/cluster: chosen\n"
    assert orjson.loads(strip_cluster_annotation(yaml_body)) == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "annotations": {}}}
    patch = orjson.dumps(
        [
            {"op": "add", "path": "/metadata/annotations/kcp.io~1cluster", "value": "chosen"},
            {"op": "replace", "path": "/metadata/annotations", "value": {"kcp.io/cluster": "chosen", "x": "1"}},
            {"op": "replace", "path": "/data/k", "value": "v"},
        ]
    )
    assert orjson.loads(strip_cluster_annotation(patch)) == [
        {"op": "replace", "path": "/metadata/annotations", "value": {"x": "1"}},
        {"op": "replace", "path": "/data/k", "value": "v"},
    ]
    listing = orjson.dumps({"kind": "List", "items": [{"metadata": {"annotations": {"kcp.io/cluster": "c"}}}]})
    assert orjson.loads(strip_cluster_annotation(listing))["items"] == [{"metadata": {"annotations": {}}}]
    for untouched in (b'{"metadata":{"name":"a"}}', b"\x0a\x0bprotobuf", b"", b'{"data":{"kcp.io/cluster":"not an annotation"}}'):
        assert strip_cluster_annotation(untouched) is untouched


# --- the shard's bearer-token middleware ----------------------------------------------------------


def test_the_token_middleware_answers_401_status_and_keeps_health_open(remote: ShardProcess) -> None:
    with httpx.Client(base_url=remote.url, timeout=STEP_SECONDS) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
            answer = http.get(f"/clusters/root{CM}", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
            assert http.get("/version", headers=headers).status_code == 401
        assert http.get(f"/clusters/root{CM}", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        for health in ("/healthz", "/livez", "/readyz"):
            assert http.get(health).status_code == 200, health
        for near_miss in ("/healthzx", "/readyz/extra", "/livez/../version"):
            assert http.get(near_miss).status_code == 401, near_miss


def test_shard_token_options(tmp_path: Path) -> None:
    from vwproxy.cli import main

    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SystemExit) as both:
        main(["shard", "--token", "a", "--token-file", str(tmp_path / "empty")])
    assert both.value.code == 2  # argparse: the two options exclude each other
    for option, value, message in (("--token-file", str(tmp_path / "empty"), "the file is empty"), ("--token-file", str(tmp_path / "nope"), "cannot read"), ("--token", " ", "must not be blank")):
        with pytest.raises(SystemExit) as caught:
            main(["shard", "--data-dir", str(tmp_path / "data"), option, value])
        assert message in str(caught.value.code)
    assert not (tmp_path / "data").exists()  # refused before the shard was opened


def test_the_token_middleware_refuses_an_empty_token() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    for token in ("", " padded "):
        with pytest.raises(ValueError):
            require_bearer_token(app, token)
