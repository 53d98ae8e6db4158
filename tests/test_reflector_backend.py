"""The reflector against a real `vwproxy shard` process on loopback, with a tiny watch history
(`--history 4`) and a tiny relist page (`reflector.LIST_PAGE`, a module constant: the reflector
takes no page size of its own), so 410s and paging happen with a handful of objects.

The client is the real `BackendClient`, recording what it asks and running a test's hook before
a chosen request: that is how a burst of writes lands between a list and its watch, or a
restart between two pages, at exactly the moment that matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from vwproxy.testing.process import ShardProcess, free_port
from vwproxy.upstream import reflector as reflector_module
from vwproxy.upstream.backends import Backend
from vwproxy.upstream.client import BackendClient, Query, UpstreamResponse, UpstreamStream
from vwproxy.upstream.reflector import Reflector

pytestmark = pytest.mark.timeout(60)

HISTORY = 4
PAGE = 2
CONFIGMAPS = "/api/v1/configmaps"
# Every wait here is for something that takes milliseconds on loopback.
WAIT_SECONDS = 10.0

Obj = dict[str, Any]
Hook = Callable[[int, str], Awaitable[None]]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardProcess]:
    with ShardProcess(tmp_path_factory.mktemp("reflected") / "data", history=HISTORY) as shard:
        yield shard


@pytest.fixture(autouse=True)
def tiny_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reflector_module, "LIST_PAGE", PAGE)


class RecordingClient(BackendClient):
    """The real client; `asked` lists each request (`list`, `list+continue`, `watch@<rv>`) with its answer's status."""

    def __init__(self, backend: Backend, before: Hook | None = None) -> None:
        super().__init__(backend)
        self.asked: list[str] = []
        self.before = before

    async def _note(self, query: Query) -> int:
        params = dict(query) if not isinstance(query, str) else {}
        what = f"watch@{params['resourceVersion']}" if params.get("watch") else "list+continue" if params.get("continue") else "list"
        self.asked.append(what)
        if self.before is not None:
            await self.before(len(self.asked), what)
        return len(self.asked) - 1

    async def request(self, method: str, path: str, query: Query = (), headers: Mapping[str, str] | None = None, body: bytes = b"") -> UpstreamResponse:
        index = await self._note(query)
        resp = await super().request(method, path, query, headers, body)
        self.asked[index] += f" {resp.status}"
        return resp

    async def stream(self, method: str, path: str, query: Query = (), headers: Mapping[str, str] | None = None, body: bytes = b"", *, read_timeout: float | None = None) -> UpstreamStream:
        index = await self._note(query)
        resp = await super().stream(method, path, query, headers, body, read_timeout=read_timeout)
        self.asked[index] += f" {resp.status}"
        return resp


