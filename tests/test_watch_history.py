"""Property tests of the watch history: any interleaving of writes and reconnects gives each
watcher exactly the committed changes, in order, with nothing lost or doubled; a watcher whose
resume point fell out of the history gets 410 and a relist reproduces the state."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.core.history import EventHistory, TooOld
from vwproxy.core.objects import ChangeEvent, ChangeHistory, StoredObject
from vwproxy.kube import watch as wire
from vwproxy.kube.errors import StatusError
from vwproxy.kube.listoptions import parse_list_options
from vwproxy.kube.resources import ResourceInfo
from vwproxy.store.shard import Shard
from vwproxy.core.watch import Watcher, begin_watch

NAMES = ["a", "b", "c", "d"]

op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NAMES), st.sampled_from(["x", "y"])),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just("")),
    st.tuples(st.just("reconnect"), st.just(""), st.just("")),
)


class Client:
    """A watching client: what it saw, where it would resume, and its view of the objects."""

    def __init__(self, shard: Shard, info: ResourceInfo, selector: str) -> None:
        self.shard, self.info, self.selector = shard, info, selector
        self.seen: list[tuple[str, str, int]] = []
        self.state: dict[str, str] = {}
        self.relists = 0
        self.rv = self._relist()
        self.watcher = self._watch(self.rv)

    def _params(self, rv: int) -> dict[str, str]:
        params = {"watch": "true", "resourceVersion": str(rv)}
        if self.selector:
            params["labelSelector"] = self.selector
        return params

    def _relist(self) -> int:
        params = {"labelSelector": self.selector} if self.selector else {}
        result = self.shard.list(self.info, "root", "default", parse_list_options(params))
        self.state = {o.name: o.labels.get("sel", "") for o in result.items}
        self.relists += 1
        return result.rv

    def _watch(self, rv: int) -> Watcher:
        opts = parse_list_options(self._params(rv))
        watcher = Watcher("root", "default", opts.labels, opts.fields, "v1", lambda o: o.raw)
        begin_watch(self.shard.reader(self.info), watcher, opts, (self.info.api_version, self.info.kind))
        return watcher

    def drain(self) -> None:
        for frame in self.watcher.drain():
            for line in frame.splitlines():
                event = orjson.loads(line)
                obj: dict[str, Any] = event["object"]
                rv = int(obj["metadata"]["resourceVersion"])
                name = obj["metadata"]["name"]
                assert rv > self.rv, "events arrive in strictly increasing RV order"
                self.rv = rv
                self.seen.append((event["type"], name, rv))
                if event["type"] == "DELETED":
                    self.state.pop(name, None)
                else:
                    self.state[name] = (obj["metadata"].get("labels") or {}).get("sel", "")

    def reconnect(self) -> None:
        self.drain()
        self.shard.reader(self.info).remove_watcher(self.watcher)
        try:
            self.watcher = self._watch(self.rv)
        except StatusError as exc:
            assert exc.code == 410 and exc.reason == "Expired"
            self.rv = self._relist()
            self.watcher = self._watch(self.rv)


def _expected_events(changes: list[tuple[str, str, str, str | None, int]], selector_value: str | None) -> list[tuple[str, str, int]]:
    """What a watcher with `sel=<selector_value>` (None: everything) must see for these changes."""
    out = []
    for kind, name, before, after, rv in changes:
        was = before is not None and (selector_value is None or before == selector_value)
        now = after is not None and (selector_value is None or after == selector_value)
        if kind == "DELETED":
            if was:
                out.append(("DELETED", name, rv))
        elif was and now:
            out.append(("MODIFIED", name, rv))
        elif now:
            out.append(("ADDED", name, rv))
        elif was:
            out.append(("DELETED", name, rv))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=40), history=st.sampled_from([3, 1000]))
def test_watchers_see_exactly_the_committed_changes(ops: list[tuple[str, str, str]], history: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shard = Shard(Path(tmp), history_size=history)
        try:
            info = shard.resolve("root", "", "v1", "configmaps")
            everything = Client(shard, info, "")
            selected = Client(shard, info, "sel=x")
            model: dict[str, str] = {}
            changes: list[tuple[str, str, str, str | None, int]] = []
            for action, name, value in ops:
                if action == "put":
                    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"sel": value}}, "data": {"v": value}}
                    if name in model:
                        if model[name] == value:
                            continue  # a no-op update commits nothing
                        stored = shard.update(info, "root", "default", name, body)
                        changes.append(("MODIFIED", name, model[name], value, stored.rv))
                    else:
                        stored = shard.create(info, "root", "default", body)
                        changes.append(("ADDED", name, "", value, stored.rv))
                        changes[-1] = ("ADDED", name, None, value, stored.rv)  # type: ignore[assignment]
                    model[name] = value
                elif action == "delete" and name in model:
                    stored, gone = shard.delete(info, "root", "default", name, {})
                    assert gone
                    changes.append(("DELETED", name, model.pop(name), None, stored.rv))
                elif action == "reconnect":
                    everything.reconnect()
                    selected.reconnect()
            everything.drain()
            selected.drain()
            for client, value in ((everything, None), (selected, "x")):
                expected_state = {k: v for k, v in model.items() if value is None or v == value}
                assert client.state == expected_state
                if client.relists == 1:  # never had to relist: the exact event sequence
                    assert client.seen == _expected_events(changes, value)
                else:
                    assert history == 3, "only a short history can expire"
                    assert len(set(client.seen)) == len(client.seen), "no event delivered twice"
        finally:
            shard.close()


class _E:
    def __init__(self, rv: int) -> None:
        self.rv = rv


@given(rvs=st.lists(st.integers(1, 10_000), unique=True, max_size=60), capacity=st.integers(1, 20), probe=st.integers(0, 10_001))
def test_history_since_returns_exactly_the_newer_kept_events(rvs: list[int], capacity: int, probe: int) -> None:
    history: EventHistory[_E] = EventHistory(capacity, 0)
    for rv in sorted(rvs):
        history.append(_E(rv))
    kept = sorted(rvs)[-capacity:] if rvs else []
    forgotten = sorted(rvs)[: max(len(rvs) - capacity, 0)]
    compacted = forgotten[-1] if forgotten else 0
    if probe < compacted:
        with pytest.raises(TooOld):
            history.since(probe)
    else:
        assert [e.rv for e in history.since(probe)] == [rv for rv in kept if rv > probe]


def test_history_rejects_out_of_order_events() -> None:
    history: EventHistory[_E] = EventHistory(5, 10)
    with pytest.raises(ValueError):
        history.append(_E(10))
    history.append(_E(11))
    with pytest.raises(ValueError):
        history.append(_E(11))


def test_history_boundary_is_exact() -> None:
    history: EventHistory[_E] = EventHistory(2, 0)
    for rv in (5, 7, 9):  # 5 is forgotten: compacted at 5
        history.append(_E(rv))
    assert history.compacted == 5
    assert [e.rv for e in history.since(5)] == [7, 9]  # resuming right after the forgotten event is fine
    with pytest.raises(TooOld):
        history.since(4)  # would need event 5, which is gone
    assert history.since(9) == []


def test_a_change_history_holds_added_events_as_their_objects_and_replays_them_as_events() -> None:
    def stored(name: str, rv: int) -> StoredObject:
        return StoredObject("c1", "d", name, rv, b'{"metadata":{"name":"%b","resourceVersion":"%d"}}' % (name.encode(), rv), {}, {}, False)

    history = ChangeHistory(3, 0, "example.dev/widgets")
    a, b = stored("a", 1), stored("b", 2)
    live = [
        ChangeEvent(wire.ADDED, a, None, "example.dev/widgets"),
        ChangeEvent(wire.ADDED, b, None, "example.dev/widgets"),
        ChangeEvent(wire.MODIFIED, a.at_rv(3), a, "example.dev/widgets"),
        ChangeEvent(wire.DELETED, b.at_rv(4), b, "example.dev/widgets"),
    ]
    for event in live:
        history.append(event)
    assert (history.compacted, history.newest_rv, len(history)) == (1, 4, 3)
    assert history._entries.since(1)[0] is b, "the ADDED event is kept as its object alone"
    replayed = history.since(1)
    assert replayed[1:] == live[2:], "other events are kept as they are"
    again = replayed[0]
    assert (again.type, again.obj, again.prev, again.storage_key, again.rv) == (wire.ADDED, b, None, "example.dev/widgets", 2)
    assert again.frame(wire.ADDED, False, "json", lambda o: o.raw) == live[1].frame(wire.ADDED, False, "json", lambda o: o.raw)
    assert [e.rv for e in history.since(3)] == [4]
    with pytest.raises(TooOld):
        history.since(0)
