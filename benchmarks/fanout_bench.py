#!/usr/bin/env python3
"""Benchmark of watch fan-out through the APIExport virtual workspace: many VW watchers, a steady
stream of changes, and a GET now and then, all at once.

The proxy is `python -m vwproxy.cli serve --insecure-open` in its own process, on a generated
config (the example's provider export and N consumer workspaces bound to it, as `vw_bench.py`
builds it), with M widgets in each workspace created through the front. Then:

  - W wildcard watches of the VW (`<VW URL>/clusters/*/apis/example.dev/v1alpha1/widgets?watch=true`
    from the VW list's resourceVersion, bookmarks allowed) are opened by P client processes
    (aiohttp on uvloop, W/P watches each), so the client's parsing is spread over processes;
  - this process makes `--rate` merge patches per second for `--seconds` seconds through the
    front (`--writers` keep-alive connections, each patch due at start + i / rate), each setting
    two annotations on one widget: its index i and the time it was sent (`time.time_ns()`, one
    clock for every process on this machine);
  - meanwhile it GETs one widget through the VW `--gets` times per second on its own connection.

Each watcher checks, without decoding the objects (the fields are found in the bytes): every index
arrived exactly once, the resourceVersions strictly increase (RV order), and nothing else arrived
but bookmarks. A stream the server ends (a watcher that fell behind is closed) is watched again
from its last resourceVersion, as an informer does, and counted. Delivery latency is per (event,
watcher): the time the chunk holding the event was read minus the time its write was sent.

With `--client go` the watches are opened by the Go watcher in `go/fanoutwatch` instead (standard
library only, built on first use into ~/.cache/vwproxy-bench), which checks the same things in the
same way and reports the same lines; it costs a fraction of aiohttp's CPU per event, so on a small
machine more of it is left to the proxy.

With `--writer go` the changes and the GETs are made by the same Go binary in its writer role
(`-write-base`), in the same way and order, and timed the same way, so the proxy's machine is not
also running aiohttp for them.

With `--proxy-shard` the proxy is two processes, as DESIGN §7 scales it out: a control plane that
serves no virtual workspace (`--partition none`) takes the writes (and the widgets' creation), and
a proxy shard joined to it (`serve --join`, partition all; the endpoint slice names only its URL)
serves the watches and the GETs, fed by one wildcard watch of the control plane. Both run in open
mode; the join secrets (CA, signing key, admin token) are made in the control plane's data dir first.

    python benchmarks/fanout_bench.py [--watchers 1000] [--rate 1000] [--seconds 60] [--client python|go] [--writer python|go] [--client-procs 4]
                                      [--workspaces 10] [--objects 100] [--gets 5] [--proxy-shard] [--profile FILE] [--quick]

With `--kubeconfig` it starts no server and measures the virtual workspace that the kubeconfig's
server names in its endpoint slice (`--endpointslice-workspace`/`--endpointslice`): a real kcp or a
running `vwproxy serve`, set up by `python -m benchmarks.kcp_setup -n 10 -m 100` (the same
workspaces and widgets). The writes go to the kubeconfig's server, to the first `--workspaces`
clusters of the VW list that hold widgets `w-00000`… (`--objects` of them); every request presents
the kubeconfig's credentials (CA, bearer token or client certificate), every watch on its own
HTTP/1.1 connection. `--server-pid` names the server's process(es) on this machine for the CPU
and memory rows.

    python -m benchmarks.kcp_setup --kubeconfig /tmp/kcp-root/admin.kubeconfig -n 10 -m 100
    python benchmarks/fanout_bench.py --kubeconfig /tmp/kcp-root/admin.kubeconfig --client go --writer go --server-pid <kcp>

Exits 1 if a request fails, a bounded wait runs out or a watcher did not get every change exactly
once in order. Timings are never judged. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from vwproxy.upstream.backends import Backend, tls_context

sys.path.insert(0, str(Path(__file__).resolve().parent))
from running import keep_or_remove, loop_factory, run_and_report  # noqa: E402
from procstats import Results, cpu_seconds, rss_kib  # noqa: E402
from vw_target import HarnessError, load_credentials, open_session, read_endpoint_slice, server_root  # noqa: E402
from vw_bench import (  # noqa: E402
    _STARTED, WIDGETS, BenchError, NotYet, Process, _expect, _pct, _session, _versions, create_widgets, eventually, make_join_secrets,
    serve_process, stop_all, vw_url, wait_bindings_ready, write_config, ws_name,
)

INDEX_KEY = "fanout-i"
SENT_KEY = "fanout-t"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
OPEN_TIMEOUT = 60.0
WRITE_GRACE = 30.0  # the writes stop being started this long after the planned end (see write_deadline)
DELIVERY_TIMEOUT = 30.0
BUCKET_NS = 100_000  # latency histogram resolution: 0.1 ms

# One watch line is `{"type":"MODIFIED","object":{…}}\n`; each widget event carries exactly one of each.
_RV = re.compile(rb'"resourceVersion":"(\d+)"')
_INDEX = re.compile(rb'"' + INDEX_KEY.encode() + rb'":"(\d+)"')
_SENT = re.compile(rb'"' + SENT_KEY.encode() + rb'":"(\d+)"')
_MODIFIED = b'{"type":"MODIFIED","object":'


# -- the watcher client processes -----------------------------------------------------------


class WatchState:
    """What one watcher received: a count per write index, the last RV, and what went wrong."""

    def __init__(self, expect: int) -> None:
        self.seen = bytearray(expect)
        self.beyond = 0  # indices at or past `expect`
        self.last_rv = 0
        self.events = 0
        self.out_of_order = 0
        self.other: list[str] = []
        self.rewatches = 0
        self.failed: str | None = None
        self.crc = 0  # CRC-32 of the event lines received, in order

    def take(self, rvs: list[bytes], indices: list[bytes]) -> None:
        numbers = list(map(int, rvs))
        if numbers[0] <= self.last_rv or numbers != sorted(set(numbers)):
            previous = self.last_rv
            for rv in numbers:
                if rv <= previous:
                    self.out_of_order += 1
                previous = max(previous, rv)
        self.last_rv = max(self.last_rv, numbers[-1])
        seen, size = self.seen, len(self.seen)
        for i in map(int, indices):
            if i < size:
                if seen[i] < 255:
                    seen[i] += 1
            else:
                self.beyond += 1
        self.events += len(numbers)


def _last_rv(lines: bytes) -> int:
    """The resourceVersion of the last complete line of `lines`."""
    found = _RV.findall(lines, lines.rfind(b"\n", 0, len(lines) - 1) + 1)
    return int(found[-1]) if found else 0


async def _watch_one(session: aiohttp.ClientSession, url: str, rv: str, state: WatchState, hist: Counter[int] | None, opened: asyncio.Event) -> None:
    """One watcher. With `hist` (a sampled watcher) every event is found in the bytes and checked,
    and its latency counted; without, only the events' bytes are counted and hashed (CRC-32 of the
    stream without bookmarks), to be compared with the sampled watchers' at the end."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    clock = time.time_ns
    crc32 = zlib.crc32
    while True:
        params = {"watch": "true", "resourceVersion": str(state.last_rv or rv), "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
        async with session.get(url, params=params, timeout=timeout) as r:
            if r.status != 200:
                state.failed = f"watch: HTTP {r.status}: {(await r.read())[:200]!r}"
                opened.set()
                return
            opened.set()
            buf = b""
            async for chunk in r.content.iter_any():
                now = clock()
                buf += chunk
                end = buf.rfind(b"\n")
                if end < 0:
                    continue
                lines, buf = buf[: end + 1], buf[end + 1 :]
                n = lines.count(b"\n")
                if lines.count(_MODIFIED) == n:
                    if hist is None:
                        state.crc = crc32(lines, state.crc)
                        state.events += n
                        state.last_rv = _last_rv(lines)
                        continue
                    rvs = _RV.findall(lines)
                    sent = _SENT.findall(lines)
                    indices = _INDEX.findall(lines)
                    if n == len(rvs) == len(sent) == len(indices):
                        state.crc = crc32(lines, state.crc)
                        state.take(rvs, indices)
                        hist.update([(now - int(t)) // BUCKET_NS for t in sent])
                        continue
                # Something other than a widget change is in there (a bookmark, an ERROR): line by line.
                for line in lines.split(b"\n"):
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind = event.get("type")
                    if kind == "BOOKMARK":
                        continue
                    md = (event.get("object") or {}).get("metadata") or {}
                    annotations = md.get("annotations") or {}
                    if kind == "MODIFIED" and INDEX_KEY in annotations and SENT_KEY in annotations:
                        state.crc = crc32(line + b"\n", state.crc)
                        if hist is None:
                            state.events += 1
                            state.last_rv = int(md["resourceVersion"])
                        else:
                            state.take([md["resourceVersion"].encode()], [annotations[INDEX_KEY].encode()])
                            hist.update([(now - int(annotations[SENT_KEY])) // BUCKET_NS])
                    else:
                        state.other.append(f"{kind}: {line[:200]!r}")
                        if kind == "ERROR":
                            state.failed = f"ERROR event: {line[:200]!r}"
                            return
        state.rewatches += 1  # the server ended the stream: watch again from the last RV


async def client_main(url: str, rv: str, watchers: int, expect: int, first: int, sample_every: int, credentials: Backend | None) -> None:
    """One client process: open `watchers` watches (numbered from `first`; every `sample_every`-th
    is checked in full), say so, wait for the total number of changes, report. `credentials`: the
    kubeconfig's (TLS and a bearer token), presented on every watch."""
    tls = tls_context(credentials) if credentials is not None and url.startswith("https:") else False
    headers = {"authorization": f"Bearer {credentials.token}"} if credentials is not None and credentials.token else {}
    connector = aiohttp.TCPConnector(limit=0, force_close=False, ssl=tls)
    hist: Counter[int] = Counter()
    sampled = [(first + j) % sample_every == 0 for j in range(watchers)]
    states = [WatchState(expect if full else 0) for full in sampled]
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=["User-Agent"], headers=headers, trust_env=False) as session:
        opened = [asyncio.Event() for _ in states]
        tasks = [asyncio.create_task(_watch_one(session, url, rv, s, hist if full else None, o)) for s, full, o in zip(states, sampled, opened)]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), OPEN_TIMEOUT)
        failed = [s.failed for s in states if s.failed]
        print(json.dumps({"ready": not failed, "failed": failed[:3]}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        line = await reader.readline()
        total = int(json.loads(line)["total"]) if line else 0
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while time.monotonic() < deadline and not all(s.events >= total or s.failed for s in states):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # duplicates would arrive now
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    report: dict[str, Any] = {
        "watchers": watchers, "sampled": sum(sampled), "complete": 0, "missing": 0, "duplicates": 0, "unexpected": 0, "out_of_order": 0,
        "rewatches": 0, "other": [], "failed": [], "cpu": time.process_time() - cpu0, "events": 0,
        "hist": {str(k): v for k, v in hist.items()}, "streams": [],
    }
    for s, full in zip(states, sampled):
        report["rewatches"] += s.rewatches
        report["events"] += s.events
        report["other"] += s.other[:2]
        if s.failed:
            report["failed"].append(s.failed)
        report["streams"].append([full, s.events, s.crc])
        if not full:
            continue
        got = s.seen[:total]
        missing = got.count(0)
        once = got.count(1)
        dups = total - missing - once
        unexpected = s.beyond + sum(1 for b in s.seen[total:] if b)
        report["missing"] += missing
        report["duplicates"] += dups
        report["unexpected"] += unexpected
        report["out_of_order"] += s.out_of_order
        if missing == dups == unexpected == s.out_of_order == 0 and not s.other and not s.failed:
            report["complete"] += 1
    print(json.dumps(report), flush=True)


# -- the driver -----------------------------------------------------------------------------


GO_WATCHER = Path(__file__).resolve().parent / "go" / "fanoutwatch"


def go_watcher() -> Path:
    """The Go watcher (`go/fanoutwatch`, standard library only), built once per source and
    toolchain into a cache folder; BenchError without a Go toolchain."""
    try:
        version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"--client go needs the Go toolchain on PATH: {exc}") from exc
    digest = hashlib.sha256(version.encode())
    for source in sorted([GO_WATCHER / "go.mod", *GO_WATCHER.glob("*.go")]):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vwproxy-bench"
    binary = cache / f"fanoutwatch-{digest.hexdigest()[:16]}"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        building = binary.with_name(f"{binary.name}.{os.getpid()}")
        built = subprocess.run(["go", "build", "-o", str(building), "."], cwd=GO_WATCHER, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"})
        if built.returncode != 0:
            raise BenchError(f"go build in {GO_WATCHER} exited {built.returncode}: {built.stderr.strip()[:500]}")
        building.replace(binary)
    return binary


class WatchClients:
    """The P client processes, each with its share of the watchers: this file in its client role
    (aiohttp), or the Go watcher, which speaks the same lines."""

    def __init__(self, url: str, rv: str, watchers: int, procs: int, expect: int, sample_every: int, go: Path | None = None,
                 target: External | None = None) -> None:
        self.shares = [watchers // procs + (1 if j < watchers % procs else 0) for j in range(procs)]
        firsts = [sum(self.shares[:j]) for j in range(procs)]
        if go is None:
            login = ["--kubeconfig", str(target.kubeconfig), "--context", target.context] if target else []
            self.args = [[sys.executable, str(Path(__file__).resolve()), "--client-role", url, "--rv", rv, "--watchers", str(n), "--expect", str(expect),
                          "--first", str(f), "--sample-every", str(sample_every), *login]
                         for n, f in zip(self.shares, firsts) if n]
        else:
            self.args = [[str(go), "-url", url, "-rv", rv, "-watchers", str(n), "-expect", str(expect), "-first", str(f), "-sample-every", str(sample_every),
                          *(target.go_flags() if target else [])]
                         for n, f in zip(self.shares, firsts) if n]
        self.env = target.go_env() if target and go else None
        self.procs: list[asyncio.subprocess.Process] = []
        self.protocols: Counter[str] = Counter()  # the Go watcher's: watches by the protocol of their response

    async def start(self) -> None:
        for cmd in self.args:
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26, env=self.env)
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), OPEN_TIMEOUT + 10)
            except TimeoutError:
                raise BenchError(f"a watch client had not opened its watches after {OPEN_TIMEOUT + 10:.0f} s") from None
            if not line:
                raise BenchError(f"a watch client exited with {await proc.wait()} before its watches opened")
            said = json.loads(line)
            self.protocols.update(said.get("protos") or {})
            if not said["ready"]:
                raise BenchError(f"watches failed to open: {said['failed']}")

    async def finish(self, total: int) -> list[dict[str, Any]]:
        reports = []
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"total": total}).encode() + b"\n")
            await proc.stdin.drain()
        for proc in self.procs:
            assert proc.stdout is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), DELIVERY_TIMEOUT + 30)
            except TimeoutError:
                raise BenchError(f"a watch client had not reported {DELIVERY_TIMEOUT + 30:.0f} s after the last change") from None
            if not line:
                raise BenchError(f"a watch client exited with {await proc.wait()} without a report")
            reports.append(json.loads(line))
            await proc.wait()
        return reports

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()

    def cpu_seconds(self) -> float:
        from procstats import cpu_seconds

        total = 0.0
        for proc in self.procs:
            if proc.returncode is None:
                try:
                    total += cpu_seconds(proc.pid)
                except OSError:
                    pass
        return total


