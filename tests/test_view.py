"""The pure watch cache of the proxy: RV sequence, views, history replay, continue tokens, RV translation.

The property tests drive a `View` the way reflectors and watch handlers will (issue 5, acceptance):
several backends with their own RV sequences host several logical clusters; changes reach the view
live while a backend's reflector is connected and the cluster engaged, are missed while it is
disconnected and come back collapsed through `replace_cluster` (the relist after a 410); clusters
are engaged and disengaged; watching clients disconnect at any point, losing the frames they had
not read, and resume from the last RV they saw (relisting when the history no longer reaches it).

The property, precisely. For a key (cluster, namespace, name) and a client whose filter is f, let
the *visible state* after each view operation be the backend state the view holds for that key if
it matches f, else "absent"; a re-created object (other uid) counts as passing through "absent".
Then, from the client's last (re)list on, the states the client's watch shows for the key
(ADDED/MODIFIED: the object; DELETED: absent) are exactly that sequence with consecutive repeats
collapsed: nothing missing, nothing twice, nothing out of order. Changes delivered live each give
one step; a relist or an engagement may merge several backend changes into one step (or none,
if they cancel out). Every shown state is a state the backend held, in the backend's order; RVs
are strictly increasing for every client across reconnects and across views sharing a sequence;
the client's final state, `view.list` and the model agree; relisting every backend afterwards
changes nothing and a fresh view built from the backends holds the same objects.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.core import rv as rv_module
from vwproxy.core.history import TooOld
from vwproxy.core.objects import ChangeEvent, StoredObject
from vwproxy.core.rv import RV_PER_SECOND, RVSequence, base_from_clock
from vwproxy.core.view import DEFAULT_HISTORY, SNAPSHOT_TTL_SECONDS, View
from vwproxy.kube.errors import StatusError
from vwproxy.kube.kcp import CLUSTER_ANNOTATION
from vwproxy.kube.listoptions import CONTINUE_EXPIRED_MESSAGE, EXACT, NOT_OLDER_THAN, ListOptions, decode_continue, parse_list_options
from vwproxy.kube.selectors import FieldSelector, LabelSelector
from vwproxy.core.watch import Watcher, begin_watch

GROUP = "example.dev"
Key = tuple[str, str, str]  # (cluster, namespace, name)
State = tuple[str, int, str]  # (uid, spec.v, labels.sel): what a backend write changes


def widget(namespace: str, name: str, uid: str = "u", v: int = 1, sel: str = "x", brv: str = "1", **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": brv, "labels": {"sel": sel}}
    md.update(extra)
    return {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": md, "spec": {"v": v}}


def state_of(obj: dict[str, Any]) -> State:
    md = obj["metadata"]
    return (md["uid"], obj["spec"]["v"], md["labels"]["sel"])


def opts(labels: str = "", fields: str = "", **kw: Any) -> ListOptions:
    return ListOptions(labels=LabelSelector.parse(labels), fields=FieldSelector.parse(fields), **kw)


def decoded(obj: StoredObject) -> dict[str, Any]:
    return obj.decode()


def keys(items: list[StoredObject]) -> list[Key]:
    return [o.sort_key for o in items]


def without_rv(obj: StoredObject) -> dict[str, Any]:
    body = obj.decode()
    del body["metadata"]["resourceVersion"]
    return body


def in_backend_order(shown: list[State], history: list[State]) -> bool:
    """Whether each shown state is one the backend held, never older than the one shown before.

    The same state may be shown again (a cluster disengaged and engaged again shows its objects
    anew), so consecutive shown states may match the same point of the backend's history.
    """
    position = 0
    for state in shown:
        while position < len(history) and history[position] != state:
            position += 1
        if position == len(history):
            return False
    return True


# -- the harness of the property test -------------------------------------------------------------

CLUSTERS = {"c1": 0, "c2": 0, "c3": 1, "c4": 2}  # logical cluster → the backend hosting it
NAMESPACES = ["default", "other"]
NAMES = ["a", "b", "c"]
# (cluster, namespace, labelSelector, fieldSelector) of the watching clients.
FILTERS: list[tuple[str | None, str, str, str]] = [
    (None, "", "", ""),
    ("c2", "", "", ""),
    (None, "", "sel=x", ""),
    (None, "", "", "metadata.name=a"),
    ("c1", "other", "sel!=y", ""),
]


class Backend:
    """A backend: its own RV sequence (unrelated to the others'), its clusters' objects, its reflector link."""

    def __init__(self, index: int) -> None:
        self.rv = 1_000 * (index + 1) + 7 * index  # unrelated starting points
        self.objects: dict[Key, tuple[dict[str, Any], str]] = {}
        self.connected = True

    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)


class Client:
    """A watching client: its filter, what it saw, where it would resume."""

    def __init__(self, harness: Harness, flt: tuple[str | None, str, str, str], page: int) -> None:
        self.h = harness
        self.cluster, self.namespace, self.labels_text, self.fields_text = flt
        self.labels = LabelSelector.parse(self.labels_text)
        self.fields = FieldSelector.parse(self.fields_text)
        self.page = page
        self.relists = 0
        self.rv = 0
        self.state: dict[Key, State] = {}
        self.log: dict[Key, list[State | None]] = {}  # shown states since the last relist
        self.expected: dict[Key, list[State | None]] = {}  # model's visible states since the last relist
        self.watcher = self._new_watcher()
        self.relist()

    def _new_watcher(self) -> Watcher:
        return Watcher(self.cluster, self.namespace, self.labels, self.fields, "json", lambda o: o.raw)

    def visible(self, key: Key, state: State | None) -> State | None:
        if state is None:
            return None
        cluster, namespace, name = key
        if self.cluster is not None and cluster != self.cluster:
            return None
        if self.namespace and namespace != self.namespace:
            return None
        if not self.labels.matches({"sel": state[2]}):
            return None
        if not self.fields.matches({"metadata.name": name, "metadata.namespace": namespace}):
            return None
        return state

    def expect(self, key: Key, old: State | None, new: State | None) -> None:
        """Record what the model says this client must see for one key's change."""
        before, after = self.visible(key, old), self.visible(key, new)
        if old is not None and new is not None and old[0] != new[0]:
            # A re-created object: the old one leaves, the new one arrives.
            if before is not None:
                self.expected.setdefault(key, []).append(None)
            if after is not None:
                self.expected.setdefault(key, []).append(after)
        elif before != after:
            self.expected.setdefault(key, []).append(after)

    def relist(self) -> None:
        """List (paging with `self.page`) and start a fresh watch from the list's RV."""
        self.relists += 1
        items: list[StoredObject] = []
        token = ""
        first_rv: int | None = None
        while True:
            result = self.h.view.list(self.cluster, self.namespace, opts(self.labels_text, self.fields_text, limit=self.page, continue_token=token))
            first_rv = result.rv if first_rv is None else first_rv
            assert result.rv == first_rv, "every page is at the first page's RV"
            items += result.items
            token = result.continue_token
            if not token:
                break
        assert keys(items) == sorted(keys(items))
        self.state = {o.sort_key: state_of(o.decode()) for o in items}
        assert self.state == {k: s for k, s in self.h.model.items() if self.visible(k, s)}
        self.rv = first_rv
        self.log, self.expected = {}, {}
        self.watcher = self._new_watcher()

    def process(self, frames: list[bytes]) -> None:
        for frame in frames:
            event = orjson.loads(frame)
            obj: dict[str, Any] = event["object"]
            md = obj["metadata"]
            rv = int(md["resourceVersion"])
            assert rv > self.rv, f"RVs strictly increase for a client ({rv} after {self.rv})"
            self.rv = rv
            key = (md["annotations"][CLUSTER_ANNOTATION], md["namespace"], md["name"])
            shown: State | None
            if event["type"] == "DELETED":
                assert key in self.state, "DELETED only for an object the client holds"
                del self.state[key]
                shown = None
            else:
                shown = state_of(obj)
                assert self.visible(key, shown) == shown, "only matching objects are shown"
                assert (key in self.state) == (event["type"] == "MODIFIED")
                self.state[key] = shown
            self.log.setdefault(key, []).append(shown)

    def drain(self) -> None:
        self.process(self.watcher.drain())

    def disconnect(self, keep: int) -> None:
        """Read `keep` frames, lose the rest with the connection, and resume from the last RV seen."""
        frames = self.watcher.drain()
        self.process(frames[:keep])
        try:
            replay = self.h.view.since(self.rv)
        except TooOld:
            self.relist()
            return
        self.watcher = self._new_watcher()
        for event in replay:
            self.watcher.offer(event)

    def bookmark(self) -> None:
        """An idle watcher's bookmark: everything up to the view's RV has been sent."""
        self.drain()
        self.rv = max(self.rv, self.h.view.current_rv)


class Harness:
    def __init__(self, history: int, page: int) -> None:
        self.seq = RVSequence(5_000)
        self.view = View(self.seq, GROUP, "widgets", history)
        self.gadgets = View(self.seq, GROUP, "gadgets", history)  # shares the RV sequence
        self.backends = [Backend(i) for i in range(3)]
        self.model: dict[Key, State] = {}  # what the view must hold
        self.engaged: set[str] = set()
        self.backend_history: dict[Key, list[State]] = {}
        self.produced: list[int] = []  # RVs of every event of every view, in production order
        self.exact_points: list[tuple[int, dict[Key, State]]] = [(self.view.current_rv, {})]
        self.uids = itertools.count()
        self.clients = [Client(self, flt, page) for flt in FILTERS]

    def backend_of(self, cluster: str) -> Backend:
        return self.backends[CLUSTERS[cluster]]

    def live(self, cluster: str) -> bool:
        return self.backend_of(cluster).connected and cluster in self.engaged

    def ingest(self, view: View, events: list[ChangeEvent]) -> None:
        for event in events:
            assert not self.produced or event.rv > self.produced[-1], "one strictly increasing RV space"
            self.produced.append(event.rv)
            body = event.obj.decode()
            assert body["metadata"]["resourceVersion"] == str(event.rv)
            assert body["metadata"]["annotations"][CLUSTER_ANNOTATION] == event.obj.cluster
            if event.type == "DELETED":
                assert event.prev is not None and without_rv(event.obj) == without_rv(event.prev)
            if view is self.view:
                for client in self.clients:
                    client.watcher.offer(event)

    def set_model(self, key: Key, new: State | None) -> None:
        old = self.model.get(key)
        for client in self.clients:
            client.expect(key, old, new)
        if new is None:
            self.model.pop(key, None)
        else:
            self.model[key] = new

    def write(self, key: Key, sel: str, v: int) -> None:
        backend = self.backend_of(key[0])
        held = backend.objects.get(key)
        uid = state_of(held[0])[0] if held else f"uid-{next(self.uids)}"
        if held and state_of(held[0]) == (uid, v, sel):
            return  # a no-op update: the backend commits nothing
        brv = backend.bump()
        obj = widget(key[1], key[2], uid, v, sel, brv)
        backend.objects[key] = (obj, brv)
        self.backend_history.setdefault(key, []).append(state_of(obj))
        if self.live(key[0]):
            events = self.view.upsert(key[0], obj, brv)
            assert [e.type for e in events] == ["MODIFIED" if held else "ADDED"]
            self.ingest(self.view, events)
            self.set_model(key, state_of(obj))

    def delete(self, key: Key) -> None:
        backend = self.backend_of(key[0])
        if backend.objects.pop(key, None) is None:
            return
        brv = backend.bump()
        if self.live(key[0]):
            events = self.view.delete(key[0], key[1], key[2], brv)
            assert [e.type for e in events] == ["DELETED"]
            self.ingest(self.view, events)
            self.set_model(key, None)

    def recreate(self, key: Key) -> None:
        """The object is deleted and created again: same content, another uid."""
        held = self.backend_of(key[0]).objects.get(key)
        if held:
            _, v, sel = state_of(held[0])
            self.delete(key)
            self.write(key, sel, v)

    def churn(self, key: Key) -> None:
        """Two writes that cancel out: the backend RV moves on, the content comes back."""
        held = self.backend_of(key[0]).objects.get(key)
        if held:
            _, v, sel = state_of(held[0])
            self.write(key, "y" if sel == "x" else "x", v)
            self.write(key, sel, v)

    def redeliver(self, key: Key) -> None:
        held = self.backend_of(key[0]).objects.get(key)
        if held and self.live(key[0]):
            assert self.view.upsert(key[0], held[0], held[1]) == [], "a re-delivered object changes nothing"

    def replace(self, cluster: str) -> None:
        backend = self.backend_of(cluster)
        objects = [(obj, brv) for k, (obj, brv) in sorted(backend.objects.items()) if k[0] == cluster]
        self.ingest(self.view, self.view.replace_cluster(cluster, objects))
        self.engaged.add(cluster)
        touched = {k for k in self.model if k[0] == cluster} | {k for k in backend.objects if k[0] == cluster}
        for key in sorted(touched):
            held = backend.objects.get(key)
            self.set_model(key, state_of(held[0]) if held else None)

    def relist_backend(self, index: int) -> None:
        """The reflector's watch got 410: relist every engaged cluster of the backend."""
        for cluster in sorted(self.engaged):
            if CLUSTERS[cluster] == index:
                self.replace(cluster)
        self.backends[index].connected = True

    def disengage(self, cluster: str) -> None:
        self.ingest(self.view, self.view.drop_cluster(cluster))
        self.engaged.discard(cluster)
        for key in sorted(k for k in self.model if k[0] == cluster):
            self.set_model(key, None)

    def gadget(self, name: str, v: int) -> None:
        self.ingest(self.gadgets, self.gadgets.upsert("c1", widget("default", name, "g-" + name, v), str(v)))

    def check_view_is_model(self) -> None:
        items = self.view.list(None, "", opts()).items
        assert {o.sort_key: state_of(o.decode()) for o in items} == self.model
        assert keys(items) == sorted(self.model)
        assert self.view.clusters == self.engaged
        # A cluster whose reflector is connected is in sync, down to the backend RVs that
        # preconditions translate to.
        for obj in items:
            if self.live(obj.cluster):
                _, backend_rv = self.backend_of(obj.cluster).objects[obj.sort_key]
                assert self.view.translate_precondition(*obj.sort_key, str(obj.rv)) == backend_rv


key_st = st.tuples(st.sampled_from(sorted(CLUSTERS)), st.sampled_from(NAMESPACES), st.sampled_from(NAMES))
# Each kind of operation with its arguments; `OP_MIX` weights them: writes are most of what
# backends do, and client reconnects must be frequent enough to hit a short history.
OPS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "write": st.tuples(st.just("write"), key_st, st.sampled_from(["x", "y"]), st.integers(1, 2)),
    "delete": st.tuples(st.just("delete"), key_st),
    "recreate": st.tuples(st.just("recreate"), key_st),
    "churn": st.tuples(st.just("churn"), key_st),
    "redeliver": st.tuples(st.just("redeliver"), key_st),
    "disconnect": st.tuples(st.just("disconnect"), st.integers(0, 2)),
    "relist": st.tuples(st.just("relist"), st.integers(0, 2)),
    "engage": st.tuples(st.just("engage"), st.sampled_from(sorted(CLUSTERS))),
    "disengage": st.tuples(st.just("disengage"), st.sampled_from(sorted(CLUSTERS))),
    "client_drop": st.tuples(st.just("client_drop"), st.integers(0, len(FILTERS) - 1), st.integers(0, 4)),
    "bookmark": st.tuples(st.just("bookmark"), st.integers(0, len(FILTERS) - 1)),
    "gadget": st.tuples(st.just("gadget"), st.sampled_from(NAMES), st.integers(1, 3)),
}
OP_MIX = ["write"] * 6 + ["client_drop"] * 3 + ["delete", "recreate", "churn", "disconnect", "relist"] * 2 + [
    "redeliver", "engage", "disengage", "bookmark", "gadget",
]
op_st = st.sampled_from(OP_MIX).flatmap(OPS.__getitem__)