class Mirror:
    """What the reflector says the backend holds: name → backend RV, plus each `replace` and health report."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}
        self.replaced: list[list[str]] = []
        self.health: list[tuple[bool, str]] = []

    def replace(self, items: list[tuple[Obj, str]]) -> None:
        self.replaced.append(sorted(str(o["metadata"]["name"]) for o, _ in items))
        self.objects = {str(o["metadata"]["name"]): rv for o, rv in items}

    def change(self, kind: str, obj: Obj, rv: str) -> None:
        name = str(obj["metadata"]["name"])
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = rv

    def report(self, ok: bool, why: str) -> None:
        self.health.append((ok, why))


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll (bounded) on the reflector's own loop until `check()` is truthy."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not (result := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return result


async def write(url: str, *names: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_SECONDS, trust_env=False) as client:
        for name in names:
            made = await client.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": name}, "data": {"k": name}})
            assert made.status_code == 201, made.text


def mine(mirror: Mirror, prefix: str) -> list[str]:
    return sorted(n for n in mirror.objects if n.startswith(prefix))


async def start(client: BackendClient, mirror: Mirror, path: str = CONFIGMAPS) -> tuple[Reflector, asyncio.Task[None]]:
    reflector = Reflector(client, path, mirror.replace, mirror.change, mirror.report)
    return reflector, asyncio.ensure_future(reflector.run())


async def stop(task: asyncio.Task[None], client: BackendClient) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.aclose()


def test_writes_between_list_and_watch_get_an_in_stream_410_and_a_paged_relist(backend: ShardProcess) -> None:
    url = backend.create_logical_cluster("refl-gone")

    async def burst(n: int, what: str) -> None:
        if what.startswith("watch") and n == 3:  # the first watch, after a list of two pages
            await write(url, *(f"b{i}" for i in range(HISTORY + 2)))  # more events than the history keeps

    async def scenario() -> None:
        await write(url, "a0", "a1", "a2")
        client, mirror = RecordingClient(Backend(name="gone", url=url), burst), Mirror()
        _, task = await start(client, mirror)
        try:
            await until(lambda: mine(mirror, "b") and client.asked[-1].startswith("watch") and len(mirror.replaced) == 2, "the relist after 410")
            assert mirror.replaced[0] == ["a0", "a1", "a2"]
            assert mine(mirror, "") == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4", "b5"]
            first_rv, relist_rv = (int(w.split("@")[1].split()[0]) for w in client.asked if w.startswith("watch"))
            assert relist_rv > first_rv
            # two pages, a watch answered 200 and then ERROR 410 in the stream, five pages, a watch from the relist
            assert client.asked[:-1] == ["list 200", "list+continue 200", f"watch@{first_rv} 200"] + ["list 200"] + ["list+continue 200"] * 4
            assert client.asked[-1].startswith(f"watch@{relist_rv}")  # its answer's headers come with its first event
            await write(url, "c0")
            await until(lambda: "c0" in mirror.objects, "a live event after the relist")
            assert all(ok for ok, _ in mirror.health), "a 410 is routine, not an outage"
        finally:
            await stop(task, client)

    asyncio.run(scenario())


def test_a_continue_that_expired_with_a_restart_restarts_the_list(backend: ShardProcess) -> None:
    url = backend.create_logical_cluster("refl-continue")

    async def restart(n: int, what: str) -> None:
        if n == 2:  # between the first and the second page
            await asyncio.to_thread(lambda: (backend.stop(), backend.start()))

    async def scenario() -> None:
        await write(url, "p0", "p1", "p2", "p3", "p4")
        client, mirror = RecordingClient(Backend(name="continue", url=url), restart), Mirror()
        _, task = await start(client, mirror)
        try:
            await until(lambda: client.asked and client.asked[-1].startswith("watch"), "the watch after the restarted list")
            assert client.asked[:5] == ["list 200", "list+continue 410", "list 200", "list+continue 200", "list+continue 200"]
            assert mirror.replaced == [["p0", "p1", "p2", "p3", "p4"]], "the expired list's first page is never handed over on its own"
        finally:
            await stop(task, client)

    asyncio.run(scenario())


def test_a_resource_the_backend_does_not_serve_is_empty_until_it_appears(backend: ShardProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reflector_module, "MAX_BACKOFF_SECONDS", 0.05)  # how soon a 404 is looked at again
    url = backend.create_logical_cluster("refl-missing")
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gizmos.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }

    async def scenario() -> None:
        client, mirror = RecordingClient(Backend(name="missing", url=url)), Mirror()
        reflector, task = await start(client, mirror, "/apis/example.com/v1/gizmos")
        try:
            await asyncio.wait_for(reflector.synced.wait(), WAIT_SECONDS)
            assert mirror.replaced[0] == [] and client.asked[0] == "list 404"
            assert mirror.health and all(ok for ok, _ in mirror.health), "404 means no objects, not an unhealthy backend"
            async with httpx.AsyncClient(base_url=url, timeout=WAIT_SECONDS, trust_env=False) as direct:
                assert (await direct.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)).status_code == 201

                async def gizmo() -> int:
                    made = await direct.post("/apis/example.com/v1/namespaces/default/gizmos", json={"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g1"}})
                    return made.status_code

                deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
                while await gizmo() != 201:
                    assert asyncio.get_running_loop().time() < deadline, "the CRD is never served"
                    await asyncio.sleep(0.02)
            await until(lambda: "g1" in mirror.objects, "the object once its resource is served")
            assert [a.split("@")[0] for a in client.asked[-2:]] == ["list 200", "watch"], client.asked
        finally:
            await stop(task, client)

    asyncio.run(scenario())


class RecordedSleeps:
    """Stands in for the reflector module's `asyncio`: real sleeps, each delay recorded."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await _real_sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


_real_sleep = asyncio.sleep


def test_connection_refused_backs_off_then_a_backend_that_comes_up_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reflector_module, "INITIAL_BACKOFF_SECONDS", 0.02)
    monkeypatch.setattr(reflector_module, "MAX_BACKOFF_SECONDS", 0.16)
    sleeps = RecordedSleeps()
    monkeypatch.setattr(reflector_module, "asyncio", sleeps)
    late = ShardProcess(tmp_path / "late", port=free_port())  # nothing listens there yet

    async def scenario() -> None:
        client, mirror = RecordingClient(Backend(name="late", url=late.cluster_url("root"))), Mirror()
        reflector, task = await start(client, mirror)
        try:
            await until(lambda: len(sleeps.slept) >= 6, "six refused attempts")
            assert sleeps.slept[:6] == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.16, 0.16]), "doubling, capped"
            assert not reflector.synced.is_set()
            assert mirror.health[-1][0] is False and "backend late is unreachable" in mirror.health[-1][1], mirror.health[-1]
            await asyncio.to_thread(late.start)
            await write(late.cluster_url("root"), "arrived")
            await until(lambda: "arrived" in mirror.objects, "the backend's objects once it is up")
            assert reflector.synced.is_set() and mirror.health[-1] == (True, "")
        finally:
            await stop(task, client)
            await asyncio.to_thread(late.stop)

    asyncio.run(scenario())
