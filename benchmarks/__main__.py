"""`python -m benchmarks run|compare`: measure a virtual workspace through a kubeconfig, compare two runs.

    python -m benchmarks run --kubeconfig K [--context C] --endpointslice-workspace root:provider \\
        --endpointslice widgets --resource example.dev/v1alpha1/widgets [--write-cluster auto] \\
        [--duration 15] [--label vwproxy] [--out benchmarks/results] [--quick]
    python -m benchmarks run --kubeconfig K --vw-url https://…/services/apiexport/… --resource …
    python -m benchmarks run --kubeconfig vw.kubeconfig --resource …     # its server is the VW (+ /clusters/*)
    python -m benchmarks compare benchmarks/results/vwproxy.json benchmarks/results/kcp.json

Exits 1 if a request fails or a written change does not reach the wildcard watch; timings are never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import shlex
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from benchmarks.procstats import cpu_seconds, rss_kib
from benchmarks.vw_measure import measure_list, measure_sync, measure_writes
from benchmarks.vw_report import Run, compare, ms, plot_series, table, write_outputs
from benchmarks.vw_target import (
    HarnessError,
    Resource,
    Target,
    load_credentials,
    read_endpoint_slice,
    server_root,
)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DURATION = 15.0  # per phase: list, sync, writes → about a minute in all
QUICK_DURATION = 1.0
DEFAULT_WRITE_RATE = 100.0  # writes/s over all write clusters: paced, so the delay is not queueing
AUTO_WRITE_CLUSTERS = 4  # `--write-cluster auto`: the first clusters the wildcard list shows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure one virtual workspace")
    run.add_argument("--kubeconfig", type=Path, required=True, help="server, CA and credentials (token, token file or client certificate)")
    run.add_argument("--context", default="", help="a context of the kubeconfig (default: its current context)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--endpointslice", help="an APIExportEndpointSlice's name: its status.endpoints[0].url is measured")
    where.add_argument("--vw-url", help="a virtual workspace URL, taken as is (default without --endpointslice: the "
                                        "kubeconfig's server up to /clusters/, for a kubeconfig of the VW itself)")
    run.add_argument("--endpointslice-workspace", default="", help="the workspace path holding --endpointslice, e.g. root:provider")
    run.add_argument("--resource", required=True, help="group/version/resource, e.g. example.dev/v1alpha1/widgets (core: v1/configmaps)")
    run.add_argument("--write-cluster", action="append", default=[],
                     help=f"a logical cluster to write in through the VW (repeatable); 'auto': the first {AUTO_WRITE_CLUSTERS} the list shows; none: no writes")
    run.add_argument("--write-namespace", default="default", help="namespace of the written objects (namespaced resources)")
    run.add_argument("--writes-per-cluster", type=int, default=0, help="default: --write-rate x --duration / clusters")
    run.add_argument("--write-rate", type=float, default=DEFAULT_WRITE_RATE, help="writes/s over all clusters (0: as fast as they go)")
    run.add_argument("--duration", type=float, default=None, help=f"seconds per phase (default {DEFAULT_DURATION:.0f}; --quick {QUICK_DURATION:.0f})")
    run.add_argument("--quick", action="store_true", help="a run of a few seconds (smoke test)")
    run.add_argument("--label", default="", help="names the run and its files (default: the VW's host)")
    run.add_argument("--server-pid", type=int, default=0, help="the VW server's process id on this machine (kcp, vwproxy serve): "
                                                            "its RSS and CPU time over the run are recorded too")
    run.add_argument("--out", type=Path, default=RESULTS, help=f"folder for <label>.md/.json/-*.png (default {RESULTS})")
    cmp_ = sub.add_parser("compare", help="ratios between two runs' .json files")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    cmp_.add_argument("--out", type=Path, default=None, help="also write overlaid plots compare-<a>-<b>-{cdf,hist}.png there")
    return p


async def run_harness(args: argparse.Namespace, command: str) -> Run:
    credentials = load_credentials(args.kubeconfig, args.context)
    resource = Resource.parse(args.resource)
    duration = args.duration if args.duration is not None else (QUICK_DURATION if args.quick else DEFAULT_DURATION)
    notes = ""
    if args.endpointslice:
        if not args.endpointslice_workspace:
            raise HarnessError("--endpointslice needs --endpointslice-workspace (the workspace path holding it)")
        vw, all_urls = await read_endpoint_slice(credentials, args.endpointslice_workspace, args.endpointslice)
        notes = f"endpoint slice {args.endpointslice_workspace}/{args.endpointslice}" + (f", first of {len(all_urls)} endpoints" if len(all_urls) > 1 else "")
    elif args.vw_url:
        vw = args.vw_url.rstrip("/")
    else:  # a kubeconfig of the virtual workspace, as `vwproxy kubeconfig --export` writes: <VW URL>/clusters/*
        vw = server_root(credentials.url)
        notes = "the kubeconfig's server"
    target = Target(vw, resource, credentials)
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", args.label or urlsplit(vw).hostname or "vw")  # it names files
    run = Run(label=label, when=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), command=command, vw_url=vw, resource=str(resource))
    print(f"measuring {target.wildcard_url()} ({duration:g} s per phase)", flush=True)
    run.add("virtual workspace", vw, notes)
    server = _ServerReadings(args.server_pid) if args.server_pid else None
    load_start = os.getloadavg()[0]
    try:
        await _measure(run, target, args, duration)
    finally:
        load_end = os.getloadavg()[0]
        run.add("load average (1 min), start / end", f"{load_start:.2f} / {load_end:.2f}", f"{os.cpu_count()} cores")
        if server:
            server.finish(run)
    return run


class _ServerReadings:
    """The server process's memory and CPU time over the run (`--server-pid`), from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.rss_start = rss_kib(pid)[0]
            self.cpu_start = cpu_seconds(pid)
        except (OSError, KeyError) as exc:
            raise HarnessError(f"--server-pid {pid}: cannot read /proc/{pid}: {exc}") from None
        self.started = time.perf_counter()

    def finish(self, run: Run) -> None:
        try:
            rss, hwm = rss_kib(self.pid)
            cpu = cpu_seconds(self.pid) - self.cpu_start
        except (OSError, KeyError) as exc:
            run.add("server RSS", "not measured", f"/proc/{self.pid}: {exc}")
            return
        wall = time.perf_counter() - self.started
        run.add("server RSS, start / end / peak", f"{self.rss_start / 1024:.1f} / {rss / 1024:.1f} / {hwm / 1024:.1f} MiB", f"pid {self.pid}")
        run.add("server CPU time during the run", f"{cpu:.1f} s", f"in {wall:.1f} s wall: {cpu / wall:.2f} cores on average")
        run.metrics["server RSS MiB"] = rss / 1024
        run.metrics["server peak RSS MiB"] = hwm / 1024
        run.metrics["server CPU s"] = cpu


