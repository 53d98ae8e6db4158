#!/usr/bin/env python3
"""Benchmark of the APIExport virtual workspace (the VW) as users run it: `vwproxy serve` in its own process.

The proxy is `python -m vwproxy.cli serve --config <generated folder> --data-dir <tmp> --port <free>
--log-level warning` (uvicorn with uvloop + httptools, one event loop). The generated config is the
example's provider export (`20-provider.yaml`: widgets.example.dev in `root:provider`) plus N
consumer workspaces `root:ws-XXXX`, each with an APIBinding to it; the widgets are created over
HTTP through the front once the bindings are Ready. The client is aiohttp on a uvloop event loop
in this process, over HTTP/1.1 keep-alive connections. In one run it measures:

  (a) the wildcard list through the VW (`<VW URL>/clusters/*/apis/example.dev/v1alpha1/widgets`)
      vs a client listing the N workspaces itself, concurrently over 16 keep-alive connections
      (`GET /clusters/root:ws-XXXX/apis/example.dev/v1alpha1/widgets` each) and merging; the
      runs are interleaved, medians are compared;
  (b) the VW list time as a ratio to `orjson.dumps` of the same items, timed in the same run;
  (c) watch fan-in: a VW wildcard watcher and direct per-workspace watchers are open while K
      merge patches (a counter in a label) are made over the N workspaces by 8 clients at a
      fixed rate; per change, the delay from the write's response to the event's arrival at
      each watcher, matched by (kcp.io/cluster, name, counter); p50/p99;
  (d) the proxy's memory per widget: RSS after the bindings, after creating the widgets (the
      embedded shard holds them) and after the first VW request (which builds the view), per
      widget, next to a widget's JSON size;
  (e1) scale on the embedded shard: S workspaces x 10 widgets; time from process start to all
      bindings Ready, then a restart on the same data after a clean stop: time from process start
      to a synced view (the VW wildcard list returns every widget), RSS, a new binding's engagement;
      then a SIGKILL and the same start again (what a crash leaves);
  (e2) scale over B separate backend processes (`python -m vwproxy.cli shard --token …`, one
      workspace each, declared in backends.yaml, `vwproxy.dev/backend` on the Workspace): the
      same two times and the proxy's RSS.

    python benchmarks/vw_bench.py [--workspaces N] [--objects M] [--changes K] [--scale-workspaces S]
                                  [--backends B] [--skip-scale] [--profile DIR] [--quick]

Exits 1 if a request fails, a phase does not converge within its bounded wait, or a watcher did
not receive every change. Timings are never judged. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from ndjson import body_with_first_byte, watch_events  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)
from running import keep_or_remove, run_and_report  # noqa: E402
from procstats import ProcessStats, Results  # noqa: E402

WIDGETS = "/apis/example.dev/v1alpha1"
KCP = "/apis/apis.kcp.io/v1alpha2"
READY_TIMEOUT = 30.0  # one server process accepting connections (more under load: see start())
REQUEST_TIMEOUT = 120.0
DELIVERY_TIMEOUT = 30.0
BACKEND_TOKEN = "vw-bench-backend-token-5e1f"
JSON = {"content-type": "application/json"}
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
SEQ_LABEL = "bench-seq"
WRITERS = 8


class BenchError(Exception):
    pass




# -- processes ------------------------------------------------------------------------------

_STARTED: list[subprocess.Popen[bytes]] = []  # every child, for the last-resort clean-up in main()


_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    """A loopback port free now and not handed out before in this run (100 backends start at once)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _child_env() -> dict[str, str]:
    # The proxy talks to loopback backends: no HTTP proxy from the environment may get in between.
    return {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}