def run(h: Harness, op: tuple[Any, ...]) -> None:
    action = op[0]
    if action == "write":
        h.write(op[1], op[2], op[3])
    elif action == "delete":
        h.delete(op[1])
    elif action == "recreate":
        h.recreate(op[1])
    elif action == "churn":
        h.churn(op[1])
    elif action == "redeliver":
        h.redeliver(op[1])
    elif action == "disconnect":
        h.backends[op[1]].connected = False
    elif action == "relist":
        h.relist_backend(op[1])
    elif action == "engage":
        h.replace(op[1])
    elif action == "disengage":
        h.disengage(op[1])
    elif action == "client_drop":
        h.clients[op[1]].disconnect(op[2])
    elif action == "bookmark":
        h.clients[op[1]].bookmark()
    elif action == "gadget":
        h.gadget(op[1], op[2])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unengaged=st.sets(st.sampled_from(sorted(CLUSTERS)), max_size=2),
    ops=st.lists(op_st, min_size=20, max_size=150),
    history=st.sampled_from([2, 6, DEFAULT_HISTORY]),
    page=st.sampled_from([0, 1, 3]),
)
def test_every_watcher_sees_each_objects_backend_states_in_order(unengaged: set[str], ops: list[tuple[Any, ...]], history: int, page: int) -> None:
    h = Harness(history, page)
    for cluster in sorted(set(CLUSTERS) - unengaged):
        h.replace(cluster)
    for op in ops:
        run(h, op)
        h.check_view_is_model()
        h.exact_points.append((h.view.current_rv, dict(h.model)))

    # The reflectors catch up (each relists as after a 410): the view is the backends' state.
    for index in range(len(h.backends)):
        h.relist_backend(index)
    expected = {k: state_of(obj) for k, (obj, _) in
                itertools.chain.from_iterable(b.objects.items() for b in h.backends) if k[0] in h.engaged}
    assert h.model == expected
    h.check_view_is_model()

    for client in h.clients:
        client.drain()
        visible = {k: s for k, s in h.model.items() if client.visible(k, s)}
        assert client.state == visible, "the watcher's final state is the view's"
        listed = h.view.list(client.cluster, client.namespace, opts(client.labels_text, client.fields_text)).items
        assert {o.sort_key: state_of(o.decode()) for o in listed} == visible
        shown = {k: v for k, v in client.log.items() if v}
        assert shown == {k: v for k, v in client.expected.items() if v}, "per object: no gap, no duplicate, in order"
        for key, states in client.log.items():
            assert in_backend_order([s for s in states if s is not None], h.backend_history.get(key, []))
        if client.relists > 1:
            assert history < DEFAULT_HISTORY, "only a short history makes a watcher relist"

    # A relist reproduces the view: relisting again changes nothing, and a view built afresh
    # from the backends holds the same objects (apart from RVs).
    before = h.produced[:]
    for index in range(len(h.backends)):
        h.relist_backend(index)
    assert h.produced == before
    fresh = View(h.seq, GROUP, "widgets")
    for cluster in sorted(h.engaged):
        fresh.replace_cluster(cluster, [(o, brv) for k, (o, brv) in sorted(h.backend_of(cluster).objects.items()) if k[0] == cluster])
    assert [without_rv(o) for o in fresh.list(None, "", opts()).items] == [without_rv(o) for o in h.view.list(None, "", opts()).items]

    # Exact lists rebuild every past state the history still reaches, and 410 before that.
    for point, state in h.exact_points:
        if point < h.view.compacted_rv:
            with pytest.raises(StatusError) as err:
                h.view.list(None, "", opts(resource_version=str(point), match=EXACT))
            assert err.value.code == 410
        else:
            result = h.view.list(None, "", opts(resource_version=str(point), match=EXACT))
            assert result.rv == point
            assert {o.sort_key: state_of(o.decode()) for o in result.items} == state
            assert all(o.rv <= point for o in result.items)

    # Preconditions translate exactly the held proxy RV of each object.
    for obj in h.view.list(None, "", opts()).items:
        cluster, namespace, name = obj.sort_key
        assert h.view.translate_precondition(cluster, namespace, name, str(obj.rv)) == h.backend_of(cluster).objects[obj.sort_key][1]
        for stale in (obj.rv - 1, obj.rv + 1, h.seq.current + 1):
            with pytest.raises(StatusError) as err:
                h.view.translate_precondition(cluster, namespace, name, str(stale))
            assert err.value.code == 409