def in_process(watchers: int, events: int, every: int) -> tuple[float, int]:
    """The fan-out inside the server without HTTP: a view with `watchers` wildcard watchers, `events`
    changes to 100 widgets, each watcher's frames taken as one chunk after every `every` changes (as
    a watch stream sends what came while it was busy). (CPU seconds per change, bytes per watcher)."""
    from vwproxy.core.rv import RVSequence
    from vwproxy.core.view import View
    from vwproxy.core.watch import Watcher, begin_watch
    from vwproxy.kube.listoptions import ListOptions
    from vwproxy.kube.selectors import FieldSelector, LabelSelector

    view = View(RVSequence(1000), "example.dev", "widgets")
    template = {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "spec": {"size": 3, "color": "red"}}

    def obj(name: str, v: int) -> dict[str, Any]:
        md = {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": str(v), "labels": {"app": "bench"},
              "annotations": {INDEX_KEY: str(v), SENT_KEY: str(time.time_ns())}}
        return {**template, "metadata": md}

    for i in range(100):
        view.upsert("c1", obj(f"w-{i:05d}", 0), "1")
    ws = []
    for _ in range(watchers):
        w = Watcher(None, "", LabelSelector(), FieldSelector(), "example.dev/v1alpha1", lambda o: o.raw)
        begin_watch(view, w, ListOptions(labels=LabelSelector(), fields=FieldSelector(), resource_version=str(view.current_rv)), ("example.dev/v1alpha1", "Widget"))
        ws.append(w)

    def take(w: Watcher) -> bytes:
        drain_bytes = getattr(w, "drain_bytes", None)  # older code: join the drained frames here, as its stream did
        return drain_bytes() if drain_bytes is not None else b"".join(w.drain())

    objects = [obj(f"w-{i % 100:05d}", i + 1) for i in range(events)]
    sent = 0
    started = time.process_time()
    for i, o in enumerate(objects):
        view.upsert("c1", o, str(i + 2))
        if (i + 1) % every == 0:
            for w in ws:
                sent += len(take(w))
    cpu = time.process_time() - started
    return cpu / events, sent // watchers


