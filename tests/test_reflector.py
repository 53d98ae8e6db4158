"""The reflector against a scripted backend: no sockets, no real sleeps.

Each scenario is a named sequence of backend answers ("stream then 410 Gone"), served through
`httpx.MockTransport` to a real `BackendClient`. The reflector's `replace`/`change` feed a core
`View`, as the proxy wires them, so a relist's difference is seen as the events a watcher of
the view would get. Backoff runs in virtual time: the delays are recorded, not slept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from vwproxy.core.rv import RVSequence
from vwproxy.core.view import View
from vwproxy.upstream import reflector as reflector_module
from vwproxy.upstream.backends import Backend
from vwproxy.upstream.client import BackendClient
from vwproxy.upstream.reflector import INITIAL_BACKOFF_SECONDS, LIST_PAGE, MAX_BACKOFF_SECONDS, Reflector

pytestmark = pytest.mark.timeout(20)

PATH = "/apis/example.dev/v1alpha1/widgets"
CLUSTER = "scripted"
# How long a scenario may take in real time; they finish in milliseconds.
SCENARIO_SECONDS = 5.0

Obj = dict[str, Any]


def widget(name: str, rv: int, size: int = 1) -> Obj:
    return {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)}, "spec": {"size": size}}


# -- what the scripted backend answers --------------------------------------------------------


@dataclass
class Answer:
    """One backend answer to the next request, which must carry the `expect`ed query values."""

    expect: dict[str, str]
    status: int = 200
    body: Obj | None = None  # a list answer or an error Status
    events: list[Obj | bytes] = field(default_factory=list)  # a watch answer, line by line
    ending: str = "end"  # how a watch answer ends: "end" (server closed it) or "drop" (connection reset)


def listing(rv: int, *items: Obj, token: str = "", expect: dict[str, str] | None = None) -> Answer:
    meta: Obj = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    wanted = {"limit": str(LIST_PAGE)} | (expect or {})
    return Answer(wanted, body={"kind": "WidgetList", "apiVersion": "example.dev/v1alpha1", "metadata": meta, "items": list(items)})


def watching(rv: int, *events: Obj | bytes, ending: str = "end") -> Answer:
    return Answer({"watch": "true", "resourceVersion": str(rv), "allowWatchBookmarks": "true"}, events=list(events), ending=ending)


def status(code: int, reason: str, expect: dict[str, str]) -> Answer:
    return Answer(expect, status=code, body={"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason})


def event(kind: str, obj: Obj) -> Obj:
    return {"type": kind, "object": obj}


def bookmark(rv: int) -> Obj:
    return event("BOOKMARK", {"kind": "Widget", "apiVersion": "example.dev/v1alpha1", "metadata": {"resourceVersion": str(rv)}})


def gone(rv: int) -> Obj:
    return event("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired", "message": f"too old resource version: {rv}"})


class _Lines(httpx.AsyncByteStream):
    def __init__(self, lines: list[bytes], ending: str, hang: asyncio.Event | None = None) -> None:
        self.lines = lines
        self.ending = ending
        self.hang = hang

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.lines:
            yield line + b"\n"
        if self.hang is not None:
            await self.hang.wait()  # a quiet watch: only cancelling the reflector ends it
        if self.ending == "drop":
            raise httpx.ReadError("connection reset by peer")


class ScriptedBackend:
    """Serves the answers in order; once they run out, a quiet watch and `exhausted` is set."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = deque(answers)
        self.requests: list[dict[str, str]] = []
        self.exhausted = asyncio.Event()
        self._never = asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        self.requests.append(query)
        assert request.url.path == PATH, request.url.path
        if not self.answers:
            self.exhausted.set()
            return httpx.Response(200, stream=_Lines([], "end", self._never))
        answer = self.answers.popleft()
        missing = {k: v for k, v in answer.expect.items() if query.get(k) != v}
        assert not missing, f"request {len(self.requests)} asked {query}, the script expects {answer.expect}"
        if answer.body is not None:
            return httpx.Response(answer.status, json=answer.body)
        lines = [e if isinstance(e, bytes) else orjson.dumps(e) for e in answer.events]
        return httpx.Response(answer.status, stream=_Lines(lines, answer.ending))


# -- the reflector, wired to a view the way the proxy wires it --------------------------------