@settings(max_examples=150, deadline=None)
@given(
    initial=st.sets(key_st, max_size=14),
    limit=st.integers(1, 5),
    changes=st.lists(st.tuples(st.sampled_from(["write", "delete"]), key_st, st.integers(1, 3)), max_size=24),
    per_page=st.integers(0, 3),
    selector=st.sampled_from(["", "sel=x"]),
)
def test_continue_tokens_page_a_consistent_snapshot(initial: set[Key], limit: int, changes: list[tuple[str, Key, int]], per_page: int, selector: str) -> None:
    view = View(RVSequence(100), GROUP, "widgets", history_size=4)
    for i, (cluster, namespace, name) in enumerate(sorted(initial)):
        view.upsert(cluster, widget(namespace, name, f"u{cluster}{namespace}{name}", 1, "xy"[i % 2]), "1")
    snapshot = [(o.sort_key, o.raw) for o in view.list(None, "", opts(selector)).items]
    start_rv = view.current_rv
    pending = iter(changes)
    pages = [view.list(None, "", opts(selector, limit=limit))]
    while pages[-1].continue_token:
        for action, (cluster, namespace, name), v in itertools.islice(pending, per_page):
            if action == "write":
                view.upsert(cluster, widget(namespace, name, "w" + name, v + 1, "x"), str(v))
            else:
                view.delete(cluster, namespace, name, str(v))
        pages.append(view.list(None, "", opts(selector, limit=limit, continue_token=pages[-1].continue_token)))
    assert [(o.sort_key, o.raw) for p in pages for o in p.items] == snapshot
    assert all(p.rv == start_rv for p in pages)
    assert all(len(p.items) == limit for p in pages[:-1])
    for number, page in enumerate(pages[:-1]):
        assert page.remaining == len(snapshot) - limit * (number + 1)
    assert pages[-1].remaining is None


