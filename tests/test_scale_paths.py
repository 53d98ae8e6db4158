"""Paths that keep a process of thousands of workspaces cheap: manifests written as JSON read
without YAML's constructor, one parsed CRD per distinct spec, label maps shared between objects,
uids held as numbers and indexed only while their objects are marked for deletion."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.mark.parametrize(("uid", "compact"), [
    (CANONICAL_UID, True),
    ("00000000-0000-0000-0000-000000000001", True),
    ("00000000-0000-0000-0000-000000000000", False),  # a false key would read as no uid
    ("", False),
    ("u", False),
    (CANONICAL_UID.upper(), False),  # the same number, but not the same text
    (CANONICAL_UID[:-1] + "E", False),
    (CANONICAL_UID.replace("-", "_"), False),
    ("0x" + CANONICAL_UID[2:], False),
    ("-" + CANONICAL_UID[1:], False),
    (CANONICAL_UID.replace("-", "") + "0000", False),
])
def test_uids_are_held_as_numbers_when_that_gives_the_same_text_back(uid: str, compact: bool) -> None:
    obj = StoredObject("c1", "d", "a", 5, b'{"metadata":{"resourceVersion":"5"}}', {}, {}, False, uid)
    assert obj.uid == uid and obj.at_rv(6).uid == uid
    assert isinstance(obj.uid_key, int) == compact
    assert bool(obj.uid_key) == bool(uid)


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
    from vwproxy.core.objects import PackedObject, ResourceTable

    def obj(cluster: str, name: str, rv: int, spec: str = "x" * 200) -> StoredObject:
        body = json.dumps({"metadata": {"name": name, "resourceVersion": str(rv)}, "spec": {"s": spec}}).encode()
        return StoredObject(cluster, "", name, rv, body, {}, {}, False)

    plain = [obj("c1", f"o{i}", 10 + i) for i in range(3)]
    zdict = obj("c2", "z", 1).raw
    packed = PackedObject.of(obj("c2", "p", 20), zdict)
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
