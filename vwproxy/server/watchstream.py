"""Streaming a registered watcher to the client: frames as they come, periodic bookmarks, the
timeout, and clean-up the moment the client goes away.

A change offered to a thousand waiting watchers flushes their streams a slice at a time, one
slice per turn of the event loop, so requests that arrive meanwhile (a GET, a write) are read and
served between slices instead of after the whole fan-out. A flush writes what the watcher has
straight to its connection (`serving.DirectBody`) while the stream's coroutine stays asleep; the
coroutine is woken only for what needs it: a client that is gone, a closed watcher, a bookmark,
the timeout, or a connection that must drain first."""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from vwproxy.kube import errors
from vwproxy.kube import watch as wire
from vwproxy.kube.listoptions import ListOptions
from vwproxy.server import http
from vwproxy.server.serving import DIRECT_BODY, DirectBody
from vwproxy.core.watch import Watcher

log = logging.getLogger(__name__)

# A watch without timeoutSeconds ends after a random 30-60 minutes, as kube-apiserver does
# (--min-request-timeout=1800), so reconnects of many clients do not line up.
MIN_WATCH_SECONDS = 1800
# Watch streams flushed per turn of the event loop.
WAKE_SLICE = 50


class _Waker:
    """Flushes waiting watch streams in slices, one slice per turn of the loop (the loop is
    passed in, so a waker keeps no loop alive)."""

    def __init__(self) -> None:
        self.queue: deque[Callable[[], None]] = deque()
        self.scheduled = False

    def add(self, flush: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        self.queue.append(flush)
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self.queue
        for _ in range(min(WAKE_SLICE, len(queue))):
            flush = queue.popleft()
            try:
                flush()
            except Exception:  # one stream's failure must not stop the flushing of the others
                log.exception("flushing a watch stream failed")
        if queue:
            loop.call_soon(self._run, loop)
        else:
            self.scheduled = False


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()


def _waker(loop: asyncio.AbstractEventLoop) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _Waker()
    return waker


def _quiet() -> None:
    """An ended stream's watcher wakes nobody."""


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def expired_watch(exc: errors.StatusError, headers: dict[str, str] | None = None) -> Response:
    """kube-apiserver answers a too-old watch with 200 and one in-stream ERROR event."""
    return Response(wire.error_frame(exc.to_status()), media_type=http.JSON, headers=headers)


class WatchResponse(Response):
    """A watch's HTTP response as one coroutine: the status line, then `stream(send, direct)`,
    which writes the body to its end or stops when the client is gone; `direct` is the server's
    `DirectBody` for the connection when it offers one (uvicorn under `serving`), through which
    the stream's frames are written while the coroutine waits. A plain loop rather than
    starlette's StreamingResponse (an async generator run in a task group). The client going away
    is heard by a side task that calls `gone`, which ends the stream at its next turn (a stream
    waiting for frames is woken for it)."""

    media_type = http.JSON

    def __init__(self, stream: Callable[[Send, DirectBody | None], Awaitable[None]], gone: Callable[[], None],
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._stream = stream
        self._gone = gone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def listen() -> None:
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # a server that can no longer receive has lost the client too
                log.debug("a watch stream's receive failed; ending the stream", exc_info=True)
            self._gone()

        listener = asyncio.ensure_future(listen())
        try:
            await self._stream(send, (scope.get("extensions") or {}).get(DIRECT_BODY))
        finally:
            listener.cancel()


def stream_watch(
    watcher: Watcher,
    opts: ListOptions,
    bookmark_as: tuple[str, str],
    current_rv: Callable[[], int],
    stop: Callable[[], None],
    bookmark_interval: float,
    headers: dict[str, str] | None = None,
) -> Response:
    """The HTTP response for `watcher`; `stop` unregisters it when the stream ends for any reason."""
    timeout = opts.timeout_seconds if opts.timeout_seconds else random.uniform(MIN_WATCH_SECONDS, 2 * MIN_WATCH_SECONDS)
    api_version, kind = bookmark_as

    waiting: list[asyncio.Future[None]] = []  # the future the stream waits on, while it waits
    waker: list[_Waker] = []  # this loop's, once known
    direct: list[DirectBody | None] = [None]  # the connection, to write to while the coroutine waits
    queued = [False]  # a flush is in the waker's queue
    gone = [False]  # the client went away
    # The timer that ends a wait, and the loop time it is set for. It stays set from one wait to
    # the next (a stream waits at every write) and is moved only when the time it ends a wait at
    # changes: after a bookmark.
    alarm: list[asyncio.TimerHandle | None] = [None]
    alarm_at = [0.0]

    def wakeup() -> None:
        if waiting and not queued[0] and not waiting[0].done():
            queued[0] = True
            waker[0].add(flush, waiting[0].get_loop())

    def flush() -> None:
        queued[0] = False
        if not waiting or waiting[0].done():
            return
        body = direct[0]
        if gone[0] or watcher.closed or body is None or not body.writable():
            _resolve(waiting[0])  # the coroutine's part
            return
        try:
            batch = watcher.drain_bytes()  # caught up again: the next frame calls wakeup()
            if batch:
                body.write(batch)
        except Exception:
            watcher.close("the watch stream's write failed")  # it re-watches from its last RV
            _resolve(waiting[0])
            raise

    watcher.wakeup = wakeup

    def ring() -> None:
        alarm[0] = None
        if waiting:
            _resolve(waiting[0])

    def left() -> None:
        gone[0] = True
        if waiting:
            _resolve(waiting[0])

    async def stream(send: Send, body: DirectBody | None) -> None:
        loop = asyncio.get_running_loop()
        waker.append(_waker(loop))
        direct[0] = body
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + bookmark_interval
        try:
            while not gone[0] and loop.time() < deadline:
                if watcher.idle and not watcher.closed:
                    until = min(deadline, next_bookmark) if opts.allow_bookmarks else deadline
                    if alarm[0] is None or alarm_at[0] != until:
                        if alarm[0] is not None:
                            alarm[0].cancel()
                        alarm[0] = loop.call_at(until, ring)
                        alarm_at[0] = until
                    fut = loop.create_future()
                    waiting.append(fut)
                    try:
                        await fut
                    finally:
                        waiting.clear()
                    if gone[0]:
                        return
                batch = watcher.drain_bytes()
                if batch:
                    piece = body.piece if body is not None else 0
                    if not piece or len(batch) <= piece:
                        await send({"type": "http.response.body", "body": batch, "more_body": True})
                    else:  # TLS: as DirectBody.write hands it over (each send waits while the connection is paused)
                        for start in range(0, len(batch), piece):
                            await send({"type": "http.response.body", "body": batch[start : start + piece], "more_body": True})
                if watcher.closed:
                    break
                if opts.allow_bookmarks and loop.time() >= next_bookmark and watcher.idle:
                    # Every event up to now has been delivered, so the current RV is a safe resume point.
                    await send({"type": "http.response.body", "body": wire.bookmark_frame(api_version, kind, current_rv()), "more_body": True})
                    next_bookmark = loop.time() + bookmark_interval
            if not gone[0]:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if alarm[0] is not None:
                alarm[0].cancel()
            stop()
            # The watcher and these closures hold each other: let go, so that reference counting
            # frees an ended stream at once instead of leaving it to the cyclic collector.
            watcher.wakeup = _quiet
            direct[0] = None

    return WatchResponse(stream, left, headers)