@given(base=st.integers(0, 10**18), count=st.integers(0, 50))
def test_rv_sequence_is_strictly_increasing(base: int, count: int) -> None:
    seq = RVSequence(base)
    issued = [seq.next() for _ in range(count)]
    assert issued == list(range(base + 1, base + count + 1))
    assert seq.current == (issued[-1] if issued else base)


@given(start_s=st.integers(1_600_000_000, 2_000_000_000), runtime_s=st.integers(1, 10**6), rate=st.floats(0, 0.999))
def test_a_later_run_starts_above_everything_an_earlier_run_issued(start_s: int, runtime_s: int, rate: float) -> None:
    earlier = RVSequence(base_from_clock(start_s * 10**9))
    issued = int(runtime_s * RV_PER_SECOND * rate)  # under a million events per second of runtime
    last = earlier.base + issued
    later = RVSequence(base_from_clock((start_s + runtime_s) * 10**9))
    assert later.base > last


# -- unit tests --------------------------------------------------------------------------------

def test_rv_sequence_default_base_is_the_start_time_in_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rv_module, "time", SimpleNamespace(time_ns=lambda: 1_700_000_000_123_456_789))
    seq = RVSequence()
    assert seq.base == seq.current == 1_700_000_000_123_456
    assert seq.next() == 1_700_000_000_123_457
    assert str(seq.current).isdigit()


def test_rv_sequence_rejects_a_negative_base() -> None:
    with pytest.raises(ValueError):
        RVSequence(-1)


def test_rv_sequence_really_uses_the_clock() -> None:
    import time
    before = time.time_ns() // 1000
    seq = RVSequence()
    assert before <= seq.base <= time.time_ns() // 1000


def make_view(history: int = DEFAULT_HISTORY, base: int = 100, **kw: Any) -> View:
    return View(RVSequence(base), GROUP, "widgets", history, **kw)


def test_upsert_adds_stamped_bytes_and_does_not_touch_the_input() -> None:
    view = make_view()
    obj = widget("default", "a", brv="77")
    original = orjson.dumps(obj)
    [event] = view.upsert("c1", obj, "77")
    assert orjson.dumps(obj) == original
    assert event.type == "ADDED" and event.rv == 101 and event.prev is None
    assert event.storage_key == "example.dev/widgets"
    held = view.get("c1", "default", "a")
    assert held is event.obj
    body = decoded(held)
    assert body["metadata"]["resourceVersion"] == "101"
    assert body["metadata"]["annotations"] == {CLUSTER_ANNOTATION: "c1"}
    assert body["spec"] == {"v": 1}
    assert held.labels == {"sel": "x"}
    assert held.fields == {"metadata.name": "a", "metadata.namespace": "default"}
    assert held.uid == "u"
    assert view.backend_rv("c1", "default", "a") == "77"
    assert view.current_rv == 101
    assert view.clusters == {"c1"}


def test_upsert_overwrites_a_cluster_annotation_and_keeps_others() -> None:
    view = make_view()
    obj = widget("default", "a", annotations={"keep": "me", CLUSTER_ANNOTATION: "wrong"})
    view.upsert("c1", obj, "1")
    held = view.get("c1", "default", "a")
    assert held is not None
    assert decoded(held)["metadata"]["annotations"] == {"keep": "me", CLUSTER_ANNOTATION: "c1"}


def test_upsert_modifies_only_when_content_changes() -> None:
    view = make_view()
    [added] = view.upsert("c1", widget("default", "a", v=1, brv="1"), "1")
    assert view.upsert("c1", widget("default", "a", v=1, brv="1"), "1") == []
    # Same content at a newer backend RV: no event, but the backend RV moves for preconditions.
    assert view.upsert("c1", widget("default", "a", v=1, brv="5"), "5") == []
    assert view.backend_rv("c1", "default", "a") == "5"
    assert view.current_rv == added.rv
    [modified] = view.upsert("c1", widget("default", "a", v=2, brv="6"), "6")
    assert modified.type == "MODIFIED" and modified.prev is added.obj and modified.rv == added.rv + 1
    assert decoded(modified.obj)["spec"] == {"v": 2}


def test_upsert_of_a_recreated_object_is_deleted_then_added() -> None:
    view = make_view()
    [first] = view.upsert("c1", widget("default", "a", uid="old"), "1")
    deleted, added = view.upsert("c1", widget("default", "a", uid="new"), "9")
    assert (deleted.type, added.type) == ("DELETED", "ADDED")
    assert deleted.prev is first.obj and deleted.obj.uid == "old" and added.obj.uid == "new"
    assert added.prev is None and deleted.rv < added.rv


def test_upsert_needs_a_name() -> None:
    view = make_view()
    with pytest.raises(ValueError):
        view.upsert("c1", {"metadata": {"namespace": "default"}}, "1")


def test_delete_carries_the_last_state_at_the_deletion_rv() -> None:
    view = make_view()
    [added] = view.upsert("c1", widget("default", "a"), "1")
    [gone] = view.delete("c1", "default", "a", "2")
    assert gone.type == "DELETED" and gone.rv == added.rv + 1 and gone.prev is added.obj
    body = decoded(gone.obj)
    assert body["metadata"]["resourceVersion"] == str(gone.rv)
    assert body["metadata"]["annotations"][CLUSTER_ANNOTATION] == "c1"
    assert without_rv(gone.obj) == without_rv(added.obj)
    assert view.get("c1", "default", "a") is None and view.backend_rv("c1", "default", "a") is None
    assert view.delete("c1", "default", "a", "3") == []  # already gone: nothing
    assert view.delete("c9", "default", "a", "3") == []
    assert view.clusters == {"c1"}