class VirtualTime:
    """Stands in for the reflector module's `asyncio`: `sleep` records the delay and yields once."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        if seconds == reflector_module.HEARTBEAT_SECONDS:
            # The heartbeat between probes keeps real time: no scenario lasts that long.
            await _real_sleep(seconds)
            return
        self.slept.append(seconds)
        await _real_sleep(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


_real_sleep = asyncio.sleep


@dataclass
class Run:
    backend: ScriptedBackend
    view: View
    clock: VirtualTime
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, spec.size) the view emitted
    replaced: list[list[str]] = field(default_factory=list)  # the names each `replace` got
    health: list[tuple[bool, str]] = field(default_factory=list)

    def held(self) -> dict[str, tuple[int, str]]:
        """name → (spec.size, backend RV) of what the view holds."""
        out = {}
        for obj in self.view.list(CLUSTER, "", _all()).items:
            md = obj.decode()
            out[obj.name] = (int(md["spec"]["size"]), str(self.view.backend_rv(CLUSTER, obj.namespace, obj.name)))
        return out

    def asked(self) -> list[str]:
        """Each request as `list[@continue]` or `watch@rv`."""
        return [f"watch@{q['resourceVersion']}" if q.get("watch") else "list" + (f"@{q['continue']}" if q.get("continue") else "") for q in self.backend.requests]


def _all() -> Any:
    from vwproxy.kube.listoptions import parse_list_options

    return parse_list_options({})


def play(monkeypatch: pytest.MonkeyPatch, *answers: Answer) -> Run:
    """Run a reflector until the script is used up; what it did, as seen from outside."""
    clock = VirtualTime()
    monkeypatch.setattr(reflector_module, "asyncio", clock)

    async def scenario() -> Run:
        backend = ScriptedBackend(*answers)
        view = View(RVSequence(), "example.dev", "widgets")
        run = Run(backend, view, clock)

        def emitted(events: list[Any]) -> None:
            for e in events:
                run.events.append((e.type, e.obj.name, str(e.obj.decode()["spec"]["size"])))

        def replace(items: list[tuple[Obj, str]]) -> None:
            run.replaced.append([str(o["metadata"]["name"]) for o, _ in items])
            emitted(view.replace_cluster(CLUSTER, items))

        def change(kind: str, obj: Obj, rv: str) -> None:
            md = obj["metadata"]
            emitted(view.delete(CLUSTER, md.get("namespace", ""), md["name"], rv) if kind == "DELETED" else view.upsert(CLUSTER, obj, rv))

        client = BackendClient(Backend(name="scripted", url="http://backend.test"), transport=httpx.MockTransport(backend.handle))
        reflector = Reflector(client, PATH, replace, change, lambda ok, why: run.health.append((ok, why)))
        task = asyncio.ensure_future(reflector.run())
        waiter = asyncio.ensure_future(backend.exhausted.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=SCENARIO_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        waiter.cancel()
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        assert waiter in done, f"the script was not used up in {SCENARIO_SECONDS} s; asked {run.asked()}"
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        return run

    return asyncio.run(scenario())


# -- scenarios --------------------------------------------------------------------------------


def test_list_then_watch_events_then_resume_from_the_bookmark(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        listing(10, widget("a", 5), widget("b", 7)),
        watching(10, event("ADDED", widget("c", 11)), event("MODIFIED", widget("a", 12, size=2)), event("DELETED", widget("b", 13)), bookmark(14)),
        watching(14),
    )
    assert run.asked() == ["list", "watch@10", "watch@14", "watch@14"]
    assert run.replaced == [["a", "b"]]
    assert run.events == [("ADDED", "a", "1"), ("ADDED", "b", "1"), ("ADDED", "c", "1"), ("MODIFIED", "a", "2"), ("DELETED", "b", "1")]
    assert run.held() == {"a": (2, "12"), "c": (1, "11")}
    assert run.clock.slept == [], "a watch the server ended is resumed at once"
    assert all(ok for ok, _ in run.health)


def test_stream_dropped_then_resumed_from_the_last_event(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        listing(10, widget("a", 5)),
        watching(10, event("ADDED", widget("b", 11)), ending="drop"),
        watching(11, event("MODIFIED", widget("b", 12, size=3))),
    )
    assert run.asked() == ["list", "watch@10", "watch@11", "watch@12"], "no relist: the watch resumes where it broke"
    assert run.replaced == [["a"]]
    assert run.events == [("ADDED", "a", "1"), ("ADDED", "b", "1"), ("MODIFIED", "b", "3")]
    assert run.clock.slept == [INITIAL_BACKOFF_SECONDS]
    stale = [why for ok, why in run.health if not ok]
    assert len(stale) == 1 and "scripted" in stale[0], run.health
    assert run.health[-1] == (True, ""), "current again once the watch resumed"


def test_stream_then_410_gone_relists_and_the_difference_becomes_events(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        listing(10, widget("a", 5), widget("b", 7), widget("c", 8)),
        watching(10, event("MODIFIED", widget("a", 11, size=2)), gone(11)),
        # what the backend did meanwhile: a changed again, b deleted, c untouched, d created
        listing(20, widget("a", 15, size=3), widget("c", 8), widget("d", 18, size=4)),
        watching(20),
    )
    assert run.asked() == ["list", "watch@10", "list", "watch@20", "watch@20"]
    assert run.replaced == [["a", "b", "c"], ["a", "c", "d"]]
    relist = run.events[4:]
    assert relist == [("MODIFIED", "a", "3"), ("DELETED", "b", "1"), ("ADDED", "d", "4")], "c is unchanged: no event"
    assert run.held() == {"a": (3, "15"), "c": (1, "8"), "d": (4, "18")}
    assert run.clock.slept == [], "a 410 relists at once, without backoff"


def test_watch_answered_with_http_410_relists(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        listing(10, widget("a", 5)),
        status(410, "Expired", {"watch": "true", "resourceVersion": "10"}),
        listing(30, widget("a", 25, size=9)),
    )
    assert run.asked() == ["list", "watch@10", "list", "watch@30"]
    assert run.events[-1] == ("MODIFIED", "a", "9")


def test_paged_list_is_handed_over_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        listing(40, widget("a", 31), widget("b", 32), token="page-2"),
        listing(40, widget("c", 33), token="page-3", expect={"continue": "page-2"}),
        listing(40, widget("d", 34), expect={"continue": "page-3"}),
    )
    assert run.asked() == ["list", "list@page-2", "list@page-3", "watch@40"]
    assert run.replaced == [["a", "b", "c", "d"]], "one replace with every page, never a partial state"


def test_expired_continue_token_restarts_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        listing(40, widget("a", 31), widget("b", 32), token="page-2"),
        status(410, "Expired", {"continue": "page-2"}),
        listing(50, widget("a", 31), widget("c", 45)),
    )
    assert run.asked() == ["list", "list@page-2", "list", "watch@50"]
    assert run.replaced == [["a", "c"]], "the first page of the expired list is not handed over"


def test_404_is_no_objects_and_is_looked_at_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    run = play(
        monkeypatch,
        status(404, "NotFound", {}),
        listing(60, widget("a", 55)),
    )
    assert run.asked() == ["list", "list", "watch@60"]
    assert run.replaced == [[], ["a"]]
    assert run.clock.slept == [MAX_BACKOFF_SECONDS]
    assert all(ok for ok, _ in run.health), "a resource the backend does not serve is not an error"


def test_failures_back_off_exponentially_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    failures = [status(503, "ServiceUnavailable", {}) for _ in range(7)]
    run = play(monkeypatch, *failures, listing(70, widget("a", 65)))
    assert run.asked() == ["list"] * 8 + ["watch@70"]
    delays = [INITIAL_BACKOFF_SECONDS * 2**i for i in range(7)]
    assert run.clock.slept == pytest.approx([min(d, MAX_BACKOFF_SECONDS) for d in delays])
    assert [ok for ok, _ in run.health] == [False] * 7 + [True, True], "stale while failing, current once listed (and watching)"
    assert run.replaced == [["a"]]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"this is not json", id="stream then garbage"),
        pytest.param(orjson.dumps(event("ERROR", {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"})), id="stream then in-stream 500"),
    ],
)
def test_a_broken_stream_relists_after_backoff(monkeypatch: pytest.MonkeyPatch, line: bytes) -> None:
    run = play(
        monkeypatch,
        listing(10, widget("a", 5)),
        watching(10, event("ADDED", widget("b", 11)), line),
        listing(20, widget("b", 11)),
    )
    assert run.asked() == ["list", "watch@10", "list", "watch@20"]
    assert run.clock.slept == [INITIAL_BACKOFF_SECONDS]
    assert [ok for ok, _ in run.health][-3:] == [False, True, True]
    assert run.events[-1] == ("DELETED", "a", "1")
    assert run.held() == {"b": (1, "11")}


def test_the_script_checks_what_the_reflector_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="the script expects"):
        play(monkeypatch, listing(10), watching(11))


