"""Crash and restart durability of the embedded shard, run as a real `vwproxy shard` process.

The contract (vwproxy/store/sqlite.py): every write whose response was received survives
`kill -9` of the server with the same object bytes and resourceVersion, the revision sequence
continues after a restart, and watch history does not survive it (an RV from before the restart
gets 410 Expired, so clients relist).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from vwproxy.testing.process import ShardProcess

pytestmark = pytest.mark.timeout(60)

ACKS_BEFORE_KILL = 300
WRITERS = 4
CLUSTERS = ("dur-a", "dur-b")
WILDCARD_CONFIGMAPS = "/clusters/*/api/v1/configmaps"
CLUSTER_ANNOTATION = "kcp.io/cluster"


@pytest.fixture
def shard_process(tmp_path: Path) -> Iterator[ShardProcess]:
    process = ShardProcess(tmp_path / "data", log=tmp_path / "shard.log")
    try:
        yield process
    finally:
        process.stop()


def _configmaps_path(cluster: str) -> str:
    return f"/clusters/{cluster}/api/v1/namespaces/default/configmaps"


def _wildcard_list(client: httpx.Client) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    r = client.get(WILDCARD_CONFIGMAPS)
    assert r.status_code == 200, r.text
    doc = r.json()
    objects = {}
    for item in doc["items"]:
        md = item["metadata"]
        objects[(md["annotations"][CLUSTER_ANNOTATION], md["name"])] = item
    return int(doc["metadata"]["resourceVersion"]), objects


class Writer(threading.Thread):
    """Creates configmaps one after another until stopped or the server goes away."""

    def __init__(self, base_url: str, cluster: str, prefix: str, stop: threading.Event) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.base_url = base_url
        self.cluster = cluster
        self.prefix = prefix
        self.stop = stop
        self.attempted: dict[str, dict[str, str]] = {}  # name -> the data it was sent with
        self.acked: dict[str, dict[str, Any]] = {}  # name -> the object in its 201 response
        self.in_flight = ""
        self.ended_by: str = ""

    def run(self) -> None:
        path = _configmaps_path(self.cluster)
        i = 0
        with httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(5.0)) as client:
            while not self.stop.is_set():
                name = f"{self.prefix}-{i:05d}"
                data = {"writer": self.prefix, "seq": str(i), "payload": "x" * (i % 97)}
                self.attempted[name] = data
                self.in_flight = name
                try:
                    r = client.post(path, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
                except httpx.HTTPError as exc:
                    self.ended_by = f"{type(exc).__name__}: {exc}"
                    return
                if r.status_code != 201:
                    self.ended_by = f"HTTP {r.status_code}: {r.text[:200]}"
                    return
                self.acked[name] = r.json()
                self.in_flight = ""
                i += 1
        self.ended_by = "stopped"


def _expect_expired_watch(client: httpx.Client, path: str, rv: int) -> None:
    """A watch from `rv` is refused with 410: as an HTTP status or as a first ERROR event."""
    params = {"watch": "true", "resourceVersion": str(rv), "timeoutSeconds": "5"}
    with client.stream("GET", path, params=params, timeout=httpx.Timeout(10.0)) as r:
        if r.status_code == 410:
            status = orjson.loads(r.read())
            assert status.get("kind") == "Status" and status.get("code") == 410, status
            assert status.get("reason") in ("Expired", "Gone"), status
            return
        assert r.status_code == 200, f"watch from RV {rv}: HTTP {r.status_code}"
        first = next(iter(r.iter_lines()), "")
        event = orjson.loads(first)
        assert event["type"] == "ERROR", f"watch from pre-restart RV {rv} was accepted: {first[:300]}"
        assert event["object"]["code"] == 410, event


def test_sigkill_keeps_every_acknowledged_write(shard_process: ShardProcess) -> None:
    shard_process.start()
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        for cluster in CLUSTERS:
            shard_process.create_logical_cluster(cluster)

    stop = threading.Event()
    writers = [Writer(shard_process.url, CLUSTERS[i % len(CLUSTERS)], f"w{i}", stop) for i in range(WRITERS)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 20
    while sum(len(w.acked) for w in writers) < ACKS_BEFORE_KILL:
        assert time.monotonic() < deadline, f"only {sum(len(w.acked) for w in writers)} acks in 20 s"
        assert all(w.is_alive() for w in writers), [w.ended_by for w in writers]
        time.sleep(0.005)
    in_flight_at_kill = sum(1 for w in writers if w.in_flight)
    shard_process.kill()  # while the writers are still sending
    stop.set()
    for w in writers:
        w.join(10)
        assert not w.is_alive(), f"{w.name} did not stop"

    acked = {(w.cluster, name): obj for w in writers for name, obj in w.acked.items()}
    attempted = {(w.cluster, name): data for w in writers for name, data in w.attempted.items()}
    assert len(acked) >= ACKS_BEFORE_KILL
    acked_rvs = sorted(int(obj["metadata"]["resourceVersion"]) for obj in acked.values())
    assert len(set(acked_rvs)) == len(acked_rvs), "two acknowledged writes share a resourceVersion"

    shard_process.start()  # same data dir, new process
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        list_rv, stored = _wildcard_list(client)

        # Every acknowledged write is there, byte for byte what its 201 said (data and RV included).
        missing = sorted(set(acked) - set(stored))
        assert not missing, f"{len(missing)} acknowledged configmaps lost after SIGKILL, e.g. {missing[:5]} (in flight at kill: {in_flight_at_kill})"
        for key, obj in acked.items():
            got = stored[key]
            assert got["data"] == obj["data"], key
            assert got["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], key
            assert got == obj, key
        # Writes that were in flight may or may not have landed; if they did, they are whole.
        for key, got in stored.items():
            assert key in attempted, f"unexpected configmap {key} after restart"
            assert got["data"] == attempted[key], key
        stored_rvs = [int(o["metadata"]["resourceVersion"]) for o in stored.values()]
        assert list_rv >= max(stored_rvs) >= acked_rvs[-1]
        # Single-object reads agree with the list.
        for key in list(acked)[:: max(1, len(acked) // 20)]:
            r = client.get(f"{_configmaps_path(key[0])}/{key[1]}")
            assert r.status_code == 200 and r.json() == acked[key]

        # The revision sequence continues: a new write is newer than everything before the crash.
        r = client.post(_configmaps_path(CLUSTERS[0]), json={"metadata": {"name": "after-restart"}, "data": {"k": "v"}})
        assert r.status_code == 201, r.text
        new_rv = int(r.json()["metadata"]["resourceVersion"])
        assert new_rv > list_rv and new_rv > max(stored_rvs)
        # Names created before the crash are still taken.
        some_key = next(iter(acked))
        r = client.post(_configmaps_path(some_key[0]), json={"metadata": {"name": some_key[1]}, "data": {}})
        assert r.status_code == 409, r.text

        # History is not kept across restarts: an RV from before the restart is expired.
        old_rv = acked_rvs[0]
        assert old_rv < list_rv
        _expect_expired_watch(client, WILDCARD_CONFIGMAPS, old_rv)
        _expect_expired_watch(client, _configmaps_path(CLUSTERS[1]), old_rv)


def test_watch_resumes_from_the_restart_revision(shard_process: ShardProcess) -> None:
    """The RV a client lists at after the restart is a valid watch starting point."""
    shard_process.start()
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        shard_process.create_logical_cluster("w")
        for i in range(5):
            assert client.post(_configmaps_path("w"), json={"metadata": {"name": f"cm-{i}"}}).status_code == 201
    shard_process.kill()
    shard_process.start()
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        list_rv, stored = _wildcard_list(client)
        assert len(stored) == 5
        params = {"watch": "true", "resourceVersion": str(list_rv), "timeoutSeconds": "5"}
        with client.stream("GET", WILDCARD_CONFIGMAPS, params=params, timeout=httpx.Timeout(10.0)) as r:
            assert r.status_code == 200
            with httpx.Client(base_url=shard_process.url, timeout=10) as writer:
                created = writer.post(_configmaps_path("w"), json={"metadata": {"name": "new"}})
                assert created.status_code == 201
            first = orjson.loads(next(iter(r.iter_lines())))
        assert first["type"] == "ADDED", first
        assert first["object"]["metadata"]["name"] == "new"
        assert int(first["object"]["metadata"]["resourceVersion"]) == list_rv + 1


def test_graceful_restart_keeps_every_object(shard_process: ShardProcess) -> None:
    shard_process.start()
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        for cluster in CLUSTERS:
            shard_process.create_logical_cluster(cluster)
            for i in range(60):
                r = client.post(_configmaps_path(cluster), json={"metadata": {"name": f"cm-{i:03d}", "labels": {"i": str(i)}}, "data": {"i": str(i)}})
                assert r.status_code == 201, r.text
                expected[(cluster, f"cm-{i:03d}")] = r.json()
            for i in range(0, 60, 6):  # some updates ...
                r = client.patch(f"{_configmaps_path(cluster)}/cm-{i:03d}", json={"data": {"i": str(i), "patched": "yes"}},
                                 headers={"content-type": "application/merge-patch+json"})
                assert r.status_code == 200, r.text
                expected[(cluster, f"cm-{i:03d}")] = r.json()
            for i in range(1, 60, 6):  # ... and some deletes
                r = client.delete(f"{_configmaps_path(cluster)}/cm-{i:03d}")
                assert r.status_code == 200, r.text
                del expected[(cluster, f"cm-{i:03d}")]
        rv_before, stored_before = _wildcard_list(client)
        assert stored_before == expected

        # An open watch must not hold up shutdown beyond uvicorn's graceful timeout.
        params = {"watch": "true", "resourceVersion": str(rv_before)}
        with httpx.Client(base_url=shard_process.url, timeout=httpx.Timeout(10.0)) as watcher_client:
            with watcher_client.stream("GET", WILDCARD_CONFIGMAPS, params=params) as watch:
                assert watch.status_code == 200
                started = time.monotonic()
                code = shard_process.terminate()
                took = time.monotonic() - started
    # uvicorn re-raises the captured SIGTERM once it has shut down, so -SIGTERM is a clean exit too.
    assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM:\n{shard_process.log_text()}"
    assert took < 6, f"graceful shutdown with an open watch took {took:.1f}s"

    shard_process.start()
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        rv_after, stored_after = _wildcard_list(client)
        assert rv_after == rv_before, "a restart with nothing written must not move the revision"
        assert stored_after == expected
        for cluster in CLUSTERS:
            r = client.get(f"/clusters/{cluster}/api/v1/namespaces/default/configmaps", params={"labelSelector": "i=0"})
            assert [o["metadata"]["name"] for o in r.json()["items"]] == ["cm-000"]
            assert client.get(f"{_configmaps_path(cluster)}/cm-001").status_code == 404
        r = client.post(_configmaps_path(CLUSTERS[0]), json={"metadata": {"name": "after-restart"}})
        assert r.status_code == 201
        assert int(r.json()["metadata"]["resourceVersion"]) == rv_before + 1
        _expect_expired_watch(client, WILDCARD_CONFIGMAPS, rv_before - 1)


def test_sigterm_closes_the_database(shard_process: ShardProcess) -> None:
    shard_process.start()
    with httpx.Client(base_url=shard_process.url, timeout=10) as client:
        assert client.post(_configmaps_path("root"), json={"metadata": {"name": "a"}}).status_code == 201
    shard_process.terminate()
    wal = shard_process.data_dir / "shard.db-wal"
    # Closing the last connection checkpoints the WAL into shard.db and removes it.
    assert not wal.exists() or wal.stat().st_size == 0, f"{wal} left behind ({wal.stat().st_size} bytes)"
