"""The proxy's own resourceVersion space: one process-wide, strictly increasing integer sequence.

Backends have unrelated resourceVersion sequences, so the proxy cannot pass theirs through when
it merges many of them (DESIGN.md decision 2). Every change any view ingests takes the next value
of one `RVSequence`, shared by all views of the process, so RVs compare across views and a client
may hold on to one across resources, as it can with kube-apiserver's etcd revisions.

The sequence starts from the wall clock in microseconds. That keeps RVs decimal integers and puts
them above everything an earlier run issued, so a stale RV from before a restart is older than
any history this run keeps and gets `410 Expired` instead of silently meaning something else.
The assumption behind it: an earlier run that started at time T and ran for D seconds issued
fewer than `D * RV_PER_SECOND` RVs (fewer than a million events per second of runtime, on
average), and the clock did not step back between the runs.
"""

from __future__ import annotations

import time

# RVs the start-time base reserves per second of an earlier run's lifetime: the base is the start
# time in microseconds, so an earlier run stays below it while it averaged under a million
# ingested events per second — far beyond what one process ingests.
RV_PER_SECOND = 1_000_000
_NS_PER_RV = 1_000_000_000 // RV_PER_SECOND


def base_from_clock(now_ns: int) -> int:
    """The base a sequence started at `now_ns` (nanoseconds since the epoch) counts up from."""
    return now_ns // _NS_PER_RV


# Deterministic mode's base (`serve --deterministic`): the same RVs on every run, at the price of the
# clock base's promise — an RV from an earlier run may mean something else after a restart
# instead of getting 410 Expired.
DETERMINISTIC_BASE = 1_000_000


class RVSequence:
    """Hands out proxy resourceVersions: decimal integers, strictly increasing, never reused."""

    __slots__ = ("_base", "_current")

    def __init__(self, base: int | None = None) -> None:
        if base is None:
            base = base_from_clock(time.time_ns())
        if base < 0:
            raise ValueError("an RV sequence base must not be negative")
        self._base = base
        self._current = base

    @property
    def base(self) -> int:
        """Where the sequence started; the first RV issued is `base + 1`."""
        return self._base

    @property
    def current(self) -> int:
        """The last RV issued, or the base if none was."""
        return self._current

    def next(self) -> int:
        """Issue the next RV."""
        self._current += 1
        return self._current

    def __repr__(self) -> str:
        return f"RVSequence(base={self._base}, current={self._current})"