def write_deadline(seconds: float) -> float:
    """Seconds after the first change after which no more are started: a server slower than the
    rate asked (a busy kcp) is measured on what it took by then, not waited for without end."""
    return max(3 * seconds, seconds + WRITE_GRACE)


async def go_writes(go: Path, front: str, clusters: list[str], args: argparse.Namespace, total: int, get_url: str,
                    target: External | None, deadline: float) -> tuple[float, list[float], list[float], float]:
    """The changes and the GETs made by the Go binary in its writer role, as `writer()` and
    `getter()` make them: (seconds of writes, write round trips, GET round trips (s), its CPU)."""
    cmd = [str(go), "-write-base", front, "-clusters", ",".join(clusters), "-objects", str(args.objects), "-rate", repr(args.rate),
           "-count", str(total), "-conns", str(args.writers), "-get-url", get_url, "-gets", repr(args.gets), "-deadline", repr(deadline),
           *(target.go_flags() if target else [])]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=1 << 26,
                                                env=target.go_env() if target else None)
    bound = deadline + 90  # the last changes started may take the writer's request timeout (60 s)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), bound)
    except TimeoutError:
        raise BenchError(f"the Go writer had not ended {bound:.0f} s after it started") from None
    finally:
        if proc.returncode is None:
            proc.kill()
    try:
        said = json.loads(out.splitlines()[-1]) if out.strip() else {}
    except ValueError:
        said = {}
    if proc.returncode != 0 or said.get("failed") or "writes" not in said:
        raise BenchError(f"the Go writer exited {proc.returncode}: {said.get('failed') or err.decode(errors='replace').strip()[:500]}")
    if said["writes"] != said.get("started", total) or said["writes"] > total or (said["writes"] < total and said["seconds"] < deadline):
        raise BenchError(f"the Go writer made {said['writes']} changes, started {said.get('started')}, of {total} asked, in {said['seconds']:.1f} s")
    return float(said["seconds"]), [ms / 1000 for ms in said["write_ms"]], [ms / 1000 for ms in said["get_ms"]], float(said["cpu"])


