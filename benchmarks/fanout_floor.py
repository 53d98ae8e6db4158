#!/usr/bin/env python3
"""The floor under watch fan-out on this machine: what moving its bytes costs, with no HTTP, no
event, no Python per frame. A bound for `fanout_bench.py`, not a measurement of the proxy.

One uvloop process holds W loopback connections and, every `--interval-ms`, writes to each of
them, in one `transport.write`, the frames of the changes made in that interval (`--rate` changes
per second of `--frame-bytes` each) — what a batched watch stream writes, and the fewest writes a
watcher can get with a delivery latency under the interval. P client processes read the
connections with bare asyncio protocols that only count bytes (less than any watch client does).
It prints the CPU time (user and system) of the writer and of the readers as shares of one core,
and how many intervals the writer could not keep. Then, in process and without sockets, what the
proxy's own watch stream costs per write (`server.watchstream.stream_watch` on W watchers, each
woken by a frame and written once per round, to an ASGI `send` that keeps nothing): the Python
that comes on top of the writer's share for each write.

    python benchmarks/fanout_floor.py [--watchers 1000] [--rate 1000] [--interval-ms 20] [--seconds 10]
                                      [--frame-bytes 700] [--client-procs 4]

Exits 1 if a reader did not receive every byte within a bounded wait.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import shlex
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import uvloop

DELIVERY_TIMEOUT = 60.0


class _Counter(asyncio.Protocol):
    def __init__(self, box: list[int]) -> None:
        self.box = box

    def data_received(self, data: bytes) -> None:
        self.box[0] += len(data)


def _reader(port: int, connections: int, expect: int, pipe: Connection) -> None:
    """A client process: open `connections`, say so, read until `expect` bytes came, send its CPU time."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        box = [0]
        for _ in range(connections):
            await loop.create_connection(lambda: _Counter(box), "127.0.0.1", port)
        pipe.send("open")
        give_up = time.monotonic() + DELIVERY_TIMEOUT + expect / 1e7
        while box[0] < expect and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send((box[0], usage.ru_utime, usage.ru_stime))

    uvloop.run(run())


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transports: list[Any] = []  # uvloop's transports, which are not asyncio.Transport subclasses

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

    server = await loop.create_server(Accepted, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    interval = args.interval_ms / 1000
    ticks = max(1, round(args.seconds / interval))
    per_tick = max(1, round(args.rate * interval))
    chunk = b"x" * (args.frame_bytes * per_tick)
    share = args.watchers // args.client_procs
    counts = [share + (1 if i < args.watchers % args.client_procs else 0) for i in range(args.client_procs)]
    pipes, procs = [], []
    for count in counts:
        ours, theirs = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=_reader, args=(port, count, count * ticks * len(chunk), theirs), daemon=True)
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    try:
        for pipe in pipes:
            if await loop.run_in_executor(None, pipe.recv) != "open":
                raise SystemExit("a reader process did not open its connections")
        while len(transports) < args.watchers:
            await asyncio.sleep(0.01)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        late = 0
        for tick in range(ticks):
            for transport in transports:
                transport.write(chunk)
            due = started + (tick + 1) * interval
            now = time.perf_counter()
            if now > due:
                late += 1
            await asyncio.sleep(max(0.0, due - now))
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        reports = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
    finally:
        server.close()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    expected = [count * ticks * len(chunk) for count in counts]
    return {
        "ticks": ticks, "late": late, "wall": wall, "per_tick": per_tick,
        "writer_user": after.ru_utime - before.ru_utime, "writer_sys": after.ru_stime - before.ru_stime,
        "reader_user": sum(r[1] for r in reports), "reader_sys": sum(r[2] for r in reports),
        "complete": all(r[0] >= e for r, e in zip(reports, expected)),
    }


class _Discard:
    """A connection that takes every chunk and keeps none (for `stream_cost`'s direct writes)."""

    def __init__(self, written: list[int]) -> None:
        self.written = written

    def writable(self) -> bool:
        return True

    def write(self, chunk: bytes) -> None:
        self.written[0] += 1


