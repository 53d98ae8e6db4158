#!/usr/bin/env python3
"""Bytes per cached object in the embedded shard and in a view, and the cost of a list body, in
one process, measured with tracemalloc (exact Python allocations, unlike RSS).

It builds an embedded shard on a temporary data dir (`vwproxy.store.shard.Shard`, the storage of
`vwproxy serve` and `vwproxy shard`), N logical clusters with the widgets CRD, and M widgets in
each (`Shard.create`, the write path the HTTP handlers call, so the stored objects carry
`managedFields`, `uid`, `kcp.io/cluster`). Then:

  - shard: traced bytes allocated by creating the widgets, per widget: the stored object, its
    ADDED event in the resource's history; SQLite's own cache is not traced;
  - view: a `View` engaged on every cluster the way the hub engages an embedded-shard workspace
    (`replace_cluster_stored` with the shard's objects), bytes per widget; and for comparison the
    decoded path a kube backend's reflector takes (`replace_cluster` with decoded objects), which
    encodes each object again; and what a whole list of the view leaves kept until the buckets
    change (their listings and the pieces of their items' JSON, `core.objects.EncodedRun`);
  - the JSON size of a widget as the view serves it (mean), and each figure as a ratio to it;
  - list body: the view's wildcard list joined as `server/reads.py` joins it, against
    `orjson.dumps` of the same items (decoded), both in this process, medians of R runs;
  - write path: U updates through `Shard.update` with the view following each commit, p50/p99.

    python benchmarks/memory_bench.py [--clusters N] [--objects M] [--runs R] [--updates U]
"""

from __future__ import annotations

import argparse
import gc
import shlex
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from vwproxy.core.rv import RVSequence
from vwproxy.core.view import View
from vwproxy.kube.listoptions import parse_list_options
from vwproxy.store.shard import Shard

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "color": {"type": "string"}}},
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            }}},
        }],
    },
}