def _nth(n: int) -> str:
    return "one" if n == 1 else f"{n}{'nd' if n % 10 == 2 and n % 100 != 12 else 'rd' if n % 10 == 3 and n % 100 != 13 else 'th'}"


def _sched_wait(server: Process | Observed) -> float:
    """Seconds a server has spent runnable but waiting for a CPU: the main thread of one this run
    started (the event loop, /proc/<pid>/schedstat), every thread of an observed one (a Go server's
    work is on many: /proc/<pid>/task/*/schedstat, the threads alive now)."""
    pid = _pid(server)
    paths = sorted(Path(f"/proc/{pid}/task").glob("*/schedstat")) if isinstance(server, Observed) else [Path(f"/proc/{pid}/schedstat")]
    total = 0.0
    try:
        for path in paths:
            total += int(path.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")
    return total if paths else float("nan")


def _hist_pct(hist: Counter[int], q: float) -> float:
    """The q-th percentile of the histogram, in ms (bucket upper bounds)."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = q / 100 * total
    running = 0
    for bucket in sorted(hist):
        running += hist[bucket]
        if running >= rank:
            return (bucket + 1) * BUCKET_NS / 1e6
    return (max(hist) + 1) * BUCKET_NS / 1e6


async def run(args: argparse.Namespace, command: str) -> Results:
    results = Results()
    target: External | None = getattr(args, "target", None)
    tmp = Path(tempfile.mkdtemp(prefix="vwproxy-fanout-"))
    owned: list[Process] = []
    clients: WatchClients | None = None
    total_writes = int(args.rate * args.seconds)
    deadline = write_deadline(args.seconds)
    print(f"command: {command}")
    go = go_watcher() if "go" in (args.client, args.writer) else None
    watch_side = (f"the Go watcher ({go.name}, {subprocess.run(['go', 'env', 'GOVERSION'], capture_output=True, text=True).stdout.strip()})"
                  if go and args.client == "go" else "aiohttp")
    write_side = (f"the Go writer (the same binary, -write-base)" if args.writer == "go" else
                  f"aiohttp {aiohttp.__version__} on {type(asyncio.get_running_loop()).__module__} loop in this one")
    print(f"client:  watches: {watch_side}, {args.client_procs} processes; writers and GETs: {write_side}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"stack:   {_versions()}")
    if args.server_cpus is not None:
        print(f"cpus:    the server on {sorted(args.server_cpus)}, this process and the watch clients on {sorted(args.other_cpus)}")
    print(f"load:    {args.watchers} VW watchers; {total_writes} changes at {args.rate:g}/s for {args.seconds:g} s over {args.workspaces} x {args.objects} widgets; {args.gets:g} GETs/s")
    print("running:", flush=True)
    try:
        if args.in_process:
            per_change, sent = in_process(args.watchers, args.in_process, 20)
            results.add("in process: CPU per change ingested and fanned out", f"{per_change * 1e6:,.0f} us",
                        f"a view with {args.watchers} wildcard watchers, {args.in_process} changes, every watcher's frames taken as one chunk "
                        f"every 20 changes; {per_change / args.watchers * 1e9:,.0f} ns per (change, watcher); {sent / args.in_process:,.0f} bytes per frame")
        servers: list[Any]  # Process (started here) or Observed (--server-pid)
        if target is not None:
            servers = [Observed(pid) for pid in args.server_pid]
            front = server_root(target.credentials.url)
            print(f"server:  {front} (--kubeconfig {target.kubeconfig}{f' --context {target.context}' if target.context else ''})"
                  + (f", pid {', '.join(map(str, args.server_pid))}" if args.server_pid else ", no --server-pid: no server CPU or memory rows"))
            async with target.session(4) as session:
                vw, _ = await read_endpoint_slice(target.credentials, args.endpointslice_workspace, args.endpointslice)
                list_url = f"{vw}/clusters/*{WIDGETS}/widgets"
                print(f"watches: {list_url}", flush=True)
                async with session.get(list_url) as r:
                    listed = orjson.loads(await _expect(r, 200, "VW list"))
            clusters = pick_clusters(listed["items"], args.workspaces, args.objects, target.kubeconfig)
            get_cluster = clusters[0]
        else:
            workspaces = [ws_name(i) for i in range(args.workspaces)]
            clusters = [f"root:{ws}" for ws in workspaces]
            write_config(tmp / "config", workspaces)
            if args.proxy_shard:
                make_join_secrets(tmp / "data")
            server = serve_process(tmp / "config", tmp / "data", tmp / "serve.log", args.profile,
                                   extra=["--partition", "none"] if args.proxy_shard else [])
            servers = [server]
            if args.proxy_shard:
                servers.append(Process(["serve", "--insecure-open", "--join", server.url, "--join-secrets", str(tmp / "data"), "--shard-name", "s1",
                                        "--partition", "all", "--data-dir", str(tmp / "shard")], tmp / "shard.log", None, args.profile and args.profile.with_suffix(".shard")))
            if args.server_cpus is not None:
                for s in servers:
                    s.cpus = args.server_cpus
            owned.extend(servers)
            for s in servers:
                print(f"server:  {shlex.join(s.cmd)}")
            front = server.url
            async with _session(4) as session:
                for s in servers:
                    s.spawn()
                    await s.wait_ready(session, 60)
                await wait_bindings_ready(session, server.url, args.workspaces, 60 + args.workspaces * 0.1)
                list_url = await vw_url(session, server.url, 30)
                print(f"watches: {list_url}", flush=True)
                if args.proxy_shard and not list_url.startswith(servers[1].url + "/"):
                    raise BenchError(f"the endpoint slice names {list_url}, not the proxy shard at {servers[1].url}")
                await create_widgets(server.url, workspaces, args.objects, 8)

                async def all_listed() -> dict[str, Any] | str:
                    async with session.get(list_url) as r:
                        found = orjson.loads(await _expect(r, 200, "VW list"))
                    return found if len(found["items"]) == args.workspaces * args.objects else NotYet(f"{len(found['items'])} widgets")

                # A proxy shard has them once its feed brought them in.
                listed = await eventually(all_listed, f"the VW list holding {args.workspaces * args.objects} widgets", 30)
            get_cluster = listed["items"][0]["metadata"]["annotations"]["kcp.io/cluster"]
        if args.server_cpus is not None:
            os.sched_setaffinity(0, args.other_cpus)  # this process, and the clients it starts
        rv = listed["metadata"]["resourceVersion"]
        vw_base = list_url[: list_url.index("/clusters/*")]
        get_url = f"{vw_base}/clusters/{get_cluster}{WIDGETS}/namespaces/default/widgets/w-00000"
        rss_before = _rss(servers)
        results.add("setup", f"{args.workspaces * args.objects} widgets", f"{args.workspaces} workspaces bound"
                    + (f"; the changes go to {', '.join(clusters)}" if target is not None else "")
                    + (f"; server RSS {rss_before} before the watchers" if servers else ""))

        clients = WatchClients(list_url, rv, args.watchers, args.client_procs, total_writes + 16, args.sample_every, go, target)
        started = time.perf_counter()
        await clients.start()
        opened = time.perf_counter() - started
        rss_open = _rss(servers)
        over = ", ".join(f"{n} over {proto}" for proto, n in sorted(clients.protocols.items()))
        results.add("watchers opened", f"{args.watchers}", f"in {opened:.2f} s by {len(clients.procs)} client processes" + (f" ({over})" if over else "")
                    + (f"; server RSS {rss_open}" if servers else ""))

        write_rtt: list[float] = []
        get_rtt: list[float] = []
        loads: list[float] = []
        rss_peak = [s.rss_kib()[0] for s in servers]
        next_index = 0
        writing = True
        opener = target.session if target is not None else _session
        async with opener(args.writers) as wsession, opener(1) as gsession:
            server_cpu0, clients_cpu0, own_cpu0 = [s.cpu_seconds() for s in servers], clients.cpu_seconds(), time.process_time()
            server_wait0 = [_sched_wait(s) for s in servers]
            t0 = time.perf_counter()

            async def writer() -> None:
                nonlocal next_index
                while next_index < total_writes and time.perf_counter() - t0 < deadline:
                    i = next_index
                    next_index += 1
                    delay = t0 + i / args.rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    cluster = clusters[i % len(clusters)]
                    name = f"w-{(i // len(clusters)) % args.objects:05d}"
                    sent = time.perf_counter()
                    patch = orjson.dumps({"metadata": {"annotations": {INDEX_KEY: str(i), SENT_KEY: str(time.time_ns())}}})
                    async with wsession.patch(f"{front}/clusters/{cluster}{WIDGETS}/namespaces/default/widgets/{name}", data=patch, headers=MERGE_PATCH) as r:
                        await _expect(r, 200, f"patch {name} in {cluster}")
                    write_rtt.append(time.perf_counter() - sent)

            async def getter() -> None:
                k = 0
                while writing:
                    k += 1
                    delay = t0 + k / args.gets - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent = time.perf_counter()
                    async with gsession.get(get_url) as r:
                        await _expect(r, 200, "GET through the VW")
                    get_rtt.append(time.perf_counter() - sent)

            async def sampler() -> None:
                while writing:
                    await asyncio.sleep(1.0)
                    for j, s in enumerate(servers):
                        rss_peak[j] = max(rss_peak[j], s.rss_kib()[0])
                    loads.append(os.getloadavg()[0])

            side = [asyncio.create_task(sampler())]
            if args.writer == "go":
                assert go is not None
                write_secs, write_rtt, get_rtt, writer_cpu = await go_writes(go, front, clusters, args, total_writes, get_url, target, deadline)
            else:
                if args.gets > 0:
                    side.append(asyncio.create_task(getter()))
                await asyncio.gather(*(writer() for _ in range(args.writers)))
                write_secs = time.perf_counter() - t0
                if len(write_rtt) != next_index:  # a failed write raised above; this is a check of the bookkeeping
                    raise BenchError(f"{next_index} changes started, {len(write_rtt)} made")
            writing = False
            server_cpu = [s.cpu_seconds() - c for s, c in zip(servers, server_cpu0)]
            server_wait = [_sched_wait(s) - w for s, w in zip(servers, server_wait0)]
            await asyncio.gather(*side)
        clients_cpu = clients.cpu_seconds() - clients_cpu0
        own_cpu = time.process_time() - own_cpu0 + (writer_cpu if args.writer == "go" else 0.0)
        made = len(write_rtt)  # every change started was made (a failure raised); fewer than asked if the deadline came first
        reports = await clients.finish(made)
        rss_after = _rss(servers)
        hwm = [s.rss_kib()[1] for s in servers]

        hist: Counter[int] = Counter()
        for rep in reports:
            hist.update({int(k): v for k, v in rep["hist"].items()})
        agg = {k: sum(rep[k] for rep in reports) for k in ("sampled", "complete", "missing", "duplicates", "unexpected", "out_of_order", "rewatches", "events")}
        other = [o for rep in reports for o in rep["other"]]
        failed = [f for rep in reports for f in rep["failed"]]
        # A checked watcher's stream is the reference: every other one must have received the same bytes.
        streams = [tuple(x) for rep in reports for x in rep["streams"]]
        references = {(events, crc) for full, events, crc in streams if full}
        reference = next(iter(references)) if len(references) == 1 else None
        same = sum(1 for full, events, crc in streams if not full and (events, crc) == reference)
        ok = agg["complete"] == agg["sampled"] and same == len(streams) - agg["sampled"] and not failed and not other
        results.ok = ok
        short = (f"; only {made} of the {total_writes} asked were started before the writes' deadline ({deadline:.0f} s): the server took them slower than asked"
                 if made < total_writes else "")
        results.add("changes committed", f"{made}",
                    f"merge patches by {args.writers} connections through the front; {args.rate:g}/s asked, {made / write_secs:,.0f}/s done over {write_secs:.1f} s; "
                    f"write p50 {_pct(write_rtt, 50) * 1000:.1f} ms, p99 {_pct(write_rtt, 99) * 1000:.1f} ms{short}")
        results.add("delivered", f"{agg['complete'] + same}/{args.watchers} watchers complete" + (" OK" if ok else " FAILED"),
                    f"{agg['events']:,} events; {agg['complete']}/{agg['sampled']} checked event by event (every {_nth(args.sample_every)}: "
                    f"missing {agg['missing']}, duplicates {agg['duplicates']}, unexpected {agg['unexpected']}, out of RV order {agg['out_of_order']}), "
                    f"{same}/{len(streams) - agg['sampled']} others received the same bytes; re-watches {agg['rewatches']}" + (f"; other: {other[:2]}" if other else "")
                    + (f"; failed: {failed[:2]}" if failed else ""))
        results.add("delivery latency p50 / p99 / max", f"{_hist_pct(hist, 50):.1f} / {_hist_pct(hist, 99):.1f} / {_hist_pct(hist, 100):.1f} ms",
                    f"from the write's send to the read of the chunk holding its event, over {sum(hist.values()):,} (event, checked watcher) pairs; target p99 <= 50 ms")
        if get_rtt:
            results.add("concurrent GET p50 / p99 / max", f"{_pct(get_rtt, 50) * 1000:.1f} / {_pct(get_rtt, 99) * 1000:.1f} / {max(get_rtt) * 1000:.1f} ms",
                        f"{len(get_rtt)} GETs of one widget through the VW, {args.gets:g}/s; target p99 <= 20 ms")
        for role, cpu, wait in zip(_roles(servers), server_cpu, server_wait):
            waiter = "its threads" if target is not None else "its event loop"
            results.add(f"{role} CPU", f"{cpu:.1f} s", f"{cpu / write_secs * 100:.0f}% of one core over the {write_secs:.1f} s of writes; "
                        f"{waiter} waited {wait:.1f} s for a CPU while runnable (/proc schedstat: the machine's contention)")
        if servers:
            results.add("server RSS", rss_after, f"{rss_open} with the watchers open; peak sampled {' + '.join(f'{k / 1024:.1f}' for k in rss_peak)} MiB, "
                        f"VmHWM {' + '.join(f'{k / 1024:.1f}' for k in hwm)} MiB")
        per_client = ", ".join(f"{rep['cpu']:.1f}" for rep in reports)
        results.add("client CPU", f"{clients_cpu + own_cpu:.1f} s", f"watch clients {clients_cpu:.1f} s ({per_client} s each), writers and GETs {own_cpu:.1f} s")
        results.add("load average", f"{max(loads) if loads else os.getloadavg()[0]:.2f} max", f"1-minute load sampled each second during the writes; {os.cpu_count()} CPUs")
    finally:
        if clients is not None:
            clients.kill()
        stop_all(owned)
        keep_or_remove(tmp, args.keep)
    return results


class External:
    """The server a kubeconfig names (`--kubeconfig`): where the clients go and what they present."""

    def __init__(self, kubeconfig: Path, context: str, http2: bool = False) -> None:
        self.kubeconfig = kubeconfig.resolve()
        self.context = context
        self.http2 = http2  # the Go clients offer HTTP/2 (--http2)
        self.credentials = load_credentials(kubeconfig, context)

    def session(self, connections: int) -> aiohttp.ClientSession:
        return open_session(self.credentials, connections)

    def go_flags(self) -> list[str]:
        """The Go binary's credential flags (files the kubeconfig's data was written to, mode 0600)."""
        c = self.credentials
        return ([*(["-ca", c.ca_file] if c.ca_file else []), *(["-cert", c.cert_file, "-key", c.key_file] if c.cert_file else []),
                 *(["-insecure"] if c.insecure else []), *(["-http2"] if self.http2 else [])])

    def go_env(self) -> dict[str, str]:
        """The Go binary's environment: the bearer token goes there, not on its command line."""
        env = {k: v for k, v in os.environ.items() if k != "FANOUT_TOKEN"}
        if self.credentials.token:
            env["FANOUT_TOKEN"] = self.credentials.token
        return env


