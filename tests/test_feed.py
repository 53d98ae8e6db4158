"""The wildcard feed of a view on a shard-like backend, against a scripted backend (no sockets).

One `/clusters/*` list+watch serves every engaged cluster of the backend; objects of clusters not
engaged are dropped; a cluster engaged while the watch runs is listed on its own, and the watch
events for it that arrive during that list are applied on top of it only if newer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from vwproxy.cache.hub import ViewKey, _Feed
from vwproxy.core.rv import RVSequence
from vwproxy.core.view import View
from vwproxy.upstream.backends import Backend
from vwproxy.upstream.client import BackendClient

pytestmark = pytest.mark.timeout(20)

KEY = ViewKey("provider", "widgets", "example.dev", "widgets")
Obj = dict[str, Any]


def widget(cluster: str, name: str, rv: int, size: int = 1) -> Obj:
    return {"apiVersion": "example.dev/v1alpha1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv), "annotations": {"kcp.io/cluster": cluster}},
            "spec": {"size": size}}


class Hub:
    """What a feed uses of its hub: the view, the stale map, dispatch and the served version."""

    def __init__(self) -> None:
        self.views = {KEY: View(RVSequence(), KEY.group, KEY.resource)}
        self.stale: dict[str, str] = {}

    def _dispatch(self, key: ViewKey, events: list[Any]) -> None:
        pass

    def _bound_version(self, key: ViewKey, cluster: str) -> str:
        return "v1alpha1"


class Backend_:
    """A shard-like backend: a wildcard list, one watch stream fed from a queue, per-cluster lists."""

    def __init__(self) -> None:
        self.wildcard: list[Obj] = []
        self.per_cluster: dict[str, tuple[list[Obj], int]] = {}
        self.events: asyncio.Queue[Obj] = asyncio.Queue()
        self.cluster_list_started = asyncio.Event()
        self.release_cluster_list = asyncio.Event()
        self.paths: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        params = request.url.params
        if path.endswith("/readyz") or params.get("limit") == "1" and "watch" not in params and path.startswith("/clusters/*"):
            return httpx.Response(200, json={"items": [], "metadata": {"resourceVersion": "1"}})
        if path.startswith("/clusters/*/") and params.get("watch") == "true":
            async def stream() -> Any:
                while True:
                    yield orjson.dumps(await self.events.get()) + b"\n"
            return httpx.Response(200, content=stream(), headers={"content-type": "application/json"})
        if path.startswith("/clusters/*/"):
            return httpx.Response(200, json={"items": self.wildcard, "metadata": {"resourceVersion": "5"}})
        cluster = path.split("/")[2]
        self.cluster_list_started.set()
        await self.release_cluster_list.wait()
        items, rv = self.per_cluster.get(cluster, ([], 5))
        return httpx.Response(200, json={"items": items, "metadata": {"resourceVersion": str(rv)}})


async def eventually(check: Any, what: str) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)  # bounded by the timeout above
    assert check(), what


def names(view: View) -> set[tuple[str, str, int]]:
    return {(o.cluster, o.name, o.decode()["spec"]["size"]) for o in view.ordered(None, "")}


def test_one_wildcard_watch_feeds_engaged_clusters_and_backfills_a_late_one() -> None:
    async def scenario() -> None:
        backend = Backend_()
        backend.wildcard = [widget("a", "w1", 3), widget("other", "x", 4)]
        client = BackendClient(Backend(name="shard", url="http://shard"), transport=httpx.MockTransport(backend.handle))
        hub = Hub()
        view = hub.views[KEY]
        feed = _Feed(hub, KEY, client)  # type: ignore[arg-type]
        try:
            feed.engage("a")
            await asyncio.wait_for(feed.synced.wait(), 5)
            assert names(view) == {("a", "w1", 1)}, "objects of clusters not engaged are dropped"
            await backend.events.put({"type": "ADDED", "object": widget("other", "y", 6)})
            await backend.events.put({"type": "MODIFIED", "object": widget("a", "w1", 7, size=2)})
            await eventually(lambda: names(view) == {("a", "w1", 2)}, "a's change, not other's")

            # b is engaged while the watch runs: listed on its own (at RV 10); the watch's events for
            # b during that list are held, then applied only if newer than the list.
            backend.per_cluster["b"] = ([widget("b", "old", 8), widget("b", "kept", 10, size=3)], 10)
            feed.engage("b")
            await asyncio.wait_for(backend.cluster_list_started.wait(), 5)
            await backend.events.put({"type": "MODIFIED", "object": widget("b", "kept", 9, size=2)})  # older than the list
            await backend.events.put({"type": "ADDED", "object": widget("b", "late", 11, size=5)})  # after it
            await backend.events.put({"type": "ADDED", "object": widget("a", "marker", 12)})  # the watch is in order: b's came first
            await eventually(lambda: ("a", "marker", 1) in names(view), "the events reached the feed")
            assert not any(c == "b" for c, _, _ in names(view)), "nothing of b before its list is in"
            backend.release_cluster_list.set()
            await eventually(lambda: {n for c, n, _ in names(view) if c == "b"} == {"old", "kept", "late"}, "b backfilled, then the held event applied")
            assert ("b", "late", 5) in names(view) and ("b", "kept", 3) in names(view), "a held event older than the list is not applied"
            assert "/clusters/b/apis/example.dev/v1alpha1/widgets" in backend.paths, "b was listed on its own"
            assert sum(p.startswith("/clusters/*/") for p in backend.paths) <= 3, "one wildcard list and one watch (probes aside)"

            assert feed.disengage("b") and not feed.disengage("b")
            await backend.events.put({"type": "ADDED", "object": widget("b", "after", 13)})
            await backend.events.put({"type": "ADDED", "object": widget("a", "w2", 14)})
            await eventually(lambda: ("a", "w2", 1) in names(view), "a still followed")
            assert ("b", "after", 1) not in names(view), "a disengaged cluster is not followed"
        finally:
            feed.cancel()
            await asyncio.gather(*feed.tasks(), return_exceptions=True)
            await client.aclose()

    asyncio.run(scenario())
