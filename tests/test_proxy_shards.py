"""Proxy shards (DESIGN §7): a control plane and two `serve --join` processes, each serving a
hash partition of the logical clusters under its own URL, all listed in the endpoint slice.

Every check compares what each endpoint serves with the truth read from the control plane."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from support import eventually
from vwproxy.core.partition import Partition
from vwproxy.testing.topology import ShardedTopology, items

WIDGETS = "apis/example.dev/v1alpha1/widgets"
PARTITIONS = ("hash:0/2", "hash:1/2")
CONSUMERS = ("root:consumer-1", "root:consumer-2", "root:consumer-3", "root:consumer-4")


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardedTopology]:
    with ShardedTopology(tmp_path_factory.mktemp("sharded"), PARTITIONS) as topo:
        yield topo


def cluster_of(client: httpx.Client, path: str) -> str:
    lc = client.get(f"/clusters/{path}/apis/core.kcp.io/v1alpha1/logicalclusters/cluster")
    lc.raise_for_status()
    return str(lc.json()["metadata"]["annotations"]["kcp.io/cluster"])


def truth(topology: ShardedTopology) -> set[tuple[str, str]]:
    """(cluster, name) of every widget in a cluster bound to root:provider's export, from the control plane."""
    with topology.client() as cp:
        provider = cluster_of(cp, "root:provider")
        bindings = items(cp.get("/clusters/*/apis/apis.kcp.io/v1alpha2/apibindings"))
        bound = {b["metadata"]["annotations"]["kcp.io/cluster"] for b in bindings
                 if b["spec"]["reference"]["export"]["name"] == "widgets" and (b.get("status") or {}).get("apiExportClusterName") == provider}
        return {(w["metadata"]["annotations"]["kcp.io/cluster"], w["metadata"]["name"]) for w in items(cp.get(f"/clusters/*/{WIDGETS}"))
                if w["metadata"]["annotations"]["kcp.io/cluster"] in bound}


def served(topology: ShardedTopology, url: str) -> set[tuple[str, str]]:
    with topology.client(url) as vw:
        return {(w["metadata"]["annotations"]["kcp.io/cluster"], w["metadata"]["name"]) for w in items(vw.get(f"/clusters/*/{WIDGETS}"))}


def test_the_endpoint_slice_lists_each_shard_and_each_serves_exactly_its_partition(topology: ShardedTopology) -> None:
    urls = topology.endpoint_urls("root:provider", "widgets")
    assert [u.split("/services/")[0] for u in urls] == [m.url for m in topology.members], "one URL per shard, by shard name; none for the control plane"
    expected = truth(topology)
    assert len({c for c, _ in expected}) >= 3, expected
    union: set[tuple[str, str]] = set()
    for url, spec in zip(urls, PARTITIONS, strict=True):
        mine = served(topology, url)
        partition = Partition.parse(spec)
        assert mine, f"{url} serves nothing: both partitions hold consumers of the example"
        assert all(partition.owns(cluster) for cluster, _ in mine), (spec, mine)
        assert mine == {(c, n) for c, n in expected if partition.owns(c)}, (spec, mine, expected)
        union |= mine
        with topology.client(url) as vw:  # the bindings too: a provider engages clusters from them
            bindings = {b["metadata"]["annotations"]["kcp.io/cluster"] for b in items(vw.get("/clusters/*/apis/apis.kcp.io/v1alpha2/apibindings"))}
        assert bindings == {c for c, _ in mine}, (spec, bindings)
    assert union == expected


def test_a_shard_lists_its_registration(topology: ShardedTopology) -> None:
    with topology.client() as cp:
        found = {s["metadata"]["name"]: s for s in items(cp.get("/clusters/root/apis/core.kcp.io/v1alpha1/shards"))}
    assert set(found) == {"root", "shard-1", "shard-2"}
    assert found["shard-1"]["spec"]["virtualWorkspaceURL"] == topology.members[0].url
    assert found["shard-2"]["metadata"]["annotations"]["vwproxy.dev/partition"] == "hash:1/2"
    assert found["root"]["metadata"]["annotations"]["vwproxy.dev/partition"] == "none"