def widget(i: int) -> dict[str, Any]:
    """The widget `vw_bench.py` creates, with the managedFields entry a client's create leaves."""
    return {
        "apiVersion": "example.dev/v1alpha1",
        "kind": "Widget",
        "metadata": {
            "name": f"w-{i:05d}", "labels": {"app": "bench", "bench-seq": "0"},
            "managedFields": [{"apiVersion": "example.dev/v1alpha1", "fieldsType": "FieldsV1", "manager": "Python-urllib", "operation": "Update",
                               "time": "2026-12-06T17:00:00Z",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:bench-seq": {}}}, "f:spec": {".": {}, "f:color": {}, "f:size": {}}}}],
        },
        "spec": {"size": i % 10 + 1, "color": ("red", "green", "blue", "yellow")[i % 4]},
    }


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def median_ms(runs: int, fn: Any) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=100, help="logical clusters (default 100)")
    parser.add_argument("--objects", type=int, default=100, help="widgets per logical cluster (default 100)")
    parser.add_argument("--runs", type=int, default=15, help="list runs to take the medians of (default 15)")
    parser.add_argument("--updates", type=int, default=3000, help="updates timed through the shard and the view (default 3000)")
    args = parser.parse_args(argv)
    command = shlex.join(["python3", "benchmarks/memory_bench.py", *(sys.argv[1:] if argv is None else argv)])
    n, m = args.clusters, args.objects
    total = n * m
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="vwproxy-membench-") as tmp:
        shard = Shard(Path(tmp), history_size=max(10_000, total))
        clusters = [f"c{i:05d}" for i in range(n)]
        crd_info = shard.resolve("root", "apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for cluster in clusters:
            shard.create_logical_cluster(cluster)
            shard.create(crd_info, cluster, "", orjson.loads(orjson.dumps(CRD)))
        info = shard.resolve(clusters[0], "example.dev", "v1alpha1", "widgets")
        bodies = [widget(i) for i in range(m)]

        tracemalloc.start()
        before = traced()
        for cluster in clusters:
            for body in bodies:
                shard.create(info, cluster, "default", orjson.loads(orjson.dumps(body)))
        in_shard = (traced() - before) / total
        table = shard.table(info.storage_key)

        def engaged(decoded: bool) -> tuple[View, float]:
            start = traced()
            view = View(RVSequence(10_000_000), "example.dev", "widgets", max(10_000, total))
            for cluster in clusters:
                objects = list(table.clusters[cluster].ordered())
                if decoded or not hasattr(view, "replace_cluster_stored"):  # (before issue 14 there was only this path)
                    view.replace_cluster(cluster, [(o.decode(), str(o.rv)) for o in objects])
                else:
                    view.replace_cluster_stored(cluster, objects)
            return view, (traced() - start) / total

        view, in_view = engaged(decoded=False)
        # What a whole list leaves cached in the view (each bucket's run: its listing, and the
        # pieces of its items' JSON), until the bucket changes.
        start = traced()
        listed_once = view.list(None, "", parse_list_options({}))
        if getattr(listed_once, "encoded", None) is not None:  # (before issue 14's runs: nothing kept)
            listed_once.encoded()
        del listed_once
        in_runs = (traced() - start) / total
        decoded_view, in_decoded_view = engaged(decoded=True)
        tracemalloc.stop()
        del decoded_view

        items = view.list(None, "", parse_list_options({})).items
        json_size = statistics.mean(len(o.raw) for o in items)
        decoded_items = [o.decode() for o in items]

        def joined() -> bytes:
            result = view.list(None, "", parse_list_options({}))
            parts = [b'{"kind":"WidgetList","apiVersion":"example.dev/v1alpha1","metadata":{},"items":[']
            try:
                from vwproxy.core.objects import append_encoded
            except ImportError:  # before issue 14: one bytes object per item
                for o in result.items:
                    parts += (o.raw, b",")
            else:
                append_encoded(parts, result.items)
            parts[-1] = b"]}"
            return b"".join(parts)

        assert orjson.loads(joined())["items"] == decoded_items
        join_ms = median_ms(args.runs, joined)
        dumps_ms = median_ms(args.runs, lambda: orjson.dumps(decoded_items))

        # Updates through the shard while the view follows its commits (as the hub does): a
        # label change per write, one logical cluster's widgets in turn.
        def follow(events: list[Any]) -> None:
            for event in events:
                if event.storage_key == info.storage_key and event.type != "DELETED":
                    obj = event.obj
                    if hasattr(view, "upsert_stored"):
                        view.upsert_stored(obj)
                    else:  # before issue 14
                        view.upsert(obj.cluster, obj.decode(), str(obj.rv))

        shard.on_commit.append(follow)
        latencies = []
        for u in range(args.updates):
            name = f"w-{u % m:05d}"
            current = shard.get(info, clusters[0], "default", name).decode()
            current["metadata"]["labels"]["bench-seq"] = str(u + 1)
            started = time.perf_counter()
            shard.update(info, clusters[0], "default", name, current)
            latencies.append(time.perf_counter() - started)
        latencies.sort()

        shard.close()

    rows.append(("widget JSON size (mean, as the view serves it)", f"{json_size:.0f} B", f"{n} clusters x {m} widgets = {total}"))
    rows.append(("shard: traced bytes per widget", f"{in_shard:,.0f} B", f"{in_shard / json_size:.2f}x the JSON; object, ADDED event in the history"))
    rows.append(("view (embedded shard, shared bytes): bytes per widget", f"{in_view:,.0f} B", f"{in_view / json_size:.2f}x the JSON; object, ADDED event, backend RV"))
    rows.append(("view, kept after a whole list: bytes per widget", f"{in_runs:,.0f} B", f"{(in_view + in_runs) / json_size:.2f}x the JSON with the above; the buckets' listings and their items' pieces"))
    rows.append(("view (decoded path, a kube backend's): bytes per widget", f"{in_decoded_view:,.0f} B", f"{in_decoded_view / json_size:.2f}x the JSON; its own encoding per object"))
    rows.append(("view list body joined (median)", f"{join_ms:.2f} ms", f"list + join of {total} items, {args.runs} runs"))
    rows.append(("orjson.dumps of the same items (median)", f"{dumps_ms:.2f} ms", f"{args.runs} runs"))
    rows.append(("list body / orjson.dumps", f"{join_ms / dumps_ms:.2f}x", "server side only, no HTTP"))
    if latencies:
        p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        rows.append(("update through shard and view, p50 / p99", f"{p50 * 1e6:.0f} / {p99 * 1e6:.0f} us",
                     f"{args.updates} merge-style updates (a label) in one cluster, the view following each commit"))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"| {name:<{width}} | {value:>10} | {note}")
    print(f"\ncommand: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
