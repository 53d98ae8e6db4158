"""Watches, the same for the embedded shard and every view: the reader protocol, watchers, and
how a watch starts.

A `ResourceReader` is one resource's objects as the REST read handler sees them (the shard's
table, or a view). A `Watcher` is one open watch request: a filter and a bounded buffer of
frames. Events are offered synchronously when they are committed; a watcher that holds more than
its limit of undelivered frames is closed (the client re-watches from its last RV) so one slow
reader never grows memory or stalls the writers. A `WatcherSet` fans events out to many watchers
at a cost per distinct filter, not per watcher: watchers with the same filter share one `Feed`,
a log of frames each of them reads from its own position (DESIGN.md decision 3). `begin_watch`
applies kube-apiserver's rules for where a watch starts (RV too large, initial events or replay,
410, the initial-events-end bookmark). Pure: the server supplies the wake-up that turns a pushed
frame into a sent one.
"""

from __future__ import annotations

import builtins
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
        # In a WatcherSet: the feed shared with the watchers of the same filter, and how far in
        # it this watcher has read. Its own `_frames` then hold only what came before (initial
        # events, replay) and, once closed, what it had not read of the feed.
        self._feed: Feed | None = None
        self._cursor = 0
        self._waiting = False  # in its feed's list of watchers to wake

    @property
    def filter_key(self) -> tuple[object, ...]:
        """Watchers with equal keys turn every event into the same frame (or none)."""
        return (self.cluster, self.namespace, self.labels, self.fields, self.encoding, self.transitions)

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
        frame = self.frame_for(event)
        if frame is not None:
            self.push(frame)

    def frame_for(self, event: ChangeEvent) -> bytes | None:
        """The frame this watcher's filter makes of `event`, or None when it sees nothing."""
        now = self.matches(event.obj)
        if not self.transitions:
            return event.frame(event.type, False, self.encoding, self.encode) if now else None
        before = event.prev is not None and event.type != wire.ADDED and self.matches(event.prev)
        if event.type == wire.DELETED:
            return event.frame(wire.DELETED, False, self.encoding, self.encode) if now else None
        if now and before:
            kind, use_prev = wire.MODIFIED, False
        elif now:
            kind, use_prev = wire.ADDED, False
        elif before:
            kind, use_prev = wire.DELETED, True
        else:
            return None
        return event.frame(kind, use_prev, self.encoding, self.encode)

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
            feed = self._feed
            if feed is not None:  # keep what it has not read yet; the feed forgets it
                self._frames.extend(feed.unread(self))
                feed.detach(self)
            self.wakeup()

    @property
    def idle(self) -> bool:
        feed = self._feed
        return not self._frames and (feed is None or self._cursor >= feed.end)

    @property
    def pending(self) -> int:
        feed = self._feed
        return len(self._frames) + (feed.end - self._cursor if feed is not None else 0)

    def allow_backlog(self) -> None:
        """Frames queued at registration (initial state, replay) do not count against the limit."""
        self.limit = len(self._frames) + self._base_limit

    def drain(self) -> list[bytes]:
        frames = list(self._frames)
        self._frames.clear()
        self.limit = self._base_limit
        feed = self._feed
        if feed is not None:
            frames.extend(feed.unread(self))
            feed.caught_up(self)
        return frames

    def drain_bytes(self) -> bytes:
        """`drain` joined into one chunk; the feed's part is joined once for every watcher that
        reads the same stretch of it."""
        own = b"".join(self._frames) if self._frames else b""
        self._frames.clear()
        self.limit = self._base_limit
        feed = self._feed
        if feed is None:
            return own
        shared = feed.joined(self._cursor)
        feed.caught_up(self)
        return own + shared if own else shared


def _nothing() -> None:
    return None


