#!/usr/bin/env python3
"""What packing the rarely read kinds costs: the embedded shard's logical clusters, packed as the
shard packs them (`core.objects.Packing`: zstd against the kind's first object, a dictionary
digested once) and, for comparison, as deflate against the same preset dictionary (zlib level 1,
an 8 KiB window: how they were packed before). Per object: CPU to pack, to unpack, and the packed
size; then the time `Shard` takes to load the data dir again (the restart's first part).

It builds a shard on a temporary data dir with N workspaces' logical clusters
(`Shard.create_logical_cluster`, the control plane's write). No server, no HTTP.

    python benchmarks/pack_bench.py [--clusters 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

from vwproxy.core.objects import Packing
from vwproxy.store.shard import LOGICAL_CLUSTERS_KEY, Shard


def _deflate(dictionary: bytes, raw: bytes) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, -13, 3, zlib.Z_DEFAULT_STRATEGY, dictionary)
    return packer.compress(raw) + packer.flush()


def _inflate(dictionary: bytes, packed: bytes) -> bytes:
    return zlib.decompressobj(-13, zdict=dictionary).decompress(packed)


def _per_object(work: list[bytes], fn: object, runs: int) -> float:
    """Median over `runs` of the CPU seconds per item of `fn` over `work`."""
    assert callable(fn)
    times = []
    for _ in range(runs):
        started = time.process_time()
        for item in work:
            fn(item)
        times.append((time.process_time() - started) / len(work))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=5000, help="workspaces' logical clusters (default 5000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement, the median reported (default 5)")
    args = parser.parse_args(argv)
    if args.clusters < 2 or args.runs < 1:
        parser.error("--clusters must be at least 2 and --runs at least 1")
    with tempfile.TemporaryDirectory(prefix="vwproxy-packbench-") as tmp:
        shard = Shard(Path(tmp))
        try:
            for i in range(args.clusters):
                shard.create_logical_cluster(f"ws-{i:05d}", path=f"root:team-{i // 100:03d}:ws-{i:05d}",
                                             spec={"owner": {"apiVersion": "tenancy.kcp.io/v1alpha1", "resource": "workspaces", "name": f"ws-{i:05d}",
                                                             "cluster": "root", "uid": f"00000000-0000-4000-8000-{i:012d}"}})
            raws = [obj.raw for obj in shard.table(LOGICAL_CLUSTERS_KEY).ordered(None)]
        finally:
            shard.close()
        dictionary, rest = raws[0], raws[1:]
        packing = Packing(dictionary)
        zstd_packed = [packing.pack(raw) for raw in rest]
        zlib_packed = [_deflate(dictionary, raw) for raw in rest]
        assert [packing.unpack(p) for p in zstd_packed] == rest and [_inflate(dictionary, p) for p in zlib_packed] == rest
        rows = [
            ("zstd, dictionary digested once", _per_object(rest, packing.pack, args.runs), _per_object(zstd_packed, packing.unpack, args.runs),
             statistics.mean(map(len, zstd_packed))),
            ("deflate, preset dictionary", _per_object(rest, lambda raw: _deflate(dictionary, raw), args.runs),
             _per_object(zlib_packed, lambda packed: _inflate(dictionary, packed), args.runs), statistics.mean(map(len, zlib_packed))),
        ]
        loads = []
        for _ in range(args.runs):
            started = time.perf_counter()
            Shard(Path(tmp)).close()
            loads.append(time.perf_counter() - started)
    json_size = statistics.mean(map(len, rest))
    print("| logical cluster packed | pack | unpack | packed size |\n|---|---|---|---|")
    for name, pack, unpack, size in rows:
        print(f"| {name} | {pack * 1e6:.1f} us | {unpack * 1e6:.1f} us | {size:.0f} B ({size / json_size:.2f}x its {json_size:.0f}-byte JSON) |")
    print(f"\n| `Shard` loading the data dir again ({args.clusters + 1} logical clusters and their namespaces), median of {args.runs} | {statistics.median(loads) * 1000:.0f} ms |")
    command = shlex.join(["python3", "benchmarks/pack_bench.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"\ncommand: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
