"""Lists over a table of objects and its event history, with the kube-apiserver rules the shard
and the views share: resourceVersion semantics, states rebuilt from history, and paging over
consistent snapshots (continue tokens).
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cachetools import TTLCache

from vwproxy.core.history import TooOld
from vwproxy.core.objects import ChangeHistory, EncodedRun, ResourceTable, StoredObject
from vwproxy.kube import errors
from vwproxy.kube import watch as wire
from vwproxy.kube.listoptions import CONTINUE_EXPIRED_MESSAGE, EXACT, ContinueToken, ListOptions, decode_continue, encode_continue
from vwproxy.kube.selectors import FieldSelector, LabelSelector

# Paged-list snapshots kept for continue tokens, and how long: kube-apiserver's tokens last until
# etcd compacts (about five minutes), so clients expect minutes, not seconds.
SNAPSHOT_CACHE_SIZE = 1_000
SNAPSHOT_TTL_SECONDS = 300.0
# Random bytes in a snapshot id: nobody guesses another client's snapshot, and no id repeats
# across views or runs.
SNAPSHOT_ID_BYTES = 12


@dataclass
class ListResult:
    """One page of a list: its RV, the items, and where the next page starts."""

    rv: int
    items: list[StoredObject]
    continue_token: str = ""
    remaining: int | None = None
    # When the items are a table's whole current listing: its stored encoding, bucket by bucket
    # (`ResourceTable.encoded`), for a body of the stored bytes without a pass over the items.
    encoded: Callable[[], builtins.list[EncodedRun]] | None = None


@dataclass(frozen=True)
class _Snapshot:
    """The matched items of a paged list, and the scope (cluster, namespace) it was made for."""

    scope: tuple[str | None, str]
    items: list[StoredObject]


def matching(source: Iterable[StoredObject], labels: LabelSelector, fields: FieldSelector) -> list[StoredObject]:
    if labels.empty and fields.empty:
        return source if isinstance(source, list) else list(source)
    return [o for o in source if (labels.empty or labels.matches(o.labels)) and (fields.empty or fields.matches(o.fields))]


class Lister:
    """Lists of one table; `current_rv` is what the table is at, `newest_issued` the newest RV
    that exists anywhere (a larger one is "too large")."""

    def __init__(
        self,
        table: ResourceTable,
        history: Callable[[], ChangeHistory],
        *,
        clock: Callable[[], float] = time.monotonic,
        snapshot_cache_size: int = SNAPSHOT_CACHE_SIZE,
        snapshot_ttl: float = SNAPSHOT_TTL_SECONDS,
    ) -> None:
        self._table = table
        self._history = history
        self._snapshots: TTLCache[str, _Snapshot] = TTLCache(maxsize=snapshot_cache_size, ttl=snapshot_ttl, timer=clock)

    def list(self, cluster: str | None, namespace: str, opts: ListOptions, current_rv: int, newest_issued: int) -> ListResult:
        """`resourceVersion` "" and "0": the current state. `NotOlderThan` N: the current state,
        504 if N was never issued. `Exact` N (also N with `limit` and no match, the legacy paging
        form): the state at N rebuilt from the history, 410 if it no longer reaches back to N."""
        if opts.continue_token:
            return self._continue(cluster, namespace, opts, current_rv)
        rv = opts.rv_number
        if rv > newest_issued:
            raise errors.too_large_resource_version(rv, newest_issued)
        exact = opts.match == EXACT or (opts.match == "" and opts.limit > 0 and rv > 0)
        if exact and 0 < rv < current_rv:
            source: Iterable[StoredObject] = self.state_at(rv, cluster, namespace)
            list_rv = rv
        else:
            source = self._table.listed(cluster, namespace)  # a new list: the snapshot may keep it
            # The state is the same at every RV from the table's last change to the newest
            # issued, so a requested RV in that range is what the list is "at".
            list_rv = max(current_rv, rv)
            if not namespace and opts.labels.empty and opts.fields.empty and (not opts.limit or opts.limit >= len(source)):
                table = self._table
                return ListResult(list_rv, source, encoded=lambda: table.encoded(cluster))
        return self._page(matching(source, opts.labels, opts.fields), list_rv, opts.limit, 0, (cluster, namespace))

    def state_at(self, rv: int, cluster: str | None, namespace: str) -> builtins.list[StoredObject]:
        """The objects as they were at `rv`, rebuilt by undoing the newer events."""
        try:
            newer = self._history().since(rv)
        except TooOld:
            raise errors.expired(f"The resourceVersion for the provided list is too old. Requested {rv}.") from None
        state = {obj.sort_key: obj for obj in self._table.ordered(cluster, namespace)}
        for event in reversed(newer):
            obj = event.obj
            if (cluster is not None and obj.cluster != cluster) or (namespace and obj.namespace != namespace):
                continue
            if event.type == wire.ADDED:
                state.pop(obj.sort_key, None)
            elif event.prev is not None:
                state[obj.sort_key] = event.prev
        return [state[key] for key in sorted(state)]

    def _page(self, matched: builtins.list[StoredObject], list_rv: int, limit: int, offset: int, scope: tuple[str | None, str], snapshot: str = "") -> ListResult:
        end = offset + limit if limit else len(matched)
        items = matched[offset:end]
        if end >= len(matched):
            return ListResult(list_rv, items)
        if not snapshot:
            # Random, not a counter: a token from elsewhere must never name a snapshot here by accident.
            snapshot = secrets.token_urlsafe(SNAPSHOT_ID_BYTES)
            self._snapshots[snapshot] = _Snapshot(scope, matched)
        token = ContinueToken(list_rv, items[-1].sort_key, snapshot, end)
        return ListResult(list_rv, items, encode_continue(token), len(matched) - end)

    def _continue(self, cluster: str | None, namespace: str, opts: ListOptions, current_rv: int) -> ListResult:
        token = decode_continue(opts.continue_token)
        scope = (cluster, namespace)
        if token.snapshot:
            snapshot = self._snapshots.get(token.snapshot)
            if snapshot is None:
                inconsistent = encode_continue(ContinueToken(0, token.start))
                raise errors.expired(CONTINUE_EXPIRED_MESSAGE, list_continue=inconsistent)
            if snapshot.scope != scope:
                # As kube-apiserver rejects a key outside the request's prefix: a token only
                # continues the list (cluster, namespace) it came from.
                raise errors.bad_request("continue key is not valid: it was issued for a list of another cluster or namespace")
            return self._page(snapshot.items, token.rv, opts.limit, token.offset, scope, token.snapshot)
        # An inconsistent continuation: the current state after the last key returned.
        source = (obj for obj in self._table.ordered(cluster, namespace) if obj.sort_key > token.start)
        return self._page(matching(source, opts.labels, opts.fields), current_rv, opts.limit, 0, scope)

    def forget_snapshots(self) -> None:
        """Drop every paging snapshot (what their TTL does after five minutes)."""
        self._snapshots.clear()
