"""Watches, the same for the embedded shard and every view: the reader protocol, watchers, and
how a watch starts.

A `ResourceReader` is one resource's objects as the REST read handler sees them (the shard's
table, or a view). A `Watcher` is one open watch request: a filter and a bounded buffer of
frames. Events are offered synchronously when they are committed; a watcher that holds more than
its limit of undelivered frames is closed (the client re-watches from its last RV) so one slow
reader never grows memory or stalls the writers. `begin_watch` applies kube-apiserver's rules for
where a watch starts (RV too large, initial events or replay, 410, the initial-events-end
bookmark). Pure: the server supplies the wake-up that turns a pushed frame into a sent one.
"""

from __future__ import annotations

import builtins
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from vwproxy.core.history import TooOld
from vwproxy.core.listing import ListResult
from vwproxy.core.objects import ChangeEvent, Encoder, StoredObject
from vwproxy.kube import errors
from vwproxy.kube import watch as wire
from vwproxy.kube.listoptions import ListOptions
from vwproxy.kube.selectors import FieldSelector, LabelSelector

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
        transitions: bool = True,
    ) -> None:
        # With `transitions`, an object entering or leaving the filter is ADDED or DELETED, as
        # kube-apiserver's watch cache does; without, events are only passed or dropped by what
        # they carry now (kcp's terminating virtual workspace).
        self.transitions = transitions
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
        # Called when a frame is buffered or the watcher closes; the server's stream waits on it.
        self.wakeup: Callable[[], None] = _nothing

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
        if not self.transitions:
            if now:
                self.push(event.frame(event.type, False, self.encoding, self.encode))
            return
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
        self.wakeup()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = reason
            self.wakeup()

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
        self.limit = self._base_limit
        return frames


def _nothing() -> None:
    return None


class ResourceReader(Protocol):
    """One resource's objects, readable the same way whether the shard or a view holds them."""

    @property
    def current_rv(self) -> int:
        """The RV the current state is at: what a list answers with and a bookmark carries."""
        ...

    def check_fields(self, fields: FieldSelector) -> None:
        """400 for a field label the resource cannot select on."""
        ...

    def get(self, cluster: str, namespace: str, name: str) -> StoredObject | None: ...

    def list(self, cluster: str | None, namespace: str, opts: ListOptions) -> ListResult: ...

    def ordered(self, cluster: str | None, namespace: str) -> Iterable[StoredObject]:
        """The current objects in (cluster, namespace, name) order; `cluster=None` is every cluster."""
        ...

    def since(self, rv: int) -> builtins.list[ChangeEvent]:
        """The events after `rv`; `TooOld` if some were forgotten."""
        ...

    def add_watcher(self, watcher: Watcher) -> None: ...

    def remove_watcher(self, watcher: Watcher) -> None: ...


def begin_watch(reader: ResourceReader, watcher: Watcher, opts: ListOptions, bookmark_as: tuple[str, str]) -> None:
    """Fill `watcher` with what it must send first and register it with `reader`.

    `resourceVersion` newer than the reader's state: 504 "too large". Initial events (watch-list,
    or an unset/"0" RV): an ADDED per current object, then with `sendInitialEvents` one BOOKMARK
    annotated `k8s.io/initial-events-end`, even for an empty set. Any other RV: the events after it,
    or 410 Expired (`errors.StatusError`) when the history no longer reaches back that far.
    """
    reader.check_fields(opts.fields)
    current = reader.current_rv
    rv = opts.rv_number
    if rv > current:
        raise errors.too_large_resource_version(rv, current)
    watcher.limit = 1 << 62  # the backlog below is bounded by the state and the history
    initial = opts.send_initial_events if opts.send_initial_events is not None else opts.resource_version in ("", "0")
    if initial:
        for obj in reader.ordered(watcher.cluster, watcher.namespace):
            if watcher.matches(obj):
                watcher.push(wire.frame(wire.ADDED, watcher.encode(obj)))
        if opts.send_initial_events:
            watcher.push(wire.bookmark_frame(bookmark_as[0], bookmark_as[1], current, initial_events_end=True))
    elif opts.resource_version not in ("", "0"):
        try:
            replay = reader.since(rv)
        except TooOld as exc:
            raise errors.expired(str(exc)) from None
        for event in replay:
            watcher.offer(event)
    watcher.allow_backlog()
    reader.add_watcher(watcher)
