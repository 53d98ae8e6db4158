"""A bounded, ordered history of change events, for resuming watches.

The history keeps the newest `capacity` events of one resource. A watch may resume from any
resourceVersion at or after the compaction point (the RV of the newest event it forgot, or the
RV at which it started); anything older is "too old" and the client must relist (410 Expired).
Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class HasRV(Protocol):
    @property
    def rv(self) -> int: ...


E = TypeVar("E", bound=HasRV)


class TooOld(Exception):
    """The requested resourceVersion is older than the history remembers."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class EventHistory(Generic[E]):
    """Events in strictly increasing RV order, with everything at or before `compacted` forgotten."""

    def __init__(self, capacity: int, start_rv: int) -> None:
        if capacity < 1:
            raise ValueError("history capacity must be at least 1")
        self._capacity = capacity
        self._events: deque[E] = deque()
        self._compacted = start_rv  # events with rv <= this are not (or no longer) kept

    @property
    def compacted(self) -> int:
        return self._compacted

    @property
    def newest_rv(self) -> int:
        return self._events[-1].rv if self._events else self._compacted

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: E) -> None:
        if event.rv <= self.newest_rv:
            raise ValueError(f"event rv {event.rv} is not after {self.newest_rv}")
        self._events.append(event)
        while len(self._events) > self._capacity:
            self._compacted = self._events.popleft().rv

    def start_at(self, rv: int) -> None:
        """Forget everything up to `rv` while nothing is kept: what a fill that made no events
        covered is then "too old" to resume from, as if its events had been compacted."""
        if self._events:
            raise ValueError("start_at on a history that holds events")
        self._compacted = max(self._compacted, rv)

    def since(self, rv: int) -> list[E]:
        """Every kept event with an RV greater than `rv`; TooOld if some may have been forgotten."""
        if rv < self._compacted:
            raise TooOld(rv, self._compacted + 1)
        if not self._events or rv >= self._events[-1].rv:
            return []
        # deque has no bisect; the common case (resume near the head) scans from the right.
        events = self._events
        if rv < events[0].rv:
            return list(events)
        index = _bisect_deque(events, rv)
        return [events[i] for i in range(index, len(events))]

    def newest_first(self) -> Iterator[E]:
        return reversed(self._events)


def _bisect_deque(events: deque[E], rv: int) -> int:
    """Index of the first event with an RV greater than `rv`."""
    keys = _RVView(events)
    return bisect.bisect_right(keys, rv)


class _RVView:
    """A read-only sequence of the RVs of a deque, for bisect."""

    def __init__(self, events: deque[E]) -> None:
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int) -> int:
        return self._events[index].rv