Event = tuple[str, str, str]


async def record_watch(url: str, verify: ssl.SSLContext, token: str, events: list[Event], opened: asyncio.Event) -> None:
    """A wildcard watch of widgets through one endpoint from its list's RV, recorded until cancelled."""
    async with httpx.AsyncClient(base_url=url, verify=verify, trust_env=False, timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
        listed = (await client.get(f"/clusters/*/{WIDGETS}")).json()
        params = {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "60"}
        async with client.stream("GET", f"/clusters/*/{WIDGETS}", params=params) as resp:
            assert resp.status_code == 200
            opened.set()
            async for line in resp.aiter_lines():
                if line.strip():
                    event = orjson.loads(line)
                    md = event["object"]["metadata"]
                    events.append((event["type"], md["annotations"]["kcp.io/cluster"], md["name"]))


def record_watch_events(urls: list[str], verify: ssl.SSLContext, token: str, front_url: str, create: list[tuple[str, str]],
                        done: Callable[[list[list[Event]]], bool]) -> list[list[Event]]:
    """Watch every endpoint, create widget `name` in workspace `path` for each of `create` through
    the control plane's front, and record until `done(events per endpoint)` (bounded)."""
    recorded: list[list[Event]] = [[] for _ in urls]

    async def scenario() -> None:
        opened = [asyncio.Event() for _ in urls]
        watches = [asyncio.create_task(record_watch(url, verify, token, events, o)) for url, events, o in zip(urls, recorded, opened, strict=True)]
        try:
            await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 10)
            async with httpx.AsyncClient(base_url=front_url, verify=verify, trust_env=False, timeout=10, headers={"Authorization": f"Bearer {token}"}) as cp:
                for path, name in create:
                    made = await cp.post(f"/clusters/{path}/apis/example.dev/v1alpha1/namespaces/default/widgets",
                                         json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1}})
                    assert made.status_code == 201, made.text
            async with asyncio.timeout(10):
                while not done(recorded):
                    await asyncio.sleep(0.05)  # bounded by the timeout above
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)

    asyncio.run(scenario())
    return recorded


def test_a_wildcard_watch_on_each_endpoint_sees_exactly_its_partition(topology: ShardedTopology) -> None:
    urls = topology.endpoint_urls("root:provider", "widgets")
    with topology.client() as cp:
        clusters = {path: cluster_of(cp, path) for path in CONSUMERS}
    bound = {c for c, _ in truth(topology)}
    want = [{("ADDED", c, "watched") for c in clusters.values() if c in bound and Partition.parse(spec).owns(c)} for spec in PARTITIONS]
    recorded = record_watch_events(urls, ssl.create_default_context(cafile=str(topology.ca_file)), topology.token, topology.control.url,
                                   [(path, "watched") for path in CONSUMERS], lambda got: all(w <= set(r) for w, r in zip(want, got, strict=True)))
    order = list(clusters.values())
    for events, spec in zip(recorded, PARTITIONS, strict=True):
        partition = Partition.parse(spec)
        assert all(partition.owns(c) for _, c, _ in events), (spec, events)
        mine = [e for e in events if e[2] == "watched"]
        assert mine == [("ADDED", c, "watched") for c in order if c in bound and partition.owns(c)], ("each once, in commit order", spec, events)


def test_writes_go_through_the_owning_shard_and_elsewhere_are_refused(topology: ShardedTopology) -> None:
    urls = topology.endpoint_urls("root:provider", "widgets")
    with topology.client() as cp:
        cluster = cluster_of(cp, "root:consumer-1")
    owner = next(i for i, spec in enumerate(PARTITIONS) if Partition.parse(spec).owns(cluster))
    path = f"/clusters/{cluster}/apis/example.dev/v1alpha1/namespaces/default/widgets"
    body = {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "through-shard"}, "spec": {"size": 4}}
    with topology.client(urls[owner]) as vw:
        made = vw.post(path, json=body)
        assert made.status_code == 201, made.text
        assert made.json()["metadata"]["annotations"]["kcp.io/cluster"] == cluster
        read = vw.get(f"{path}/through-shard")  # read your write, at once
        assert read.status_code == 200 and read.json()["metadata"]["resourceVersion"] == made.json()["metadata"]["resourceVersion"]
    with topology.client() as cp:
        assert cp.get("/clusters/root:consumer-1/apis/example.dev/v1alpha1/namespaces/default/widgets/through-shard").status_code == 200
    with topology.client(urls[1 - owner]) as other:
        for answer in (other.get(path), other.post(path, json={**body, "metadata": {"name": "wrong-shard"}})):
            assert answer.status_code == 403, answer.text
            assert answer.json()["reason"] == "Forbidden"


