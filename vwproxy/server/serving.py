"""Running an app under uvicorn the way vwproxy serves: deliberate connection timeouts and a
graceful stop.

- An idle keep-alive connection lives longer than the clients' own idle timeout (client-go and
  Go's http.Transport drop theirs after 90 s), so the client, not the server, closes it and no
  request races a server-side close. uvicorn's default is 5 s.
- A request head (request line and headers) must arrive within a bounded time, and so must the
  first request on a new connection: a client trickling bytes cannot hold a connection open.
- Over TLS a connection holds what a slow client has not taken up to the same high-water mark as
  over plain TCP (64 KiB), not asyncio's TLS default of 512 KiB, and is handed a long chunk in
  pieces (`TLS_PIECE`). With both, 1,000 HTTPS watch streams fed 1,000 changes/s peak at 175-179
  MiB of RSS where they peaked at 431-435 MiB (benchmarks/RESULTS.md).
- SIGTERM / Ctrl-C: stop accepting, end every watch stream at once (a properly terminated
  chunked body: the clients re-watch elsewhere), let in-flight writes finish, exit 0.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Longer than client-go's 90 s idle-connection timeout, so idle connections end client-side.
KEEP_ALIVE_SECONDS = 120
# A request's line and headers arrive in one or two packets; 30 s (kube-apiserver allows 32 s
# for the request head) covers any real client and cuts off a trickling one.
REQUEST_HEAD_SECONDS = 30.0
# How long in-flight requests (writes) get to finish once the watches were ended on shutdown.
GRACEFUL_SHUTDOWN_SECONDS = 5
# What a TLS connection may hold for a client that does not read before its writes pause (and
# resume under a quarter of it), as a plain TCP connection's transport does by default.
TLS_WRITE_HIGH_WATER = 64 * 1024
# The largest piece a TLS connection is handed at once. asyncio's TLS layer encrypts a whole write
# into a memory buffer before it passes it on, and that buffer keeps the size it grew to for as
# long as the connection lives: with the watch streams' writes of up to ~140 KB, 1,000 HTTPS
# streams peaked ~0.25 GB higher than in pieces (benchmarks/RESULTS.md). Pieces keep it at their size.
TLS_PIECE = 32 * 1024


# The scope's extension under which a request finds its `DirectBody`.
DIRECT_BODY = "vwproxy.direct_body"


class DirectBody:
    """Chunks of a started chunked response body, written straight to the connection.

    A watch stream writes thousands of times a second to a thousand connections; through the ASGI
    `send` each write also passes every middleware's wrapper and uvicorn's checks, and uvicorn
    copies the chunk to frame it. Written here, a chunk costs its framing and the system call:
    `transport.writelines` hands the three pieces to the kernel in one `writev`. A caller checks
    `writable()` first and uses `send` otherwise (not started, finished, client gone, or the
    connection's write buffer past its high-water mark: `send` then waits for it to drain, so
    what a slow client is owed stays bounded as before). The response is ended through `send`,
    as always, so uvicorn's own view of it stays right: these chunks sit inside the body it
    started and it ends."""

    __slots__ = ("_cycle", "piece")

    def __init__(self, cycle: Any, piece: int = 0) -> None:
        # uvicorn's RequestResponseCycle, weakly: it holds the scope that holds this, and a
        # reference cycle per request would leave every request to the cyclic collector.
        self._cycle = weakref.ref(cycle)
        # On TLS (`TLS_PIECE`): the most to hand the connection at once; a caller that writes
        # through `send` instead splits its chunks the same way. 0: any size (plain TCP).
        self.piece = piece

    def writable(self) -> bool:
        cycle = self._cycle()
        return bool(cycle is not None and cycle.response_started and cycle.chunked_encoding and not cycle.response_complete
                    and not cycle.disconnected and not cycle.flow.write_paused and not cycle.transport.is_closing())

    def write(self, chunk: bytes) -> None:
        """One chunk (not empty: an empty chunk ends the body); only after `writable()`."""
        cycle = self._cycle()
        assert cycle is not None, "write() without writable()"
        piece = self.piece
        if not piece or len(chunk) <= piece:
            cycle.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            return
        transport = cycle.transport
        view = memoryview(chunk)
        transport.write(b"%x\r\n" % len(chunk))
        for start in range(0, len(chunk), piece):
            transport.write(view[start : start + piece])
        transport.write(b"\r\n")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline on each request head and on a new
    connection's first byte (uvicorn arms its keep-alive timer only after a response), and each
    request's `DirectBody` in its scope's extensions."""

    head_seconds = REQUEST_HEAD_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._piece = 0  # DirectBody.piece for this connection's requests

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._piece = 0
        if transport.get_extra_info("sslcontext") is not None:
            transport.set_write_buffer_limits(high=TLS_WRITE_HIGH_WATER)
            self._piece = TLS_PIECE
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade: the request's own cycle (its task has not run yet)
            extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
            extensions[DIRECT_BODY] = DirectBody(cycle, self._piece)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(head_seconds: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol with another request-head deadline (tests use a short one)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"head_seconds": head_seconds})


class GracefulServer(uvicorn.Server):
    """uvicorn's server, ending the watches first on shutdown and exiting 0 on SIGTERM/SIGINT
    (uvicorn re-raises the signal after a graceful stop, which makes the exit code -15)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # a requested stop is a clean exit

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets)


def config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's config with vwproxy's connection handling; `options` pass through."""
    options.setdefault("http", GuardedHttpToolsProtocol)
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_SECONDS)
    options.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_SECONDS)
    return uvicorn.Config(app, host=host, port=port, **options)
