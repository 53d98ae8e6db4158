"""A restart of the embedded shard loads its objects from what each row keeps beside its JSON
(`rv_at`, `attrs`), without decoding them, and holds exactly what decoding them would give; a
data dir written before those columns (schema 1) loads as it did, is migrated, and its rows get
them; a newer schema is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from vwproxy.core.objects import PackedObject, StoredObject
from vwproxy.store import shard as shard_module
from vwproxy.store.shard import Shard
from vwproxy.store.sqlite import DB_FILE, SCHEMA_VERSION, StorageError

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}

# The objects table and meta as vwproxy wrote them at schema 1, before `rv_at` and `attrs`.
SCHEMA_1 = (
    "CREATE TABLE objects ("
    " cluster TEXT NOT NULL, storage_key TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
    " rv INTEGER NOT NULL, body BLOB NOT NULL,"
    " PRIMARY KEY (cluster, storage_key, namespace, name)) WITHOUT ROWID",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


def _configmap(name: str, **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **metadata}}


def _fill(data: Path) -> None:
    """A shard with every kind of attribute a load derives: labels shared and not, selectable
    fields (namespaces, secrets, events, logical clusters' paths), owners, objects marked for
    deletion, a uid its bytes do not give, bytes that cannot be cut at the RV, packed kinds and
    custom resources of a CRD."""
    shard = Shard(data)
    try:
        for i in range(6):
            shard.create_logical_cluster(f"ws-{i}", path=f"root:team-{i}", spec={"owner": {"name": f"user-{i}"}})
        cm = shard.resolve("ws-0", "", "v1", "configmaps")
        owner = shard.create(cm, "ws-0", "default", _configmap("owner", labels={"app": "a", "tier": "x" * 63}))
        for i in range(5):
            shard.create(cm, "ws-0", "default", _configmap(f"same-{i}", labels={"app": "a"}))
        refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid}]
        shard.create(cm, "ws-0", "default", _configmap("owned", ownerReferences=refs))
        shard.create(cm, "ws-0", "default", _configmap("held", finalizers=["example.dev/hold"], ownerReferences=refs))
        shard.delete(cm, "ws-0", "default", "held", {})  # marked for deletion, kept by its finalizer
        odd = shard.create(cm, "ws-0", "default", _configmap("odd")).decode()
        md = odd["metadata"]
        odd["metadata"] = {"name": md["name"], "uid": md["uid"], "labels": {"uid": "not-it"}, **md}
        assert shard.update(cm, "ws-0", "default", "odd", odd)._rare is not None, "a label named uid after the uid: it keeps its uid"
        uncut = _configmap("uncut")
        uncut["data"] = {"resourceVersion": str(shard.revision + 1)}  # the RV's text twice: the bytes are kept whole
        assert shard.create(cm, "ws-0", "default", uncut).tail is None
        secrets = shard.resolve("ws-1", "", "v1", "secrets")
        shard.create(secrets, "ws-1", "default", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "example.dev/token"})
        events = shard.resolve("ws-1", "", "v1", "events")
        shard.create(events, "ws-1", "default", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "reason": "Started", "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "source": {"component": "kubelet"},
        })
        namespaces = shard.resolve("ws-2", "", "v1", "namespaces")
        shard.create(namespaces, "ws-2", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "going", "labels": {"team": "b"}}})
        shard.create(cm, "ws-2", "going", _configmap("content"))
        shard.delete(namespaces, "ws-2", "", "going", {})  # terminating: phase in its fields
        crds = shard.resolve("ws-3", "apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for cluster in ("ws-3", "ws-4"):
            shard.create(crds, cluster, "", orjson.loads(orjson.dumps(WIDGET_CRD)))
            widgets = shard.resolve(cluster, "example.dev", "v1alpha1", "widgets")
            for i in range(3):
                shard.create(widgets, cluster, "default", {
                    "apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": f"w-{i}", "labels": {"app": "bench"}},
                    "spec": {"size": i},
                })
    finally:
        shard.close()


def _held(shard: Shard) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Everything a loaded object is, by (storage key, cluster, key)."""
    out = {}
    for storage_key, table in shard.tables():
        for obj in table.ordered(None):
            out[(storage_key, obj.cluster, obj.key)] = (
                type(obj), obj.rv, obj.raw, obj.head, obj.tail, obj.labels, obj.fields, obj.deleting, obj.uid, obj.owners, obj._rare,
            )
    return out


def _to_schema_1(source: Path, target: Path) -> None:
    """`source`'s rows, revision and markers in a database of schema 1's layout in `target`."""
    target.mkdir()
    old = sqlite3.connect(source / DB_FILE)
    new = sqlite3.connect(target / DB_FILE)
    try:
        for statement in SCHEMA_1:
            new.execute(statement)
        new.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?)", old.execute("SELECT cluster, storage_key, namespace, name, rv, body FROM objects"))
        new.executemany("INSERT INTO meta VALUES (?, ?)", old.execute("SELECT key, value FROM meta WHERE key != 'schema'"))
        new.execute("INSERT INTO meta VALUES ('schema', 1)")
        new.commit()
    finally:
        old.close()
        new.close()


