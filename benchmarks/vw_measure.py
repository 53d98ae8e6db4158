"""The four measurements of a virtual workspace, each against one `Target`:

  list   wildcard LIST latency, repeated for a time budget (headers, whole body, bytes, items);
  sync   startup sync: a watch-list (`sendInitialEvents=true`) from opening to the
         `k8s.io/initial-events-end` bookmark, repeated for a time budget;
  writes per write cluster, one object created and then patched (a counter in a label), paced
         over the budget: each write's round trip, and (fan-in) the delay from the write's
         response to its event on one wildcard watch, matched by (kcp.io/cluster, name, counter).

The harness's objects carry the label `vwbench-run`; they are deleted at the end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from benchmarks.ndjson import watch_events
from benchmarks.vw_target import HarnessError, Target, expect

RUN_LABEL = "vwbench-run"
SEQ_LABEL = "vwbench-seq"
CLUSTER_ANNOTATION = "kcp.io/cluster"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
MIN_RUNS = 3  # a median and a p90 need a few samples even when one run outlasts the budget
MAX_RUNS = 1000  # a tiny view lists in a millisecond: the budget would give tens of thousands of samples
SYNC_TIMEOUT = 60.0  # one watch-list of a large view to its bookmark
SYNC_SILENCE_TIMEOUT = 10.0  # no byte for this long: the server ignored sendInitialEvents (a plain watch waits for changes)
DELIVERY_TIMEOUT = 30.0  # the last event after the last write's response
WATCH_OPEN_TIMEOUT = 30.0  # the wildcard watch's response headers
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
JSON = {"content-type": "application/json"}


@dataclass
class ListSamples:
    seconds: list[float] = field(default_factory=list)  # request to whole body
    header_seconds: list[float] = field(default_factory=list)
    body_bytes: int = 0
    items: int = 0
    resource_version: str = ""
    clusters: list[str] = field(default_factory=list)  # in the order the list shows them


async def measure_list(session: aiohttp.ClientSession, target: Target, budget: float) -> ListSamples:
    out = ListSamples()
    url = target.wildcard_url()
    deadline = time.perf_counter() + budget
    while len(out.seconds) < MAX_RUNS and (len(out.seconds) < MIN_RUNS or time.perf_counter() < deadline):
        started = time.perf_counter()
        async with session.get(url) as r:
            headers = time.perf_counter()
            body = await expect(r, 200, f"wildcard LIST {url}")
        out.seconds.append(time.perf_counter() - started)
        out.header_seconds.append(headers - started)
        out.body_bytes = len(body)
    decoded: Any = orjson.loads(body)
    out.items = len(decoded.get("items") or [])
    out.resource_version = str((decoded.get("metadata") or {}).get("resourceVersion") or "")
    seen: dict[str, None] = {}
    for item in decoded.get("items") or []:
        seen.setdefault(str(((item.get("metadata") or {}).get("annotations") or {}).get(CLUSTER_ANNOTATION, "")), None)
    out.clusters = [c for c in seen if c]
    return out


@dataclass
class SyncSamples:
    seconds: list[float] = field(default_factory=list)  # open to the initial-events-end bookmark
    first_event_seconds: list[float] = field(default_factory=list)
    initial_events: int = 0
    unsupported: str = ""  # why the server did not do a watch-list, if it did not


async def _one_watch_list(session: aiohttp.ClientSession, url: str) -> tuple[float, float, int] | str:
    params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true"}
    started = time.perf_counter()
    first = 0.0
    added = 0
    timeout = aiohttp.ClientTimeout(total=SYNC_TIMEOUT, sock_read=SYNC_SILENCE_TIMEOUT)
    async with session.get(url, params=params, timeout=timeout) as r:
        if r.status != 200:
            return f"HTTP {r.status}: {(await r.read())[:200]!r}"
        async for now, line, event in watch_events(r):
            if not first:
                first = now - started
            kind = event.get("type")
            if kind == "ADDED":
                added += 1
            elif kind == "BOOKMARK":
                annotations = ((event.get("object") or {}).get("metadata") or {}).get("annotations") or {}
                if annotations.get(INITIAL_EVENTS_END) == "true":
                    return now - started, first or now - started, added
            elif kind == "ERROR":
                return f"ERROR event: {line[:200]!r}"
    return "the stream ended without the initial-events-end bookmark (watch-list not supported?)"


async def measure_sync(session: aiohttp.ClientSession, target: Target, budget: float) -> SyncSamples:
    out = SyncSamples()
    deadline = time.perf_counter() + budget
    while len(out.seconds) < MAX_RUNS and (len(out.seconds) < MIN_RUNS or time.perf_counter() < deadline):
        try:
            result = await _one_watch_list(session, target.wildcard_url())
        except TimeoutError:  # aiohttp's read timeout is one too
            result = f"no initial-events-end bookmark within {SYNC_TIMEOUT:.0f} s, or {SYNC_SILENCE_TIMEOUT:.0f} s without a byte"
        if isinstance(result, str):
            out.unsupported = result
            return out
        seconds, first, added = result
        out.seconds.append(seconds)
        out.first_event_seconds.append(first)
        out.initial_events = added
    return out


@dataclass
class WriteSamples:
    clusters: list[str] = field(default_factory=list)
    create_seconds: list[float] = field(default_factory=list)
    patch_seconds: list[float] = field(default_factory=list)
    delete_seconds: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)  # write response → watch event; negative: event first
    sent_delays: list[float] = field(default_factory=list)  # write request sent → watch event (never negative)
    written: int = 0
    delivered: int = 0
    duplicates: int = 0
    other_events: list[str] = field(default_factory=list)
    acks: dict[tuple[str, str, str], float] = field(default_factory=dict)
    sends: dict[tuple[str, str, str], float] = field(default_factory=dict)
    arrivals: dict[tuple[str, str, str], float] = field(default_factory=dict)


async def _kind_and_scope(session: aiohttp.ClientSession, target: Target, cluster: str) -> tuple[str, bool]:
    for where in ("*", cluster):
        async with session.get(target.discovery_url(where)) as r:
            if r.status != 200:
                continue
            doc: Any = orjson.loads(await r.read())
        for res in doc.get("resources") or []:
            if res.get("name") == target.resource.plural:
                return str(res["kind"]), bool(res.get("namespaced"))
    raise HarnessError(f"{target.resource} is not in the discovery of {target.discovery_url()}")


async def _read_events(session: aiohttp.ClientSession, target: Target, rv: str, out: WriteSamples, opened: asyncio.Event) -> None:
    params = {"watch": "true", "allowWatchBookmarks": "true"}
    if rv:
        params["resourceVersion"] = rv
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with session.get(target.wildcard_url(), params=params, timeout=timeout) as r:
        if r.status != 200:
            raise HarnessError(f"wildcard WATCH: HTTP {r.status}: {(await r.read())[:300]!r}")
        opened.set()
        async for now, line, event in watch_events(r):
            kind = event.get("type")
            if kind == "BOOKMARK":
                continue
            md = (event.get("object") or {}).get("metadata") or {}
            labels = md.get("labels") or {}
            if kind not in ("ADDED", "MODIFIED") or labels.get(RUN_LABEL) is None:
                if kind == "ERROR":
                    out.other_events.append(f"ERROR: {line[:200]!r}")
                    return
                continue  # someone else's object, or ours being deleted
            key = ((md.get("annotations") or {}).get(CLUSTER_ANNOTATION, ""), md.get("name", ""), labels.get(SEQ_LABEL, ""))
            if key in out.arrivals:
                out.duplicates += 1
            else:
                out.arrivals[key] = now


async def measure_writes(session: aiohttp.ClientSession, target: Target, clusters: list[str], namespace: str, writes_per_cluster: int,
                         rate: float, rv: str) -> WriteSamples:
    """`writes_per_cluster` writes in each cluster (one create, then merge patches), `rate` per second in all."""
    out = WriteSamples(clusters=clusters)
    kind, namespaced = await _kind_and_scope(session, target, clusters[0])
    run = uuid.uuid4().hex[:8]
    name = f"vwbench-{run}"
    opened = asyncio.Event()
    watcher = asyncio.create_task(_read_events(session, target, rv, out, opened))
    try:
        await asyncio.wait_for(opened.wait(), WATCH_OPEN_TIMEOUT)
        started = time.perf_counter()
        slot = 0

        def next_slot() -> float:
            nonlocal slot
            slot += 1
            return started + (slot - 1) / rate if rate > 0 else 0.0

        async def write_cluster(cluster: str) -> None:
            url = target.cluster_url(cluster, namespace if namespaced else "")
            body = {"apiVersion": f"{target.resource.group}/{target.resource.version}".lstrip("/"), "kind": kind,
                    "metadata": {"name": name, "labels": {RUN_LABEL: run, SEQ_LABEL: "0"}}}
            for seq in range(writes_per_cluster):
                await asyncio.sleep(max(0.0, next_slot() - time.perf_counter()))
                t0 = time.perf_counter()
                if seq == 0:
                    async with session.post(url, data=orjson.dumps(body), headers=JSON) as r:
                        await expect(r, 201, f"create {name} in {cluster}")
                else:
                    patch = {"metadata": {"labels": {SEQ_LABEL: str(seq)}}}
                    async with session.patch(f"{url}/{name}", data=orjson.dumps(patch), headers=MERGE_PATCH) as r:
                        await expect(r, 200, f"patch {name} in {cluster}")
                t1 = time.perf_counter()
                (out.create_seconds if seq == 0 else out.patch_seconds).append(t1 - t0)
                out.acks[(cluster, name, str(seq))] = t1
                out.sends[(cluster, name, str(seq))] = t0

        await asyncio.gather(*(write_cluster(c) for c in clusters))
        out.written = len(out.acks)
        deadline = time.perf_counter() + DELIVERY_TIMEOUT
        while time.perf_counter() < deadline and not watcher.done() and not all(k in out.arrivals for k in out.acks):
            await asyncio.sleep(0.01)
        if watcher.done():
            watcher.result()  # raises what ended the watch
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await _delete(session, target, clusters, namespace if namespaced else "", name, out)
    out.delivered = sum(1 for k in out.acks if k in out.arrivals)
    out.delays = [out.arrivals[k] - t for k, t in out.acks.items() if k in out.arrivals]
    out.sent_delays = [out.arrivals[k] - out.sends[k] for k in out.acks if k in out.arrivals]
    return out


async def _delete(session: aiohttp.ClientSession, target: Target, clusters: list[str], namespace: str, name: str, out: WriteSamples) -> None:
    for cluster in clusters:
        t0 = time.perf_counter()
        try:
            async with session.delete(f"{target.cluster_url(cluster, namespace)}/{name}") as r:
                await r.read()
                if r.status in (200, 202):
                    out.delete_seconds.append(time.perf_counter() - t0)
        except aiohttp.ClientError:
            pass  # best effort: the run's label finds what is left
