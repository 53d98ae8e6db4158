"""`python -m benchmarks.kcp_setup`: the harness's topology on any kcp-shaped server, through a kubeconfig.

    python -m benchmarks.kcp_setup --kubeconfig /tmp/kcp-root/admin.kubeconfig --workspaces 100 --widgets 100
    python -m benchmarks.kcp_setup --kubeconfig .vwproxy/admin.kubeconfig --workspaces 100 --widgets 100

Builds, in the kubeconfig's server (a real kcp, or `vwproxy serve`; both speak kcp's API):

- workspace `root:provider` with the example's APIResourceSchema `v1alpha1.widgets.example.dev`
  and APIExport `widgets` (`vwproxy/data/example/20-provider.yaml`), and its endpoint slice
  `widgets` (kcp creates it with the export; it is created here if it is missing);
- N consumer workspaces `root:<prefix>-0000`… (`--workspaces`), each with an APIBinding `widgets`
  to that export, waited for until Ready, and M widgets `w-00000`… in namespace `default`
  (`--widgets`), the same objects as `vw_bench.py` makes;
- then it waits until the endpoint slice names a URL and the VW's wildcard list there holds all
  N x M widgets, and prints the `python -m benchmarks run` command to measure it.

Idempotent: what exists already is kept (a 409 on create is success), so a second run only adds
what is missing, e.g. after raising N or M. It never deletes. Exits 1 on any other failure, naming
the request.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from benchmarks.vw_target import (
    HarnessError,
    load_credentials,
    open_session,
    server_root,
)

TENANCY = "/apis/tenancy.kcp.io/v1alpha1"
APIS_V1 = "/apis/apis.kcp.io/v1alpha1"
APIS_V2 = "/apis/apis.kcp.io/v1alpha2"
WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"
PROVIDER = "provider"
EXPORT = "widgets"
CONCURRENCY = 8
WAIT_TIMEOUT = 300.0  # one bounded wait (workspaces Ready, bindings Ready, the view complete) on a busy 2-core machine
RETRY_TIMEOUT = 120.0  # how long one request is retried on 429/503 (Retry-After honoured)
JSON = {"content-type": "application/json"}


def widget(i: int) -> dict[str, Any]:
    """The widgets vw_bench.py creates: the same size and labels, so the two benchmarks' objects compare."""
    return {
        "apiVersion": "example.dev/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": f"w-{i:05d}", "labels": {"app": "bench", "bench-seq": "0"}},
        "spec": {"size": i % 10 + 1, "color": ("red", "green", "blue", "yellow")[i % 4]},
    }


def provider_objects() -> list[dict[str, Any]]:
    """The example's schema and export, without vwproxy's seed-routing annotation."""
    text = (resources.files("vwproxy") / "data" / "example" / "20-provider.yaml").read_text()
    out = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        (doc.get("metadata") or {}).pop("annotations", None)
        out.append(doc)
    return out