def _query(data: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data / DB_FILE)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _loaded(data: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[tuple[str, str, str], tuple[Any, ...]], int]:
    """What a start on `data` holds, and how many rows it decoded to build their objects."""
    decoded = []
    real = shard_module._decoded

    def counting(*args: Any) -> StoredObject:
        decoded.append(args[0])
        return real(*args)

    with monkeypatch.context() as patched:
        patched.setattr(shard_module, "_decoded", counting)
        shard = Shard(data)
        try:
            return _held(shard), len(decoded)
        finally:
            shard.close()


def test_a_restart_builds_every_object_from_its_row_as_decoding_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _fill(data)
    assert _query(data, "SELECT count(*) FROM objects WHERE attrs IS NULL OR rv_at IS NULL") == [(0,)], "every write keeps them"
    _to_schema_1(data, tmp_path / "old")
    with_attributes, decoded = _loaded(data, monkeypatch)
    assert decoded == 0, "no object is decoded to be built"
    without, decoded = _loaded(tmp_path / "old", monkeypatch)
    assert decoded == len(without) > 30
    assert with_attributes == without
    kinds = {key[0] for key in without}
    assert {"/namespaces", "/secrets", "/events", "/configmaps", "core.kcp.io/logicalclusters", "example.dev/widgets"} <= kinds
    assert any(v[0] is PackedObject for v in without.values()) and any(v[4] is None for v in without.values())
    assert any(v[7] for v in without.values()) and any(v[9] for v in without.values()) and any(v[10] and v[10][2] for v in without.values())


def test_a_data_dir_of_schema_1_is_migrated_and_its_rows_get_what_loading_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(tmp_path / "data")
    old = tmp_path / "old"
    _to_schema_1(tmp_path / "data", old)
    revision = _query(old, "SELECT value FROM meta WHERE key = 'revision'")
    first, decoded = _loaded(old, monkeypatch)
    assert decoded == len(first)
    assert _query(old, "SELECT value FROM meta WHERE key = 'schema'") == [(SCHEMA_VERSION,)]
    assert _query(old, "SELECT count(*) FROM objects WHERE attrs IS NULL OR rv_at IS NULL") == [(0,)], "the first start keeps them"
    assert _query(old, "SELECT value FROM meta WHERE key = 'revision'") == revision, "keeping them is no change of any object"
    second, decoded = _loaded(old, monkeypatch)
    assert (second, decoded) == (first, 0)
    shard = Shard(old)  # and it serves the custom resources it loaded, and takes writes
    try:
        widgets = shard.resolve("ws-3", "example.dev", "v1alpha1", "widgets")
        assert shard.get(widgets, "ws-3", "default", "w-1").decode()["spec"] == {"size": 1}
        shard.create(shard.resolve("ws-0", "", "v1", "configmaps"), "ws-0", "default", _configmap("after", labels={"app": "a"}))
    finally:
        shard.close()
    third, decoded = _loaded(old, monkeypatch)
    assert decoded == 0 and len(third) == len(first) + 1


def test_attributes_that_do_not_fit_their_bytes_are_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose JSON was changed by hand, its `rv_at` not: the load decodes it, and keeps new ones."""
    data = tmp_path / "data"
    _fill(data)
    expected, _ = _loaded(data, monkeypatch)
    db = sqlite3.connect(data / DB_FILE)
    db.execute("UPDATE objects SET rv_at = rv_at + 2 WHERE name = 'same-1'")
    db.execute("UPDATE objects SET attrs = x'5b5d' WHERE name = 'same-2'")  # [] : not three attributes
    db.commit()
    db.close()
    loaded, decoded = _loaded(data, monkeypatch)
    assert (loaded, decoded) == (expected, 2)
    assert _loaded(data, monkeypatch) == (expected, 0)


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data)
    db = sqlite3.connect(data / DB_FILE)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    before = (data / DB_FILE).read_bytes()
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}, of a newer vwproxy; this one reads up to {SCHEMA_VERSION}"):
        Shard(data)
    assert (data / DB_FILE).read_bytes() == before