def test_replace_cluster_turns_the_difference_into_events() -> None:
    view = make_view()
    view.upsert("c1", widget("default", "keep", v=1), "1")
    view.upsert("c1", widget("default", "change", v=1), "2")
    view.upsert("c1", widget("default", "gone", v=1), "3")
    view.upsert("c2", widget("default", "other", v=1), "4")
    events = view.replace_cluster("c1", [
        (widget("default", "new", v=1), "10"),
        (widget("default", "change", v=2), "11"),
        (widget("default", "keep", v=1), "12"),
    ])
    assert [(e.type, e.obj.name) for e in events] == [("MODIFIED", "change"), ("DELETED", "gone"), ("ADDED", "new")]
    assert [e.rv for e in events] == sorted(e.rv for e in events)
    assert view.backend_rv("c1", "default", "keep") == "12"
    assert [o.name for o in view.list("c1", "", opts()).items] == ["change", "keep", "new"]
    assert view.get("c2", "default", "other") is not None
    assert view.replace_cluster("c1", [(widget("default", n, v=2 if n == "change" else 1), "13") for n in ("new", "change", "keep")]) == []


def test_replace_cluster_engages_an_empty_cluster_and_last_duplicate_wins() -> None:
    view = make_view()
    assert view.replace_cluster("c3", []) == []
    assert view.clusters == {"c3"}
    [event] = view.replace_cluster("c4", [(widget("default", "a", v=1), "1"), (widget("default", "a", v=2), "2")])
    assert decoded(event.obj)["spec"] == {"v": 2} and view.backend_rv("c4", "default", "a") == "2"


def test_drop_cluster_deletes_each_object_in_order() -> None:
    view = make_view()
    for ns, name in (("b", "x"), ("a", "y"), ("a", "x")):
        view.upsert("c1", widget(ns, name), "1")
    view.upsert("c2", widget("a", "x"), "1")
    events = view.drop_cluster("c1")
    assert [(e.type, e.obj.namespace, e.obj.name) for e in events] == [("DELETED", "a", "x"), ("DELETED", "a", "y"), ("DELETED", "b", "x")]
    assert all(decoded(e.obj)["metadata"]["resourceVersion"] == str(e.rv) for e in events)
    assert view.clusters == {"c2"}
    assert view.list("c1", "", opts()).items == [] and len(view) == 1
    assert view.drop_cluster("c1") == [] and view.drop_cluster("nope") == []


def test_views_sharing_a_sequence_interleave_strictly_increasing_rvs() -> None:
    seq = RVSequence(0)
    widgets, gadgets = View(seq, GROUP, "widgets"), View(seq, GROUP, "gadgets")
    rvs = []
    for i in range(5):
        rvs += [e.rv for e in widgets.upsert("c1", widget("d", "w", v=i), "1")]
        rvs += [e.rv for e in gadgets.upsert("c1", widget("d", "g", v=i), "1")]
    assert rvs == list(range(1, 11))
    assert widgets.current_rv == 9 and gadgets.current_rv == 10
    late = View(seq, GROUP, "late")
    assert late.current_rv == 10 and late.compacted_rv == 10


def test_list_order_scopes_and_selectors() -> None:
    view = make_view()
    view.upsert("c2", widget("a", "z", sel="x"), "1")
    view.upsert("c1", widget("b", "a", sel="y"), "1")
    view.upsert("c1", widget("a", "b", sel="x"), "1")
    view.upsert("c10", widget("a", "a", sel="x"), "1")
    assert keys(view.list(None, "", opts()).items) == [("c1", "a", "b"), ("c1", "b", "a"), ("c10", "a", "a"), ("c2", "a", "z")]
    assert keys(view.list("c1", "", opts()).items) == [("c1", "a", "b"), ("c1", "b", "a")]
    assert keys(view.list(None, "a", opts()).items) == [("c1", "a", "b"), ("c10", "a", "a"), ("c2", "a", "z")]
    assert keys(view.list(None, "", opts("sel=y")).items) == [("c1", "b", "a")]
    assert keys(view.list(None, "", opts(fields="metadata.name=a")).items) == [("c1", "b", "a"), ("c10", "a", "a")]
    assert keys(view.list(None, "", opts(fields="metadata.namespace!=a")).items) == [("c1", "b", "a")]
    assert keys(view.list("nope", "", opts()).items) == []
    result = view.list(None, "", opts())
    assert result.rv == view.current_rv and result.continue_token == "" and result.remaining is None


def test_list_rejects_unsupported_field_labels() -> None:
    view = make_view()
    for call in (lambda: view.list(None, "", opts(fields="spec.v=1")),
                 lambda: begin_watch(view, Watcher(None, "", LabelSelector(), FieldSelector.parse("status.phase=x"), "json", lambda o: o.raw), opts(fields="status.phase=x"), ("v1", "W"))):
        with pytest.raises(StatusError) as err:
            call()
        assert err.value.code == 400 and "field label not supported" in err.value.message


def test_list_resource_version_semantics() -> None:
    seq = RVSequence(100)
    view = View(seq, GROUP, "widgets")
    other = View(seq, GROUP, "gadgets")
    view.upsert("c1", widget("d", "a", v=1), "1")  # 101
    view.upsert("c1", widget("d", "a", v=2), "2")  # 102
    other.upsert("c1", widget("d", "g"), "1")  # 103, another view's RV
    for params in ({}, {"resourceVersion": "0"}, {"resourceVersion": "101", "resourceVersionMatch": NOT_OLDER_THAN}):
        result = view.list(None, "", parse_list_options(params))
        assert result.rv == 102 and decoded(result.items[0])["spec"] == {"v": 2}
    # An RV issued by another view after this one's last event: the state there is the current one.
    at_103 = view.list(None, "", opts(resource_version="103", match=NOT_OLDER_THAN))
    assert at_103.rv == 103 and at_103.items[0].rv == 102
    assert view.list(None, "", opts(resource_version="103", match=EXACT)).rv == 103
    with pytest.raises(StatusError) as err:
        view.list(None, "", opts(resource_version="104", match=NOT_OLDER_THAN))
    assert err.value.code == 504 and err.value.message == "Too large resource version: 104, current: 103"
    exact = view.list(None, "", opts(resource_version="101", match=EXACT))
    assert exact.rv == 101 and decoded(exact.items[0])["spec"] == {"v": 1} and exact.items[0].rv == 101
    assert view.list(None, "", opts(resource_version="100", match=EXACT)).items == []
    # The legacy paging form: an RV with a limit and no match is Exact.
    legacy = view.list(None, "", opts(resource_version="101", limit=5))
    assert legacy.rv == 101 and legacy.items[0].rv == 101
    with pytest.raises(StatusError) as err:
        view.list(None, "", opts(resource_version="99", match=EXACT))
    assert err.value.code == 410 and err.value.reason == "Expired"
    assert err.value.message == "The resourceVersion for the provided list is too old. Requested 99."