class Setup:
    def __init__(self, session: aiohttp.ClientSession, root: str, log: Callable[[str], None]) -> None:
        self.session = session
        self.root = root
        self.log = log
        self.created = 0
        self.existing = 0

    async def request(self, method: str, url: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> tuple[int, Any]:
        """(status, decoded body) of one request; a status outside `ok` (and 409 for a create) raises."""
        data = orjson.dumps(body) if body is not None else None
        deadline = time.perf_counter() + RETRY_TIMEOUT
        while True:
            async with self.session.request(method, self.root + url, data=data, headers=JSON if data else None) as r:
                raw = await r.read()
                # kcp answers 429 "storage is (re)initializing" (Retry-After: 1) while a just-bound
                # resource's storage starts, and 429/503 under load: wait as client-go does.
                if r.status in (429, 503) and time.perf_counter() < deadline:
                    await asyncio.sleep(_retry_after(r.headers.get("retry-after")))
                    continue
                if r.status not in ok:
                    raise HarnessError(f"{method} {url}: HTTP {r.status}: {raw[:300]!r}")
                return r.status, (orjson.loads(raw) if raw else None)

    async def ensure(self, collection_url: str, obj: dict[str, Any], retry_404: float = 0.0) -> None:
        """POST `obj`; 409 (it exists) is success. `retry_404`: seconds to retry a 404 (a just-bound
        resource that the server does not serve yet)."""
        deadline = time.perf_counter() + retry_404
        while True:
            status, _ = await self.request("POST", collection_url, obj, ok=(200, 201, 202, 404, 409))
            if status == 404 and time.perf_counter() < deadline:
                await asyncio.sleep(0.2)
                continue
            if status == 404:
                raise HarnessError(f"POST {collection_url}: HTTP 404 (the resource is not served there)")
            if status == 409:
                self.existing += 1
            else:
                self.created += 1
            return

    async def wait(self, check: Callable[[], Awaitable[tuple[bool, Any]]], what: str) -> Any:
        """Poll `check` (bounded) until it says done; returns its value. Not done: its value says why."""
        deadline = time.perf_counter() + WAIT_TIMEOUT
        last: Any = None
        while time.perf_counter() < deadline:
            done, last = await check()
            if done:
                return last
            await asyncio.sleep(0.3)
        raise HarnessError(f"timed out after {WAIT_TIMEOUT:.0f} s waiting for {what}; last: {str(last)[:300]}")

    async def workspaces(self, names: list[str]) -> None:
        await _bounded([self.ensure(f"/clusters/root{TENANCY}/workspaces", {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace",
                                                                              "metadata": {"name": n}}) for n in names])

        async def ready() -> tuple[bool, str]:
            _, body = await self.request("GET", f"/clusters/root{TENANCY}/workspaces")
            phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in body.get("items") or []}
            waiting = [n for n in names if phases.get(n) != "Ready"]
            return not waiting, (f"{len(waiting)} not Ready, e.g. {waiting[0]}: {phases.get(waiting[0])}" if waiting else "")

        await self.wait(ready, f"{len(names)} workspaces Ready")

    async def provider(self) -> None:
        for obj in provider_objects():
            version = APIS_V2 if obj["apiVersion"].endswith("/v1alpha2") else APIS_V1
            plural = obj["kind"].lower() + "s"
            await self.ensure(f"/clusters/root:{PROVIDER}{version}/{plural}", obj)

    async def bindings(self, names: list[str]) -> None:
        binding = {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": EXPORT},
                   "spec": {"reference": {"export": {"path": f"root:{PROVIDER}", "name": EXPORT}}}}
        await _bounded([self.ensure(f"/clusters/root:{n}{APIS_V2}/apibindings", binding) for n in names])

        async def ready(n: str) -> bool:
            _, body = await self.request("GET", f"/clusters/root:{n}{APIS_V2}/apibindings/{EXPORT}")
            status = body.get("status") or {}
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            return status.get("phase") == "Bound" or conditions.get("Ready") == "True"

        pending = list(names)

        async def all_ready() -> tuple[bool, str]:
            nonlocal pending
            done = await _bounded([ready(n) for n in pending])
            pending = [n for n, d in zip(pending, done, strict=True) if not d]
            return not pending, (f"{len(pending)} bindings not Ready, e.g. root:{pending[0]}" if pending else "")

        await self.wait(all_ready, f"{len(names)} APIBindings Ready")

    async def widgets(self, names: list[str], m: int) -> None:
        async def one_workspace(n: str) -> None:
            status, _ = await self.request("GET", f"/clusters/root:{n}/api/v1/namespaces/default", ok=(200, 404))
            if status == 404:
                await self.ensure(f"/clusters/root:{n}/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
            # What exists is skipped without a request each: one list per workspace.
            _, listed = await self.request("GET", f"/clusters/root:{n}{WIDGETS}", ok=(200, 404))
            have = {i["metadata"]["name"] for i in (listed or {}).get("items") or []}
            self.existing += len(have & {f"w-{i:05d}" for i in range(m)})
            for i in range(m):
                if f"w-{i:05d}" not in have:
                    await self.ensure(f"/clusters/root:{n}{WIDGETS}", widget(i), retry_404=60.0)

        await _bounded([one_workspace(n) for n in names])

    async def endpoint_slice(self, expected: int) -> str:
        url = f"/clusters/root:{PROVIDER}{APIS_V1}/apiexportendpointslices/{EXPORT}"
        status, _ = await self.request("GET", url, ok=(200, 404))
        if status == 404:  # kcp makes one with each export; an older kcp may not
            await self.ensure(f"/clusters/root:{PROVIDER}{APIS_V1}/apiexportendpointslices",
                              {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExportEndpointSlice", "metadata": {"name": EXPORT},
                               "spec": {"export": {"path": f"root:{PROVIDER}", "name": EXPORT}}})

        async def first_url() -> tuple[bool, str]:
            _, body = await self.request("GET", url)
            endpoints = (body.get("status") or {}).get("endpoints") or []
            found = bool(endpoints and endpoints[0].get("url"))
            return found, (str(endpoints[0]["url"]).rstrip("/") if found else f"status: {body.get('status')}")

        vw = await self.wait(first_url, f"endpoint slice root:{PROVIDER}/{EXPORT} to name a URL")

        async def complete() -> tuple[bool, str]:
            async with self.session.get(f"{vw}/clusters/*/apis/example.dev/v1alpha1/widgets") as r:
                raw = await r.read()
                if r.status != 200:
                    return False, f"HTTP {r.status}: {raw[:200]!r}"
            items = orjson.loads(raw).get("items") or []
            ours = sum(1 for i in items if ((i.get("metadata") or {}).get("labels") or {}).get("app") == "bench")
            return ours >= expected, f"{ours} of {expected} widgets in the VW's list"

        await self.wait(complete, "the VW's wildcard list to hold every widget")
        return str(vw)


def _retry_after(header: str | None) -> float:
    try:
        return min(10.0, max(0.1, float(header or 1)))
    except ValueError:
        return 1.0


async def _bounded(jobs: list[Awaitable[Any]], limit: int = CONCURRENCY) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(run(j) for j in jobs)))


