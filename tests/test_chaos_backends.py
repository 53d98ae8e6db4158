"""Chaos, bounded: kube backends killed, frozen and stopped while writers write widgets into their
workspaces through the front and watchers follow the APIExport virtual workspace (wildcard),
resuming from their last resourceVersion and relisting on 410.

At the end every watcher's state must equal the backends' truth (a direct list of each backend,
stamped with its workspace's logical cluster), and each watcher must have seen, per object, its
events in order: resourceVersions strictly increasing per watcher, ADDED only for an object it did
not hold, MODIFIED and DELETED only for one it did (nothing lost, nothing doubled).

The schedule (which backend, what, for how long) and the writers' choices come from one seed,
`CHAOS_SEED` (override with VWPROXY_CHAOS_SEED to replay another); every wait is bounded.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support import conditions, eventually

from vwproxy.testing.process import ShardProcess
from vwproxy.testing.proxy import RunningProxy, example_topology

pytestmark = pytest.mark.timeout(90)

CHAOS_SEED = int(os.environ.get("VWPROXY_CHAOS_SEED", "1206"))
BACKENDS = 3
TOKEN = "chaos-backend-t0ken"
# Steps of chaos; each takes a backend down for HOLD and leaves a GAP before the next, so the
# whole schedule stays around 15 s (restarts included).
CHAOS_STEPS = 8
HOLD_SECONDS = (0.3, 1.2)
GAP_SECONDS = (0.2, 0.6)
ACTIONS = ("kill", "freeze", "stop")
# Writers give up on a request after this (a frozen backend would hold it for the proxy's 10 s).
WRITE_TIMEOUT_SECONDS = 2.0
WRITE_PAUSE_SECONDS = 0.02
# Watches end on their own this often, so watchers resume from their last RV many times.
WATCH_TIMEOUT_SECONDS = 2
# Sometimes a watcher waits this long (at most) before resuming, letting events pile up past the
# views' shortened history, so resuming gets 410 and the watcher relists.
MAX_RESUME_PAUSE_SECONDS = 1.0
RESUME_PAUSE_CHANCE = 0.5
VIEW_HISTORY = 20
# The backend with a tiny watch history: the proxy's reflector for it relists on 410 too.
SMALL_BACKEND_HISTORY = 20
CONVERGE_SECONDS = 30.0
WIDGETS = "apis/example.dev/v1alpha1"

Key = tuple[str, str, str]  # (logical cluster, namespace, name)


def workspace_yaml(index: int) -> str:
    return (
        "apiVersion: tenancy.kcp.io/v1alpha1\nkind: Workspace\n"
        f"metadata: {{name: chaos-{index}, annotations: {{vwproxy.dev/backend: b{index}}}}}\n"
        "---\napiVersion: apis.kcp.io/v1alpha2\nkind: APIBinding\n"
        f"metadata: {{name: widgets, annotations: {{kcp.io/path: 'root:chaos-{index}'}}}}\n"
        "spec: {reference: {export: {path: 'root:provider', name: widgets}}}\n"
    )


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[list[ShardProcess]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(ShardProcess(tmp_path / f"b{i}", token=TOKEN, history=SMALL_BACKEND_HISTORY if i == 0 else None, log=tmp_path / f"b{i}.log"))
            for i in range(BACKENDS)
        ]


@pytest.fixture
def proxy(tmp_path: Path, backends: list[ShardProcess]) -> Iterator[RunningProxy]:
    config = tmp_path / "config"
    shutil.copytree(example_topology(), config)
    (config / "backend.token").write_text(TOKEN + "\n")
    (config / "backends.yaml").write_text("---\n".join(
        f"apiVersion: vwproxy.dev/v1alpha1\nkind: Backend\nmetadata: {{name: b{i}}}\nspec: {{url: '{b.url}/clusters/root', tokenFile: backend.token}}\n"
        for i, b in enumerate(backends)
    ))
    for i in range(BACKENDS):
        (config / f"50-chaos-{i}.yaml").write_text(workspace_yaml(i))
    # The views keep a short history, so a watcher resuming late gets 410 and relists.
    with RunningProxy(tmp_path / "data", config, view_history=VIEW_HISTORY) as running:
        yield running


# -- writers -------------------------------------------------------------------------------------


def writer(proxy: RunningProxy, index: int, stop: threading.Event) -> None:
    """Creates, updates and deletes widgets in root:chaos-<index> through the front; failures are expected."""
    rng = random.Random(CHAOS_SEED * 100 + index)
    base = f"/clusters/root:chaos-{index}/{WIDGETS}/namespaces/default/widgets"
    names: list[str] = []
    made = 0
    with proxy.client(timeout=WRITE_TIMEOUT_SECONDS) as client:
        while not stop.is_set():
            roll = rng.random()
            try:
                if roll < 0.55 or not names:
                    made += 1
                    name = f"w{index}-{made}"
                    resp = client.post(base, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": rng.randint(1, 9)}})
                    if resp.status_code in (201, 409):
                        names.append(name)
                elif roll < 0.85:
                    name = rng.choice(names)
                    client.patch(f"{base}/{name}", content=orjson.dumps({"spec": {"size": rng.randint(10, 99)}}), headers={"Content-Type": "application/merge-patch+json"})
                else:
                    name = names.pop(rng.randrange(len(names)))
                    client.delete(f"{base}/{name}")
            except httpx.HTTPError:
                pass  # the backend is down or frozen: the truth at the end is what the backend holds
            stop.wait(WRITE_PAUSE_SECONDS)


# -- watchers ------------------------------------------------------------------------------------


def key_of(obj: dict[str, Any]) -> Key:
    md = obj["metadata"]
    return (str(md["annotations"]["kcp.io/cluster"]), str(md.get("namespace") or ""), str(md["name"]))


@dataclass
class Watcher:
    """A client of the VW's wildcard URL: list, then watch from the last RV; relist on 410."""

    name: str
    url: str
    seed: int
    state: dict[Key, dict[str, Any]] = field(default_factory=dict)
    last_rv: int = 0
    seen: dict[Key, list[tuple[str, int]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    relists: int = 0
    resumes: int = 0

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.name}: {text}")

    def relist(self, client: httpx.Client) -> None:
        body = client.get(self.url).raise_for_status().json()
        rv = int(body["metadata"]["resourceVersion"])
        if rv < self.last_rv:
            self.problem(f"a list at RV {rv}, older than the last event seen ({self.last_rv})")
        self.last_rv = max(self.last_rv, rv)
        self.state = {key_of(item): item for item in body["items"]}
        self.relists += 1

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        rv = int(obj["metadata"]["resourceVersion"])
        if rv <= self.last_rv:
            self.problem(f"{kind} {key} at RV {rv}, not after {self.last_rv}")
        self.last_rv = max(self.last_rv, rv)
        history = self.seen.setdefault(key, [])
        if history and rv <= history[-1][1]:
            self.problem(f"{kind} {key} at RV {rv} after {history[-1]}")
        history.append((kind, rv))
        held = key in self.state
        if kind == "ADDED" and held:
            self.problem(f"ADDED {key} at RV {rv}, already held (a doubled event)")
        if kind in ("MODIFIED", "DELETED") and not held:
            self.problem(f"{kind} {key} at RV {rv}, not held (an ADDED was lost)")
        if kind == "DELETED":
            self.state.pop(key, None)
        else:
            self.state[key] = obj

    def run(self, proxy: RunningProxy, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        need_list = True
        with proxy.client(timeout=httpx.Timeout(5.0, read=WATCH_TIMEOUT_SECONDS + 5.0)) as client:
            while not stop.is_set():
                try:
                    if need_list:
                        self.relist(client)
                        need_list = False
                    params = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": str(self.last_rv), "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS)}
                    with client.stream("GET", self.url, params=params) as stream:
                        if stream.status_code == 410:
                            need_list = True
                            continue
                        if stream.status_code != 200:
                            self.problem(f"watch answered {stream.status_code}")
                            stop.wait(0.1)
                            continue
                        for line in stream.iter_lines():
                            if not line:
                                continue
                            event = orjson.loads(line)
                            kind, obj = event["type"], event["object"]
                            if kind == "ERROR":
                                need_list = obj.get("code") == 410
                                if not need_list:
                                    self.problem(f"in-stream error {obj}")
                                break
                            if kind == "BOOKMARK":
                                rv = int(obj["metadata"]["resourceVersion"])
                                if rv < self.last_rv:
                                    self.problem(f"a BOOKMARK at RV {rv} before {self.last_rv}")
                                self.last_rv = max(self.last_rv, rv)
                                continue
                            self.apply(kind, obj)
                    self.resumes += 1
                    if rng.random() < RESUME_PAUSE_CHANCE:
                        stop.wait(rng.random() * MAX_RESUME_PAUSE_SECONDS)
                except httpx.HTTPError:
                    stop.wait(0.1)


