"""Reads through the APIExport virtual workspace as controllers make them: selectors, paging,
resourceVersionMatch, metadata-only (PartialObjectMetadata), bookmarks, a watch from a
resourceVersion the view no longer remembers (in-stream 410), and a watcher too slow to keep up.

The example topology: the provider's widgets are red and blue (root:consumer-1), green
(root:consumer-2), yellow and black (root:consumer-3).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import kubernetes
import orjson
import pytest
from kubernetes.client.rest import ApiException

from support import eventually
from vwproxy.core import watch as watchers
from vwproxy.server import reads
from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(60)

WIDGETS = "apis/example.dev/v1alpha1"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
MERGE = {"content-type": "application/merge-patch+json"}
ALL_FIVE = ["red", "blue", "green", "yellow", "black"]


def vw_url(front: httpx.Client) -> str:
    slice_obj = front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
    return str(slice_obj["status"]["endpoints"][0]["url"])


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["metadata"]["name"] for i in items]


def sort_by_name(values: list[str]) -> list[str]:
    return sorted(values)


def label(front: httpx.Client, consumer: int, name: str, labels: dict[str, Any]) -> None:
    resp = front.patch(f"/clusters/root:consumer-{consumer}/{WIDGETS}/namespaces/default/widgets/{name}", content=orjson.dumps({"metadata": {"labels": labels}}), headers=MERGE)
    assert resp.status_code == 200, resp.text


# Watches open their own connection (they run on threads), with the proxy's credentials.
_watch_clients: list[RunningProxy] = []


@pytest.fixture(autouse=True)
def _watching_through(proxy: RunningProxy) -> Iterator[None]:
    _watch_clients.append(proxy)
    yield
    _watch_clients.remove(proxy)


def read_watch(url: str, params: dict[str, str], until: Any, headers: dict[str, str] | None = None, timeout: float = 10,
               into: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Read watch events (into `into`) until `until(events)` is true or the stream ends; (events, ended by the server)."""
    events: list[dict[str, Any]] = [] if into is None else into
    with _watch_clients[-1].client() as client, client.stream("GET", url, params={"watch": "true", "timeoutSeconds": str(int(timeout)), **params}, headers=headers, timeout=timeout + 5) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line:
                events.append(orjson.loads(line))
                if until(events):
                    return events, False
    return events, True


class Watch:
    """A watch read on a thread while the test makes changes; `events` fill in as they arrive."""

    def __init__(self, url: str, params: dict[str, str], until: Any, headers: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.ended_by_server = False
        self.done = threading.Event()

        def run() -> None:
            try:
                _, self.ended_by_server = read_watch(url, params, until, headers, into=self.events)
            finally:
                self.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 10) -> list[dict[str, Any]]:
        assert self.done.wait(timeout), f"the watch is still open; it saw {[(e['type'], e['object']['metadata'].get('name')) for e in self.events]}"
        self._thread.join()
        return self.events


def metrics(front: httpx.Client) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in front.get("/metrics").text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def base(front: httpx.Client) -> str:
    return vw_url(front)


@pytest.fixture
def custom(proxy: RunningProxy, base: str) -> Iterator[kubernetes.client.CustomObjectsApi]:
    """The Python client on the provider's `/clusters/*`."""
    api = proxy.api_client(f"{base}/clusters/*")
    yield kubernetes.client.CustomObjectsApi(api)
    api.close()


