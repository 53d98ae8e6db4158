"""A bounded fuzz of the HTTP surface (issue 12): random paths, queries, headers and bodies
against the embedded shard, the front and a virtual workspace URL. Whatever arrives, the answer
is not a 5xx (a 504 from an unreachable backend aside, there is none here) and the server
stays alive. Deterministic (derandomized) and bounded: a few hundred requests, seconds."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import eventually
from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(120)

EXAMPLES = 500
# Real resource paths (under any prefix), so most requests get past routing into the handlers.
RESOURCE_PATHS = [
    "/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/default/configmaps/fuzz", "/api/v1/namespaces/default/configmaps/fuzz/status",
    "/api/v1/namespaces", "/api/v1/namespaces/default", "/api/v1/namespaces/default/secrets/fuzz", "/api/v1/configmaps",
    "/apis/events.k8s.io/v1/namespaces/default/events/fuzz", "/apis/example.dev/v1alpha1/namespaces/default/widgets",
    "/apis/example.dev/v1alpha1/namespaces/default/widgets/fuzz", "/apis/example.dev/v1alpha1/namespaces/default/widgets/fuzz/status",
    "/apis/example.dev/v1alpha1/widgets", "/apis/apis.kcp.io/v1alpha2/apibindings/fuzz", "/apis/apis.kcp.io/v1alpha1/apiexportendpointslices",
    "/apis/tenancy.kcp.io/v1alpha1/workspaces/fuzz", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/fuzz",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/fuzz", "/api", "/apis", "/openapi/v3", "/version",
    "/apis/example.dev/v1alpha1", "/api/v1/watch/namespaces/default/configmaps",
]

SEGMENTS = st.sampled_from([
    "clusters", "root", "root:consumer-1", "*", "api", "apis", "v1", "namespaces", "default", "configmaps", "secrets",
    "events", "example.dev", "v1alpha1", "widgets", "status", "watch", "apis.kcp.io", "v1alpha2", "apiexports",
    "tenancy.kcp.io", "workspaces", "services", "apiexport", "openapi", "v3", "%2e%2e", "..", "", "x" * 300, "%00", "ü",
]) | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), max_size=12)
QUERY_KEYS = st.sampled_from([
    "watch", "labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch",
    "timeoutSeconds", "dryRun", "fieldManager", "fieldValidation", "force", "propagationPolicy", "sendInitialEvents",
    "allowWatchBookmarks", "orphanDependents",
]) | st.text(max_size=8)
QUERY_VALUES = st.sampled_from(["true", "false", "0", "1", "-1", "99999999999999999999", "a=b", "a in (b", "!x", "All", "Strict", "", "0.5"]) | st.text(max_size=12)
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/yaml", "application/merge-patch+json", "application/json-patch+json",
    "application/strategic-merge-patch+json", "application/apply-patch+yaml", "application/vnd.kubernetes.protobuf",
    "text/plain", "", "application/json; charset=utf-16", "*/*",
])
ACCEPTS = st.sampled_from([
    "application/json", "application/json;as=Table;v=v1;g=meta.k8s.io", "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "application/vnd.kubernetes.protobuf", "text/html", "*/*", "",
])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "example.dev/v1alpha1", "apis.kcp.io/v1alpha2", "tenancy.kcp.io/v1alpha1"]) | st.text(max_size=5),
        "kind": st.sampled_from(["ConfigMap", "Widget", "APIBinding", "Workspace"]) | st.text(max_size=5),
        "metadata": st.fixed_dictionaries({}, optional={"name": st.sampled_from(["fuzz", "a", "-bad-"]) | st.text(max_size=8), "labels": JSON_VALUES, "resourceVersion": JSON_VALUES, "finalizers": JSON_VALUES}) | JSON_VALUES,
        "spec": JSON_VALUES,
        "data": JSON_VALUES,
        "status": JSON_VALUES,
    },
)
BODIES = (
    OBJECTS.map(lambda o: httpx.Request("POST", "http://x", json=o).content)
    | JSON_VALUES.map(lambda o: httpx.Request("POST", "http://x", json=o).content)
    | st.binary(max_size=200)
    | st.sampled_from([b"", b"{", b"[" * 3000 + b"]" * 3000, b"a: &a [1]\nb: [*a, *a]\n", b"\xff\xfe", b'{"metadata":{"name":"x"},"kind":"ConfigMap","apiVersion":"v1","data":{"a":1}}'])
)
METHODS = st.sampled_from(["GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with RunningProxy(tmp_path_factory.mktemp("fuzz") / "data") as proxy:
        assert proxy.settle()
        yield proxy


@pytest.fixture(scope="module")
def prefixes(running: RunningProxy) -> list[str]:
    """The shard's own paths (the front serves them for the embedded shard), a workspace by path, the VW."""
    with running.client(timeout=10) as front:
        endpoints = eventually(lambda: (front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json().get("status") or {}).get("endpoints"), "the VW URL")
    vw = str(endpoints[0]["url"]).removeprefix(running.url)
    return ["", "/clusters/root", "/clusters/root:consumer-1", f"/clusters/{running.cluster_of('root:consumer-1')}", vw, f"{vw}/clusters/*", f"{vw}/clusters/{running.cluster_of('root:consumer-1')}"]


def test_no_request_gets_a_5xx_and_the_server_lives(running: RunningProxy, prefixes: list[str]) -> None:
    client = running.client(timeout=httpx.Timeout(10, read=10))

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(
        prefix=st.sampled_from(prefixes),
        resource=st.sampled_from(RESOURCE_PATHS) | st.lists(SEGMENTS, max_size=9).map(lambda parts: "/" + "/".join(parts)),
        query=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4),
        method=METHODS,
        content_type=CONTENT_TYPES,
        accept=ACCEPTS,
        body=BODIES,
    )
    def request(prefix: str, resource: str, query: list[tuple[str, str]], method: str, content_type: str, accept: str, body: bytes) -> None:
        # A watch would stream until its timeout; keep it short so the run stays bounded.
        query = [(k, v) for k, v in query if k != "timeoutSeconds"] + [("timeoutSeconds", "1")]
        path = prefix + resource
        headers = {"content-type": content_type, "accept": accept}
        try:
            resp = client.request(method, path, params=query, headers=headers, content=body if method not in ("GET", "HEAD") else None)
        except httpx.InvalidURL:
            return  # not a request a client can send
        assert resp.status_code < 500, f"{method} {path}?{query} {headers} {body[:200]!r} -> {resp.status_code} {resp.text[:500]}"

    try:
        request()
    finally:
        client.close()
    with running.client(timeout=10) as again:
        assert again.get("/readyz").status_code == 200