def test_a_proxy_shard_serves_only_the_apiexport_virtual_workspace(topology: ShardedTopology) -> None:
    member = topology.members[0]
    with topology.client(member.url) as client:
        for path in ("/clusters/root/api/v1/namespaces", "/services/initializingworkspaces/root:universal/clusters/*/apis/core.kcp.io/v1alpha1/logicalclusters"):
            answer = client.get(path)
            assert answer.status_code == 404 and answer.json()["kind"] == "Status", answer.text
            assert topology.control.url in answer.json()["message"]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(topology.ca_file)), trust_env=False) as anonymous:
        denied = anonymous.get(f"{topology.endpoint_urls('root:provider', 'widgets')[0]}/clusters/*/{WIDGETS}")
        assert denied.status_code in (401, 403), denied.text


def test_a_consumer_bound_later_is_engaged_by_the_shard_that_owns_it(topology: ShardedTopology) -> None:
    with topology.client() as cp:
        made = cp.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces",
                       json={"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "late-consumer"}, "spec": {}})
        assert made.status_code == 201, made.text
        cluster = eventually(lambda: (cp.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/late-consumer").json().get("spec") or {}).get("cluster"),
                             "the workspace to be scheduled")
        eventually(lambda: cp.get(f"/clusters/{cluster}/api/v1/namespaces/default").status_code == 200, "its default namespace")
        bound = cp.post(f"/clusters/{cluster}/apis/apis.kcp.io/v1alpha2/apibindings", json={
            "apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "widgets"},
            "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}})
        assert bound.status_code == 201, bound.text
        eventually(lambda: cp.get(f"/clusters/{cluster}/apis/example.dev/v1alpha1/namespaces/default/widgets").status_code == 200, "widgets served there")
        created = cp.post(f"/clusters/{cluster}/apis/example.dev/v1alpha1/namespaces/default/widgets",
                          json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "late"}, "spec": {"size": 2}})
        assert created.status_code == 201, created.text
    urls = topology.endpoint_urls("root:provider", "widgets")
    owner = next(i for i, spec in enumerate(PARTITIONS) if Partition.parse(spec).owns(cluster))
    eventually(lambda: (cluster, "late") in served(topology, urls[owner]), "the owning shard to serve the new consumer")
    assert all(c != cluster for c, _ in served(topology, urls[1 - owner]))


def test_a_killed_shard_takes_only_its_partition_down_and_resyncs_on_restart(topology: ShardedTopology) -> None:
    urls = topology.endpoint_urls("root:provider", "widgets")
    victim, survivor = topology.members
    survivor_partition = Partition.parse(PARTITIONS[1])
    victim_partition = Partition.parse(PARTITIONS[0])
    victim.kill()
    try:
        with topology.client() as cp:
            clusters = {path: cluster_of(cp, path) for path in CONSUMERS}
            for path in CONSUMERS:
                made = cp.post(f"/clusters/{path}/apis/example.dev/v1alpha1/namespaces/default/widgets",
                               json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "while-down"}, "spec": {"size": 5}})
                assert made.status_code == 201, made.text
        expected = truth(topology)
        eventually(lambda: served(topology, urls[1]) == {(c, n) for c, n in expected if survivor_partition.owns(c)},
                   "the surviving shard to serve its partition, new widgets included")
        with pytest.raises(httpx.ConnectError):
            served(topology, urls[0])
    finally:
        victim.start(topology.token)
    eventually(lambda: served(topology, urls[0]) == {(c, n) for c, n in truth(topology) if victim_partition.owns(c)},
               "the restarted shard to resync its partition, with what was written while it was down")
    assert any(n == "while-down" for _, n in served(topology, urls[0])), clusters
    assert topology.endpoint_urls("root:provider", "widgets") == urls