def test_label_and_field_selectors_on_list_and_watch(proxy: RunningProxy, front: httpx.Client, base: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    label(front, 1, "red", {"tier": "gold"})
    label(front, 2, "green", {"tier": "gold"})
    label(front, 3, "black", {"tier": "silver"})

    def listed(**kw: Any) -> list[str]:
        return sort_by_name(names(custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets", **kw)["items"]))

    assert listed(label_selector="tier=gold") == ["green", "red"]
    assert listed(label_selector="tier in (gold,silver),tier!=gold") == ["black"]
    assert listed(label_selector="!tier") == ["blue", "yellow"]
    assert listed(field_selector="metadata.name=red") == ["red"]
    assert listed(field_selector="metadata.namespace=default,metadata.name!=red") == ["black", "blue", "green", "yellow"]
    assert listed(label_selector="tier=gold", field_selector="metadata.name=green") == ["green"]
    with pytest.raises(ApiException) as unsupported:
        custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets", field_selector="spec.size=1")
    assert unsupported.value.status == 400
    consumer_1 = proxy.cluster_of("root:consumer-1")
    per_cluster = front.get(f"{base}/clusters/{consumer_1}/{WIDGETS}/widgets", params={"labelSelector": "tier=gold"}).json()
    assert names(per_cluster["items"]) == ["red"]

    rv = custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets")["metadata"]["resourceVersion"]
    watch = Watch(f"{base}/clusters/*/{WIDGETS}/widgets", {"resourceVersion": rv, "labelSelector": "tier=gold"}, lambda seen: len(seen) >= 3)
    label(front, 2, "green", {"tier": "silver"})  # leaves the selector
    label(front, 1, "blue", {"tier": "gold"})  # enters it
    label(front, 3, "yellow", {"tier": "bronze"})  # never in it
    label(front, 1, "red", {"tier": "gold", "shade": "dark"})  # stays in it
    events = watch.wait()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "green"), ("ADDED", "blue"), ("MODIFIED", "red")]
    assert events[0]["object"]["metadata"]["labels"] == {"tier": "gold"}, "an object leaving the selector goes as it was"


def test_a_long_list_is_the_bytes_a_filtered_list_serves_and_follows_every_change(
    proxy: RunningProxy, front: httpx.Client, base: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long unfiltered list is sent from the buckets' cached runs with a Content-Length; the
    same list with a selector that matches everything takes the item-by-item path. Both must be
    the same bytes, across messages (runs split and runs joined), before and after changes."""
    monkeypatch.setattr(reads, "LIST_CHUNK_ITEMS", 3)  # the example's 5 widgets are "long" now
    for i in range(5):
        assert front.post(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": f"extra-{i}"}, "spec": {}}).status_code == 201
    consumer_1 = proxy.cluster_of("root:consumer-1")
    lists = {"VW wildcard": f"{base}/clusters/*/{WIDGETS}/widgets", "VW one cluster": f"{base}/clusters/{consumer_1}/{WIDGETS}/widgets",
             "shard wildcard": f"/clusters/*/{WIDGETS}/widgets", "shard one cluster": f"/clusters/root:consumer-1/{WIDGETS}/widgets"}

    def check(what: str, url: str) -> list[str]:
        whole = front.get(url)
        assert whole.status_code == 200, whole.text
        assert whole.headers.get("content-length") == str(len(whole.content)) and "transfer-encoding" not in whole.headers, (what, whole.headers)
        filtered = front.get(url, params={"labelSelector": "!no-such-label"})
        assert filtered.status_code == 200 and filtered.headers.get("transfer-encoding") == "chunked", (what, filtered.headers)
        assert whole.content == filtered.content, what
        return names(orjson.loads(whole.content)["items"])

    consumer_1_widgets = {"red", "blue", *(f"extra-{i}" for i in range(5))}
    for what, url in lists.items():
        listed = set(check(what, url))
        if "one cluster" in what:
            assert listed == consumer_1_widgets, what
        elif what == "VW wildcard":
            assert listed == consumer_1_widgets | {"green", "yellow", "black"}, what
        else:  # the shard's holds other exports' widgets too
            assert listed > consumer_1_widgets | {"green", "yellow", "black"}, what

    label(front, 1, "extra-2", {"tier": "gold"})
    assert front.delete(f"/clusters/root:consumer-2/{WIDGETS}/namespaces/default/widgets/green").status_code == 200
    assert front.post(f"/clusters/root:consumer-3/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "late"}, "spec": {}}).status_code == 201

    def changed() -> bool:
        for what, url in lists.items():
            listed = check(what, url)
            if "green" in listed or ("wildcard" in what and "late" not in listed):
                return False
        items = orjson.loads(front.get(lists["VW wildcard"]).content)["items"]
        return any(i["metadata"]["name"] == "extra-2" and i["metadata"].get("labels") == {"tier": "gold"} for i in items)

    eventually(changed, "the long lists to show the label, the deletion and the creation")


def test_limit_and_continue_page_through_a_consistent_snapshot(proxy: RunningProxy, front: httpx.Client, base: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    first = custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets", limit=2)
    pages = [first]
    assert first["metadata"]["remainingItemCount"] == 3 and first["metadata"]["continue"]
    # a change between pages is not in this list: the pages are one snapshot at one RV
    assert front.post(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "aaa-late"}, "spec": {}}).status_code == 201
    while pages[-1]["metadata"].get("continue"):
        pages.append(custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets", limit=2, _continue=pages[-1]["metadata"]["continue"]))
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert {p["metadata"]["resourceVersion"] for p in pages} == {first["metadata"]["resourceVersion"]}
    assert sort_by_name([n for p in pages for n in names(p["items"])]) == sort_by_name(ALL_FIVE)
    everything = custom.list_cluster_custom_object("example.dev", "v1alpha1", "widgets")
    assert "aaa-late" in names(everything["items"])

    consumer_3 = proxy.cluster_of("root:consumer-3")
    one = front.get(f"{base}/clusters/{consumer_3}/{WIDGETS}/widgets", params={"limit": "1"}).json()
    rest = front.get(f"{base}/clusters/{consumer_3}/{WIDGETS}/widgets", params={"limit": "1", "continue": one["metadata"]["continue"]}).json()
    assert names(one["items"]) + names(rest["items"]) == ["black", "yellow"] and "continue" not in rest["metadata"]
    foreign = front.get(f"{base}/clusters/{proxy.cluster_of('root:consumer-1')}/{WIDGETS}/widgets", params={"limit": "1", "continue": one["metadata"]["continue"]})
    assert foreign.status_code == 400, "a continue token only continues the list it came from"


def test_resource_version_match_exact_and_not_older_than(front: httpx.Client, base: str) -> None:
    url = f"{base}/clusters/*/{WIDGETS}/widgets"
    before = front.get(url).json()
    r0 = before["metadata"]["resourceVersion"]
    assert front.patch(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets/red", content=b'{"spec":{"size":7}}', headers=MERGE).status_code == 200
    assert front.delete(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets/blue").status_code == 200

    exact = front.get(url, params={"resourceVersion": r0, "resourceVersionMatch": "Exact"}).json()
    assert exact["metadata"]["resourceVersion"] == r0
    assert exact["items"] == before["items"], "the state at that RV, rebuilt"
    newer = front.get(url, params={"resourceVersion": r0, "resourceVersionMatch": "NotOlderThan"}).json()
    assert int(newer["metadata"]["resourceVersion"]) > int(r0)
    assert sort_by_name(names(newer["items"])) == ["black", "green", "red", "yellow"]
    assert next(i for i in newer["items"] if i["metadata"]["name"] == "red")["spec"]["size"] == 7
    future = str(int(newer["metadata"]["resourceVersion"]) + 1_000_000)
    too_new = front.get(url, params={"resourceVersion": future, "resourceVersionMatch": "NotOlderThan"})
    assert too_new.status_code == 504 and "Too large resource version" in too_new.json()["message"]
    forgotten = front.get(url, params={"resourceVersion": "1", "resourceVersionMatch": "Exact"})
    assert forgotten.status_code == 410 and forgotten.json()["reason"] == "Expired"


def test_metadata_only_list_get_and_watch(proxy: RunningProxy, front: httpx.Client, base: str) -> None:
    listed = front.get(f"{base}/clusters/*/{WIDGETS}/widgets", headers={"accept": PARTIAL_LIST})
    assert listed.status_code == 200
    body = listed.json()
    assert (body["kind"], body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert sort_by_name(names(body["items"])) == sort_by_name(ALL_FIVE)
    for item in body["items"]:
        assert (item["kind"], item["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
        assert "spec" not in item and item["metadata"]["annotations"]["kcp.io/cluster"]
        assert int(item["metadata"]["resourceVersion"]) > 10**15, "proxy RVs"

    consumer_2 = proxy.cluster_of("root:consumer-2")
    got = front.get(f"{base}/clusters/{consumer_2}/{WIDGETS}/namespaces/default/widgets/green", headers={"accept": PARTIAL}).json()
    assert (got["kind"], got["apiVersion"], got["metadata"]["name"]) == ("PartialObjectMetadata", "meta.k8s.io/v1", "green")
    assert "spec" not in got and got["metadata"]["annotations"]["kcp.io/cluster"] == consumer_2

    watch = Watch(f"{base}/clusters/*/{WIDGETS}/widgets", {"resourceVersion": body["metadata"]["resourceVersion"], "allowWatchBookmarks": "true"},
                  lambda seen: any(e["type"] == "BOOKMARK" for e in seen) and any(e["type"] == "MODIFIED" for e in seen), headers={"accept": PARTIAL})
    label(front, 2, "green", {"seen": "yes"})
    events = watch.wait()
    modified = next(e for e in events if e["type"] == "MODIFIED")["object"]
    assert (modified["kind"], modified["metadata"]["labels"]) == ("PartialObjectMetadata", {"seen": "yes"}) and "spec" not in modified
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")["object"]
    assert (bookmark["kind"], bookmark["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")


def test_bookmarks_carry_a_resource_version_to_resume_from(front: httpx.Client, base: str) -> None:
    url = f"{base}/clusters/*/{WIDGETS}/widgets"
    rv = front.get(url).json()["metadata"]["resourceVersion"]
    label(front, 3, "yellow", {"before": "bookmark"})
    events, _ = read_watch(url, {"resourceVersion": rv, "allowWatchBookmarks": "true"}, lambda seen: seen[-1]["type"] == "BOOKMARK")
    assert [e["type"] for e in events] == ["MODIFIED", "BOOKMARK"]
    mark = events[-1]["object"]
    assert (mark["kind"], mark["apiVersion"]) == ("Widget", "example.dev/v1alpha1")
    assert int(mark["metadata"]["resourceVersion"]) >= int(events[0]["object"]["metadata"]["resourceVersion"])
    label(front, 3, "black", {"after": "bookmark"})
    resumed, _ = read_watch(url, {"resourceVersion": mark["metadata"]["resourceVersion"]}, lambda seen: True)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [("MODIFIED", "black")], "nothing before the bookmark again"
    quiet, _ = read_watch(url, {"resourceVersion": rv}, lambda seen: False, timeout=1)
    assert len(quiet) == 2
    assert "BOOKMARK" not in [e["type"] for e in quiet], "no bookmarks unless asked for"


def test_watch_from_a_resource_version_the_view_no_longer_has_is_410_expired(proxy: RunningProxy, front: httpx.Client, base: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    consumer_1 = proxy.cluster_of("root:consumer-1")
    for url in (f"{base}/clusters/*/{WIDGETS}/widgets", f"{base}/clusters/{consumer_1}/{WIDGETS}/widgets"):
        events, _ = read_watch(url, {"resourceVersion": "1"}, lambda seen: True, timeout=2)
        assert len(events) == 1 and events[0]["type"] == "ERROR", events
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired"), status
    # the Python client turns it into the ApiException its callers relist on
    with pytest.raises(ApiException) as expired:
        for _ in kubernetes.watch.Watch().stream(custom.list_cluster_custom_object, "example.dev", "v1alpha1", "widgets", resource_version="1", timeout_seconds=2):
            pass
    assert expired.value.status == 410


# A watcher is cut off after this many undelivered frames (instead of vwproxy's 10,000), so a
# deletecollection of a few dozen objects overruns it.
SMALL_BUFFER = 20
BURST = 40


@pytest.fixture
def small_watch_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert watchers.Watcher.__init__.__defaults__ == (watchers.WATCHER_BUFFER_LIMIT, True), "Watcher's buffer limit moved: update this fixture"
    monkeypatch.setattr(watchers.Watcher.__init__, "__defaults__", (SMALL_BUFFER, True))


def test_a_watcher_that_falls_behind_is_closed_and_resumes_without_loss(small_watch_buffers: None, proxy: RunningProxy, front: httpx.Client, base: str) -> None:
    made = [f"burst-{i:02d}" for i in range(BURST)]
    for name in made:
        assert front.post(f"/clusters/root:consumer-1/{WIDGETS}/namespaces/default/widgets", json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {}}).status_code == 201
    url = f"{base}/clusters/*/{WIDGETS}/widgets"
    rv = front.get(url).json()["metadata"]["resourceVersion"]
    watch = Watch(url, {"resourceVersion": rv, "timeoutSeconds": "30"}, lambda seen: False)
    eventually(lambda: metrics(front)["vwproxy_watchers"] == "1", "the watch registered")
    # one request, BURST + 2 DELETED events offered to the watcher before it can send any
    gone = front.delete(f"{base}/clusters/{proxy.cluster_of('root:consumer-1')}/{WIDGETS}/namespaces/default/widgets")
    assert gone.status_code == 200
    first = watch.wait()
    assert watch.ended_by_server, "the server closed the slow watch"
    assert 0 < len(first) <= SMALL_BUFFER, len(first)
    assert metrics(front)["vwproxy_slow_watchers_closed_total"] == "1"
    # the client re-watches from the last RV it got and misses nothing, repeats nothing
    last = first[-1]["object"]["metadata"]["resourceVersion"]
    rest, _ = read_watch(url, {"resourceVersion": last}, lambda seen: len(first) + len(seen) >= BURST + 2)
    deleted = [e["object"]["metadata"]["name"] for e in first + rest]
    assert all(e["type"] == "DELETED" for e in first + rest)
    assert sorted(deleted) == sorted(made + ["blue", "red"]) and len(set(deleted)) == len(deleted)
