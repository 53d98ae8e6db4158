"""Faults a test switches on and off for one kube backend while `serve` runs (issue 15).

`BackendClient` consults its `Faults` before each request and stream; with no fault set that is
one attribute check. Kinds: `down` (connection refused), `hung` (no answer until the request
timeout, or until cleared; both cut the open watch streams as they are set), `slow` (every
request delayed by `ms`), `expire-next-watch` (the next watch answers an in-stream 410 Gone) and
`drop-watches` (cut the open watch streams now; a one-shot action). Faults per workspace, which
also reach workspaces on the embedded shard, are in `vwproxy/cache/faults.py`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from vwproxy.kube import errors
from vwproxy.kube.errors import service_unavailable

log = logging.getLogger(__name__)

DOWN = "down"
HUNG = "hung"
SLOW = "slow"
EXPIRE_NEXT_WATCH = "expire-next-watch"
DROP_WATCHES = "drop-watches"
KINDS = (DOWN, HUNG, SLOW, EXPIRE_NEXT_WATCH, DROP_WATCHES)
# A fault delay past a minute is a typo, not a test: kube's request timeout is 60 s.
MAX_SLOW_MS = 60_000

# The in-stream answer of a watch whose RV has left the backend's history, as kube-apiserver sends it.
EXPIRED_WATCH_EVENT = (
    b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    b'"message":"too old resource version (fault injected)","reason":"Expired","code":410}}\n'
)


class FaultError(ValueError):
    """A fault request that cannot be applied (unknown kind, bad argument)."""


class Faults:
    """The faults set on one backend; `active` is False whenever none is, so callers skip the rest."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.kinds: dict[str, dict[str, Any]] = {}
        self.active = False
        # Open watch streams, for drop-watches; weak so a forgotten stream is not kept alive.
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        # Set when the faults are cleared: a request held by `hung` goes on at once.
        self._released = asyncio.Event()

    def set(self, kind: str, args: dict[str, Any]) -> None:
        """Switch a fault on (drop-watches is done by `drop_watches`, not kept)."""
        if kind not in KINDS or kind == DROP_WATCHES:
            raise FaultError(f"unknown fault {kind!r}: one of {', '.join(KINDS)}")
        kept: dict[str, Any] = {}
        if kind == SLOW:
            ms = args.get("ms")
            if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= MAX_SLOW_MS:
                raise FaultError(f"fault slow needs an integer ms between 0 and {MAX_SLOW_MS}")
            kept["ms"] = ms
        self.kinds[kind] = kept
        self.active = True
        log.warning("fault set on backend %s: %s %s", self.backend, kind, kept or "")

    def clear(self) -> None:
        if self.kinds:
            log.warning("faults cleared on backend %s: %s", self.backend, ", ".join(sorted(self.kinds)))
        self.kinds.clear()
        self.active = False
        self._released.set()
        self._released = asyncio.Event()

    def track(self, stream: Any) -> None:
        self._streams.add(stream)

    async def drop_watches(self, close: Callable[[Any], Awaitable[None]]) -> int:
        """Cut every open stream now; their readers see the stream end, as after a reset."""
        streams = list(self._streams)
        for stream in streams:
            await close(stream)
        log.warning("fault on backend %s: dropped %d open watch streams", self.backend, len(streams))
        return len(streams)

    async def before_request(self, read_timeout: float) -> None:
        """Apply down, hung and slow; called only when `active`."""
        if DOWN in self.kinds:
            raise service_unavailable(f"backend {self.backend} is unreachable: connection refused (fault injected)")
        if HUNG in self.kinds:
            try:
                await asyncio.wait_for(self._released.wait(), read_timeout)
            except TimeoutError:
                raise errors.timeout(f"backend {self.backend} did not answer in time (read timeout, fault injected)") from None
            return  # cleared while it waited: the backend answers again
        if SLOW in self.kinds:
            await asyncio.sleep(self.kinds[SLOW]["ms"] / 1000)

    def take_expired_watch(self, is_watch: bool) -> bool:
        """True once, for the first watch after expire-next-watch was set."""
        if is_watch and self.kinds.pop(EXPIRE_NEXT_WATCH, None) is not None:
            self.active = bool(self.kinds)
            log.warning("fault on backend %s: this watch answers 410 Expired", self.backend)
            return True
        return False
