"""Streaming a registered watcher to the client: frames as they come, periodic bookmarks, the
timeout, and clean-up the moment the client goes away (starlette cancels the generator).

A change offered to a thousand waiting watchers wakes their streams a slice at a time, one slice
per turn of the event loop, so requests that arrive meanwhile (a GET, a write) are read and
served between slices instead of after the whole fan-out."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response, StreamingResponse

from vwproxy.kube import errors
from vwproxy.kube import watch as wire
from vwproxy.kube.listoptions import ListOptions
from vwproxy.server import http
from vwproxy.core.watch import Watcher

# A watch without timeoutSeconds ends after a random 30-60 minutes, as kube-apiserver does
# (--min-request-timeout=1800), so reconnects of many clients do not line up.
MIN_WATCH_SECONDS = 1800
# Watch streams woken per turn of the event loop.
WAKE_SLICE = 50


class _Waker:
    """Wakes waiting watch streams in slices, one slice per turn of the loop (the loop is taken
    from the futures, so a waker keeps no loop alive)."""

    def __init__(self) -> None:
        self.queue: deque[asyncio.Future[None]] = deque()
        self.scheduled = False

    def add(self, fut: asyncio.Future[None]) -> None:
        self.queue.append(fut)
        if not self.scheduled:
            self.scheduled = True
            loop = fut.get_loop()
            loop.call_soon(self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self.queue
        for _ in range(min(WAKE_SLICE, len(queue))):
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
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


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def expired_watch(exc: errors.StatusError, headers: dict[str, str] | None = None) -> Response:
    """kube-apiserver answers a too-old watch with 200 and one in-stream ERROR event."""
    return Response(wire.error_frame(exc.to_status()), media_type=http.JSON, headers=headers)


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
    # The timer that ends a wait, and the loop time it is set for. It stays set from one wait to
    # the next (a stream waits at every write) and is moved only when the time it ends a wait at
    # changes: after a bookmark.
    alarm: list[asyncio.TimerHandle | None] = [None]
    alarm_at = [0.0]

    def wakeup() -> None:
        if waiting and not waiting[0].done():
            _waker(waiting[0].get_loop()).add(waiting[0])

    watcher.wakeup = wakeup

    def ring() -> None:
        alarm[0] = None
        if waiting:
            _resolve(waiting[0])

    async def next_frames(loop: asyncio.AbstractEventLoop, until: float) -> bytes:
        """Frames buffered so far as one chunk, waiting until loop time `until` for the first."""
        if watcher.idle and not watcher.closed:
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
        return watcher.drain_bytes()

    async def frames() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + bookmark_interval
        try:
            while True:
                if loop.time() >= deadline:
                    return
                until = min(deadline, next_bookmark) if opts.allow_bookmarks else deadline
                batch = watcher.drain_bytes() if not watcher.idle else await next_frames(loop, until)
                if batch:
                    yield batch
                if watcher.closed:
                    return
                if opts.allow_bookmarks and loop.time() >= next_bookmark and watcher.idle:
                    # Every event up to now has been delivered, so the current RV is a safe resume point.
                    yield wire.bookmark_frame(api_version, kind, current_rv())
                    next_bookmark = loop.time() + bookmark_interval
        finally:
            if alarm[0] is not None:
                alarm[0].cancel()
            stop()

    return StreamingResponse(frames(), media_type=http.JSON, headers=headers)
