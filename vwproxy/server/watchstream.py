"""Streaming a registered watcher to the client: frames as they come, periodic bookmarks, the
timeout, and clean-up the moment the client goes away (starlette cancels the generator)."""

from __future__ import annotations

import asyncio
import random
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

    ready = asyncio.Event()
    watcher.wakeup = ready.set

    async def next_frames(timeout: float) -> list[bytes]:
        """Frames buffered so far, waiting up to `timeout` seconds for the first one."""
        if watcher.idle and not watcher.closed:
            ready.clear()
            try:
                await asyncio.wait_for(ready.wait(), timeout)
            except TimeoutError:
                return []
        return watcher.drain()

    async def frames() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + bookmark_interval
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    return
                wait = min(deadline, next_bookmark) - now if opts.allow_bookmarks else deadline - now
                batch = watcher.drain() if not watcher.idle else await next_frames(max(wait, 0.0))
                if batch:
                    yield b"".join(batch)
                if watcher.closed:
                    return
                if opts.allow_bookmarks and loop.time() >= next_bookmark and watcher.idle:
                    # Every event up to now has been delivered, so the current RV is a safe resume point.
                    yield wire.bookmark_frame(api_version, kind, current_rv())
                    next_bookmark = loop.time() + bookmark_interval
        finally:
            stop()

    return StreamingResponse(frames(), media_type=http.JSON, headers=headers)