async def setup(kubeconfig: Path, context: str, n: int, m: int, prefix: str, log: Callable[[str], None] = print) -> str:
    """Build the topology; returns the VW URL from the endpoint slice."""
    credentials = load_credentials(kubeconfig, context)
    names = [f"{prefix}-{i:04d}" for i in range(n)]
    async with open_session(credentials, CONCURRENCY) as session:
        s = Setup(session, server_root(credentials.url), log)
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (f"workspace root:{PROVIDER}", lambda: s.workspaces([PROVIDER])),
            ("schema and export", s.provider),
            (f"{n} workspaces", lambda: s.workspaces(names)),
            (f"{n} APIBindings Ready", lambda: s.bindings(names)),
            (f"{n} x {m} widgets", lambda: s.widgets(names, m)),
        ]
        for what, step in steps:
            t0 = time.perf_counter()
            await step()
            log(f"  {what}: {time.perf_counter() - t0:.1f} s ({s.created} created, {s.existing} existed so far)")
        t0 = time.perf_counter()
        vw = await s.endpoint_slice(n * m)
        log(f"  endpoint slice URL and all {n * m:,} widgets in the VW's list: {time.perf_counter() - t0:.1f} s")
    return vw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kcp_setup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", type=Path, required=True, help="an admin kubeconfig of kcp (its root directory's admin.kubeconfig) or of vwproxy")
    p.add_argument("--context", default="", help="a context of the kubeconfig (default: its current context)")
    p.add_argument("--workspaces", "-n", type=int, default=100, help="consumer workspaces (default 100)")
    p.add_argument("--widgets", "-m", type=int, default=100, help="widgets per consumer workspace (default 100)")
    p.add_argument("--prefix", default="ws", help="consumer workspace names: root:<prefix>-0000… (default ws)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    print(f"setting up root:{PROVIDER} and {args.workspaces} x {args.widgets} widgets through {args.kubeconfig}", flush=True)
    try:
        vw = asyncio.run(setup(args.kubeconfig, args.context, args.workspaces, args.widgets, args.prefix, lambda s: print(s, flush=True)))
    except (TimeoutError, HarnessError, aiohttp.ClientError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"ready in {time.perf_counter() - started:.1f} s; virtual workspace: {vw}")
    run = ["python", "-m", "benchmarks", "run", "--kubeconfig", str(args.kubeconfig)] + (["--context", args.context] if args.context else [])
    run += ["--endpointslice-workspace", f"root:{PROVIDER}", "--endpointslice", EXPORT, "--resource", "example.dev/v1alpha1/widgets", "--write-cluster", "auto"]
    print("measure it with: " + shlex.join(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