def test_a_service_account_of_the_control_plane_is_authenticated_and_authorized_on_each_shard(topology: ShardedTopology) -> None:
    """Tokens are the control plane's (its signing key), RBAC is the control plane's (mirrored):
    granted apiexports/content, a controller's ServiceAccount reads through every endpoint; a
    second one without the grant is refused there; revoking the grant takes effect on the shards."""
    rbac = "/clusters/root:provider/apis/rbac.authorization.k8s.io/v1"
    tokens = {}
    with topology.client() as cp:
        for name in ("controller", "bystander"):
            assert cp.post("/clusters/root:provider/api/v1/namespaces/default/serviceaccounts", json={"metadata": {"name": name}}).status_code == 201
            issued = cp.post(f"/clusters/root:provider/api/v1/namespaces/default/serviceaccounts/{name}/token",
                             json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})
            assert issued.status_code == 201, issued.text
            tokens[name] = issued.json()["status"]["token"]
        rules = [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "resourceNames": ["widgets"], "verbs": ["*"]}]
        assert cp.post(f"{rbac}/clusterroles", json={"metadata": {"name": "widgets-content"}, "rules": rules}).status_code == 201
        grant = {"metadata": {"name": "controller-content"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "widgets-content"},
                 "subjects": [{"kind": "ServiceAccount", "namespace": "default", "name": "controller"}]}
        assert cp.post(f"{rbac}/clusterrolebindings", json=grant).status_code == 201
    context = ssl.create_default_context(cafile=str(topology.ca_file))

    def status(url: str, who: str) -> int:
        with httpx.Client(verify=context, trust_env=False, timeout=10, headers={"Authorization": f"Bearer {tokens[who]}"}) as client:
            return client.get(f"{url}/clusters/*/{WIDGETS}").status_code

    for url in topology.endpoint_urls("root:provider", "widgets"):
        eventually(lambda u=url: status(u, "controller") == 200, f"the controller's token and grant on {url}")
        assert status(url, "bystander") == 403
    with topology.client() as cp:
        assert cp.delete(f"{rbac}/clusterrolebindings/controller-content").status_code == 200
    for url in topology.endpoint_urls("root:provider", "widgets"):
        eventually(lambda u=url: status(u, "controller") == 403, f"the revoked grant on {url}")


def test_the_shards_ride_out_a_control_plane_restart(topology: ShardedTopology) -> None:
    """While the control plane is down the shards keep serving what they hold; once it is back
    (same data dir and port) they follow it again: a widget created then reaches its shard."""
    urls = topology.endpoint_urls("root:provider", "widgets")
    before = [served(topology, url) for url in urls]
    topology.control.stop()
    try:
        assert [served(topology, url) for url in urls] == before, "the views stay while the control plane is away"
    finally:
        topology.control.start()
    with topology.client() as cp:
        cluster = cluster_of(cp, "root:consumer-3")
        made = cp.post("/clusters/root:consumer-3/apis/example.dev/v1alpha1/namespaces/default/widgets",
                       json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "after-restart"}, "spec": {"size": 1}})
        assert made.status_code == 201, made.text
    owner = next(i for i, spec in enumerate(PARTITIONS) if Partition.parse(spec).owns(cluster))
    eventually(lambda: (cluster, "after-restart") in served(topology, urls[owner]), "the owning shard to follow the restarted control plane")
    for member in topology.members:
        with topology.client(member.url) as client:
            eventually(lambda c=client: c.get("/readyz").status_code == 200, f"{member.name} ready again")


def test_topology_logs_carry_no_tracebacks(topology: ShardedTopology) -> None:
    assert "Traceback" not in topology.logs(), topology.logs()