def test_exact_list_rebuilds_deletions_recreations_and_drops() -> None:
    view = make_view()
    view.upsert("c1", widget("d", "a", uid="1"), "1")  # 101
    view.upsert("c2", widget("d", "b"), "1")  # 102
    view.delete("c1", "d", "a", "2")  # 103
    view.upsert("c1", widget("d", "a", uid="2", v=5), "3")  # 104
    view.upsert("c1", widget("d", "a", uid="3", v=6), "4")  # 105 DELETED, 106 ADDED
    view.drop_cluster("c2")  # 107
    def at(rv: int, cluster: str | None = None) -> list[tuple[Key, str, int]]:
        return [(o.sort_key, o.uid, o.rv) for o in view.list(cluster, "", opts(resource_version=str(rv), match=EXACT)).items]
    assert at(101) == [(("c1", "d", "a"), "1", 101)]
    assert at(102) == [(("c1", "d", "a"), "1", 101), (("c2", "d", "b"), "u", 102)]
    assert at(103) == [(("c2", "d", "b"), "u", 102)]
    assert at(104) == [(("c1", "d", "a"), "2", 104), (("c2", "d", "b"), "u", 102)]
    assert at(105) == [(("c2", "d", "b"), "u", 102)]
    assert at(106) == [(("c1", "d", "a"), "3", 106), (("c2", "d", "b"), "u", 102)]
    assert at(106, "c2") == [(("c2", "d", "b"), "u", 102)]
    assert at(107) == [(("c1", "d", "a"), "3", 106)]


def test_exact_list_past_the_history_is_410() -> None:
    view = make_view(history=2)
    for v in range(1, 5):
        view.upsert("c1", widget("d", "a", v=v), str(v))  # 101..104; the history keeps 103, 104
    assert view.compacted_rv == 102
    assert decoded(view.list(None, "", opts(resource_version="102", match=EXACT)).items[0])["spec"] == {"v": 2}
    with pytest.raises(StatusError) as err:
        view.list(None, "", opts(resource_version="101", match=EXACT))
    assert err.value.code == 410


def test_paging_and_continue_tokens() -> None:
    view = make_view()
    for name in "abcde":
        view.upsert("c1", widget("d", name), "1")
    first = view.list(None, "", opts(limit=2))
    assert [o.name for o in first.items] == ["a", "b"] and first.remaining == 3
    token = decode_continue(first.continue_token)
    assert token.rv == first.rv and token.start == ("c1", "d", "b") and token.offset == 2 and token.snapshot
    view.upsert("c1", widget("d", "c", v=9), "2")  # after the first page: not in this list
    second = view.list(None, "", opts(limit=2, continue_token=first.continue_token))
    assert [o.name for o in second.items] == ["c", "d"] and second.rv == first.rv and second.remaining == 1
    assert decoded(second.items[0])["spec"] == {"v": 1}
    third = view.list(None, "", opts(limit=2, continue_token=second.continue_token))
    assert [o.name for o in third.items] == ["e"] and third.continue_token == "" and third.remaining is None
    # A limit as large as the list: one page, no token.
    assert view.list(None, "", opts(limit=5)).continue_token == ""


def test_an_expired_snapshot_is_410_with_an_inconsistent_continuation() -> None:
    now = [0.0]
    view = make_view(clock=lambda: now[0])
    for name in "abcd":
        view.upsert("c1", widget("d", name), "1")
    first = view.list(None, "", opts(limit=2))
    now[0] += SNAPSHOT_TTL_SECONDS + 1
    view.delete("c1", "d", "c", "2")
    with pytest.raises(StatusError) as err:
        view.list(None, "", opts(limit=2, continue_token=first.continue_token))
    assert err.value.code == 410 and err.value.message == CONTINUE_EXPIRED_MESSAGE
    inconsistent = decode_continue(err.value.list_continue)
    assert inconsistent.rv == 0 and inconsistent.start == ("c1", "d", "b") and inconsistent.snapshot == ""
    rest = view.list(None, "", opts(limit=2, continue_token=err.value.list_continue))
    assert [o.name for o in rest.items] == ["d"] and rest.rv == view.current_rv


def test_a_bad_continue_token_is_400() -> None:
    view = make_view()
    with pytest.raises(StatusError) as err:
        view.list(None, "", opts(continue_token="not-a-token"))
    assert err.value.code == 400


def test_a_token_continues_only_its_own_cluster_and_namespace() -> None:
    view = make_view()
    for cluster, ns, name in (("c1", "d", "a"), ("c1", "d", "b"), ("c1", "e", "c"), ("c2", "d", "a")):
        view.upsert(cluster, widget(ns, name), "1")
    token = view.list("c1", "", opts(limit=1)).continue_token
    other_scopes: list[tuple[str | None, str]] = [(None, ""), ("c2", ""), ("c1", "d")]
    for scope_cluster, scope_namespace in other_scopes:
        with pytest.raises(StatusError) as err:
            view.list(scope_cluster, scope_namespace, opts(limit=1, continue_token=token))
        assert err.value.code == 400 and err.value.message.startswith("continue key is not valid")
    assert [o.name for o in view.list("c1", "", opts(limit=5, continue_token=token)).items] == ["b", "c"]


def test_a_token_from_another_view_is_expired_here() -> None:
    seq = RVSequence(0)
    a, b = View(seq, GROUP, "widgets"), View(seq, GROUP, "gadgets")
    for name in "abc":
        a.upsert("c1", widget("d", name), "1")
    token = a.list(None, "", opts(limit=1)).continue_token
    with pytest.raises(StatusError) as err:
        b.list(None, "", opts(limit=1, continue_token=token))
    assert err.value.code == 410


def test_since_replays_and_raises_too_old() -> None:
    view = make_view(history=2)
    assert view.since(100) == []
    events = [e for v in range(1, 4) for e in view.upsert("c1", widget("d", "a", v=v), str(v))]
    assert view.since(101) == events[1:]
    assert view.since(103) == [] and view.since(500) == []
    with pytest.raises(TooOld):
        view.since(100)


def test_watch_resumed_from_a_list_rv_sees_exactly_the_later_changes() -> None:
    view = make_view()
    view.upsert("c1", widget("d", "a"), "1")
    listed = view.list(None, "", opts())
    later = view.upsert("c1", widget("d", "a", v=2), "2") + view.delete("c1", "d", "a", "3")
    watcher = Watcher(None, "", LabelSelector(), FieldSelector(), "json", lambda o: o.raw)
    for event in view.since(listed.rv):
        watcher.offer(event)
    frames = [orjson.loads(f) for f in watcher.drain()]
    assert [(f["type"], f["object"]["metadata"]["resourceVersion"]) for f in frames] == [("MODIFIED", str(later[0].rv)), ("DELETED", str(later[1].rv))]


