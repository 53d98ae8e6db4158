#!/usr/bin/env python3
"""Benchmark of the embedded shard as users run it: `vwproxy shard` in its own process.

The server is `python -m vwproxy.cli shard` (uvicorn with uvloop + httptools, one event loop)
on a fresh temporary data dir. The client is aiohttp on a uvloop event loop in this process,
over HTTP/1.1 keep-alive connections (one per concurrent client). It measures:

  (a) configmap create rate with 1 client and with 8 concurrent clients (objects/s),
  (b) the full wildcard list `GET /clusters/*/api/v1/configmaps` (median of several runs), and
      that time as a ratio to `orjson.dumps` of the same items, timed in the same run,
  (c) watch throughput: a wildcard watch open while K merge-patches are made by 8 clients;
      events/s received, and every committed update delivered exactly once,
  (d) the server's RSS after the load (VmRSS and VmHWM from /proc/<pid>/status).

    python benchmarks/shard_bench.py [--clusters N] [--objects M] [--updates K] [--quick]

Exits 1 if a request fails or the watch did not deliver exactly the committed updates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ndjson import body_with_first_byte, watch_events  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)
from running import keep_or_remove, run_and_report  # noqa: E402
from procstats import ProcessStats, Results  # noqa: E402

WILDCARD = "/clusters/*/api/v1/configmaps"
STARTUP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 60.0
WATCH_DELIVERY_TIMEOUT = 60.0
JSON = {"content-type": "application/json"}
MERGE_PATCH = {"content-type": "application/merge-patch+json"}


class BenchError(Exception):
    pass




# -- the server process ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server(ProcessStats):
    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = _free_port()
        self.cmd = [sys.executable, "-m", "vwproxy.cli", "shard", "--data-dir", str(data_dir),
                    "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                async with session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise BenchError(f"server not ready after {STARTUP_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# -- load -----------------------------------------------------------------------------------


def cluster_name(i: int) -> str:
    return f"bench-{i:04d}"


def configmap(cluster: int, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{i:05d}", "labels": {"app": "bench", "shard": str(i % 10)}},
        "data": {"index": str(i), "cluster": cluster_name(cluster), "config.yaml": f"key: value-{i}\nreplicas: 3\nenabled: true\n"},
    }


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT), skip_auto_headers=["User-Agent"])


async def _expect(resp: aiohttp.ClientResponse, status: int, what: str) -> bytes:
    body = await resp.read()
    if resp.status != status:
        raise BenchError(f"{what}: HTTP {resp.status} (wanted {status}): {body[:300]!r}")
    return body


async def create_clusters(base: str, n: int, clients: int) -> None:
    body = orjson.dumps({"apiVersion": "core.kcp.io/v1alpha1", "kind": "LogicalCluster", "metadata": {"name": "cluster"}})

    async def worker(session: aiohttp.ClientSession, j: int) -> None:
        for i in range(j, n, clients):
            async with session.post(f"{base}/clusters/{cluster_name(i)}/apis/core.kcp.io/v1alpha1/logicalclusters", data=body, headers=JSON) as r:
                await _expect(r, 201, f"create logical cluster {cluster_name(i)}")

    async with _session(clients) as session:
        await asyncio.gather(*(worker(session, j) for j in range(clients)))


async def create_configmaps(base: str, jobs: list[tuple[int, int]], clients: int) -> float:
    """Create configmaps (cluster index, object index) with `clients` concurrent clients; returns seconds."""

    async def worker(session: aiohttp.ClientSession, j: int) -> None:
        for c, i in jobs[j::clients]:
            async with session.post(f"{base}/clusters/{cluster_name(c)}/api/v1/namespaces/default/configmaps", data=orjson.dumps(configmap(c, i)), headers=JSON) as r:
                await _expect(r, 201, f"create configmap {i} in {cluster_name(c)}")

    async with _session(clients) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, j) for j in range(clients)))
        return time.perf_counter() - started


APPLY = {"Content-Type": "application/apply-patch+yaml"}


async def apply_configmaps(base: str, cluster: str, count: int, clients: int, revision: int) -> float:
    """Server-side apply `count` configmaps (creating them, or changing them when revision > 0)."""

    async def worker(session: aiohttp.ClientSession, j: int) -> None:
        for i in range(j, count, clients):
            body = configmap(0, i)
            body["metadata"]["name"] = f"applied-{i:05d}"
            body["data"]["revision"] = str(revision)
            url = f"{base}/clusters/{cluster}/api/v1/namespaces/default/configmaps/applied-{i:05d}?fieldManager=bench"
            async with session.patch(url, data=orjson.dumps(body), headers=APPLY) as r:
                await _expect(r, 200 if revision else 201, f"apply configmap {i}")

    async with _session(clients) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, j) for j in range(clients)))
        return time.perf_counter() - started


async def create_named(base: str, cluster: str, count: int, clients: int) -> float:
    async def worker(session: aiohttp.ClientSession, j: int) -> None:
        for i in range(j, count, clients):
            body = configmap(0, i)
            body["metadata"]["name"] = f"created-{i:05d}"
            async with session.post(f"{base}/clusters/{cluster}/api/v1/namespaces/default/configmaps", data=orjson.dumps(body), headers=JSON) as r:
                await _expect(r, 201, f"create configmap {i}")

    async with _session(clients) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, j) for j in range(clients)))
        return time.perf_counter() - started


async def timed_lists(base: str, runs: int) -> tuple[list[float], bytes, list[float]]:
    """(seconds to each whole body, the last body, seconds to each body's first byte)."""
    times = []
    firsts = []
    body = b""
    async with _session(1) as session:
        for _ in range(runs):
            started = time.perf_counter()
            async with session.get(f"{base}{WILDCARD}") as r:
                body, first = await body_with_first_byte(r)
                if r.status != 200:
                    raise BenchError(f"wildcard list: HTTP {r.status}: {body[:300]!r}")
            done = time.perf_counter()
            times.append(done - started)
            firsts.append((first or done) - started)
    return times, body, firsts


def timed_dumps(items: list[Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        orjson.dumps(items)
        times.append(time.perf_counter() - started)
    return times


@dataclass
class WatchOutcome:
    committed_rvs: set[int]
    delivered_rvs: list[int]
    other_events: list[str]
    update_seconds: float
    first_sent: float
    last_ack: float
    last_event: float


async def watch_under_updates(base: str, start_rv: int, targets: list[tuple[int, int]], updates: int, clients: int) -> WatchOutcome:
    delivered: list[int] = []
    other: list[str] = []
    committed: set[int] = set()
    last_event = 0.0
    opened = asyncio.Event()

    async def reader(session: aiohttp.ClientSession) -> None:
        nonlocal last_event
        params = {"watch": "true", "resourceVersion": str(start_rv), "timeoutSeconds": "3600"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_DELIVERY_TIMEOUT)
        async with session.get(f"{base}{WILDCARD}", params=params, timeout=timeout) as r:
            if r.status != 200:
                raise BenchError(f"watch: HTTP {r.status}: {(await r.read())[:300]!r}")
            opened.set()
            async for now, line, event in watch_events(r):  # ends when the server ends the stream
                if event["type"] == "MODIFIED":
                    delivered.append(int(event["object"]["metadata"]["resourceVersion"]))
                    last_event = now
                else:
                    other.append(f"{event['type']}: {line[:200]!r}")
                    if event["type"] == "ERROR":
                        return

    async def writer(session: aiohttp.ClientSession, j: int) -> None:
        for u in range(j, updates, clients):
            c, i = targets[u % len(targets)]
            url = f"{base}/clusters/{cluster_name(c)}/api/v1/namespaces/default/configmaps/cm-{i:05d}"
            async with session.patch(url, data=orjson.dumps({"data": {"update": str(u)}}), headers=MERGE_PATCH) as r:
                body = await _expect(r, 200, f"patch {url}")
            committed.add(int(orjson.loads(body)["metadata"]["resourceVersion"]))

    async with _session(1) as watch_session, _session(clients) as session:
        reader_task = asyncio.create_task(reader(watch_session))
        opened_task = asyncio.create_task(opened.wait())
        await asyncio.wait([reader_task, opened_task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        opened_task.cancel()
        if not opened.is_set():
            reader_task.cancel()
            if reader_task.done() and not reader_task.cancelled() and reader_task.exception():
                raise reader_task.exception()  # type: ignore[misc]
            raise BenchError("the watch did not open within 10 s")
        first_sent = time.perf_counter()
        await asyncio.gather(*(writer(session, j) for j in range(clients)))
        last_ack = time.perf_counter()
        update_seconds = last_ack - first_sent
        # Wait (bounded) until every committed update arrived or the stream ended.
        deadline = last_ack + WATCH_DELIVERY_TIMEOUT
        while len(delivered) < len(committed) and not reader_task.done() and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # anything extra (duplicates, errors) would arrive now
        reader_task.cancel()
        try:
            await reader_task
        except asyncio.CancelledError:
            pass
    return WatchOutcome(committed, delivered, other, update_seconds, first_sent, last_ack, last_event)


# -- the run --------------------------------------------------------------------------------


class CpuMeter:
    """CPU used by the server and by this client process since construction."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.server_start = server.cpu_seconds()
        self.client_start = time.process_time()

    def note(self, count: int, unit: str) -> str:
        server = self.server.cpu_seconds() - self.server_start
        client = time.process_time() - self.client_start
        per = f", {server / count * 1e6:.0f} us/{unit}" if count else ""
        return f"server CPU {server:.2f} s{per}, client CPU {client:.2f} s"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("vwproxy", "uvicorn", "uvloop", "httptools", "starlette", "orjson"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} ?")
    import sqlite3

    return ", ".join(parts) + f", SQLite {sqlite3.sqlite_version}"


def _fmt_rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "inf"


async def run(args: argparse.Namespace, command: str) -> Results:
    results = Results()
    n, m = args.clusters, args.objects
    total = n * m
    tmp = Path(tempfile.mkdtemp(prefix="vwproxy-bench-"))
    server = Server(tmp / "data", tmp / "server.log")
    print(f"command: {command}")
    print(f"server:  {shlex.join(server.cmd)}")
    print(f"client:  aiohttp {aiohttp.__version__} on {type(asyncio.get_running_loop()).__module__} loop, HTTP/1.1 keep-alive (one connection per client)")
    print(f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"stack:   {_versions()}")
    print(f"load:    {n} logical clusters x {m} configmaps = {total} objects; {args.updates} watch updates; {args.list_runs} list runs")
    try:
        async with _session(1) as session:
            await server.start(session)
        rss0, _ = server.rss_kib()
        print("running:", flush=True)

        started = time.perf_counter()
        await create_clusters(server.url, n, 8)
        cluster_seconds = time.perf_counter() - started
        results.add("logical clusters created", f"{n} in {cluster_seconds:.2f} s", "8 clients; each also gets a default namespace")

        # (a) creates: the first half of the clusters by one client, the second half by eight.
        jobs = [(c, i) for c in range(n) for i in range(m)]
        half = (n // 2) * m if n > 1 else total // 2
        single, multi = jobs[:half], jobs[half:]
        cpu = CpuMeter(server)
        secs1 = await create_configmaps(server.url, single, 1)
        results.add("create rate, 1 client", f"{_fmt_rate(len(single), secs1)} objects/s", f"{len(single)} objects in {secs1:.2f} s; {cpu.note(len(single), 'object')}")
        cpu = CpuMeter(server)
        secs8 = await create_configmaps(server.url, multi, 8)
        results.add("create rate, 8 clients", f"{_fmt_rate(len(multi), secs8)} objects/s", f"{len(multi)} objects in {secs8:.2f} s; {cpu.note(len(multi), 'object')}")

        rss_created, _ = server.rss_kib()

        # (b) the wildcard list, and orjson.dumps of the same items for scale.
        times, body, firsts = await timed_lists(server.url, args.list_runs)
        doc = orjson.loads(body)
        items = doc["items"]
        if len(items) != total:
            raise BenchError(f"wildcard list returned {len(items)} items, expected {total}")
        list_median = statistics.median(times)
        dumps_median = statistics.median(timed_dumps(items, args.list_runs))
        results.add("wildcard list time (median)", f"{list_median * 1000:.1f} ms",
                    f"{len(items)} items, {len(body) / 1e6:.2f} MB; runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms; "
                    f"first body byte after {statistics.median(firsts) * 1000:.1f} ms (median)")
        results.add("orjson.dumps(items) time (median)", f"{dumps_median * 1000:.2f} ms", "same items, in this process")
        results.add("list / orjson.dumps ratio", f"{list_median / dumps_median:.2f}x")

        # (c) a wildcard watch while K updates are committed by 8 clients.
        rss_listed, _ = server.rss_kib()
        start_rv = int(doc["metadata"]["resourceVersion"])
        targets = [(c, i) for c, i in jobs]
        cpu = CpuMeter(server)
        w = await watch_under_updates(server.url, start_rv, targets, args.updates, 8)
        received = len(w.delivered_rvs)
        span = (w.last_event or w.last_ack) - w.first_sent
        results.add("updates committed", f"{len(w.committed_rvs)}", f"{_fmt_rate(len(w.committed_rvs), w.update_seconds)} updates/s by 8 clients (merge patch), {w.update_seconds:.2f} s; {cpu.note(len(w.committed_rvs), 'update')}")
        results.add("watch events received", f"{received}", f"{_fmt_rate(received, span)} events/s over {span:.2f} s; last event {max(0.0, w.last_event - w.last_ack) * 1000:.0f} ms after last ack")
        delivered_set = set(w.delivered_rvs)
        exact = delivered_set == w.committed_rvs and received == len(w.committed_rvs) and not w.other_events
        check = "OK" if exact else "MISMATCH"
        detail = (f"missing {len(w.committed_rvs - delivered_set)}, unexpected {len(delivered_set - w.committed_rvs)}, "
                  f"duplicates {received - len(delivered_set)}, other events {len(w.other_events)}")
        results.add("watch delivered vs committed", f"{received}/{len(w.committed_rvs)} {check}", detail)
        if w.other_events:
            print("  other watch events:", *w.other_events[:5], sep="\n    ")
        in_order = all(a < b for a, b in zip(w.delivered_rvs, w.delivered_rvs[1:]))
        results.add("watch events in RV order", "yes" if in_order else "NO")
        if not exact or not in_order:
            results.ok = False

        # (e) the apply path: server-side apply of K objects next to plain creates of K, same client.
        k = args.apply_objects
        cluster = cluster_name(0)
        created_secs = await create_named(server.url, cluster, k, 1)
        applied_secs = await apply_configmaps(server.url, cluster, k, 1, 0)
        reapplied_secs = await apply_configmaps(server.url, cluster, k, 1, 1)
        results.add(f"create {k} (1 client)", f"{_fmt_rate(k, created_secs)} objects/s", f"{created_secs:.2f} s")
        results.add(f"server-side apply {k}, creating (1 client)", f"{_fmt_rate(k, applied_secs)} objects/s",
                    f"{applied_secs:.2f} s; {applied_secs / created_secs:.2f}x the create time")
        results.add(f"server-side apply {k}, changing one field", f"{_fmt_rate(k, reapplied_secs)} objects/s",
                    f"{reapplied_secs:.2f} s; {reapplied_secs / created_secs:.2f}x the create time")

        # (d) memory.
        rss, hwm = server.rss_kib()
        results.add("server RSS at start", f"{rss0 / 1024:.1f} MiB")
        results.add("server RSS after load", f"{rss / 1024:.1f} MiB",
                    f"after creates {rss_created / 1024:.1f}, after lists {rss_listed / 1024:.1f}, after updates {rss / 1024:.1f}; peak (VmHWM) {hwm / 1024:.1f} MiB")
        db = sum(p.stat().st_size for p in (tmp / "data").iterdir() if p.is_file())
        results.add("data dir size", f"{db / 1e6:.1f} MB", "shard.db + WAL")
    finally:
        server.stop()
        keep_or_remove(tmp, args.keep)
    return results




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=None, help="logical clusters (default 100; --quick: 4)")
    parser.add_argument("--objects", type=int, default=None, help="configmaps per logical cluster (default 100; --quick: 50)")
    parser.add_argument("--updates", type=int, default=None, help="updates made while the watch is open (default 10000; --quick: 500)")
    parser.add_argument("--list-runs", type=int, default=None, help="wildcard list runs to take the median of (default 7; --quick: 3)")
    parser.add_argument("--apply-objects", type=int, default=None, help="objects for the server-side apply comparison (default 1000; --quick: 100)")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and server log")
    args = parser.parse_args(argv)
    quick = args.quick
    args.clusters = args.clusters if args.clusters is not None else (4 if quick else 100)
    args.objects = args.objects if args.objects is not None else (50 if quick else 100)
    args.apply_objects = args.apply_objects if args.apply_objects is not None else (100 if quick else 1000)
    args.updates = args.updates if args.updates is not None else (500 if quick else 10_000)
    args.list_runs = args.list_runs if args.list_runs is not None else (3 if quick else 7)
    if args.clusters < 1 or args.objects < 1 or args.updates < 1 or args.list_runs < 1:
        parser.error("--clusters, --objects, --updates and --list-runs must be at least 1")
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(["python", "benchmarks/shard_bench.py", *argv])
    return run_and_report(run(args, command), command, BenchError)


if __name__ == "__main__":
    sys.exit(main())
