"""Partitions of logical clusters between proxy shards (which shards a slice lists: tests/test_proxy_shards.py)."""

from __future__ import annotations

import pytest

from vwproxy.core.partition import Partition, PartitionError, stable_hash

NAMES = [f"cluster{i:04d}" for i in range(2000)]


def test_hash_partitions_cover_every_cluster_exactly_once_and_evenly() -> None:
    parts = [Partition.parse(f"hash:{i}/3") for i in range(3)]
    counts = [0, 0, 0]
    for name in NAMES:
        owners = [i for i, p in enumerate(parts) if p.owns(name)]
        assert len(owners) == 1, name
        counts[owners[0]] += 1
    assert min(counts) > len(NAMES) / 3 * 0.8, counts


def test_the_hash_is_stable_across_processes_and_versions() -> None:
    # SHA-256's first eight bytes, big-endian: the same on every machine (Python's hash() is not).
    assert stable_hash("root") == 0x4813494D137E1631
    assert Partition.parse("hash:1/2").owns("root") is (0x4813494D137E1631 % 2 == 1)


def test_explicit_lists_take_names_or_paths_and_all_none_are_what_they_say() -> None:
    p = Partition.parse("clusters: abc , root:team-a")
    assert p.owns("abc") and p.owns("zzz", "root:team-a") and not p.owns("zzz", "root:team-b")
    assert Partition.parse("all").owns("anything") and not Partition.parse("none").owns("anything")
    assert str(p) == "clusters:abc,root:team-a" and str(Partition.parse("hash:0/4")) == "hash:0/4"
    assert Partition.parse(str(p)) == p


@pytest.mark.parametrize("spec", ["hash:2/2", "hash:-1/2", "hash:0/0", "hash:a/b", "hash:1", "clusters:", "clusters: , ", "some", "x" * 20000, "hash:0/5000"])
def test_bad_partitions_are_refused_with_a_reason(spec: str) -> None:
    with pytest.raises(PartitionError) as caught:
        Partition.parse(spec)
    assert "partition" in str(caught.value) or spec[:10] in str(caught.value)