class Observed:
    """A server process this run did not start (`--server-pid`): read from /proc, never stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kib(self) -> tuple[int, int]:
        return rss_kib(self.pid)


def pick_clusters(items: list[dict[str, Any]], count: int, objects: int, kubeconfig: Path) -> list[str]:
    """The first `count` clusters (by name) of a VW list whose namespace `default` holds widgets
    w-00000 … w-<objects - 1>: where the changes go. BenchError naming the set-up command otherwise."""
    names: dict[str, set[str]] = {}
    for item in items:
        md = item.get("metadata") or {}
        cluster = (md.get("annotations") or {}).get("kcp.io/cluster")
        if cluster and md.get("namespace") == "default":
            names.setdefault(cluster, set()).add(md.get("name", ""))
    wanted = {f"w-{i:05d}" for i in range(objects)}
    ready = sorted(c for c, held in names.items() if wanted <= held)
    if len(ready) < count:
        raise BenchError(f"the VW list has {len(ready)} clusters holding widgets w-00000…w-{objects - 1:05d} in namespace default, "
                         f"--workspaces asks {count}: run python -m benchmarks.kcp_setup --kubeconfig {kubeconfig} -n {count} -m {objects} first")
    return ready[:count]


def _pid(server: Process | Observed) -> int:
    if isinstance(server, Observed):
        return server.pid
    assert server.proc is not None
    return server.proc.pid


def _roles(servers: list[Process] | list[Observed]) -> list[str]:
    if servers and isinstance(servers[0], Observed):
        return ["server" if len(servers) == 1 else f"server pid {_pid(s)}" for s in servers]
    return ["server"] if len(servers) == 1 else ["control plane", "proxy shard"]


def _rss(servers: list[Process] | list[Observed]) -> str:
    """The servers' resident memory now, e.g. `61.2 MiB` or `control plane 70.1 MiB + proxy shard 58.3 MiB`."""
    if not servers:
        return "not read (no --server-pid)"
    sizes = [f"{s.rss_kib()[0] / 1024:.1f} MiB" for s in servers]
    return sizes[0] if len(sizes) == 1 else " + ".join(f"{role} {size}" for role, size in zip(_roles(servers), sizes))