def test_initial_events_are_the_current_matching_objects() -> None:
    view = make_view()
    view.upsert("c2", widget("d", "a", sel="x"), "1")
    view.upsert("c1", widget("d", "b", sel="y"), "1")
    view.upsert("c1", widget("e", "c", sel="x"), "1")
    everything = LabelSelector()

    def initial(cluster: str | None, namespace: str, labels: LabelSelector, fields: FieldSelector) -> list[tuple[str, str, str]]:
        watcher = Watcher(cluster, namespace, labels, fields, "json", lambda o: o.raw)
        begin_watch(view, watcher, opts(), ("example.dev/v1", "Widget"))
        view.remove_watcher(watcher)
        objs = [orjson.loads(line)["object"] for frame in watcher.drain() for line in frame.splitlines()]
        return [(o["metadata"]["annotations"]["kcp.io/cluster"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]

    assert initial(None, "", everything, FieldSelector()) == [("c1", "d", "b"), ("c1", "e", "c"), ("c2", "d", "a")]
    assert initial(None, "", LabelSelector.parse("sel=x"), FieldSelector()) == [("c1", "e", "c"), ("c2", "d", "a")]
    assert initial("c1", "e", everything, FieldSelector()) == [("c1", "e", "c")]
    assert initial(None, "", everything, FieldSelector.parse("metadata.name=b")) == [("c1", "d", "b")]


def test_translate_precondition() -> None:
    view = make_view()
    [added] = view.upsert("c1", widget("d", "a", brv="41"), "41")
    assert view.translate_precondition("c1", "d", "a", str(added.rv)) == "41"
    [modified] = view.upsert("c1", widget("d", "a", v=2, brv="42"), "42")
    assert view.translate_precondition("c1", "d", "a", str(modified.rv)) == "42"
    for stale in (str(added.rv), "0" + str(modified.rv), "garbage", ""):
        with pytest.raises(StatusError) as err:
            view.translate_precondition("c1", "d", "a", stale)
        assert err.value.code == 409 and err.value.reason == "Conflict"
        assert err.value.message.startswith('Operation cannot be fulfilled on widgets.example.dev "a": the object has been modified')
    for cluster, name in (("c1", "b"), ("c2", "a")):
        with pytest.raises(StatusError) as err:
            view.translate_precondition(cluster, "d", name, str(modified.rv))
        assert err.value.code == 409 and "not known" in err.value.message
    view.delete("c1", "d", "a", "43")
    with pytest.raises(StatusError) as err:
        view.translate_precondition("c1", "d", "a", str(modified.rv))
    assert err.value.code == 409


def test_held_bytes_are_shared_by_lists_gets_and_watch_frames() -> None:
    view = make_view()
    [event] = view.upsert("c1", widget("d", "a"), "1")
    held = view.get("c1", "d", "a")
    assert held is not None
    listed = view.list(None, "", opts()).items[0]
    assert listed.head is held.head is event.obj.head and listed.tail is held.tail is event.obj.tail
    frame = event.frame("ADDED", False, "json", lambda o: o.raw)
    assert held.raw in frame


def test_a_deleted_objects_last_state_shares_the_held_bytes() -> None:
    view = make_view()
    view.upsert("c1", widget("d", "a"), "1")
    held = view.get("c1", "d", "a")
    assert held is not None
    [gone] = view.delete("c1", "d", "a", "2")
    assert gone.obj.head is held.head and gone.obj.tail is held.tail
    assert orjson.loads(gone.obj.raw)["metadata"]["resourceVersion"] == str(gone.rv)
    assert orjson.loads(gone.obj.raw) == {**orjson.loads(held.raw), "metadata": {**orjson.loads(held.raw)["metadata"], "resourceVersion": str(gone.rv)}}


def test_a_shard_object_is_held_with_the_shards_bytes_and_the_views_rv() -> None:
    shard_bytes = orjson.dumps(stamped_widget := {**widget("d", "a"), "metadata": {**widget("d", "a")["metadata"], "resourceVersion": "7", "annotations": {"kcp.io/cluster": "c1"}}})
    source = StoredObject("c1", "d", "a", 7, shard_bytes, {"sel": "x"}, {}, False, "u")
    view = make_view()
    [added] = view.upsert_stored(source)
    held = view.get("c1", "d", "a")
    assert held is not None and held.head is source.head and held.tail is source.tail
    assert orjson.loads(held.raw) == {**stamped_widget, "metadata": {**stamped_widget["metadata"], "resourceVersion": str(added.rv)}}
    assert view.backend_rv("c1", "d", "a") == "7"
    # The same object again (a relist): nothing new, the backend RV is recorded.
    assert view.replace_cluster_stored("c1", [StoredObject("c1", "d", "a", 9, shard_bytes.replace(b'"7"', b'"9"'), {}, {}, False, "u")]) == []
    assert view.backend_rv("c1", "d", "a") == "9"
    # The same bytes through the decoded path are unchanged too.
    assert view.upsert("c1", orjson.loads(shard_bytes), "10") == []
    [gone] = view.replace_cluster_stored("c1", [])
    assert gone.type == "DELETED" and gone.obj.head is source.head


def test_a_shard_object_created_again_under_its_name_is_deleted_then_added() -> None:
    def source(uid: str, rv: int, v: int = 1) -> StoredObject:
        # The shard's order: a client's ownerReferences, then the uid it assigns, then the RV.
        md = {"name": "a", "namespace": "d", "labels": {"sel": "x"}, "ownerReferences": [{"kind": "Widget", "name": "o", "uid": "owner-uid"}],
              "uid": uid, "resourceVersion": str(rv), "annotations": {"kcp.io/cluster": "c1"}}
        return StoredObject("c1", "d", "a", rv, orjson.dumps({**widget("d", "a", v=v), "metadata": md}), {"sel": "x"}, {}, False, uid, ("owner-uid",))

    view = make_view()
    first = source("uid-1", 7)
    [added] = view.upsert_stored(first)
    assert added.type == "ADDED" and added.obj.uid == "uid-1"
    assert view.upsert_stored(first) == [] and view.replace_cluster_stored("c1", [first]) == [], "the same object again: nothing"
    [modified] = view.upsert_stored(source("uid-1", 8, v=2))
    assert modified.type == "MODIFIED" and modified.obj.uid == "uid-1" and view.backend_rv("c1", "d", "a") == "8"
    deleted, again = view.replace_cluster_stored("c1", [source("uid-2", 9, v=2)])
    assert (deleted.type, deleted.obj.uid, again.type, again.obj.uid) == ("DELETED", "uid-1", "ADDED", "uid-2")
    assert deleted.prev is modified.obj and view.get("c1", "d", "a").uid == "uid-2"  # type: ignore[union-attr]


def test_bytes_whose_rv_cannot_be_located_are_kept_whole() -> None:
    # The RV's text occurs twice: the bytes are not cut, and another RV means a new encoding.
    raw = orjson.dumps({"metadata": {"name": "a", "resourceVersion": "5"}, "spec": {"ref": {"resourceVersion": "5"}}})
    obj = StoredObject("c1", "", "a", 5, raw, {}, {}, False)
    assert obj.tail is None and obj.raw == raw
    later = obj.at_rv(6)
    assert orjson.loads(later.raw) == {"metadata": {"name": "a", "resourceVersion": "6"}, "spec": {"ref": {"resourceVersion": "5"}}}
    view = make_view()
    [added] = view.upsert_stored(obj)
    assert orjson.loads(view.get("c1", "", "a").raw)["metadata"]["resourceVersion"] == str(added.rv)  # type: ignore[union-attr]


# -- fan-out: watchers with the same filter share one feed -------------------------------------


def _watch(view: View, labels: str = "", limit: int = 10_000, resource_version: str = "") -> Watcher:
    watcher = Watcher(None, "", LabelSelector.parse(labels), FieldSelector(), "json", lambda o: o.raw, limit=limit)
    begin_watch(view, watcher, opts(labels, resource_version=resource_version or str(view.current_rv)), ("example.dev/v1", "Widget"))
    return watcher


def _seen(frames: list[bytes]) -> list[tuple[str, str, int]]:
    events = [orjson.loads(line) for frame in frames for line in frame.splitlines()]
    return [(e["type"], e["object"]["metadata"]["name"], int(e["object"]["metadata"]["resourceVersion"])) for e in events]


def test_watchers_with_one_filter_share_the_frames_and_each_gets_every_event_once_in_order() -> None:
    view = make_view()
    view.upsert("c1", widget("d", "a"), "1")
    watchers = [_watch(view) for _ in range(5)]
    selective = _watch(view, labels="sel=y")
    woken = [0] * len(watchers)
    for i, w in enumerate(watchers):
        w.wakeup = lambda i=i: woken.__setitem__(i, woken[i] + 1)
    events = view.upsert("c1", widget("d", "a", v=2), "2") + view.upsert("c1", widget("d", "b", sel="y"), "3")
    events += view.upsert("c1", widget("d", "a", v=3, sel="y"), "4")
    assert woken == [1] * 5  # woken once for the three frames, not once per frame
    expected = [("MODIFIED", "a", events[0].rv), ("ADDED", "b", events[1].rv), ("MODIFIED", "a", events[2].rv)]
    first = watchers[0].drain()
    assert _seen(first) == expected
    assert watchers[1].drain_bytes() == b"".join(first)
    assert watchers[2].drain_bytes() is watchers[3].drain_bytes()  # one join for the same stretch
    assert all(w.idle for w in watchers[:4]) and not watchers[4].idle and watchers[4].pending == 3
    # A filter of its own: the object entering the selector is ADDED there.
    assert _seen(selective.drain()) == [("ADDED", "b", events[1].rv), ("ADDED", "a", events[2].rv)]
    later = view.delete("c1", "d", "b", "5")
    assert woken == [2, 2, 2, 2, 1]  # the unread one was not woken again
    assert _seen(watchers[0].drain()) == [("DELETED", "b", later[0].rv)]
    assert _seen(watchers[4].drain()) == expected + [("DELETED", "b", later[0].rv)]


def test_a_watcher_behind_its_limit_in_a_shared_feed_is_closed_with_the_frames_up_to_its_limit() -> None:
    view = make_view()
    view.upsert("c1", widget("d", "a"), "1")
    fast, slow = _watch(view, limit=3), _watch(view, limit=3)
    events = [e for v in range(2, 4) for e in view.upsert("c1", widget("d", "a", v=v), str(v))]
    assert _seen(fast.drain()) == [("MODIFIED", "a", e.rv) for e in events]
    events += [e for v in range(4, 6) for e in view.upsert("c1", widget("d", "a", v=v), str(v))]
    assert _seen(fast.drain()) == [("MODIFIED", "a", e.rv) for e in events[2:]]
    assert slow.closed == "watcher fell behind"
    assert _seen(slow.drain()) == [("MODIFIED", "a", e.rv) for e in events[:3]]
    more = view.upsert("c1", widget("d", "a", v=9), "9")
    assert _seen(fast.drain()) == [("MODIFIED", "a", more[0].rv)] and fast.closed is None
    assert slow.drain() == []
    view.remove_watcher(slow)
    view.remove_watcher(fast)
    assert view.watcher_count == 0


def test_a_shared_feed_comes_after_the_watchers_own_replay_and_survives_its_watchers_closing() -> None:
    view = make_view()
    first = view.upsert("c1", widget("d", "a"), "1")
    live = _watch(view)
    resumed = _watch(view, resource_version=str(first[0].rv - 1))  # replays the ADDED first
    later = view.upsert("c1", widget("d", "a", v=2), "2")
    assert _seen(resumed.drain()) == [("ADDED", "a", first[0].rv), ("MODIFIED", "a", later[0].rv)]
    more = view.upsert("c1", widget("d", "a", v=3), "3")
    live.close("server shutting down")  # closing keeps what it had not read
    view.upsert("c1", widget("d", "a", v=4), "4")
    assert _seen(live.drain()) == [("MODIFIED", "a", later[0].rv), ("MODIFIED", "a", more[0].rv)]
    assert len(_seen(resumed.drain())) == 2


def shard_widget(cluster: str, name: str, rv: int, v: int = 1) -> StoredObject:
    body = {**widget("d", name, v=v), "metadata": {**widget("d", name)["metadata"], "resourceVersion": str(rv), "annotations": {"kcp.io/cluster": cluster}}}
    return StoredObject(cluster, "d", name, rv, orjson.dumps(body), {"sel": "x"}, {}, False, f"u-{name}")


def test_a_first_fill_makes_no_events_and_the_history_starts_after_it() -> None:
    view = make_view()
    before = view.current_rv
    assert view.fill_stored("c1", [shard_widget("c1", "a", 7), shard_widget("c1", "b", 8)]) == []
    assert view.fill_stored("c2", [shard_widget("c2", "a", 9)]) == []
    assert view.fill_stored("c3", []) == [] and view.clusters == {"c1", "c2", "c3"}
    listed = view.list(None, "", opts())
    assert keys(listed.items) == [("c1", "d", "a"), ("c1", "d", "b"), ("c2", "d", "a")]
    assert listed.rv == view.current_rv > before and len({o.rv for o in listed.items}) == 3
    assert all(o.rv <= listed.rv for o in listed.items) and view.backend_rv("c1", "d", "b") == "8"
    # Nobody can resume inside the fill; from its end, later changes arrive as events.
    with pytest.raises(TooOld):
        view.since(before)
    assert view.since(listed.rv) == []
    [modified] = view.upsert_stored(shard_widget("c1", "a", 10, v=2))
    assert modified.type == "MODIFIED" and view.since(listed.rv) == [modified]


def test_a_fill_with_a_watcher_or_an_event_in_the_history_makes_events() -> None:
    view = make_view()
    [added] = view.upsert_stored(shard_widget("c1", "a", 7))
    assert [e.type for e in view.fill_stored("c2", [shard_widget("c2", "a", 8)])] == ["ADDED"]
    watched = make_view()
    watcher = Watcher(None, "", LabelSelector(), FieldSelector(), "json", lambda o: o.raw)
    begin_watch(watched, watcher, opts(), ("example.dev/v1", "Widget"))
    [event] = watched.fill_stored("c1", [shard_widget("c1", "a", 7)])
    assert event.type == "ADDED" and [orjson.loads(f)["type"] for f in watcher.drain()] == ["ADDED"]