# -- the truth -------------------------------------------------------------------------------------


def fingerprint(objects: dict[Key, dict[str, Any]], clusters: set[str]) -> dict[Key, tuple[str, int, Any]]:
    """What must agree between a watcher and the backends: identity, generation and spec."""
    return {k: (o["metadata"]["uid"], int(o["metadata"].get("generation") or 0), o.get("spec")) for k, o in objects.items() if k[0] in clusters}


def backends_truth(backends: list[ShardProcess], cluster_of_backend: list[str]) -> dict[Key, dict[str, Any]]:
    truth: dict[Key, dict[str, Any]] = {}
    for backend, cluster in zip(backends, cluster_of_backend, strict=True):
        with httpx.Client(base_url=f"{backend.url}/clusters/root", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5, trust_env=False) as direct:
            for item in direct.get(f"/{WIDGETS}/widgets").raise_for_status().json()["items"]:
                item["metadata"].setdefault("annotations", {})["kcp.io/cluster"] = cluster  # stamped, as the proxy does
                truth[key_of(item)] = item
    return truth


# -- the test --------------------------------------------------------------------------------------


def test_watchers_match_the_backends_after_kills_freezes_and_restarts(proxy: RunningProxy, backends: list[ShardProcess]) -> None:
    rng = random.Random(CHAOS_SEED)
    with proxy.client(timeout=10) as front:
        for i in range(BACKENDS):
            eventually(lambda i=i: conditions(front.get(f"/clusters/root:chaos-{i}/apis/apis.kcp.io/v1alpha2/apibindings/widgets").json()).get("Ready") == "True",
                       f"root:chaos-{i}'s binding Ready")
        endpoint = front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()["status"]["endpoints"][0]["url"]
    clusters = [proxy.cluster_of(f"root:chaos-{i}") for i in range(BACKENDS)]
    url = f"{endpoint}/clusters/*/{WIDGETS}/widgets"

    stop_writers, stop_watchers = threading.Event(), threading.Event()
    watchers = [Watcher(f"watcher-{n}", url, CHAOS_SEED * 10 + n) for n in range(2)]
    threads = [threading.Thread(target=w.run, args=(proxy, stop_watchers), daemon=True) for w in watchers]
    threads += [threading.Thread(target=writer, args=(proxy, i, stop_writers), daemon=True) for i in range(BACKENDS)]
    for thread in threads:
        thread.start()
    schedule = [(rng.randrange(BACKENDS), rng.choice(ACTIONS), rng.uniform(*HOLD_SECONDS), rng.uniform(*GAP_SECONDS)) for _ in range(CHAOS_STEPS)]
    try:
        for index, action, hold, gap in schedule:
            backend = backends[index]
            if action == "freeze":
                backend.freeze()
                time.sleep(hold)  # the chaos itself: how long the backend stays frozen
                backend.resume()
            else:
                backend.kill() if action == "kill" else backend.stop()
                time.sleep(hold)  # how long it stays down
                backend.start()
            time.sleep(gap)
    finally:
        for backend in backends:
            backend.resume()
            if not backend.running:
                backend.start()
        stop_writers.set()
    for thread in threads[len(watchers):]:
        thread.join(WRITE_TIMEOUT_SECONDS * 3)

    truth = backends_truth(backends, clusters)
    wanted = fingerprint(truth, set(clusters))
    assert wanted, f"seed {CHAOS_SEED}: the writers wrote nothing"
    try:
        for watcher in watchers:
            eventually(lambda w=watcher: fingerprint(w.state, set(clusters)) == wanted, f"seed {CHAOS_SEED}: {watcher.name} equal to the backends", CONVERGE_SECONDS)
    finally:
        stop_watchers.set()
        for thread in threads[: len(watchers)]:
            thread.join(WATCH_TIMEOUT_SECONDS + 5)
    problems = [p for w in watchers for p in w.problems]
    assert not problems, f"seed {CHAOS_SEED}, schedule {schedule}:\n" + "\n".join(problems[:20])
    assert sum(w.relists for w in watchers) > len(watchers), f"seed {CHAOS_SEED}: no watcher ever relisted after a 410"
    for watcher in watchers:
        assert watcher.resumes > 1, f"{watcher.name} never resumed a watch"
        others = {k for k in watcher.state if k[0] not in clusters}
        assert len(others) == 5, f"{watcher.name}: the embedded consumers' widgets changed: {sorted(others)}"