async def stream_cost(watchers: int, rounds: int, frame_bytes: int, direct: bool) -> float:
    """CPU seconds per stream write of the proxy's watch streams, from the wake-up to the write:
    with `direct`, straight to the connection (what uvicorn serves), else through ASGI's `send`."""
    from vwproxy.core.watch import Watcher
    from vwproxy.kube.listoptions import ListOptions
    from vwproxy.kube.selectors import FieldSelector, LabelSelector
    from vwproxy.server import watchstream

    written = [0]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            written[0] += 1

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    streams, tasks = [], []
    scope: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "GET", "path": "/", "headers": []}
    if direct:
        scope["extensions"] = {"vwproxy.direct_body": _Discard(written)}  # serving.DIRECT_BODY
    for _ in range(watchers):
        watcher = Watcher(None, "", LabelSelector(), FieldSelector(), "json", lambda obj: obj.raw)
        opts = ListOptions(labels=LabelSelector(), fields=FieldSelector(), watch=True, timeout_seconds=3600)
        response = watchstream.stream_watch(watcher, opts, ("v1", "Widget"), lambda: 1, lambda: None, 3600.0)
        tasks.append(asyncio.ensure_future(response(scope, receive, send)))
        streams.append(watcher)
    try:
        await asyncio.sleep(0.2)  # every stream waiting for its first frame
        frame = b"x" * frame_bytes
        started = time.process_time()
        for n in range(1, rounds + 1):
            for watcher in streams:
                watcher.push(frame)
            while written[0] < n * watchers:
                await asyncio.sleep(0)
        return (time.process_time() - started) / (rounds * watchers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000, help="connections written to (default 1000)")
    parser.add_argument("--rate", type=float, default=1000, help="changes per second (default 1000)")
    parser.add_argument("--interval-ms", type=float, default=20, help="time between two writes to one connection (default 20)")
    parser.add_argument("--seconds", type=float, default=10, help="how long the writes go on (default 10)")
    parser.add_argument("--frame-bytes", type=int, default=700, help="bytes per change and connection (default 700, a widget's MODIFIED frame)")
    parser.add_argument("--client-procs", type=int, default=4, help="reader processes (default 4)")
    args = parser.parse_args(argv)
    if min(args.watchers, args.client_procs, args.frame_bytes) < 1 or args.rate <= 0 or args.interval_ms <= 0 or args.seconds <= 0:
        parser.error("every number must be positive")
    if args.client_procs > args.watchers:
        parser.error("--client-procs must not exceed --watchers")
    r = uvloop.run(measure(args))
    per_write = uvloop.run(stream_cost(args.watchers, 100, args.frame_bytes, direct=True))
    per_send = uvloop.run(stream_cost(args.watchers, 100, args.frame_bytes, direct=False))
    wall = r["wall"]
    writes = args.watchers / (args.interval_ms / 1000)
    mb = args.watchers * args.rate * args.frame_bytes / 1e6
    rows = [
        ("load", f"{args.watchers} connections, {args.rate:g} changes/s of {args.frame_bytes} B",
         f"one write per connection every {args.interval_ms:g} ms ({writes:,.0f} writes/s, {r['per_tick']} frames each); {mb:,.0f} MB/s"),
        ("writer CPU", f"{(r['writer_user'] + r['writer_sys']) / wall:.2f} core",
         f"user {r['writer_user']:.2f} s + system {r['writer_sys']:.2f} s over {wall:.1f} s"),
        ("reader CPU", f"{(r['reader_user'] + r['reader_sys']) / wall:.2f} core",
         f"{args.client_procs} processes: user {r['reader_user']:.2f} s + system {r['reader_sys']:.2f} s"),
        ("intervals not kept", f"{r['late']} of {r['ticks']}", "the writer finished an interval's writes after it was over"),
        ("every byte read", "yes" if r["complete"] else "NO", ""),
        ("the proxy's watch stream, per write", f"{per_write * 1e6:.1f} us of CPU",
         f"in process, no socket: {args.watchers} streams written 100 times each, from the wake-up to the connection's write "
         f"(what a stream under uvicorn does); at {writes:,.0f} writes/s: {per_write * writes:.2f} core"),
        ("the same through ASGI's send", f"{per_send * 1e6:.1f} us of CPU",
         "a stream without a direct connection: its coroutine woken for each write, to a `send` that keeps nothing "
         "(without the middleware and uvicorn above it)"),
    ]
    print("| metric | value | note |\n|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")
    command = shlex.join(["python3", "benchmarks/fanout_floor.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"\ncommand: {command}")
    return 0 if r["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
