"""Paths that keep a process of thousands of workspaces cheap: manifests written as JSON read
without YAML's constructor, one parsed CRD per distinct spec, label maps shared between objects,
uids read from the objects' bytes and indexed only while their objects are marked for deletion."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml

from vwproxy.core.objects import StoredObject
from vwproxy.kube import bodies
from vwproxy.store.registry import ResourceRegistry
from vwproxy.store.shard import Shard

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DOC = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "1"}},
       "data": {"s": "--- not a separator", "e": ""}, "n": 3, "b": True, "z": None, "l": [1, "2", {"k": "v"}]}


def as_yaml(text: bytes) -> list[object]:
    return [bodies.plain_json(doc) for doc in yaml.load_all(text, Loader=_LOADER)]


@pytest.mark.parametrize("text", [
    b"---\n".join(json.dumps(DOC).encode() + b"\n" for _ in range(3)),
    b"---\n" + json.dumps(DOC).encode() + b"\n---\n",
    b"\n---\n---\n" + json.dumps(DOC, indent=2).encode(),
    json.dumps(DOC).encode() + b"\n--- \r\n" + json.dumps(DOC).encode(),
    b"",
])
def test_json_documents_are_what_yaml_reads(text: bytes) -> None:
    fast = bodies.json_documents(text)
    assert fast is not None
    assert fast == as_yaml(text)


@pytest.mark.parametrize("text", [
    b'{"a": 1.5}',  # YAML 1.1 and JSON can disagree on floats (1e3 is a string to YAML)
    b'{"a": 1e3}',
    b'{"a": 123456789012345678901234567890}',
    b'# a comment\n{"a": 1}',
    b"a: 1\n",
    b'{"a": 1}\n---\nb: 2\n',
])
def test_anything_else_is_left_to_yaml(text: bytes) -> None:
    assert bodies.json_documents(text) is None


def crd(name: str, plural: str, description: str = "") -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {
        "group": "example.dev", "scope": "Namespaced", "names": {"plural": plural, "kind": plural.title()},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "description": description}}}],
    }}


def test_clusters_with_the_same_crd_share_its_parsed_resources() -> None:
    registry = ResourceRegistry()
    registry.set_crd("c1", "widgets.example.dev", crd("widgets.example.dev", "widgets"))
    registry.set_crd("c2", "widgets.example.dev", crd("widgets.example.dev", "widgets"))
    one = registry.lookup("c1", "example.dev", "v1", "widgets")
    two = registry.lookup("c2", "example.dev", "v1", "widgets")
    assert one is not None and one is two
    assert registry.schema_for(one) is registry.schema_for(two)
    # A changed spec in one cluster is that cluster's alone.
    registry.set_crd("c2", "widgets.example.dev", crd("widgets.example.dev", "widgets", "changed"))
    changed = registry.lookup("c2", "example.dev", "v1", "widgets")
    assert changed is not None and changed is not one and changed.crd_version["schema"]["openAPIV3Schema"]["description"] == "changed"
    assert registry.lookup("c1", "example.dev", "v1", "widgets") is one
    # The last user of a spec lets it go; dropping a cluster releases its CRDs.
    registry.drop_cluster("c1")
    assert registry.lookup("c1", "example.dev", "v1", "widgets") is None
    registry.set_crd("c2", "widgets.example.dev", None)
    assert registry.lookup("c2", "example.dev", "v1", "widgets") is None
    assert registry._shared == {} and registry._spec_of == {}


def test_objects_with_the_same_labels_share_one_map() -> None:
    a = StoredObject("c1", "d", "a", 5, b'{"metadata":{"resourceVersion":"5"}}', {"app": "x", "tier": "web"}, {}, False)
    b = StoredObject("c2", "d", "b", 6, b'{"metadata":{"resourceVersion":"6"}}', {"app": "x", "tier": "web"}, {}, False)
    c = StoredObject("c2", "d", "c", 7, b'{"metadata":{"resourceVersion":"7"}}', {"app": "y"}, {}, False)
    assert a.labels is b.labels and a.labels == {"app": "x", "tier": "web"}
    assert c.labels == {"app": "y"}
    assert a.raw == b'{"metadata":{"resourceVersion":"5"}}' and a.at_rv(42).raw == b'{"metadata":{"resourceVersion":"42"}}'


CANONICAL_UID = "356c2080-98d7-450e-bd15-2caf21d9e530"


OWNER_UID = "0b5c1fd4-7d8e-4c2a-9a57-3f0f64c1e2a1"


def _encoded(metadata: list[tuple[str, object]], spec: dict[str, object] | None = None) -> bytes:
    body: dict[str, object] = {"metadata": dict(metadata)}
    if spec is not None:
        body["spec"] = spec
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()  # (as orjson writes it)


_REF = ("ownerReferences", [{"kind": "ConfigMap", "name": "o", "uid": OWNER_UID}])


@pytest.mark.parametrize(("raw", "uid", "owners", "kept"), [
    # The two orders objects come in: the shard's (uid after a client's fields, before the RV)
    # and an API server's (name, namespace, uid, resourceVersion, then the rest).
    (_encoded([("name", "a"), ("labels", {"uid": "x"}), _REF, ("uid", CANONICAL_UID), ("resourceVersion", "5")]), CANONICAL_UID, (OWNER_UID,), False),
    (_encoded([("name", "a"), ("uid", CANONICAL_UID), ("resourceVersion", "5"), _REF]), CANONICAL_UID, (OWNER_UID,), False),
    (_encoded([("name", "a"), ("uid", CANONICAL_UID), ("resourceVersion", "5")], {"uid": "x"}), CANONICAL_UID, (), False),
    (_encoded([("uid", "not a uuid ü"), ("resourceVersion", "5")]), "not a uuid ü", (), False),
    (_encoded([("name", "a"), ("resourceVersion", "5")]), "", (), False),
    # An owner's uid, a label or a field named "uid" between the uid and the RV, a uid after the
    # RV or not in the bytes at all, an escaped uid: the object keeps its uid.
    (_encoded([("uid", CANONICAL_UID), _REF, ("resourceVersion", "5")]), CANONICAL_UID, (OWNER_UID,), True),
    (_encoded([("uid", CANONICAL_UID), ("labels", {"uid": "x"}), ("resourceVersion", "5")]), CANONICAL_UID, (), True),
    (_encoded([("name", "a"), ("resourceVersion", "5"), ("uid", CANONICAL_UID)]), CANONICAL_UID, (), True),
    (_encoded([("name", "a"), ("resourceVersion", "5")]), CANONICAL_UID, (), True),
    (_encoded([("labels", {"uid": "x"}), ("resourceVersion", "5")]), "", (), True),
    (_encoded([("uid", 'a"uid":"b'), ("resourceVersion", "5")]), 'a"uid":"b', (), True),
    (b'{"metadata":{"uid":"not a uuid \\u00fc","resourceVersion":"5"}}', "not a uuid ü", (), True),
    # The RV is not where it can be cut (the bytes are kept whole): the whole JSON is searched.
    (_encoded([("uid", CANONICAL_UID), ("resourceVersion", "5")], {"resourceVersion": "5"}), CANONICAL_UID, (), False),
    (_encoded([("uid", CANONICAL_UID), ("resourceVersion", "5")], {"resourceVersion": "5", "uid": "x"}), CANONICAL_UID, (), True),
])
def test_uids_are_read_from_the_bytes_or_kept_where_the_bytes_do_not_give_them(raw: bytes, uid: str, owners: tuple[str, ...], kept: bool) -> None:
    from vwproxy.core.objects import PackedObject, Packing

    obj = StoredObject("c1", "d", "a", 5, raw, {}, {}, False, uid, owners)
    assert obj.uid == uid and obj.at_rv(6).uid == uid and obj.at_rv(123456).uid == uid
    assert obj.owners == owners and not obj.deleting
    assert (obj._rare is not None and obj._rare[2] is not None) == kept
    assert (obj._rare is None) == (not owners and not kept), "most objects keep nothing but their bytes"
    marked = StoredObject("c1", "d", "a", 5, raw, {}, {}, True, uid, owners)
    assert marked.deleting and marked.uid == uid and marked.owners == owners
    packed = PackedObject.of(obj, Packing(raw.replace(b"5", b"4")))
    assert isinstance(packed, PackedObject) and packed.uid == uid and packed.at_rv(7).uid == uid


def _configmap(name: str, owner: StoredObject | None = None, finalizers: list[str] | None = None) -> dict[str, object]:
    md: dict[str, object] = {"name": name}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name, "uid": owner.uid}]
    if finalizers:
        md["finalizers"] = finalizers
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md}


def test_only_objects_marked_for_deletion_are_found_by_uid_also_after_a_restart(tmp_path: Path) -> None:
    shard = Shard(tmp_path)
    shard.create_logical_cluster("c1")
    info = shard.resolve("c1", "", "v1", "configmaps")
    owner = shard.create(info, "c1", "default", _configmap("owner"))
    shard.create(info, "c1", "default", _configmap("held", owner, ["example.dev/hold"]))
    assert shard.marked_for_deletion("c1", owner.uid) is None
    shard.delete(info, "c1", "default", "owner", {"propagationPolicy": "Foreground"})
    shard.close()

    shard = Shard(tmp_path)  # the owner waits for "held" across the restart
    try:
        info = shard.resolve("c1", "", "v1", "configmaps")
        located = shard.marked_for_deletion("c1", owner.uid)
        assert located is not None and located[0] == "/configmaps" and located[1].name == "owner"
        assert shard.marked_for_deletion("c2", owner.uid) is None and shard.marked_for_deletion("c1", owner.uid.upper()) is None
        held = shard.get(info, "c1", "default", "held").decode()
        del held["metadata"]["finalizers"]
        shard.update(info, "c1", "default", "held", held)
        assert shard.table("/configmaps").get("c1", "default", "owner") is None, "the owner went with its last dependent"
        assert shard.marked_for_deletion("c1", owner.uid) is None and shard._marked == {}
    finally:
        shard.close()


def test_a_listed_run_keeps_the_pieces_of_plain_objects_and_packed_ones_stay_packed() -> None:
    from vwproxy.core.objects import PackedObject, Packing, ResourceTable

    def obj(cluster: str, name: str, rv: int, spec: str = "x" * 200) -> StoredObject:
        body = json.dumps({"metadata": {"name": name, "resourceVersion": str(rv)}, "spec": {"s": spec}}).encode()
        return StoredObject(cluster, "", name, rv, body, {}, {}, False)

    plain = [obj("c1", f"o{i}", 10 + i) for i in range(3)]
    zdict = obj("c2", "z", 1).raw
    packed = PackedObject.of(obj("c2", "p", 20), Packing(zdict))
    assert isinstance(packed, PackedObject)
    table = ResourceTable()
    for o in plain:
        table.bucket("c1").put(o)
    table.bucket("c2").put(packed)
    first, second = table.encoded(None)
    assert first.pieces is not None and b"".join(first.pieces)[:-1] == b",".join(o.raw for o in plain)
    assert first.size == len(b",".join(o.raw for o in plain))
    assert second.pieces is None and second.size == len(packed.raw)
    assert table.encoded(None)[0] is first, "an unchanged bucket keeps its run"
    changed = obj("c1", "o1", 30, spec="changed")
    table.bucket("c1").put(changed)
    [again, _] = table.encoded(None)
    assert again is not first and again.pieces is not None and b"changed" in b"".join(again.pieces)


# Namespaces that are prefixes of each other, and a name that sorts before the other's: an
# object's key is one string (`object_key`), which must sort as (namespace, name) does and whose
# namespace must be told apart from a longer one that starts with it.
_PLACES = [("a-b", "a"), ("a", "z"), ("ab", "a"), ("", "y"), ("a", "a"), ("a.b", "m"), ("b", "a"), ("", "x")]


def _placed(cluster: str, namespace: str, name: str, rv: int) -> StoredObject:
    md = {"name": name, "namespace": namespace, "resourceVersion": str(rv)}
    return StoredObject(cluster, namespace, name, rv, json.dumps({"metadata": md}).encode(), {}, {"metadata.name": name, "metadata.namespace": namespace}, False)


def test_objects_are_kept_and_listed_in_namespace_then_name_order() -> None:
    from vwproxy.core.objects import ResourceTable, object_key

    table = ResourceTable()
    for i, (namespace, name) in enumerate(_PLACES):
        table.bucket("c1").put(_placed("c1", namespace, name, 10 + i))
    table.bucket("c0").put(_placed("c0", "a", "only", 1))
    ordered = sorted(_PLACES)
    assert [(o.namespace, o.name) for o in table.listed("c1")] == ordered
    assert [(o.namespace, o.name) for o in table.ordered("c1")] == ordered
    assert [o.sort_key for o in table.listed(None)] == [("c0", "a", "only"), *(("c1", ns, n) for ns, n in ordered)]
    assert [o.sort_key for o in table.encoded(None)[1].objects] == [("c1", ns, n) for ns, n in ordered]
    for namespace in ("a", "a-b", "ab", "", "b", "z"):
        wanted = [p for p in ordered if p[0] == namespace] if namespace else ordered
        assert [(o.namespace, o.name) for o in table.listed("c1", namespace)] == wanted
        assert [(o.namespace, o.name) for o in table.ordered("c1", namespace)] == wanted
    assert [o.name for o in table.listed("c0", "a")] == ["only"] and table.listed("c0", "a-b") == [] and list(table.ordered("c0", "ab")) == []
    for namespace, name in _PLACES:
        found = table.get("c1", namespace, name)
        assert found is not None and (found.namespace, found.name) == (namespace, name) and found.key == object_key(namespace, name)
        assert found.fields == {"metadata.name": name, "metadata.namespace": namespace}
    assert table.get("c1", "a", "b") is None and table.get("c1", "", "a") is None and table.get("c1", "a-", "b") is None


def test_a_view_relists_in_namespace_then_name_order() -> None:
    from vwproxy.core.rv import RVSequence
    from vwproxy.core.view import View

    def item(namespace: str, name: str) -> tuple[dict[str, object], str]:
        return {"metadata": {"name": name, "namespace": namespace, "uid": f"u-{namespace}-{name}"}}, "1"

    view = View(RVSequence(0), "example.dev", "widgets")
    added = view.replace_cluster("c1", [item(ns, n) for ns, n in _PLACES])
    assert [(e.obj.namespace, e.obj.name) for e in added] == sorted(_PLACES)
    # The stored path does the same, and drops what is gone in the same order.
    stored = View(RVSequence(1000), "example.dev", "widgets")
    sources = [_placed("c1", ns, n, 100 + i) for i, (ns, n) in enumerate(_PLACES)]
    stored.replace_cluster_stored("c1", sources[3:])
    events = stored.replace_cluster_stored("c1", sources[:6])
    assert [(e.type, e.obj.namespace, e.obj.name) for e in events] == sorted(
        [("ADDED", ns, n) for ns, n in _PLACES[:3]] + [("DELETED", ns, n) for ns, n in _PLACES[6:]], key=lambda e: e[1:])
    assert view.backend_rv("c1", "a-b", "a") == "1" and view.backend_rv("c1", "a", "b") is None
    assert [(e.obj.namespace, e.obj.name) for e in view.drop_cluster("c1")] == sorted(_PLACES)


def test_deleting_a_namespace_leaves_one_whose_name_starts_with_it(tmp_path: Path) -> None:
    shard = Shard(tmp_path)
    try:
        shard.create_logical_cluster("c1")
        namespaces = shard.resolve("c1", "", "v1", "namespaces")
        configmaps = shard.resolve("c1", "", "v1", "configmaps")
        for namespace in ("team", "team-b"):
            shard.create(namespaces, "c1", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            shard.create(configmaps, "c1", namespace, _configmap("settings"))
        _, gone = shard.delete(namespaces, "c1", "", "team", {})
        assert gone, "nothing of the namespace is left, whatever a namespace named like it holds"
        assert shard.table("/configmaps").get("c1", "team", "settings") is None
        kept = shard.table("/configmaps").get("c1", "team-b", "settings")
        assert kept is not None and not kept.deleting and shard.namespace_of("c1", "team-b") is not None
    finally:
        shard.close()


@pytest.mark.parametrize("keeps_uid", [False, True])
def test_a_dependent_stays_while_another_owner_lives_however_its_uid_is_had(tmp_path: Path, keeps_uid: bool) -> None:
    shard = Shard(tmp_path)
    try:
        shard.create_logical_cluster("c1")
        info = shard.resolve("c1", "", "v1", "configmaps")
        for i in range(20):
            shard.create(info, "c1", "default", _configmap(f"bystander-{i}"))
        first = shard.create(info, "c1", "default", _configmap("first"))
        # The dependent comes before its second owner in the bucket, so a search of the bytes for
        # the second owner's uid meets it in the dependent's ownerReferences first.
        shard.create(info, "c1", "default", _configmap("shared", first))
        shard.create(info, "c1", "default", _configmap("first-only", first))
        second = shard.create(info, "c1", "default", _configmap("second"))
        if keeps_uid:  # a label named "uid" after its uid: the bytes give the label's, it keeps its own
            body = second.decode()
            md = body["metadata"]
            body["metadata"] = {"name": md["name"], "uid": md["uid"], "labels": {"uid": "not-it"}, **md}
            second = shard.update(info, "c1", "default", "second", body)
        assert (second._rare is not None and second._rare[2] == second.uid) == keeps_uid
        shared = shard.get(info, "c1", "default", "shared").decode()
        shared["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "ConfigMap", "name": "second", "uid": second.uid})
        shard.update(info, "c1", "default", "shared", shared)
        shard.delete(info, "c1", "default", "first", {})
        table = shard.table("/configmaps")
        assert table.get("c1", "default", "first-only") is None, "a dependent only the deleted owner owned goes"
        assert table.get("c1", "default", "shared") is not None, "its other owner lives"
        shard.delete(info, "c1", "default", "second", {})
        assert table.get("c1", "default", "shared") is None
        assert len(table.listed("c1")) == 20
    finally:
        shard.close()


def test_garbage_collection_finds_living_uids_in_the_bytes_or_kept(tmp_path: Path) -> None:
    from vwproxy.store import gc

    def stored(name: str, metadata: list[tuple[str, object]], uid: str, owners: tuple[str, ...] = ()) -> StoredObject:
        return StoredObject("c1", "default", name, 7, _encoded([("name", name), *metadata, ("resourceVersion", "7")]), {}, {}, False, uid, owners)

    escaped = 'q"uid":"' + OWNER_UID  # held escaped in the bytes, so kept; its text is another's
    objects = [
        stored("dependent", [_REF, ("uid", "d-uid")], "d-uid", (OWNER_UID,)),
        stored("plain", [("uid", CANONICAL_UID)], CANONICAL_UID),
        stored("odd", [("uid", escaped)], escaped),
        stored("elsewhere", [], "not-in-the-bytes"),
    ]
    assert [o._rare is not None and o._rare[2] is not None for o in objects] == [False, False, True, True]
    shard = Shard(tmp_path)
    try:
        bucket = shard.table("/configmaps").bucket("c1")
        for obj in objects:
            bucket.put(obj)
        assert gc._living(shard, "c1", {OWNER_UID}) == set(), "an owner's uid in another's bytes is not a living object"
        assert gc._living(shard, "c1", {CANONICAL_UID, escaped, "not-in-the-bytes", "d-uid"}) == {CANONICAL_UID, escaped, "not-in-the-bytes", "d-uid"}
        assert gc._living(shard, "c1", {"\ud800", CANONICAL_UID}) == {CANONICAL_UID} and gc._living(shard, "c2", {CANONICAL_UID}) == set()
    finally:
        shard.close()


def test_packed_kinds_are_held_packed_and_read_back_byte_for_byte_also_after_a_restart(tmp_path: Path) -> None:
    """Logical clusters (a packed kind) of many workspaces: held as `PackedObject`s but for the
    kind's first one, much smaller than their JSON; each reads back as written (its path, its
    owner) and as the bytes SQLite keeps; the same after a restart, which packs them again."""
    from vwproxy.core.objects import PackedObject
    from vwproxy.store.shard import LOGICAL_CLUSTERS_KEY

    def held_and_stored(shard: Shard) -> tuple[dict[tuple[str, str], StoredObject], dict[tuple[str, str], bytes]]:
        held = {(o.cluster, o.name): o for o in shard.table(LOGICAL_CLUSTERS_KEY).ordered(None)}
        stored = {(cluster, name): body for cluster, key, _, name, _, body, *_ in shard._db.row_tuples() if key == LOGICAL_CLUSTERS_KEY}
        return held, stored

    shard = Shard(tmp_path)
    try:
        for i in range(40):
            shard.create_logical_cluster(f"ws-{i:03d}", path=f"root:team-{i:03d}", spec={"owner": {"name": f"user-{i}"}})
        held, stored = held_and_stored(shard)
    finally:
        shard.close()
    assert len(held) == 41 and held.keys() == stored.keys()
    packed = [o for o in held.values() if isinstance(o, PackedObject)]
    assert len(packed) == 40, "all but the kind's first object are packed"
    assert sum(len(o._packed) for o in packed) * 3 < sum(len(o.raw) for o in packed)
    for i in range(40):
        written = orjson.loads(held[(f"ws-{i:03d}", "cluster")].raw)
        assert written["metadata"]["annotations"]["kcp.io/path"] == f"root:team-{i:03d}"
        assert written["spec"] == {"owner": {"name": f"user-{i}"}}
    for key, obj in held.items():
        assert obj.raw == stored[key], key
        assert obj.at_rv(obj.rv + 1).raw == stored[key].replace(b'"resourceVersion":"%d"' % obj.rv, b'"resourceVersion":"%d"' % (obj.rv + 1))
    shard = Shard(tmp_path)
    try:
        held_again, stored_again = held_and_stored(shard)
    finally:
        shard.close()
    assert stored_again == stored
    assert {key: obj.raw for key, obj in held_again.items()} == stored
    assert sum(isinstance(o, PackedObject) for o in held_again.values()) == 40


def test_a_packed_object_holds_its_packed_size_not_the_compressors_worst_case() -> None:
    """Traced bytes per packed object stay near its packed length (a compressor's output can keep
    the allocation of the worst case, ten times what it holds)."""
    import tracemalloc

    from vwproxy.core.objects import PackedObject, Packing

    def body(i: int) -> bytes:
        return json.dumps({"apiVersion": "core.kcp.io/v1alpha1", "kind": "LogicalCluster",
                           "metadata": {"name": "cluster", "annotations": {"kcp.io/path": f"root:team-{i:04d}"}, "resourceVersion": str(i + 1)},
                           "spec": {"initializers": ["root:universal"] * 20}, "status": {"phase": "Ready", "conditions": [{"type": "Ready"}] * 10}}).encode()

    packing = Packing(body(0))
    plain = [StoredObject(f"c{i}", "", "cluster", i + 1, body(i), {}, {}, False) for i in range(1, 301)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        packed = [PackedObject.of(obj, packing) for obj in plain]
        traced = (tracemalloc.get_traced_memory()[0] - before) / len(packed)
    finally:
        tracemalloc.stop()
    assert all(isinstance(p, PackedObject) for p in packed)
    mean_packed = sum(len(p._packed) for p in packed) / len(packed)  # type: ignore[attr-defined]
    mean_raw = sum(len(p.raw) for p in plain) / len(plain)
    assert mean_packed * 4 < mean_raw
    assert traced < mean_packed + 250, f"{traced:.0f} B traced per packed object of {mean_packed:.0f} B (JSON {mean_raw:.0f} B)"