class Feed:
    """The frames of one filter, shared by the watchers with that filter.

    Each event is matched and framed once for the whole group and appended to one log; every
    watcher keeps its position in it. A watcher that has read everything waits to be woken, and
    is woken once when the next frame comes, however many follow before it reads again. The log
    keeps what the slowest watcher has not read: when it grows past the smallest limit, it is
    cut to that watcher's position, and a watcher more than its limit behind is closed (it keeps
    the frames up to its limit, as a watcher of its own would).
    """

    __slots__ = ("model", "watchers", "waiting", "frames", "base", "_trim_at", "_joined")

    def __init__(self, model: Watcher) -> None:
        self.model = model  # whose filter stands for the group's (it may close; the filter stays)
        self.watchers: set[Watcher] = set()
        self.waiting: list[Watcher] = []  # read everything, to be woken by the next frame
        self.frames: list[bytes] = []
        self.base = 0  # the position of frames[0]
        self._trim_at = model._base_limit
        self._joined: tuple[int, int, bytes] = (0, 0, b"")

    @property
    def end(self) -> int:
        return self.base + len(self.frames)

    def attach(self, watcher: Watcher) -> None:
        watcher._feed = self
        watcher._cursor = self.end
        self.watchers.add(watcher)
        self._wait(watcher)
        self._trim_at = min(self._trim_at, watcher._base_limit)

    def detach(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        watcher._feed = None

    def offer(self, event: ChangeEvent) -> None:
        frame = self.model.frame_for(event)
        if frame is None:
            return
        self.frames.append(frame)
        if len(self.frames) > self._trim_at:
            self._trim()
        waiting = self.waiting
        if waiting:
            self.waiting = []
            for watcher in waiting:
                watcher._waiting = False
                if watcher._feed is self:
                    watcher.wakeup()

    def unread(self, watcher: Watcher) -> list[bytes]:
        return self.frames[watcher._cursor - self.base :]

    def joined(self, cursor: int) -> bytes:
        """The frames from `cursor` to the end as one bytes object, joined once per stretch."""
        end = self.end
        start, stop, data = self._joined
        if start != cursor or stop != end:
            data = b"".join(self.frames[cursor - self.base :])
            self._joined = (cursor, end, data)
        return data

    def caught_up(self, watcher: Watcher) -> None:
        watcher._cursor = self.end
        self._wait(watcher)

    def _wait(self, watcher: Watcher) -> None:
        if not watcher._waiting:
            watcher._waiting = True
            self.waiting.append(watcher)

    def _trim(self) -> None:
        end = self.end
        for watcher in [w for w in self.watchers if end - w._cursor > w._base_limit]:
            # One frame too many, as a watcher of its own is closed on the push that would exceed
            # its limit: it keeps the frames up to its limit and is closed.
            del_from = watcher._cursor + watcher._base_limit - self.base
            watcher._frames.extend(self.frames[watcher._cursor - self.base : del_from])
            self.detach(watcher)
            watcher.close(SLOW_WATCHER_REASON)
        oldest = min((w._cursor for w in self.watchers), default=end)
        if oldest > self.base:
            del self.frames[: oldest - self.base]
            self.base = oldest
        self._trim_at = max(len(self.frames), min((w._base_limit for w in self.watchers), default=self.model._base_limit))


class WatcherSet:
    """The watchers of one reader, grouped by filter so that an event costs one match and one
    frame per distinct filter (`Feed`); watchers read their group's frames when they send."""

    def __init__(self) -> None:
        self._feeds: dict[tuple[object, ...], Feed] = {}
        self._watchers: set[Watcher] = set()

    def __iter__(self) -> Iterator[Watcher]:
        return iter(self._watchers)

    def __len__(self) -> int:
        return len(self._watchers)

    def add(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)
        if watcher.closed:
            return
        key = watcher.filter_key
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = Feed(watcher)
        feed.attach(watcher)

    def discard(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        feed = watcher._feed
        if feed is not None:
            feed.detach(watcher)
        key = watcher.filter_key
        feed = self._feeds.get(key)
        if feed is not None and not feed.watchers:
            del self._feeds[key]

    def offer(self, event: ChangeEvent) -> None:
        for feed in builtins.list(self._feeds.values()):
            feed.offer(event)


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