def _cpu_list(text: str) -> set[int]:
    """`1`, `0,2`, `2-3` → the CPU numbers (ValueError when malformed)."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        first, last = int(low), int(high or low)
        if not 0 <= first <= last < 4096:
            raise ValueError(text)
        cpus.update(range(first, last + 1))
    return cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=None, help="concurrent VW wildcard watchers (default 1000; --quick: 20)")
    parser.add_argument("--rate", type=float, default=None, help="changes per second (default 1000; --quick: 50)")
    parser.add_argument("--seconds", type=float, default=None, help="how long the changes go on (default 60; --quick: 2)")
    parser.add_argument("--client", choices=("python", "go"), default="python",
                        help="what watches: this file's aiohttp watcher, or the Go one in go/fanoutwatch (built on first use; "
                             "a fraction of the CPU per event, so more of a small machine is left to the proxy) (default python)")
    parser.add_argument("--writer", choices=("python", "go"), default="python",
                        help="what makes the changes and the GETs: aiohttp in this process, or the Go binary of --client go in its writer "
                             "role (a fraction of the CPU per request) (default python)")
    parser.add_argument("--client-procs", type=int, default=None, help="processes the watchers are spread over (default 4, with --client go 1; --quick: 2)")
    parser.add_argument("--workspaces", type=int, default=None, help="consumer workspaces (default 10; --quick: 2)")
    parser.add_argument("--objects", type=int, default=None, help="widgets per workspace, the ones the changes go to (default 100; --quick: 5)")
    parser.add_argument("--writers", type=int, default=16, help="keep-alive connections the changes are made over (default 16)")
    parser.add_argument("--gets", type=float, default=5.0, help="GETs per second of one widget through the VW during the changes (default 5; 0: none)")
    parser.add_argument("--sample-every", type=int, default=10,
                        help="every N-th watcher finds each event in the bytes, checks it and times it; the others hash their streams, "
                             "which must equal the checked ones' (default 10; 1: all in full)")
    parser.add_argument("--in-process", type=int, default=None, metavar="N",
                        help="first time N changes fanned out to --watchers watchers of a view in this process, without HTTP (default 2000; --quick: 100; 0: skip)")
    parser.add_argument("--server-cpus", default=None, metavar="LIST",
                        help="run the server on these CPUs only (e.g. 1, or 2-3), this process and the watch clients on the others: "
                             "what the proxy does with cores of its own, the load elsewhere (default: every process on every CPU)")
    parser.add_argument("--proxy-shard", action="store_true",
                        help="two server processes: a control plane that serves no virtual workspace (--partition none) takes the writes, "
                             "and a proxy shard joined to it (partition all) serves the watches and GETs: the streams on one event loop, "
                             "the writes on another (default: one process does all)")
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="measure the server this kubeconfig names (a real kcp, or a running vwproxy serve) instead of starting one: "
                             "its endpoint slice's VW, set up by python -m benchmarks.kcp_setup; every request presents its credentials")
    parser.add_argument("--context", default="", help="with --kubeconfig: its context (default: the current one)")
    parser.add_argument("--endpointslice-workspace", default="root:provider", help="with --kubeconfig: the endpoint slice's workspace (default root:provider)")
    parser.add_argument("--endpointslice", default="widgets", help="with --kubeconfig: the endpoint slice's name (default widgets)")
    parser.add_argument("--server-pid", type=int, action="append", default=[], metavar="PID",
                        help="with --kubeconfig: the server's process on this machine, for the CPU and memory rows (repeat for several)")
    parser.add_argument("--http2", action="store_true",
                        help="with --kubeconfig and --client go: the Go clients offer HTTP/2, as client-go does; a server that takes it "
                             "(kcp) carries the watches on a few connections instead of one each (vwproxy answers HTTP/1.1)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE", help="run the proxy under cProfile, writing FILE (timings are then not comparable)")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (config, data, server log)")
    # The watch client processes run this file with --client-role.
    parser.add_argument("--client-role", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rv", default="", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_role:
        credentials = load_credentials(args.kubeconfig, args.context) if args.kubeconfig else None
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(client_main(args.client_role, args.rv, args.watchers, args.expect, args.first, args.sample_every, credentials))
        return 0
    if args.http2 and (args.kubeconfig is None or args.client != "go"):
        parser.error("--http2 needs --kubeconfig (an HTTPS server) and --client go (aiohttp speaks HTTP/1.1 only)")
    if args.kubeconfig is None:
        if args.server_pid or args.context:
            parser.error("--server-pid and --context go with --kubeconfig (without it, this script starts the server it measures)")
    else:
        for given, name in ((args.proxy_shard, "--proxy-shard"), (args.profile, "--profile"), (args.server_cpus, "--server-cpus")):
            if given:
                parser.error(f"{name} is for the server this script starts; with --kubeconfig it measures a server started elsewhere")
        if args.in_process:
            parser.error("--in-process measures vwproxy's view in this process; with --kubeconfig leave it out")
        args.in_process = 0
        for pid in args.server_pid:
            if not Path(f"/proc/{pid}/stat").exists():
                parser.error(f"--server-pid {pid}: no such process on this machine")
        try:
            args.target = External(args.kubeconfig, args.context, args.http2)
        except HarnessError as exc:
            parser.error(str(exc))

    def pick(value: Any, default: Any, small: Any) -> Any:
        return value if value is not None else (small if args.quick else default)

    args.watchers = pick(args.watchers, 1000, 20)
    args.rate = pick(args.rate, 1000.0, 50.0)
    args.seconds = pick(args.seconds, 60.0, 2.0)
    args.client_procs = pick(args.client_procs, 4 if args.client == "python" else 1, 2)
    args.workspaces = pick(args.workspaces, 10, 2)
    args.objects = pick(args.objects, 100, 5)
    args.in_process = pick(args.in_process, 2000, 100)
    for name in ("watchers", "rate", "seconds", "client_procs", "workspaces", "objects", "writers", "sample_every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.profile is not None:
        args.profile = args.profile.resolve()
    if args.server_cpus is not None:
        mine = os.sched_getaffinity(0)
        try:
            args.server_cpus = _cpu_list(args.server_cpus)
        except ValueError:
            parser.error(f"--server-cpus {args.server_cpus!r}: a CPU list such as 1 or 0,2 or 2-3")
        args.other_cpus = mine - args.server_cpus
        if not args.server_cpus <= mine or not args.other_cpus:
            parser.error(f"--server-cpus {sorted(args.server_cpus)}: must be some, not all, of the CPUs this process may use, {sorted(mine)}")
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(["python", "benchmarks/fanout_bench.py", *argv])
    # A server elsewhere (--kubeconfig) may refuse the credentials or not answer: one line, no traceback.
    return run_and_report(run(args, command), command, (BenchError, HarnessError, aiohttp.ClientError), _STARTED)


if __name__ == "__main__":
    sys.exit(main())