async def _measure(run: Run, target: Target, args: argparse.Namespace, duration: float) -> None:
    async with target.session() as session:
        lists = await measure_list(session, target, duration)
        run.add_latency("(a) wildcard LIST", "list_seconds", lists.seconds, f"{len(lists.seconds)} runs, {lists.items:,} items, {lists.body_bytes:,} bytes")
        run.add("(a) LIST response headers p50", f"{ms(sorted(lists.header_seconds)[len(lists.header_seconds) // 2])} ms")
        run.metrics["list items"] = lists.items
        run.metrics["list bytes"] = lists.body_bytes

        sync = await measure_sync(session, target, duration)
        if sync.unsupported:
            run.add("(d) watch-list to initial-events-end", "not measured", sync.unsupported)
        else:
            run.add_latency("(d) watch-list to initial-events-end", "sync_seconds", sync.seconds,
                            f"{len(sync.seconds)} runs, {sync.initial_events:,} initial ADDED; first event p50 {ms(sorted(sync.first_event_seconds)[len(sync.first_event_seconds) // 2])} ms")

        clusters = _write_clusters(args.write_cluster, lists.clusters)
        if not clusters:
            run.add("(b, c) writes", "not measured", "no --write-cluster (or the list showed no cluster for 'auto')")
            return
        per_cluster = args.writes_per_cluster or max(2, round((args.write_rate or DEFAULT_WRITE_RATE) * duration / len(clusters)))
        started = time.perf_counter()
        try:
            writes = await measure_writes(session, target, clusters, args.write_namespace, per_cluster, args.write_rate, lists.resource_version)
        except HarnessError as exc:  # e.g. 403: this kubeconfig may read the VW but not write through it; keep (a) and (d)
            run.add("(b, c) writes", "failed", str(exc))
            run.ok = False
            return
        seconds = time.perf_counter() - started
    run.add("(b, c) writes", f"{writes.written:,} in {len(clusters)} clusters", f"{per_cluster} per cluster (1 create, then merge patches) in {seconds:.1f} s; clusters {', '.join(clusters)}")
    run.add_latency("(c) write round trip, create", "create_seconds", writes.create_seconds, high=0.99)
    if writes.patch_seconds:
        run.add_latency("(c) write round trip, patch", "patch_seconds", writes.patch_seconds, high=0.99)
    run.samples["write_seconds"] = writes.create_seconds + writes.patch_seconds
    if writes.delays:
        early = sum(1 for d in writes.delays if d < 0)
        run.add_latency("(b) write response → watch event", "watch_delay_seconds", writes.delays,
                        f"{len(writes.delays)} events, max {ms(max(writes.delays))} ms, {early} before the write's response", high=0.99)
        # A server may send the event before the write's response (kcp mostly does): the delay from
        # sending the write to its event is the end-to-end figure that compares across servers.
        run.add_latency("(b) write sent → watch event", "sent_to_event_seconds", writes.sent_delays,
                        f"{len(writes.sent_delays)} events, max {ms(max(writes.sent_delays))} ms", high=0.99)
    complete = writes.delivered == writes.written and not writes.duplicates and not writes.other_events
    run.add("(b) delivered", f"{writes.delivered}/{writes.written} {'OK' if complete else 'MISSING'}",
            f"duplicates {writes.duplicates}" + (f"; {writes.other_events[0]}" if writes.other_events else ""))
    run.metrics["delivered fraction (higher is better)"] = writes.delivered / max(1, writes.written)
    run.ok = complete


def _write_clusters(given: list[str], seen: list[str]) -> list[str]:
    out: list[str] = []
    for c in given:
        for name in (seen[:AUTO_WRITE_CLUSTERS] if c == "auto" else [c]):
            if name not in out:
                out.append(name)
    return out


def _run_on_fastest_loop(main: Coroutine[Any, Any, Run]) -> Run:
    try:
        import uvloop
    except ImportError:  # the same measurements on the standard loop, a little slower at the client
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "compare":
        a, b = (Run.from_json(p.read_bytes()) for p in (args.a, args.b))
        print(compare(a, b))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            plots = plot_series([a, b], args.out, f"compare-{a.label}-{b.label}")
            print("written: " + (", ".join(str(p) for p in plots) if isinstance(plots, list) else plots))
        return 0
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        run = _run_on_fastest_loop(run_harness(args, command))
    except (TimeoutError, HarnessError, aiohttp.ClientError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(run.rows))
    md, js, plots = write_outputs(run, args.out)
    print()
    print(f"command: {command}")
    print(f"written: {md}, {js}" + (", " + ", ".join(str(p) for p in plots) if isinstance(plots, list) else f" ({plots})"))
    print("result: " + ("OK" if run.ok else "FAILED (see the delivered row)"))
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
