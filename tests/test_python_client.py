"""The official `kubernetes` Python client, driven against a running embedded shard.

Everything here goes through real HTTP on loopback with the client a user would use:
`kubernetes.client.Configuration(host=<cluster url>)` and an `ApiClient`. Tests assert what a
user of the client would notice: returned objects, ApiException statuses, list order and
completeness, and the exact sequence of watch events.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import kubernetes  # noqa: F401  (the test extra installs it; a missing client fails, never skips)

from kubernetes import client, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from vwproxy.testing.shard import EmbeddedShard  # noqa: E402

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
NS = "default"
# Upper bound for any single watch stream in these tests; the stream is stopped well before
# this once the expected events arrived, so it only matters when something is broken.
WATCH_TIMEOUT_SECONDS = 8

pytestmark = pytest.mark.timeout(30)


# -- helpers ---------------------------------------------------------------------------------


def api_client(shard: EmbeddedShard, cluster: str = "root") -> client.ApiClient:
    cfg = client.Configuration(host=shard.cluster_url(cluster))
    return client.ApiClient(cfg)


@pytest.fixture
def root_client(shard: EmbeddedShard) -> Iterator[client.ApiClient]:
    with api_client(shard) as c:
        yield c


@pytest.fixture
def core(root_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(root_client)


def cm(name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def names(items: list[Any]) -> list[str]:
    return [i.metadata.name for i in items]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until true or fail after `timeout` seconds (a bounded wait, not a guess)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def watcher_count(shard: EmbeddedShard) -> int:
    return shard.server.call(shard.shard.watcher_count)


# -- CRUD ------------------------------------------------------------------------------------


def test_configmap_crud(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, cm("settings", {"a": "1"}, {"app": "demo"}))
    assert created.metadata.name == "settings"
    assert created.metadata.namespace == NS
    assert created.metadata.uid
    assert created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    assert created.metadata.annotations["kcp.io/cluster"] == "root"
    assert created.data == {"a": "1"}

    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(NS, cm("settings", {"a": "2"}))
    assert exists.value.status == 409

    read = core.read_namespaced_config_map("settings", NS)
    assert read.data == {"a": "1"}
    assert read.metadata.uid == created.metadata.uid
    assert read.metadata.resource_version == created.metadata.resource_version

    # replace with the current resourceVersion succeeds and bumps it
    read.data = {"a": "2"}
    replaced = core.replace_namespaced_config_map("settings", NS, read)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid

    # replace with the stale resourceVersion conflicts and changes nothing
    stale = cm("settings", {"a": "stale"}, {"app": "demo"})
    stale.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("settings", NS, stale)
    assert conflict.value.status == 409
    assert "Conflict" in conflict.value.body
    assert core.read_namespaced_config_map("settings", NS).data == {"a": "2"}

    # merge patch
    patched = core.patch_namespaced_config_map("settings", NS, {"data": {"b": "3"}, "metadata": {"labels": {"tier": "x"}}}, _content_type=MERGE_PATCH)
    assert patched.data == {"a": "2", "b": "3"}
    assert patched.metadata.labels == {"app": "demo", "tier": "x"}
    assert int(patched.metadata.resource_version) > int(replaced.metadata.resource_version)

    # JSON patch (a list body is sent as application/json-patch+json by the client)
    patched = core.patch_namespaced_config_map("settings", NS, [{"op": "remove", "path": "/data/a"}, {"op": "add", "path": "/data/c", "value": "4"}])
    assert patched.data == {"b": "3", "c": "4"}

    # a failing JSON patch `test` op is rejected and changes nothing
    with pytest.raises(ApiException) as failed:
        core.patch_namespaced_config_map("settings", NS, [{"op": "test", "path": "/data/b", "value": "nope"}, {"op": "remove", "path": "/data/b"}])
    assert failed.value.status in (409, 422)
    assert core.read_namespaced_config_map("settings", NS).data == {"b": "3", "c": "4"}

    core.delete_namespaced_config_map("settings", NS)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("settings", NS)
    assert gone.value.status == 404
    with pytest.raises(ApiException) as again:
        core.delete_namespaced_config_map("settings", NS)
    assert again.value.status == 404
    assert "settings" not in names(core.list_namespaced_config_map(NS).items)


def test_configmap_default_patch_is_strategic_merge(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("smp", {"a": "1"}))
    patched = core.patch_namespaced_config_map("smp", NS, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}


def test_secret_crud(core: client.CoreV1Api) -> None:
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"user": "admin"}, data={"token": base64.b64encode(b"s3cr3t").decode()})
    created = core.create_namespaced_secret(NS, secret)
    assert created.type == "Opaque"
    assert created.string_data is None
    assert base64.b64decode(created.data["user"]) == b"admin"
    assert base64.b64decode(created.data["token"]) == b"s3cr3t"

    read = core.read_namespaced_secret("creds", NS)
    assert read.data == created.data
    assert read.metadata.resource_version == created.metadata.resource_version

    read.data["token"] = base64.b64encode(b"rotated").decode()
    replaced = core.replace_namespaced_secret("creds", NS, read)
    assert base64.b64decode(replaced.data["token"]) == b"rotated"

    stale = core.read_namespaced_secret("creds", NS)
    stale.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_secret("creds", NS, stale)
    assert conflict.value.status == 409

    patched = core.patch_namespaced_secret("creds", NS, {"stringData": {"extra": "yes"}}, _content_type=MERGE_PATCH)
    assert base64.b64decode(patched.data["extra"]) == b"yes"
    assert base64.b64decode(patched.data["token"]) == b"rotated"
    patched = core.patch_namespaced_secret("creds", NS, [{"op": "remove", "path": "/data/user"}])
    assert sorted(patched.data) == ["extra", "token"]

    # a secret's data must be base64: invalid data is rejected
    bad = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"k": "not base64!"}}
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_secret(NS, bad)
    assert invalid.value.status in (400, 422)

    core.delete_namespaced_secret("creds", NS)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_secret("creds", NS)
    assert gone.value.status == 404


def test_create_in_missing_namespace_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_config_map("nowhere", cm("x"))
    assert missing.value.status == 404


# -- selectors -------------------------------------------------------------------------------


@pytest.fixture
def labelled(core: client.CoreV1Api) -> None:
    specs = {
        "a": {"env": "prod", "tier": "web"},
        "b": {"env": "dev", "tier": "web"},
        "c": {"env": "staging"},
        "d": {"tier": "db"},
        "e": {},
    }
    for name, labels in specs.items():
        core.create_namespaced_config_map(NS, cm(name, labels=labels or None))


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", ["a"]),
        ("env==prod", ["a"]),
        ("env!=prod", ["b", "c", "d", "e"]),
        ("env in (prod,dev)", ["a", "b"]),
        ("env notin (prod,dev)", ["c", "d", "e"]),
        ("env", ["a", "b", "c"]),
        ("!env", ["d", "e"]),
        ("tier=web,env!=dev", ["a"]),
        ("env,!tier", ["c"]),
        ("env=nothing", []),
    ],
)
def test_label_selector_list(core: client.CoreV1Api, labelled: None, selector: str, expected: list[str]) -> None:
    result = core.list_namespaced_config_map(NS, label_selector=selector)
    assert names(result.items) == expected


def test_invalid_label_selector_is_400(core: client.CoreV1Api, labelled: None) -> None:
    with pytest.raises(ApiException) as bad:
        core.list_namespaced_config_map(NS, label_selector="env in prod")
    assert bad.value.status == 400


def test_field_selector_by_name(core: client.CoreV1Api, labelled: None) -> None:
    assert names(core.list_namespaced_config_map(NS, field_selector="metadata.name=c").items) == ["c"]
    assert names(core.list_namespaced_config_map(NS, field_selector="metadata.name!=c").items) == ["a", "b", "d", "e"]
    assert names(core.list_namespaced_config_map(NS, field_selector="metadata.name=c", label_selector="env=prod").items) == []
    assert names(core.list_namespaced_config_map(NS, field_selector="metadata.name=zzz").items) == []
    with pytest.raises(ApiException) as unsupported:
        core.list_namespaced_config_map(NS, field_selector="data.k=v")
    assert unsupported.value.status == 400
    namespaces = core.list_namespace(field_selector="metadata.name=default")
    assert names(namespaces.items) == ["default"]


# -- pagination ------------------------------------------------------------------------------


def test_paginated_list_is_complete_ordered_and_consistent(core: client.CoreV1Api) -> None:
    expected = [f"cm-{i:02d}" for i in range(25)]
    for name in reversed(expected):  # creation order must not matter; lists are name-ordered
        core.create_namespaced_config_map(NS, cm(name, labels={"paged": "yes"}))

    seen: list[str] = []
    pages = 0
    list_rv = None
    token: str | None = None
    while True:
        page = core.list_namespaced_config_map(NS, label_selector="paged=yes", limit=10, _continue=token)
        pages += 1
        assert len(page.items) <= 10
        if list_rv is None:
            list_rv = page.metadata.resource_version
        else:
            # every page is served from the snapshot of the first
            assert page.metadata.resource_version == list_rv
        seen.extend(names(page.items))
        token = page.metadata._continue
        if not token:
            assert page.metadata.remaining_item_count in (None, 0)
            break
        assert page.metadata.remaining_item_count == 25 - len(seen)
        # changes between pages must not leak into the paginated list
        core.create_namespaced_config_map(NS, cm(f"cm-{pages:02d}x", labels={"paged": "yes"}))
        core.create_namespaced_config_map(NS, cm(f"zz-{pages}", labels={"paged": "yes"}))
        doomed, relabelled = {1: ("cm-15", "cm-17"), 2: ("cm-22", "cm-24")}[pages]  # not yet returned
        core.delete_namespaced_config_map(doomed, NS)
        core.patch_namespaced_config_map(relabelled, NS, {"metadata": {"labels": {"paged": "no"}}}, _content_type=MERGE_PATCH)
        assert pages < 10, "pagination does not terminate"

    assert pages == 3
    assert seen == expected  # all exactly once, in name order

    # a fresh list now reflects the changes made in between
    fresh = names(core.list_namespaced_config_map(NS, label_selector="paged=yes").items)
    assert "cm-01x" in fresh and "zz-2" in fresh
    assert not {"cm-15", "cm-17", "cm-22", "cm-24"} & set(fresh)
    assert fresh == sorted(fresh)


def test_paginated_list_without_changes_across_all_namespaces(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="other")))
    for i in range(7):
        core.create_namespaced_config_map(NS, cm(f"p{i}", labels={"pg": "1"}))
        core.create_namespaced_config_map("other", cm(f"p{i}", labels={"pg": "1"}))
    seen: list[tuple[str, str]] = []
    token = None
    for _ in range(10):
        page = core.list_config_map_for_all_namespaces(label_selector="pg=1", limit=5, _continue=token)
        seen.extend((i.metadata.namespace, i.metadata.name) for i in page.items)
        token = page.metadata._continue
        if not token:
            break
    assert seen == sorted([(NS, f"p{i}") for i in range(7)] + [("other", f"p{i}") for i in range(7)])


def test_invalid_continue_token_is_rejected(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as bad:
        core.list_namespaced_config_map(NS, limit=1, _continue="not-a-token")
    assert bad.value.status in (400, 410)


# -- all namespaces, namespaces, isolation ---------------------------------------------------


def test_list_for_all_namespaces(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
    core.create_namespaced_config_map(NS, cm("shared", {"where": "default"}, {"grp": "x"}))
    core.create_namespaced_config_map("team-a", cm("shared", {"where": "team-a"}, {"grp": "x"}))
    core.create_namespaced_config_map("team-a", cm("only-a", labels={"grp": "x"}))

    everything = core.list_config_map_for_all_namespaces(label_selector="grp=x")
    got = [(i.metadata.namespace, i.metadata.name, (i.data or {}).get("where")) for i in everything.items]
    assert got == [("default", "shared", "default"), ("team-a", "only-a", None), ("team-a", "shared", "team-a")]
    assert names(core.list_namespaced_config_map("team-a", label_selector="grp=x").items) == ["only-a", "shared"]
    assert names(core.list_namespaced_config_map(NS, label_selector="grp=x").items) == ["shared"]
    by_ns = core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=team-a", label_selector="grp=x")
    assert names(by_ns.items) == ["only-a", "shared"]


def test_logical_clusters_are_isolated(shard: EmbeddedShard, core: client.CoreV1Api) -> None:
    shard.create_logical_cluster("abc")
    with api_client(shard, "abc") as abc_client:
        abc = client.CoreV1Api(abc_client)
        assert names(abc.list_namespace().items) == ["default"]

        root_cm = core.create_namespaced_config_map(NS, cm("same-name", {"from": "root"}))
        with pytest.raises(ApiException) as missing:
            abc.read_namespaced_config_map("same-name", NS)
        assert missing.value.status == 404
        assert names(abc.list_namespaced_config_map(NS).items) == []

        abc_cm = abc.create_namespaced_config_map(NS, cm("same-name", {"from": "abc"}))
        assert abc_cm.metadata.uid != root_cm.metadata.uid
        assert abc_cm.metadata.annotations["kcp.io/cluster"] == "abc"
        assert core.read_namespaced_config_map("same-name", NS).data == {"from": "root"}
        assert abc.read_namespaced_config_map("same-name", NS).data == {"from": "abc"}

        abc.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="abc-only")))
        assert "abc-only" not in names(core.list_namespace().items)
        with pytest.raises(ApiException) as no_ns:
            core.create_namespaced_config_map("abc-only", cm("x"))
        assert no_ns.value.status == 404

        # all-namespaces lists stay inside the logical cluster
        assert [(i.metadata.annotations["kcp.io/cluster"], i.data) for i in abc.list_config_map_for_all_namespaces().items] == [("abc", {"from": "abc"})]

        # deleting in one cluster leaves the other alone
        abc.delete_namespaced_config_map("same-name", NS)
        assert core.read_namespaced_config_map("same-name", NS).data == {"from": "root"}

        # a watch in abc sees nothing of root's changes
        rv = abc.list_namespaced_config_map(NS).metadata.resource_version
        core.create_namespaced_config_map(NS, cm("root-only"))
        abc.create_namespaced_config_map(NS, cm("abc-marker"))
        w = watch.Watch()
        seen = []
        for event in w.stream(abc.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
            seen.append((event["type"], event["object"].metadata.name))
            if event["object"].metadata.name == "abc-marker":
                w.stop()
        assert seen == [("ADDED", "abc-marker")]

    with api_client(shard, "does-not-exist") as nowhere_client:
        with pytest.raises(ApiException) as unknown:
            client.CoreV1Api(nowhere_client).list_namespaced_config_map(NS)
        assert unknown.value.status == 404


# -- watch -----------------------------------------------------------------------------------


def event_key(event: dict[str, Any]) -> tuple[str, str, str]:
    obj = event["object"]
    return (event["type"], obj.metadata.name, obj.metadata.resource_version)


def test_watch_sees_added_modified_deleted_in_order(core: client.CoreV1Api, shard: EmbeddedShard) -> None:
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    a = core.create_namespaced_config_map(NS, cm("w", {"v": "1"}))
    b = core.patch_namespaced_config_map("w", NS, {"data": {"v": "2"}}, _content_type=MERGE_PATCH)
    core.delete_namespaced_config_map("w", NS)

    w = watch.Watch()
    events = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        events.append(event)
        if event["type"] == "DELETED":
            w.stop()
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e["object"].metadata.name for e in events] == ["w", "w", "w"]
    assert isinstance(events[0]["object"], client.V1ConfigMap)
    assert events[0]["object"].metadata.resource_version == a.metadata.resource_version
    assert events[1]["object"].metadata.resource_version == b.metadata.resource_version
    assert events[1]["object"].data == {"v": "2"}
    assert int(events[2]["object"].metadata.resource_version) > int(b.metadata.resource_version)
    # the stopped watch's connection is released on the server too
    wait_until(lambda: watcher_count(shard) == 0, what="the server to drop the stopped watch")


def test_watch_live_changes_and_timeout(core: client.CoreV1Api) -> None:
    """Changes made after the watch is established arrive; timeoutSeconds ends the stream."""
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("live-0"))
    w = watch.Watch()
    got = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        got.append(event_key(event)[:2])
        n = len(got)
        if n < 5:  # each event triggers the next write, so every later one is live
            core.create_namespaced_config_map(NS, cm(f"live-{n}"))
        else:
            w.stop()
    assert got == [("ADDED", f"live-{i}") for i in range(5)]

    # a watch with a short timeout ends by itself with no events
    start = time.monotonic()
    quiet = list(watch.Watch().stream(core.list_namespaced_config_map, NS, label_selector="none=here", timeout_seconds=1))
    assert quiet == []
    assert time.monotonic() - start < 5


def test_watch_with_selectors(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("sel-a", labels={"team": "a"}))
    core.create_namespaced_config_map(NS, cm("sel-b", labels={"team": "b"}))
    core.patch_namespaced_config_map("sel-a", NS, {"data": {"x": "1"}}, _content_type=MERGE_PATCH)
    core.patch_namespaced_config_map("sel-b", NS, {"data": {"x": "1"}}, _content_type=MERGE_PATCH)
    core.create_namespaced_config_map(NS, cm("sel-end", labels={"team": "a"}))
    w = watch.Watch()
    got = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, label_selector="team=a", timeout_seconds=WATCH_TIMEOUT_SECONDS):
        got.append(event_key(event)[:2])
        if got[-1][1] == "sel-end":
            w.stop()
    assert got == [("ADDED", "sel-a"), ("MODIFIED", "sel-a"), ("ADDED", "sel-end")]

    w = watch.Watch()
    got = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, field_selector="metadata.name=sel-b", timeout_seconds=WATCH_TIMEOUT_SECONDS):
        got.append(event_key(event)[:2])
        if got[-1][0] == "MODIFIED":
            w.stop()
    assert got == [("ADDED", "sel-b"), ("MODIFIED", "sel-b")]


def test_watch_resume_after_dropped_connection_loses_and_duplicates_nothing(core: client.CoreV1Api, shard: EmbeddedShard) -> None:
    """The acceptance scenario: watch, drop the connection mid-stream, resume from the last RV.

    The union of the events received on both watches must be exactly the committed sequence.
    """
    committed: list[tuple[str, str]] = []  # (type, name) in commit order
    committed_rv: dict[int, str] = {}  # index in `committed` -> RV returned by the write (not for deletes)
    counter = iter(range(10_000))

    def change() -> None:
        """One more committed change: create, modify or delete, in a fixed rotation."""
        i = next(counter)
        live = [n for (t, n) in committed if t == "ADDED" and ("DELETED", n) not in committed]
        if i % 3 == 0 or not live:
            name = f"r-{i:03d}"
            obj = core.create_namespaced_config_map(NS, cm(name, {"i": str(i)}))
            committed.append(("ADDED", name))
        elif i % 3 == 1:
            name = live[-1]
            obj = core.patch_namespaced_config_map(name, NS, {"data": {"i": str(i)}}, _content_type=MERGE_PATCH)
            committed.append(("MODIFIED", name))
        else:
            name = live[0]
            core.delete_namespaced_config_map(name, NS)
            committed.append(("DELETED", name))
            return
        committed_rv[len(committed) - 1] = obj.metadata.resource_version

    start_rv = core.list_namespaced_config_map(NS).metadata.resource_version
    for _ in range(4):  # committed before the first watch starts: replayed from history
        change()

    # first watch: each event received triggers two more writes, so when it is dropped after
    # k events there are committed events it has not yet received
    received: list[dict[str, Any]] = []
    k = 6
    w1 = watch.Watch()
    for event in w1.stream(core.list_namespaced_config_map, NS, resource_version=start_rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        received.append(event)
        if len(received) == k:
            w1.stop()  # closes the response: the connection is dropped mid-stream
            break
        change()
        change()
    assert len(received) == k
    assert len(committed) > k, "the drop must happen with committed events still undelivered"
    wait_until(lambda: watcher_count(shard) == 0, what="the server to notice the dropped watch")

    # changes while nobody watches
    for _ in range(5):
        change()

    # second watch, from the last event seen; live changes keep coming until a sentinel
    resume_rv = received[-1]["object"].metadata.resource_version
    second: list[dict[str, Any]] = []
    total_before_live = len(committed)
    live_writes = 6
    w2 = watch.Watch()
    for event in w2.stream(core.list_namespaced_config_map, NS, resource_version=resume_rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        second.append(event)
        if event["object"].metadata.name == "sentinel":
            w2.stop()
            break
        if len(committed) < total_before_live + live_writes:
            change()
        elif len(committed) == total_before_live + live_writes:
            core.create_namespaced_config_map(NS, cm("sentinel"))
            committed.append(("ADDED", "sentinel"))
    assert second and second[-1]["object"].metadata.name == "sentinel", "the second watch ended before the sentinel"

    union = received + second
    got = [(e["type"], e["object"].metadata.name) for e in union]
    assert got == committed  # nothing lost, nothing duplicated, in commit order
    rvs = [int(e["object"].metadata.resource_version) for e in union]
    assert rvs == sorted(set(rvs)), "resourceVersions must strictly increase across both watches"
    for index, rv in committed_rv.items():
        assert union[index]["object"].metadata.resource_version == rv
    # a MODIFIED event carries the object as written
    for e in union:
        if e["type"] == "MODIFIED":
            assert e["object"].data["i"] != "0"


def test_watch_bookmarks_carry_a_resumable_resource_version(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("bm-1"))
    w = watch.Watch()
    events = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        events.append(event)
        if event["type"] == "BOOKMARK":
            w.stop()
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bookmark_rv = events[-1]["raw_object"]["metadata"]["resourceVersion"]
    assert int(bookmark_rv) >= int(events[0]["object"].metadata.resource_version)

    core.create_namespaced_config_map(NS, cm("bm-2"))
    w = watch.Watch()
    after = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=bookmark_rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        after.append(event_key(event)[:2])
        w.stop()
    assert after == [("ADDED", "bm-2")]


def test_watch_from_too_old_or_future_resource_version(tmp_path: Any) -> None:
    with EmbeddedShard(tmp_path / "small", history_size=3, bookmark_interval=0.2) as small, api_client(small) as c:
        core = client.CoreV1Api(c)
        rv = core.list_namespaced_config_map(NS).metadata.resource_version
        for i in range(10):
            core.create_namespaced_config_map(NS, cm(f"old-{i}"))
        with pytest.raises(ApiException) as expired:
            list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=2))
        assert expired.value.status == 410

        future = str(int(core.list_namespaced_config_map(NS).metadata.resource_version) + 1000)
        with pytest.raises(ApiException) as too_large:
            list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=future, timeout_seconds=2))
        assert too_large.value.status == 504
        assert "Too large resource version" in too_large.value.body


def test_watch_selector_transitions_follow_watch_cache_semantics(core: client.CoreV1Api) -> None:
    """An object entering the selector is ADDED; leaving it is DELETED (old content, new RV)."""
    core.create_namespaced_config_map(NS, cm("pre", labels={"t": "a"}))
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("x", labels={"t": "b"}))
    into = core.patch_namespaced_config_map("x", NS, {"metadata": {"labels": {"t": "a"}}}, _content_type=MERGE_PATCH)
    out_of = core.patch_namespaced_config_map("x", NS, {"metadata": {"labels": {"t": "c"}}}, _content_type=MERGE_PATCH)
    core.create_namespaced_config_map(NS, cm("end", labels={"t": "a"}))
    w = watch.Watch()
    got = []
    for event in w.stream(core.list_namespaced_config_map, NS, label_selector="t=a", resource_version=rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        obj = event["object"]
        got.append((event["type"], obj.metadata.name, obj.metadata.labels, obj.metadata.resource_version))
        if obj.metadata.name == "end":
            w.stop()
    assert got[:2] == [
        ("ADDED", "x", {"t": "a"}, into.metadata.resource_version),
        ("DELETED", "x", {"t": "a"}, out_of.metadata.resource_version),
    ]
    assert [g[:2] for g in got[2:]] == [("ADDED", "end")]


def test_watch_without_resource_version_starts_with_current_state(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("s1"))
    core.create_namespaced_config_map(NS, cm("s2"))
    core.delete_namespaced_config_map("s1", NS)
    w = watch.Watch()
    got = []
    for event in w.stream(core.list_namespaced_config_map, NS, timeout_seconds=WATCH_TIMEOUT_SECONDS):
        got.append(event_key(event)[:2])
        if len(got) == 1:
            core.create_namespaced_config_map(NS, cm("s3"))
        else:
            w.stop()
    assert got == [("ADDED", "s2"), ("ADDED", "s3")]


def test_watch_send_initial_events_ends_with_marked_bookmark(core: client.CoreV1Api) -> None:
    for name in ("i1", "i2"):
        core.create_namespaced_config_map(NS, cm(name))
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    w = watch.Watch()
    got = []
    for event in w.stream(
        core.list_namespaced_config_map, NS, send_initial_events=True, resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_SECONDS,
    ):
        got.append(event)
        if event["type"] == "BOOKMARK":
            w.stop()
    assert [(e["type"], e["raw_object"]["metadata"].get("name")) for e in got] == [("ADDED", "i1"), ("ADDED", "i2"), ("BOOKMARK", None)]
    bookmark = got[-1]["raw_object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["resourceVersion"]) >= int(rv)


def test_dry_run_does_not_hand_out_uncommitted_resource_versions(core: client.CoreV1Api) -> None:
    current = core.create_namespaced_config_map(NS, cm("base", {"a": "1"}))
    dry_create = core.create_namespaced_config_map(NS, cm("dry"), dry_run="All")
    dry_update = core.patch_namespaced_config_map("base", NS, {"data": {"a": "2"}}, _content_type=MERGE_PATCH, dry_run="All")
    real = core.create_namespaced_config_map(NS, cm("after"))
    assert dry_create.metadata.resource_version in (None, ""), (dry_create.metadata.resource_version, real.metadata.resource_version)
    assert dry_update.metadata.resource_version in (None, "", current.metadata.resource_version)


def test_dry_run_generate_name_delete_collection_and_namespace_deletion(core: client.CoreV1Api) -> None:
    dry = core.create_namespaced_config_map(NS, cm("dry", {"a": "1"}), dry_run="All")
    assert dry.metadata.name == "dry" and dry.data == {"a": "1"}
    with pytest.raises(ApiException) as not_stored:
        core.read_namespaced_config_map("dry", NS)
    assert not_stored.value.status == 404
    real = core.create_namespaced_config_map(NS, cm("real", {"a": "1"}))
    dry_update = core.patch_namespaced_config_map("real", NS, {"data": {"a": "2"}}, _content_type=MERGE_PATCH, dry_run="All")
    assert dry_update.data == {"a": "2"}
    assert core.read_namespaced_config_map("real", NS).data == {"a": "1"}
    core.delete_namespaced_config_map("real", NS, dry_run="All")
    assert core.read_namespaced_config_map("real", NS).metadata.uid == real.metadata.uid
    core.delete_namespaced_config_map("real", NS)

    generated = core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-", labels={"batch": "1"})))
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) > len("gen-")
    assert core.read_namespaced_config_map(generated.metadata.name, NS).metadata.uid == generated.metadata.uid

    for name in ("b1", "b2"):
        core.create_namespaced_config_map(NS, cm(name, labels={"batch": "1"}))
    core.create_namespaced_config_map(NS, cm("keep", labels={"batch": "2"}))
    core.delete_collection_namespaced_config_map(NS, label_selector="batch=1")
    assert names(core.list_namespaced_config_map(NS).items) == ["keep"]

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed")))
    core.create_namespaced_config_map("doomed", cm("inside"))
    core.create_namespaced_secret("doomed", client.V1Secret(metadata=client.V1ObjectMeta(name="inside")))
    core.delete_namespace("doomed")

    def namespace_gone() -> bool:
        try:
            core.read_namespace("doomed")
        except ApiException as exc:
            assert exc.status == 404
            return True
        return False

    wait_until(namespace_gone, what="namespace `doomed` to finish deleting")
    assert core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed").items == []
    assert core.list_secret_for_all_namespaces(field_selector="metadata.namespace=doomed").items == []
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map("doomed", cm("late"))
    assert no_ns.value.status == 404


# -- custom resources ------------------------------------------------------------------------

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "color": {"type": "string"}}},
                            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}, "observed": {"type": "integer"}}},
                        },
                    }
                },
            }
        ],
    },
}
G, V, P = "example.com", "v1", "widgets"


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_custom_resource_with_status_subresource(shard: EmbeddedShard, root_client: client.ApiClient) -> None:
    shard.create_logical_cluster("abc")
    with api_client(shard, "abc") as abc_client:
        ext = client.ApiextensionsV1Api(abc_client)
        crd = ext.create_custom_resource_definition(WIDGET_CRD)
        assert crd.metadata.name == "widgets.example.com"
        assert ext.read_custom_resource_definition("widgets.example.com").spec.names.kind == "Widget"

        custom = client.CustomObjectsApi(abc_client)
        created = custom.create_namespaced_custom_object(G, V, NS, P, {**widget("w1", size=1, color="red"), "status": {"ready": True}})
        assert created["metadata"]["generation"] == 1
        assert created["metadata"]["annotations"]["kcp.io/cluster"] == "abc"
        assert "status" not in created, "status in a create body is dropped when the status subresource is on"
        assert created["spec"] == {"size": 1, "color": "red"}

        got = custom.get_namespaced_custom_object(G, V, NS, P, "w1")
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
        custom.create_namespaced_custom_object(G, V, NS, P, widget("w2", size=2))
        listed = custom.list_namespaced_custom_object(G, V, NS, P)
        assert listed["kind"] == "WidgetList"
        assert [i["metadata"]["name"] for i in listed["items"]] == ["w1", "w2"]
        assert [i["metadata"]["name"] for i in custom.list_cluster_custom_object(G, V, P)["items"]] == ["w1", "w2"]

        # status update: status changes, spec and generation do not
        status1 = custom.patch_namespaced_custom_object_status(G, V, NS, P, "w1", {"status": {"ready": True, "observed": 1}, "spec": {"size": 99}})
        assert status1["status"] == {"ready": True, "observed": 1}
        assert status1["spec"] == {"size": 1, "color": "red"}
        assert status1["metadata"]["generation"] == 1
        assert int(status1["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
        assert custom.get_namespaced_custom_object_status(G, V, NS, P, "w1")["status"] == {"ready": True, "observed": 1}

        # main-resource update: spec changes and generation bumps; status is kept as stored
        spec1 = custom.patch_namespaced_custom_object(G, V, NS, P, "w1", {"spec": {"size": 5}, "status": {"ready": False}})
        assert spec1["spec"] == {"size": 5, "color": "red"}
        assert spec1["status"] == {"ready": True, "observed": 1}
        assert spec1["metadata"]["generation"] == 2

        # a metadata-only change does not bump generation
        labels = custom.patch_namespaced_custom_object(G, V, NS, P, "w1", {"metadata": {"labels": {"x": "y"}}})
        assert labels["metadata"]["labels"] == {"x": "y"}
        assert labels["metadata"]["generation"] == 2
        assert int(labels["metadata"]["resourceVersion"]) > int(spec1["metadata"]["resourceVersion"])

        # replace (PUT) with a stale RV conflicts; with the current one it works
        stale = dict(got)
        stale["spec"] = {"size": 7}
        with pytest.raises(ApiException) as conflict:
            custom.replace_namespaced_custom_object(G, V, NS, P, "w1", stale)
        assert conflict.value.status == 409
        current = custom.get_namespaced_custom_object(G, V, NS, P, "w1")
        current["spec"] = {"size": 7}
        current["status"] = {"ready": False}
        replaced = custom.replace_namespaced_custom_object(G, V, NS, P, "w1", current)
        assert replaced["spec"] == {"size": 7}
        assert replaced["status"] == {"ready": True, "observed": 1}
        assert replaced["metadata"]["generation"] == 3

        # replace_status with the full object changes only status
        current = custom.get_namespaced_custom_object(G, V, NS, P, "w1")
        current["status"] = {"ready": False, "observed": 3}
        current["spec"] = {"size": 1000}
        status2 = custom.replace_namespaced_custom_object_status(G, V, NS, P, "w1", current)
        assert status2["status"] == {"ready": False, "observed": 3}
        assert status2["spec"] == {"size": 7}
        assert status2["metadata"]["generation"] == 3

        # a watch through the custom objects API sees the change
        rv = custom.list_namespaced_custom_object(G, V, NS, P)["metadata"]["resourceVersion"]
        custom.patch_namespaced_custom_object(G, V, NS, P, "w2", {"spec": {"size": 3}})
        w = watch.Watch()
        seen = []
        for event in w.stream(custom.list_namespaced_custom_object, G, V, NS, P, resource_version=rv, timeout_seconds=WATCH_TIMEOUT_SECONDS):
            seen.append((event["type"], event["object"]["metadata"]["name"], event["object"]["spec"]))
            w.stop()
        assert seen == [("MODIFIED", "w2", {"size": 3})]

        # the CRD and its objects live only in `abc`
        with pytest.raises(ApiException) as not_served:
            client.CustomObjectsApi(root_client).list_namespaced_custom_object(G, V, NS, P)
        assert not_served.value.status == 404

        custom.delete_namespaced_custom_object(G, V, NS, P, "w1")
        with pytest.raises(ApiException) as gone:
            custom.get_namespaced_custom_object(G, V, NS, P, "w1")
        assert gone.value.status == 404

        # deleting the CRD stops serving its resource
        ext.delete_custom_resource_definition("widgets.example.com")
        with pytest.raises(ApiException) as unserved:
            custom.list_namespaced_custom_object(G, V, NS, P)
        assert unserved.value.status == 404
