#!/usr/bin/env python3
"""The proxy's own CPU per write: merge PATCHes of a widget's annotations through `vwproxy serve`'s
front to the embedded shard, in one process, called as raw ASGI (no client, no socket), so only
the server's work is timed: routing, the patch, managedFields, pruning and validation, the SQLite
commit and the views following it (the example topology: one VW view of the widgets).

Runs of `--patches / --runs` PATCHes each, CPU time (`time.process_time`) per PATCH; min and median
of the runs. Compare two trees by running each, alternating (`PYTHONPATH=<tree>`).

    python3 benchmarks/write_cpu.py [--patches N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from vwproxy.control.manifests import load_folder
from vwproxy.server.app import ServeApp
from vwproxy.store.shard import Shard
from vwproxy.testing.proxy import example_topology

WIDGETS = "/clusters/root:consumer-1/apis/example.dev/v1alpha1/namespaces/default/widgets"
TARGETS = 10  # widgets the PATCHes go to in turn
WARM_UP = 200


async def measure(patches: int, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="vwproxy-writecpu-") as tmp:
        shard = Shard(Path(tmp))
        app = ServeApp(shard, "http://127.0.0.1:1", load_folder(example_topology()), {})
        await app.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.entry), base_url="http://proxy") as client:
                if not await app.control.wait_idle(60):
                    raise SystemExit("the example topology did not settle within 60 s")
                for i in range(TARGETS):
                    widget = {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": f"w-{i:05d}", "labels": {"app": "bench"}},
                              "spec": {"size": 1, "color": "red"}}
                    created = await client.post(WIDGETS, content=orjson.dumps(widget), headers={"content-type": "application/json"})
                    if created.status_code != 201:
                        raise SystemExit(f"creating w-{i:05d}: HTTP {created.status_code}: {created.text[:300]}")

            async def patch(i: int) -> None:
                path = f"{WIDGETS}/w-{i % TARGETS:05d}"
                body = orjson.dumps({"metadata": {"annotations": {"bench-i": str(i), "bench-t": str(time.time_ns())}}})
                scope: dict[str, Any] = {
                    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PATCH", "scheme": "http",
                    "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                    "headers": [(b"host", b"proxy"), (b"content-type", b"application/merge-patch+json"),
                                (b"content-length", str(len(body)).encode()), (b"user-agent", b"write-cpu/1")],
                    "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 1),
                }
                delivered = False
                status = 0

                async def receive() -> dict[str, Any]:
                    nonlocal delivered
                    if not delivered:
                        delivered = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    await asyncio.Event().wait()  # a client that stays: never a disconnect
                    raise AssertionError("unreachable")

                async def send(message: dict[str, Any]) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]

                await app.entry(scope, receive, send)
                if status != 200:
                    raise SystemExit(f"PATCH {path}: HTTP {status}")

            for i in range(WARM_UP):
                await patch(i)
            per_run = max(1, patches // runs)
            results = []
            for r in range(runs):
                started = time.process_time()
                for i in range(per_run):
                    await patch(WARM_UP + r * per_run + i)
                results.append((time.process_time() - started) / per_run)
            return results
        finally:
            await app.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=3000, help="PATCHes timed in all (default 3000)")
    parser.add_argument("--runs", type=int, default=10, help="runs they are split into (default 10)")
    args = parser.parse_args(argv)
    if args.patches < 1 or args.runs < 1:
        parser.error("--patches and --runs must be at least 1")
    results = asyncio.run(measure(args.patches, args.runs))
    micros = [r * 1e6 for r in results]
    print(f"| server CPU per merge PATCH, min / median of {args.runs} runs | {min(micros):.0f} / {statistics.median(micros):.0f} us "
          f"| runs {', '.join(f'{m:.0f}' for m in micros)} us; {args.patches // args.runs} PATCHes each, raw ASGI, embedded shard, one VW view")
    command = shlex.join(["python3", "benchmarks/write_cpu.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"\ncommand: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