class Process(ProcessStats):
    """A `python -m vwproxy.cli …` child: start, readiness, RSS and CPU from /proc, stop."""

    def __init__(self, args: list[str], log_path: Path, port: int | None = None, profile: Path | None = None) -> None:
        self.port = port or _free_port()
        self.args = [*args, "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
        self.cmd = [*prefix, "-m", "vwproxy.cli", *self.args]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.cpus: set[int] | None = None  # the CPUs it may run on (all when None)
        # uvicorn re-raises the SIGTERM it handled, which ends the process before cProfile writes
        # its file; SIGINT surfaces as KeyboardInterrupt, and cProfile writes the file on the way out.
        self.stop_signal = signal.SIGINT if profile else signal.SIGTERM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_child_env())
        _STARTED.append(self.proc)
        if self.cpus is not None:
            # At once, while the interpreter starts: the threads it makes later inherit the set.
            os.sched_setaffinity(self.proc.pid, self.cpus)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float) -> float:
        """Seconds from spawn until /readyz answers 200 (bounded)."""
        assert self.proc is not None
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.args[0]} on port {self.port} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                async with session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    ready = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ready = False
            if ready:
                # Another program may have taken the port meanwhile and answered for us: the
                # process must still be running once its own bind would have failed.
                seconds = time.perf_counter() - self.started_at
                await asyncio.sleep(0.2)
                if self.proc.poll() is None:
                    return seconds
                continue  # reported at the top of the loop
            await asyncio.sleep(0.05)
        raise BenchError(f"{self.url} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def address_in_use(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None and "address already in use" in self.log_tail().lower()

    def respawn_elsewhere(self) -> None:
        """Start again on another free port (after losing a race for the first one)."""
        self.port = _free_port()
        self.args[self.args.index("--port") + 1] = str(self.port)
        self.cmd[self.cmd.index("--port") + 1] = str(self.port)
        self.spawn()

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB; a process that died is an error, not a reading."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"{self.args[0]} on port {self.port} exited with {self.proc.returncode}:\n{self.log_tail()}")
        return super().rss_kib()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def stop_all(processes: list[Process], timeout: float = 15.0) -> None:
    """SIGTERM every process first, then wait for each (bounded), then SIGKILL what is left."""
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + timeout
    for p in processes:
        if p.proc is None:
            continue
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(10)


def serve_process(config: Path, data_dir: Path, log_path: Path, profile: Path | None, port: int | None = None, extra: Sequence[str] = ()) -> Process:
    # Open mode (plain HTTP, no authentication): this measures the views and the read path; what
    # authentication adds per request is measured in tests/test_auth_* (microseconds, cached).
    return Process(["serve", "--insecure-open", "--config", str(config), "--data-dir", str(data_dir), *extra], log_path, port, profile)


def make_join_secrets(data_dir: Path) -> None:
    """What a proxy shard copies from its control plane's data dir (`--join-secrets`): the CA, the
    ServiceAccount signing key and the admin token. A control plane in open mode makes none."""
    from vwproxy.auth.keys import load_or_create_signing_key
    from vwproxy.auth.tls import ensure_admin_token, ensure_serving_certificate

    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_serving_certificate(data_dir, ["127.0.0.1"])
    ensure_admin_token(data_dir)
    load_or_create_signing_key(data_dir)


# -- the generated config -------------------------------------------------------------------


def ws_name(i: int) -> str:
    return f"ws-{i:04d}"


def backend_name(i: int) -> str:
    return f"b-{i:03d}"


def write_config(folder: Path, workspaces: list[str], backends: dict[str, str] | None = None) -> None:
    """The example's provider export, the workspaces, one APIBinding each; with `backends`
    ({workspace: backend URL}) a backends.yaml and the `vwproxy.dev/backend` annotations."""
    folder.mkdir(parents=True)
    provider = resources.files("vwproxy") / "data" / "example" / "20-provider.yaml"
    (folder / "20-provider.yaml").write_text(provider.read_text())
    names = {ws: backend_name(i) for i, ws in enumerate(workspaces)} if backends else {}
    docs: list[Any] = [{"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "provider"}}]
    for ws in workspaces:
        md: dict[str, Any] = {"name": ws}
        if ws in names:
            md["annotations"] = {"vwproxy.dev/backend": names[ws]}
        docs.append({"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": md})
    (folder / "10-workspaces.yaml").write_text("---\n".join(json.dumps(d) + "\n" for d in docs))
    bindings = [
        {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding",
         "metadata": {"name": "widgets", "annotations": {"kcp.io/path": f"root:{ws}"}},
         "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}}
        for ws in workspaces
    ]
    (folder / "30-bindings.yaml").write_text("---\n".join(json.dumps(d) + "\n" for d in bindings))
    if backends:
        (folder / "backend.token").write_text(BACKEND_TOKEN + "\n")
        declared = [
            {"apiVersion": "vwproxy.dev/v1alpha1", "kind": "Backend", "metadata": {"name": names[ws]},
             "spec": {"url": f"{url}/clusters/root", "tokenFile": "backend.token"}}
            for ws, url in backends.items()
        ]
        (folder / "backends.yaml").write_text("---\n".join(json.dumps(d) + "\n" for d in declared))


def widget(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "example.dev/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": f"w-{i:05d}", "labels": {"app": "bench", SEQ_LABEL: "0"}},
        "spec": {"size": i % 10 + 1, "color": ("red", "green", "blue", "yellow")[i % 4]},
    }


# -- HTTP helpers ---------------------------------------------------------------------------


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT), skip_auto_headers=["User-Agent"])


async def _expect(resp: aiohttp.ClientResponse, status: int | tuple[int, ...], what: str) -> bytes:
    body = await resp.read()
    wanted = (status,) if isinstance(status, int) else status
    if resp.status not in wanted:
        raise BenchError(f"{what}: HTTP {resp.status} (wanted {status}): {body[:300]!r}")
    return body


class NotYet(str):
    """What a check of `eventually` returns while it is not done: what it saw, false as a condition
    (a plain string would be true and end the wait at once)."""

    def __bool__(self) -> bool:
        return False


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (bounded); returns that. A check says what it
    saw meanwhile with a `NotYet`, quoted when the time runs out."""
    deadline = time.perf_counter() + timeout
    last: Any = None
    while time.perf_counter() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}; last saw {str(last)[:300]}")


async def wait_bindings_ready(session: aiohttp.ClientSession, base: str, expected: int, timeout: float) -> None:
    async def ready() -> bool | str:
        async with session.get(f"{base}/clusters/*{KCP}/apibindings") as r:
            items = orjson.loads(await _expect(r, 200, "list APIBindings"))["items"]
        count = sum(1 for b in items if any(c.get("type") == "Ready" and c.get("status") == "True" for c in (b.get("status") or {}).get("conditions") or []))
        return count >= expected or NotYet(f"{count}/{expected} Ready")

    await eventually(ready, f"{expected} APIBindings Ready", timeout, 0.2)


async def vw_url(session: aiohttp.ClientSession, base: str, timeout: float) -> str:
    async def url() -> str:
        async with session.get(f"{base}/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets") as r:
            if r.status != 200:
                return ""
            endpoints = (orjson.loads(await r.read()).get("status") or {}).get("endpoints") or []
        return str(endpoints[0]["url"]) if endpoints else ""

    found: str = await eventually(url, "the endpoint slice's URL", timeout)
    return f"{found}/clusters/*{WIDGETS}/widgets"


async def create_widgets(base: str, workspaces: list[str], per_workspace: int, clients: int) -> float:
    jobs = [(ws, i) for ws in workspaces for i in range(per_workspace)]

    async def worker(session: aiohttp.ClientSession, j: int) -> None:
        for ws, i in jobs[j::clients]:
            async with session.post(f"{base}/clusters/root:{ws}{WIDGETS}/namespaces/default/widgets", data=orjson.dumps(widget(i)), headers=JSON) as r:
                await _expect(r, 201, f"create widget {i} in root:{ws}")

    async with _session(clients) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, j) for j in range(clients)))
        return time.perf_counter() - started


async def wait_synced_view(session: aiohttp.ClientSession, base: str, expected: int, timeout: float) -> tuple[float, str]:
    """Poll until the VW wildcard list holds `expected` widgets; (perf_counter then, the list URL).

    Each poll is a one-item page (`limit=1`: the item and `remainingItemCount`), so that the
    client decoding 100,000 widgets per poll does not set the resolution; once it says all are
    there, one full list checks that they are.
    """
    url = await vw_url(session, base, timeout)

    async def synced() -> bool | str:
        async with session.get(url, params={"limit": "1"}) as r:
            page = orjson.loads(await _expect(r, 200, "VW wildcard list"))
        count = len(page["items"]) + int(page["metadata"].get("remainingItemCount") or 0)
        return count >= expected or NotYet(f"{count}/{expected} widgets")  # (e1) with --scale-data: plus the w-new of earlier runs

    await eventually(synced, f"a VW list of {expected} widgets", timeout, 0.02)
    synced_at = time.perf_counter()
    async with session.get(url) as r:
        count = len(orjson.loads(await _expect(r, 200, "VW wildcard list"))["items"])
    if count < expected:
        raise BenchError(f"the VW's pages said {expected} widgets, its full list has {count}")
    return synced_at, url


# -- (a) and (b): lists ---------------------------------------------------------------------


async def timed_vw_list(session: aiohttp.ClientSession, url: str) -> tuple[float, float, bytes, float, float]:
    """(seconds to the whole body, seconds to the decoded list, body, seconds to the response
    headers, seconds to the first byte of the body)."""
    started = time.perf_counter()
    async with session.get(url) as r:
        headers = time.perf_counter()
        body, first = await body_with_first_byte(r)
        if r.status != 200:
            raise BenchError(f"VW wildcard list: HTTP {r.status}: {body[:300]!r}")
    fetched = time.perf_counter()
    orjson.loads(body)
    return fetched - started, time.perf_counter() - started, body, headers - started, (first or fetched) - started


async def timed_direct_lists(session: aiohttp.ClientSession, base: str, workspaces: list[str]) -> tuple[float, float, dict[str, bytes]]:
    """Every workspace's list concurrently: (seconds to all bodies, seconds to the merged items, bodies)."""
    started = time.perf_counter()

    async def one(ws: str) -> tuple[str, bytes]:
        async with session.get(f"{base}/clusters/root:{ws}{WIDGETS}/widgets") as r:
            return ws, await _expect(r, 200, f"list root:{ws}")

    bodies = dict(await asyncio.gather(*(one(ws) for ws in workspaces)))
    fetched = time.perf_counter()
    merged: list[Any] = []
    for body in bodies.values():
        merged.extend(orjson.loads(body)["items"])
    return fetched - started, time.perf_counter() - started, bodies


def timed_dumps(items: list[Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        orjson.dumps(items)
        times.append(time.perf_counter() - started)
    return times


# -- (c): watch fan-in ----------------------------------------------------------------------


@dataclass
class FanIn:
    acks: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (cluster, name, counter) → response time
    write_latency: list[float] = field(default_factory=list)
    vw: dict[tuple[str, str, str], float] = field(default_factory=dict)  # first arrival per change
    direct: dict[tuple[str, str, str], float] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=lambda: {"vw": 0, "direct": 0})
    other: list[str] = field(default_factory=list)
    watched_clusters: set[str] = field(default_factory=set)  # the workspaces with a direct watcher
    write_seconds: float = 0.0


async def _read_watch(session: aiohttp.ClientSession, url: str, params: dict[str, str], into: dict[tuple[str, str, str], float],
                      fan: FanIn, which: str, opened: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with session.get(url, params=params, timeout=timeout) as r:
        if r.status != 200:
            raise BenchError(f"watch {url}: HTTP {r.status}: {(await r.read())[:300]!r}")
        opened.set()
        async for now, line, event in watch_events(r):
            kind = event.get("type")
            if kind == "BOOKMARK":
                continue
            if kind != "MODIFIED":
                fan.other.append(f"{which} {kind}: {line[:200]!r}")
                if kind == "ERROR":
                    return
                continue
            md = event["object"]["metadata"]
            key = ((md.get("annotations") or {}).get("kcp.io/cluster", ""), md["name"], (md.get("labels") or {}).get(SEQ_LABEL, ""))
            if key in into:
                fan.duplicates[which] += 1
            else:
                into[key] = now


async def watch_fan_in(base: str, vw_list_url: str, vw_rv: str, direct_rvs: dict[str, str], watched: list[str],
                       workspaces: list[str], per_workspace: int, changes: int, rate: float) -> FanIn:
    fan = FanIn()
    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=["User-Agent"]) as watch_session, _session(WRITERS) as session:
        try:
            events = []
            params = {"watch": "true", "resourceVersion": vw_rv, "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
            ev = asyncio.Event()
            events.append(ev)
            tasks.append(asyncio.create_task(_read_watch(watch_session, vw_list_url, params, fan.vw, fan, "vw", ev)))
            for ws in watched:
                ev = asyncio.Event()
                events.append(ev)
                params = {"watch": "true", "resourceVersion": direct_rvs[ws], "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
                tasks.append(asyncio.create_task(_read_watch(watch_session, f"{base}/clusters/root:{ws}{WIDGETS}/widgets", params, fan.direct, fan, "direct", ev)))
            async def all_opened() -> None:
                for e in events:
                    await e.wait()

            waiting = asyncio.create_task(all_opened())
            await asyncio.wait([waiting, *tasks], timeout=30, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            for t in tasks:
                failure = t.exception() if t.done() else None
                if failure is not None:
                    raise failure
            if not all(e.is_set() for e in events):
                raise BenchError(f"only {sum(e.is_set() for e in events)}/{len(events)} watches opened within 30 s")

            started = time.perf_counter()

            async def writer(j: int) -> None:
                for u in range(j, changes, WRITERS):
                    if rate > 0:
                        delay = started + u / rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    ws = workspaces[u % len(workspaces)]
                    name = widget((u // len(workspaces)) % per_workspace)["metadata"]["name"]
                    sent = time.perf_counter()
                    patch = orjson.dumps({"metadata": {"labels": {SEQ_LABEL: str(u + 1)}}})
                    async with session.patch(f"{base}/clusters/root:{ws}{WIDGETS}/namespaces/default/widgets/{name}", data=patch, headers=MERGE_PATCH) as r:
                        body = await _expect(r, 200, f"patch {name} in root:{ws}")
                    acked = time.perf_counter()
                    md = orjson.loads(body)["metadata"]
                    cluster = md["annotations"]["kcp.io/cluster"]
                    fan.acks[(cluster, name, str(u + 1))] = acked
                    fan.write_latency.append(acked - sent)
                    if ws in watched:
                        fan.watched_clusters.add(cluster)

            await asyncio.gather(*(writer(j) for j in range(WRITERS)))
            fan.write_seconds = time.perf_counter() - started

            def delivered() -> bool:
                want_direct = [k for k in fan.acks if k[0] in fan.watched_clusters]
                return all(k in fan.vw for k in fan.acks) and all(k in fan.direct for k in want_direct)

            deadline = time.perf_counter() + DELIVERY_TIMEOUT
            while not delivered() and time.perf_counter() < deadline and not all(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # duplicates or errors would arrive now
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
    return fan


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# -- the run --------------------------------------------------------------------------------


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("vwproxy", "uvicorn", "uvloop", "httptools", "starlette", "httpx", "orjson", "aiohttp"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} ?")
    import sqlite3

    return ", ".join(parts) + f", SQLite {sqlite3.sqlite_version}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


class CpuMeter:
    def __init__(self, server: Process) -> None:
        self.server = server
        self.server_start = server.cpu_seconds()
        self.client_start = time.process_time()

    def note(self) -> str:
        return f"server CPU {self.server.cpu_seconds() - self.server_start:.2f} s, client CPU {time.process_time() - self.client_start:.2f} s"


def _profile_path(args: argparse.Namespace, name: str) -> Path | None:
    if not args.profile:
        return None
    folder: Path = args.profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.prof"


async def main_phases(args: argparse.Namespace, tmp: Path, results: Results, owned: list[Process]) -> None:
    """(a) to (d) on N workspaces x M widgets."""
    n, m = args.workspaces, args.objects
    total = n * m
    workspaces = [ws_name(i) for i in range(n)]
    write_config(tmp / "config", workspaces)
    server = serve_process(tmp / "config", tmp / "data", tmp / "serve.log", _profile_path(args, "serve"))
    owned.append(server)
    print(f"server:  {shlex.join(server.cmd)}")
    async with _session(16) as session:
        server.spawn()
        ready = await server.wait_ready(session, READY_TIMEOUT + n * 0.05)
        await wait_bindings_ready(session, server.url, n, 60 + n * 0.1)
        bound = time.perf_counter() - server.started_at
        list_url = await vw_url(session, server.url, 30)
        results.add("workspaces bound", f"{n}", f"ready in {ready:.2f} s, all APIBindings Ready {bound:.2f} s after start")
        rss_bound, _ = server.rss_kib()

        cpu = CpuMeter(server)
        secs = await create_widgets(server.url, workspaces, m, WRITERS)
        results.add("widgets created", f"{total}", f"{total / secs:,.0f} widgets/s by {WRITERS} clients through the front, {secs:.2f} s; {cpu.note()}")
        rss_created, _ = server.rss_kib()

        # The first VW request builds the view from the shard; limit=1 keeps the response small.
        started = time.perf_counter()
        async with session.get(list_url, params={"limit": "1"}) as r:
            await _expect(r, 200, "first VW list (limit=1)")
        first_secs = time.perf_counter() - started
        rss_view, _ = server.rss_kib()

        # (a) and (b): interleaved runs, after one warm-up of each.
        # The client's garbage collector is off while a run is timed (decoding 10,000 objects
        # would otherwise trigger collections of this process's heap in the middle of a run).
        vw_fetch: list[float] = []
        vw_decoded: list[float] = []
        vw_headers: list[float] = []
        vw_first: list[float] = []
        shard_first: list[float] = []
        direct_fetch: list[float] = []
        direct_merged: list[float] = []
        shard_fetch: list[float] = []
        connections = args.direct_connections
        vw_body = b""
        direct_bodies: dict[str, bytes] = {}
        shard_url = f"{server.url}/clusters/*{WIDGETS}/widgets"
        dumps_times: list[float] = []
        async with _session(1) as vw_session, _session(connections) as direct_session:
            # (b)'s reference items: the warm-up list's, decoded once; each run below times one
            # `orjson.dumps` of them right after its VW list, so both see the machine alike.
            reference_items = orjson.loads((await timed_vw_list(vw_session, list_url))[2])["items"]
            await timed_direct_lists(direct_session, server.url, workspaces)
            await timed_vw_list(vw_session, shard_url)
            cpu = CpuMeter(server)
            for _ in range(args.list_runs):
                gc.collect()
                gc.disable()
                try:
                    f, d, vw_body, h, b = await timed_vw_list(vw_session, list_url)
                    vw_fetch.append(f)
                    vw_decoded.append(d)
                    vw_headers.append(h)
                    vw_first.append(b)
                    dumps_times += timed_dumps(reference_items, 1)
                    gc.collect()
                    f, d, direct_bodies = await timed_direct_lists(direct_session, server.url, workspaces)
                    direct_fetch.append(f)
                    direct_merged.append(d)
                    gc.collect()
                    f, _, _, _, b = await timed_vw_list(vw_session, shard_url)
                    shard_fetch.append(f)
                    shard_first.append(b)
                finally:
                    gc.enable()
            list_cpu = cpu.note()
        doc = orjson.loads(vw_body)
        items = doc["items"]
        if len(items) != total:
            raise BenchError(f"the VW wildcard list returned {len(items)} widgets, expected {total}")
        direct_count = sum(len(orjson.loads(b)["items"]) for b in direct_bodies.values())
        if direct_count != total:
            raise BenchError(f"the direct lists returned {direct_count} widgets, expected {total}")
        vw_med, vw_dec_med = statistics.median(vw_fetch), statistics.median(vw_decoded)
        d_med, d_merged_med = statistics.median(direct_fetch), statistics.median(direct_merged)
        direct_mb = sum(len(b) for b in direct_bodies.values()) / 1e6
        results.add("(a) VW wildcard list (median)", f"{_ms(vw_med)} ms",
                    f"{len(items)} items, {len(vw_body) / 1e6:.2f} MB; runs {', '.join(_ms(t) for t in vw_fetch)} ms; "
                    f"response headers after {_ms(statistics.median(vw_headers))} ms; decoded too: {_ms(vw_dec_med)} ms")
        results.add("(a) VW list: first body byte (median)", f"{_ms(statistics.median(vw_first))} ms",
                    f"{statistics.median(vw_first) / vw_med:.2f} of the whole list's time; runs {', '.join(_ms(t) for t in vw_first)} ms")
        results.add("(a) direct workspace lists (median)", f"{_ms(d_med)} ms",
                    f"{n} lists over {connections} connections, {direct_mb:.2f} MB; runs {', '.join(_ms(t) for t in direct_fetch)} ms; decoded and merged too: {_ms(d_merged_med)} ms")
        results.add("(a) shard wildcard list, for reference (median)", f"{_ms(statistics.median(shard_fetch))} ms",
                    f"`/clusters/*{WIDGETS}/widgets` through the front: the embedded shard's own wildcard list of the same widgets; runs {', '.join(_ms(t) for t in shard_fetch)} ms; first body byte after {_ms(statistics.median(shard_first))} ms")
        results.add("(a) proxy / direct ratio", f"{vw_med / d_med:.2f}x", f"bodies read; decoded/merged: {vw_dec_med / d_merged_med:.2f}x; target <= 0.5x; {list_cpu} over all list runs")
        if orjson.dumps(reference_items) != orjson.dumps(items):
            raise BenchError("the VW wildcard list changed between the warm-up and the timed runs")
        dumps_med = statistics.median(dumps_times)
        pair_ratios = [f / d for f, d in zip(vw_fetch, dumps_times)]
        results.add("(b) orjson.dumps(items) (median)", f"{_ms(dumps_med)} ms",
                    f"same items, in this process, one run right after each VW list; runs {', '.join(_ms(t) for t in dumps_times)} ms")
        results.add("(b) VW list / orjson.dumps ratio", f"{vw_med / dumps_med:.2f}x",
                    f"target <= 1.5x (issue 14); run by run {', '.join(f'{r:.2f}' for r in pair_ratios)}, median {statistics.median(pair_ratios):.2f}x")

        # (d) memory per widget.
        sizes = [len(orjson.dumps(i)) for i in items]
        per_shard = (rss_created - rss_bound) * 1024 / total
        per_view = (rss_view - rss_created) * 1024 / total
        avg = statistics.mean(sizes)
        results.add("(d) widget JSON size (mean)", f"{avg:,.0f} bytes", f"as the VW returns it (with managedFields and kcp.io/cluster); min {min(sizes)}, max {max(sizes)}")
        results.add("(d) proxy RSS per widget, shard", f"{per_shard / 1024:.2f} KiB", f"{per_shard / avg:.1f}x the JSON; RSS {_mib(rss_bound)} -> {_mib(rss_created)} creating {total} widgets (stored + watch history)")
        results.add("(d) proxy RSS per widget, view", f"{per_view / 1024:.2f} KiB", f"{per_view / avg:.1f}x the JSON; RSS -> {_mib(rss_view)} when the first VW request built the view ({first_secs * 1000:.0f} ms)")

        # (c) watch fan-in.
        watched = workspaces[: min(n, args.direct_watchers)]
        direct_rvs = {ws: str(orjson.loads(direct_bodies[ws])["metadata"]["resourceVersion"]) for ws in watched}
        cpu = CpuMeter(server)
        fan = await watch_fan_in(server.url, list_url, str(doc["metadata"]["resourceVersion"]), direct_rvs, watched, workspaces, m, args.changes, args.change_rate)
        rate_note = f"{args.change_rate:,.0f}/s asked" if args.change_rate > 0 else "as fast as possible"
        results.add("(c) changes committed", f"{len(fan.acks)}",
                    f"merge patches by {WRITERS} clients over {n} workspaces, {rate_note}, {len(fan.acks) / fan.write_seconds:,.0f}/s done; "
                    f"write latency p50 {_ms(_pct(fan.write_latency, 50))} ms, p99 {_ms(_pct(fan.write_latency, 99))} ms; {cpu.note()}")
        vw_delays = [fan.vw[k] - t for k, t in fan.acks.items() if k in fan.vw]
        want_direct = {k: t for k, t in fan.acks.items() if k[0] in fan.watched_clusters}
        direct_delays = [fan.direct[k] - t for k, t in want_direct.items() if k in fan.direct]
        results.add("(c) VW watcher delay p50 / p99", f"{_ms(_pct(vw_delays, 50))} / {_ms(_pct(vw_delays, 99))} ms",
                    f"from the write's response to the event at the VW wildcard watcher; max {_ms(max(vw_delays, default=float('nan')))} ms; {sum(d < 0 for d in vw_delays)} arrived before the response")
        results.add("(c) direct watcher delay p50 / p99", f"{_ms(_pct(direct_delays, 50))} / {_ms(_pct(direct_delays, 99))} ms",
                    f"same, at the per-workspace watchers ({len(watched)} open); max {_ms(max(direct_delays, default=float('nan')))} ms; {sum(d < 0 for d in direct_delays)} arrived before the response")
        complete = len(vw_delays) == len(fan.acks) == args.changes and len(direct_delays) == len(want_direct) and not fan.other and not any(fan.duplicates.values())
        results.add("(c) delivered", f"VW {len(vw_delays)}/{len(fan.acks)}, direct {len(direct_delays)}/{len(want_direct)} {'OK' if complete else 'MISMATCH'}",
                    f"duplicates VW {fan.duplicates['vw']}, direct {fan.duplicates['direct']}; other events {len(fan.other)}")
        if fan.other:
            print("  other watch events:", *fan.other[:5], sep="\n    ")
        if not complete:
            results.ok = False
        rss, hwm = server.rss_kib()
        results.add("proxy RSS after the load", _mib(rss), f"peak (VmHWM) {_mib(hwm)}")
    server.stop()


async def scale_embedded(args: argparse.Namespace, tmp: Path, results: Results, owned: list[Process]) -> None:
    """(e1) S workspaces on the embedded shard, P widgets each; cold start to a synced view."""
    s, p = args.scale_workspaces, args.scale_objects
    total = s * p
    workspaces = [ws_name(i) for i in range(s)]
    generous = 60 + s * 0.5
    # --scale-data keeps the first start's data dir (and config) for later runs, which then go
    # straight to the restart: building 10,000 workspaces takes minutes, the restart seconds.
    where = args.scale_data or tmp
    config, data, log_path = where / "e1-config", where / "e1-data", where / "e1.log"
    prepared = where / "e1-prepared"
    async with _session(16) as session:
        marker = prepared.read_text().split() if prepared.exists() else []
        if marker[:2] == [str(s), str(p)]:
            port = int(marker[2])
            results.add("(e1) first start", "skipped", f"the data of {s} workspaces x {p} widgets in {where} was prepared by an earlier run")
        else:
            if where.exists() and args.scale_data:
                shutil.rmtree(config, ignore_errors=True)
                shutil.rmtree(data, ignore_errors=True)
            where.mkdir(parents=True, exist_ok=True)
            write_config(config, workspaces)
            server = serve_process(config, data, log_path, _profile_path(args, "e1-first"))
            owned.append(server)
            server.spawn()
            ready = await server.wait_ready(session, generous)
            await wait_bindings_ready(session, server.url, s, generous)
            bound = time.perf_counter() - server.started_at
            rss_bound, _ = server.rss_kib()
            results.add("(e1) first start: all bindings Ready", f"{bound:.1f} s", f"{s} workspaces + bindings seeded from the config; ready (listening) after {ready:.1f} s; RSS {_mib(rss_bound)}")
            secs = await create_widgets(server.url, workspaces, p, WRITERS)
            synced_at, _ = await wait_synced_view(session, server.url, total, generous)
            rss, _ = server.rss_kib()
            results.add("(e1) widgets created", f"{total}", f"{total / secs:,.0f}/s through the front; view synced {(synced_at - server.started_at):.1f} s after start; RSS {_mib(rss)}")
            server.stop()
            port = server.port
            prepared.write_text(f"{s} {p} {port}\n")
        # The same data and config again: a cold start after the clean stop above (or the one
        # that ended an earlier run); then, after the new bindings were written, a SIGKILL and a
        # start again: what a crash leaves (writes the control plane never saw settle).
        port = await _restart(args, server_port=port, config=config, data=data, log_path=log_path, prepared=prepared,
                              session=session, results=results, owned=owned, total=total, generous=generous, after="clean stop")
        await _restart(args, server_port=port, config=config, data=data, log_path=log_path, prepared=prepared,
                       session=session, results=results, owned=owned, total=total, generous=generous, after="SIGKILL")


async def _restart(args: argparse.Namespace, *, server_port: int, config: Path, data: Path, log_path: Path, prepared: Path,
                   session: aiohttp.ClientSession, results: Results, owned: list[Process], total: int, generous: float, after: str) -> int:
    """(e1) one measured start on the prepared data: to a synced VW list, RSS; after a clean stop
    also the new-binding engagement. Ends with SIGKILL when the next start is the crash one."""
    s, p = args.scale_workspaces, args.scale_objects
    port = server_port
    # A restart keeps its address (the workspaces' URLs and the endpoint slice name it): on
    # the first start's port, unless another program holds it now.
    tag = "e1-restart" if after == "clean stop" else "e1-restart-after-kill"
    server = serve_process(config, data, log_path, _profile_path(args, tag), port if _port_free(port) else None)
    owned.append(server)
    server.spawn()
    ready = await server.wait_ready(session, generous)
    if server.port != port:
        port = server.port
        prepared.write_text(f"{s} {p} {server.port}\n")  # the URLs now name this one
        results.add("(e1) restart on another port", f"{server.port}", f"port {server_port} of the first start was taken: the URLs in every workspace change")
    synced_at, list_url = await wait_synced_view(session, server.url, total, generous)
    rss, hwm = server.rss_kib()
    results.add(f"(e1) restart after {after}: start to synced view", f"{synced_at - server.started_at:.1f} s",
                f"{s} workspaces x {p} widgets; listening after {ready:.1f} s; server CPU {server.cpu_seconds():.1f} s")
    results.add(f"(e1) proxy RSS, synced after {after}", _mib(rss), f"peak (VmHWM) {_mib(hwm)}")
    if after == "clean stop":
        await new_binding(session, server, list_url, results, args.engagements)
        server.stop_signal = signal.SIGKILL  # the next start is the one after a crash
    server.stop()
    return port


async def new_binding(session: aiohttp.ClientSession, server: Process, list_url: str, results: Results, count: int) -> None:
    """(e1) engagement at scale: a new workspace binds the export while the VW has a wildcard
    watcher; per workspace, from the APIBinding's create response to the first create of a widget
    there that succeeds (the binding installed the CRD), and from that widget's create response to
    its ADDED event at the VW watcher (the view engaged the workspace and took its objects in)."""
    async with session.get(list_url, params={"limit": "1"}) as r:
        rv = orjson.loads(await _expect(r, 200, "VW list"))["metadata"]["resourceVersion"]
    added: dict[str, float] = {}
    arrived = asyncio.Event()
    opened = asyncio.Event()

    async def watch() -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with session.get(list_url, params={"watch": "true", "resourceVersion": rv}, timeout=timeout) as r:
            if r.status != 200:
                raise BenchError(f"VW watch: HTTP {r.status}: {(await r.read())[:300]!r}")
            opened.set()
            async for now, _, event in watch_events(r):
                md = (event.get("object") or {}).get("metadata") or {}
                if event.get("type") == "ADDED" and md.get("name") == "w-new":
                    added[str((md.get("annotations") or {}).get("kcp.io/cluster", ""))] = now
                    arrived.set()

    watcher = asyncio.create_task(watch())
    installed: list[float] = []
    engaged: list[float] = []
    try:
        await asyncio.wait_for(opened.wait(), DELIVERY_TIMEOUT)
        for k in range(count):
            ws = f"new-{os.getpid()}-{k}"
            async with session.post(f"{server.url}/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", data=orjson.dumps(
                    {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": ws}}), headers=JSON) as r:
                created = orjson.loads(await _expect(r, 201, f"create workspace {ws}"))

            async def phase() -> str:
                async with session.get(f"{server.url}/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/{ws}") as r:
                    return str((orjson.loads(await _expect(r, 200, f"get workspace {ws}")).get("status") or {}).get("phase") or "") == "Ready" and str(created)

            await eventually(phase, f"workspace {ws} Ready", DELIVERY_TIMEOUT, 0.01)
            binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "widgets"},
                       "spec": {"reference": {"export": {"path": "root:provider", "name": "widgets"}}}}
            async with session.post(f"{server.url}/clusters/root:{ws}{KCP}/apibindings", data=orjson.dumps(binding), headers=JSON) as r:
                await _expect(r, 201, f"create the APIBinding in root:{ws}")
            bound_at = time.perf_counter()
            body = orjson.dumps({**widget(0), "metadata": {"name": "w-new", "labels": {"app": "bench"}}})
            deadline = bound_at + DELIVERY_TIMEOUT
            while True:
                async with session.post(f"{server.url}/clusters/root:{ws}{WIDGETS}/namespaces/default/widgets", data=body, headers=JSON) as r:
                    status = r.status
                    made = orjson.loads(await r.read())
                if status == 201:
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"no widget could be created in root:{ws} {DELIVERY_TIMEOUT:.0f} s after its binding: HTTP {status}")
                await asyncio.sleep(0.002)
            made_at = time.perf_counter()
            cluster = made["metadata"]["annotations"]["kcp.io/cluster"]
            while cluster not in added:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), DELIVERY_TIMEOUT)
            installed.append(made_at - bound_at)
            engaged.append(added[cluster] - made_at)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    results.add("(e1) new binding: binding to CRD installed, p50 / max", f"{_ms(_pct(installed, 50))} / {_ms(max(installed))} ms",
                f"{count} new workspaces bound one after another: from the APIBinding's create response to the first widget create that succeeds (polled every 2 ms)")
    results.add("(e1) new binding: widget to VW watcher, p50 / max", f"{_ms(_pct(engaged, 50))} / {_ms(max(engaged))} ms",
                "from that widget's create response to its ADDED event at a VW wildcard watcher (the view engaged the workspace)")
    results.add("(e1) new binding engaged: binding to widget at VW, p50 / max",
                f"{_ms(_pct([a + b for a, b in zip(installed, engaged)], 50))} / {_ms(max(a + b for a, b in zip(installed, engaged)))} ms",
                "the two above together")


async def scale_backends(args: argparse.Namespace, tmp: Path, results: Results, owned: list[Process]) -> None:
    """(e2) B backend processes, one workspace each; start to a synced view, and RSS."""
    b, p = args.backends, args.scale_objects
    backends: list[Process] = []
    (tmp / "e2-backends").mkdir()
    started = time.perf_counter()
    for i in range(b):
        proc = Process(["shard", "--data-dir", str(tmp / "e2-backends" / backend_name(i)), "--token", BACKEND_TOKEN],
                       tmp / "e2-backends" / f"{backend_name(i)}.log")
        backends.append(proc)
        owned.append(proc)
        proc.spawn()
    async with _session(32) as session:
        async def until_ready(proc: Process) -> float:
            for _ in range(3):  # a port another program took between our check and the bind
                try:
                    return await proc.wait_ready(session, 60 + b * 2.0)
                except BenchError:
                    if not proc.address_in_use():
                        raise
                    proc.respawn_elsewhere()
            return await proc.wait_ready(session, 60 + b * 2.0)

        outcomes = await asyncio.gather(*(until_ready(proc) for proc in backends), return_exceptions=True)
        failed = [(proc, o) for proc, o in zip(backends, outcomes) if isinstance(o, BaseException)]
        if failed:
            for proc, o in failed[:3]:
                print(f"  backend on port {proc.port} failed: {o}")
            raise BenchError(f"{len(failed)} of {b} backend processes did not start; try fewer with --backends")
        up = time.perf_counter() - started
        rss_each = [proc.rss_kib()[0] for proc in backends]
        results.add("(e2) backend processes started", f"{b}", f"concurrently, all ready {up:.1f} s after the first spawn; RSS each {_mib(int(statistics.mean(rss_each)))} mean, {_mib(sum(rss_each))} together")

        workspaces = [f"bws-{i:03d}" for i in range(b)]
        write_config(tmp / "e2-config", workspaces, {ws: proc.url for ws, proc in zip(workspaces, backends)})
        total = b * p
        generous = 60 + b * 1.0
        server = serve_process(tmp / "e2-config", tmp / "e2-data", tmp / "e2.log", _profile_path(args, "e2-first"))
        owned.append(server)
        print(f"server:  {shlex.join(server.cmd)}")
        server.spawn()
        ready = await server.wait_ready(session, generous)
        await wait_bindings_ready(session, server.url, b, generous)
        bound = time.perf_counter() - server.started_at
        results.add("(e2) first start: all bindings Ready", f"{bound:.1f} s", f"{b} workspaces, each on its own backend (CRD installed there); listening after {ready:.1f} s")
        secs = await create_widgets(server.url, workspaces, p, WRITERS)
        synced_at, _ = await wait_synced_view(session, server.url, total, generous)
        results.add("(e2) widgets created", f"{total}", f"{total / secs:,.0f}/s through the front to the backends; view synced {synced_at - server.started_at:.1f} s after start")
        server.stop()
        server = serve_process(tmp / "e2-config", tmp / "e2-data", tmp / "e2.log", _profile_path(args, "e2-restart"))
        owned.append(server)
        server.spawn()
        ready = await server.wait_ready(session, generous)
        synced_at, _ = await wait_synced_view(session, server.url, total, generous)
        rss, hwm = server.rss_kib()
        results.add("(e2) restart: start to synced view", f"{synced_at - server.started_at:.1f} s",
                    f"{b} backends x {p} widgets, one reflector each; listening after {ready:.1f} s; server CPU {server.cpu_seconds():.1f} s")
        results.add("(e2) proxy RSS, synced", _mib(rss), f"peak (VmHWM) {_mib(hwm)}; the {b} backends hold the widgets")
        server.stop()
    stop_all(backends)


async def run(args: argparse.Namespace, command: str) -> Results:
    results = Results()
    tmp = Path(tempfile.mkdtemp(prefix="vwproxy-vwbench-"))
    owned: list[Process] = []
    print(f"command: {command}")
    print(f"client:  aiohttp {aiohttp.__version__} on {type(asyncio.get_running_loop()).__module__} loop, HTTP/1.1 keep-alive")
    print(f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"stack:   {_versions()}")
    print(f"load:    {args.workspaces} workspaces x {args.objects} widgets; {args.changes} changes at {args.change_rate:g}/s; {args.list_runs} list runs; "
          + ("scale phases skipped" if args.skip_scale else f"scale: {args.scale_workspaces} workspaces and {args.backends} backends x {args.scale_objects} widgets"))
    if args.profile:
        print(f"profile: the servers run under cProfile (slower); .prof files in {args.profile}")
    print("running:", flush=True)
    started = time.perf_counter()
    try:
        if not args.skip_main:
            await main_phases(args, tmp, results, owned)
        if not args.skip_scale:
            await scale_embedded(args, tmp, results, owned)
            if args.backends:
                await scale_backends(args, tmp, results, owned)
    finally:
        stop_all(owned)
        keep_or_remove(tmp, args.keep)
    print(f"the run took {time.perf_counter() - started:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=None, help="consumer workspaces for (a)-(d) (default 100; --quick: 4)")
    parser.add_argument("--objects", type=int, default=None, help="widgets per workspace for (a)-(d) (default 100; --quick: 10)")
    parser.add_argument("--changes", type=int, default=None, help="merge patches while the watchers are open (default 2000; --quick: 100)")
    parser.add_argument("--change-rate", type=float, default=500.0, help="changes per second asked of the writers, 0 for as fast as they go (default 500)")
    parser.add_argument("--direct-watchers", type=int, default=100, help="per-workspace watchers opened for comparison (default 100, at most --workspaces)")
    parser.add_argument("--direct-connections", type=int, default=16, help="connections of the client listing the workspaces itself (default 16)")
    parser.add_argument("--list-runs", type=int, default=None, help="interleaved list runs to take the medians of (default 7; --quick: 3)")
    parser.add_argument("--scale-workspaces", type=int, default=None, help="(e1) workspaces on the embedded shard (default 1000; --quick: 20)")
    parser.add_argument("--backends", type=int, default=None, help="(e2) separate backend processes, one workspace each (default 100; --quick: 3; 0 skips (e2))")
    parser.add_argument("--scale-objects", type=int, default=None, help="widgets per workspace in (e1) and (e2) (default 10; --quick: 5)")
    parser.add_argument("--skip-scale", action="store_true", help="skip (e1) and (e2)")
    parser.add_argument("--skip-main", action="store_true", help="skip (a)-(d)")
    parser.add_argument("--scale-data", type=Path, default=None, metavar="DIR",
                        help="keep (e1)'s config and data in DIR; a later run with the same sizes restarts on them instead of building them again")
    parser.add_argument("--engagements", type=int, default=None, help="(e1) new workspaces bound after the restart, one after another (default 5; --quick: 2)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="run every proxy under cProfile, writing DIR/<phase>.prof (timings are then not comparable)")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, data, logs)")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: int | None, default: int, small: int) -> int:
        return value if value is not None else (small if quick else default)

    args.workspaces = pick(args.workspaces, 100, 4)
    args.objects = pick(args.objects, 100, 10)
    args.changes = pick(args.changes, 2000, 100)
    args.list_runs = pick(args.list_runs, 7, 3)
    args.scale_workspaces = pick(args.scale_workspaces, 1000, 20)
    args.backends = pick(args.backends, 100, 3)
    args.scale_objects = pick(args.scale_objects, 10, 5)
    args.engagements = pick(args.engagements, 5, 2)
    if args.scale_data is not None:
        args.scale_data = args.scale_data.resolve()
    for name in ("workspaces", "objects", "changes", "list_runs", "scale_workspaces", "scale_objects", "engagements", "direct_watchers", "direct_connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.change_rate < 0:
        parser.error("--change-rate must not be negative")
    if args.profile is not None:
        args.profile = args.profile.resolve()
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(["python", "benchmarks/vw_bench.py", *argv])
    return run_and_report(run(args, command), command, BenchError, _STARTED)


if __name__ == "__main__":
    sys.exit(main())
