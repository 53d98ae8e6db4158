"""Watchers: one per open watch request, each with a filter and a bounded buffer of frames.

Events are offered synchronously when they are committed; a watcher that holds more than its
limit of undelivered frames is closed (the client re-watches from its last RV) so one slow
reader never grows memory or stalls the writers.
"""

from __future__ import annotations

import asyncio
from collections import deque

from vwproxy.kube import watch as wire
from vwproxy.kube.selectors import FieldSelector, LabelSelector
from vwproxy.core.objects import ChangeEvent, Encoder, StoredObject

# Undelivered frames a watcher may hold before it is cut off. Large enough to absorb a burst
# of writes (a deletecollection of a few thousand objects), small enough to bound memory.
WATCHER_BUFFER_LIMIT = 10_000
SLOW_WATCHER_REASON = "watcher fell behind"


class Watcher:
    """A filter over one resource's events plus the frames waiting to be sent."""

    def __init__(
        self,
        cluster: str | None,
        namespace: str,
        labels: LabelSelector,
        fields: FieldSelector,
        encoding: str,
        encode: Encoder,
        limit: int = WATCHER_BUFFER_LIMIT,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.encoding = encoding
        self.encode = encode
        self.limit = limit
        self._base_limit = limit
        self.closed: str | None = None  # why the watcher was closed, once it is
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()

    def matches(self, obj: StoredObject) -> bool:
        if self.cluster is not None and obj.cluster != self.cluster:
            return False
        if self.namespace and obj.namespace != self.namespace:
            return False
        if not self.labels.empty and not self.labels.matches(obj.labels):
            return False
        return self.fields.empty or self.fields.matches(obj.fields)

    def offer(self, event: ChangeEvent) -> None:
        """Turn a committed change into what this watcher sees (maybe nothing) and buffer it."""
        if self.closed:
            return
        now = self.matches(event.obj)
        before = event.prev is not None and event.type != wire.ADDED and self.matches(event.prev)
        if event.type == wire.DELETED:
            if now:
                self.push(event.frame(wire.DELETED, False, self.encoding, self.encode))
            return
        if now and before:
            kind, use_prev = wire.MODIFIED, False
        elif now:
            kind, use_prev = wire.ADDED, False
        elif before:
            kind, use_prev = wire.DELETED, True
        else:
            return
        self.push(event.frame(kind, use_prev, self.encoding, self.encode))

    def push(self, frame: bytes) -> None:
        if self.closed:
            return
        if len(self._frames) >= self.limit:
            self.close(SLOW_WATCHER_REASON)
            return
        self._frames.append(frame)
        self._ready.set()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = reason
            self._ready.set()

    @property
    def idle(self) -> bool:
        return not self._frames

    @property
    def pending(self) -> int:
        return len(self._frames)

    def allow_backlog(self) -> None:
        """Frames queued at registration (initial state, replay) do not count against the limit."""
        self.limit = len(self._frames) + self._base_limit

    def drain(self) -> list[bytes]:
        frames = list(self._frames)
        self._frames.clear()
        self._ready.clear()
        self.limit = self._base_limit
        return frames

    async def wait(self, timeout: float) -> list[bytes]:
        """Frames buffered so far, waiting up to `timeout` seconds for the first one."""
        if not self._frames and not self.closed:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return []
        return self.drain()
