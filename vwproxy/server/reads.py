"""The one REST read handler: get, list and watch over any `ResourceReader` (the embedded shard's
storage or a virtual workspace's view), in every representation kube-apiserver serves them:
plain JSON, `as=Table` (v1 and v1beta1, with the resource's printer columns) and
`as=PartialObjectMetadata[List]`. Lists are streamed in chunks; watches start by
`core.watch.begin_watch` and are streamed by `watchstream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from vwproxy.core.objects import EncodedRun, StoredObject, append_encoded
from vwproxy.core.watch import SLOW_WATCHER_REASON, ResourceReader, Watcher, begin_watch
from vwproxy.kube import conversion, errors, negotiation, tables
from vwproxy.kube.listoptions import ListOptions, parse_list_options, with_name
from vwproxy.kube.negotiation import Representation
from vwproxy.kube.paths import ResourcePath, wants_watch
from vwproxy.kube.resources import ResourceInfo
from vwproxy.kube.selectors import LabelSelector
from vwproxy.server import http, watchstream

# Periodic BOOKMARKs keep a watcher's resume point fresh; kube-apiserver sends them about
# once a minute, and clients treat a silent stream as healthy for far longer.
DEFAULT_BOOKMARK_INTERVAL = 60.0
# Items per chunk of a streamed list body: big enough to amortise the send, small enough that a
# 100k-item list never sits in memory as one bytes object.
LIST_CHUNK_ITEMS = 2000

_SINGLE_TRANSFORMS = frozenset({negotiation.TABLE, negotiation.PARTIAL})
_LIST_TRANSFORMS = frozenset({negotiation.TABLE, negotiation.PARTIAL_LIST})
_WATCH_TRANSFORMS = frozenset({negotiation.TABLE, negotiation.PARTIAL, negotiation.PARTIAL_LIST})


def encoder_for(info: ResourceInfo) -> Callable[[StoredObject], bytes]:
    """How stored bytes are served as `info`'s version: as they are, or converted."""
    if not conversion.needs_conversion(info):
        return lambda obj: obj.raw
    return lambda obj: orjson.dumps(conversion.to_served(obj.decode(), info))


def served_dict(info: ResourceInfo, obj: StoredObject) -> dict[str, Any]:
    served = obj.decode()
    return conversion.to_served(served, info) if conversion.needs_conversion(info) else served


def _include_object(params: dict[str, str]) -> str:
    return params.get("includeObject", "Metadata") or "Metadata"


def representation_encoder(info: ResourceInfo, rep: Representation, params: dict[str, str]) -> tuple[str, Callable[[StoredObject], bytes]]:
    """(cache key, encoder) for single objects in `rep`: plain JSON, a one-row Table, or metadata only."""
    if rep.kind == negotiation.TABLE:
        printer = tables.TablePrinter(info, rep.api_version, _include_object(params))
        return f"{info.api_version};as=Table;{printer.include_object}", lambda o: orjson.dumps(printer.table([served_dict(info, o)], {"resourceVersion": str(o.rv)}))
    if rep.kind in (negotiation.PARTIAL, negotiation.PARTIAL_LIST):
        return f"{rep.api_version};as=PartialObjectMetadata", lambda o: orjson.dumps(tables.partial_metadata(o.decode(), rep.api_version))
    return info.api_version, encoder_for(info)


def _bookmark_identity(info: ResourceInfo, rep: Representation) -> tuple[str, str]:
    if rep.kind == negotiation.TABLE:
        return rep.api_version, "Table"
    if rep.kind in (negotiation.PARTIAL, negotiation.PARTIAL_LIST):
        return rep.api_version, "PartialObjectMetadata"
    return info.api_version, info.kind


def _append_items(parts: list[bytes], items: list[StoredObject], encode: Callable[[StoredObject], bytes] | None) -> None:
    """The items' JSON, comma-separated, appended to `parts`: the stored pieces themselves when
    `encode` is None, else each item as `encode` gives it."""
    if not items:
        return
    if encode is None:
        append_encoded(parts, items)
    else:
        for obj in items:
            parts.append(encode(obj))
            parts.append(b",")
    parts.pop()


SHUTDOWN_REASON = "server shutting down"


class SizedListResponse(Response):
    """A long list of stored bytes whose size is known before any item is copied: a table's
    cached runs (`EncodedRun`) carry their sizes and pieces. It goes out with a Content-Length,
    the head at once, then about `LIST_CHUNK_ITEMS` items per body message, each copied once into
    its message (a chunked body is copied once more to frame it)."""

    def __init__(self, head: bytes, runs: list[EncodedRun], headers: dict[str, str] | None) -> None:
        super().__init__(None, 200, headers, http.JSON)
        self._head, self._runs = head, runs
        size = len(head) + sum(run.size for run in runs) + max(len(runs) - 1, 0) + 2
        self.headers["content-length"] = str(size)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": self._head, "more_body": True})
        per_message = 4 * LIST_CHUNK_ITEMS  # pieces: an object is up to four
        pending: list[bytes] = []
        for run in self._runs:
            pieces = run.pieces
            if pieces is None:  # not kept (a packed kind): this list's own
                pieces = []
                append_encoded(pieces, run.objects)
            for start in range(0, len(pieces), per_message):
                if len(pending) >= per_message:  # more items follow: the last comma stays
                    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                    pending = []
                pending += pieces[start : start + per_message] if start or len(pieces) > per_message else pieces
        if pending:
            pending.pop()  # the last item's comma
        pending.append(b"]}")
        await send({"type": "http.response.body", "body": b"".join(pending)})


@dataclass(frozen=True)
class ReadScope:
    """A virtual workspace's own filter over a resource: a label requirement (kube selector syntax)
    ANDed into every read, and whether watchers see objects leave it as DELETED (`transitions`)
    or only the events whose object still matches."""

    labels: str
    transitions: bool = True

    @property
    def selector(self) -> LabelSelector:
        return LabelSelector.parse(self.labels)


class ReadHandler:
    """Serves the read verbs of one request; `slow_watchers_closed` counts watchers cut off."""

    def __init__(self, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL) -> None:
        self.bookmark_interval = bookmark_interval
        self.slow_watchers_closed = 0
        self._watching: set[Watcher] = set()
        self._ending = False

    def end_watches(self) -> None:
        """On shutdown: end every open watch stream cleanly (clients re-watch), and any that
        starts from now on as soon as it has begun."""
        self._ending = True
        for watcher in list(self._watching):
            watcher.close(SHUTDOWN_REASON)

    def read(
        self, reader: ResourceReader, info: ResourceInfo, cluster: str | None, target: ResourcePath, params: dict[str, str],
        accept: str | None, headers: dict[str, str] | None = None, scope: ReadScope | None = None,
    ) -> Response:
        """get (a named object), list or watch; `cluster=None` reads every logical cluster.

        A `scope` narrows every verb alike to the objects its labels select (kcp's virtual
        workspaces AND their label requirement into the client's selector; a get outside is 404).
        """
        if scope is not None and scope.labels:
            given = params.get("labelSelector", "")
            params = {**params, "labelSelector": f"{given},{scope.labels}" if given.strip() else scope.labels}
        if target.name and not wants_watch(target, params):
            rep = negotiation.choose(accept, _SINGLE_TRANSFORMS)
            found = reader.get(cluster or "", target.namespace, target.name)
            if found is not None and scope is not None and not scope.selector.matches(found.labels):
                found = None
            if found is None:
                raise errors.not_found(info.resource, target.name, info.group)
            _, encode = representation_encoder(info, rep, params)
            return http.json_response(encode(found), 200, headers)
        opts = parse_list_options(params, watch_path=target.legacy_watch)
        if target.name:
            opts = with_name(opts, target.name)
        if opts.watch:
            transitions = scope.transitions if scope is not None else True
            return self._watch(reader, info, cluster, target.namespace, opts, negotiation.choose(accept, _WATCH_TRANSFORMS), params, headers, transitions)
        return self._list(reader, info, cluster, target.namespace, opts, negotiation.choose(accept, _LIST_TRANSFORMS), params, headers)

    def _list(
        self, reader: ResourceReader, info: ResourceInfo, cluster: str | None, namespace: str, opts: ListOptions, rep: Representation,
        params: dict[str, str], headers: dict[str, str] | None,
    ) -> Response:
        reader.check_fields(opts.fields)
        result = reader.list(cluster, namespace, opts)
        list_meta: dict[str, Any] = {"resourceVersion": str(result.rv)}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        if result.remaining is not None:
            list_meta["remainingItemCount"] = result.remaining
        items = result.items
        if rep.kind == negotiation.TABLE:
            printer = tables.TablePrinter(info, rep.api_version, _include_object(params))
            return http.json_response(orjson.dumps(printer.table((served_dict(info, o) for o in items), list_meta)), 200, headers)
        encode: Callable[[StoredObject], bytes] | None = None  # None: the stored bytes as they are
        if rep.kind == negotiation.PARTIAL_LIST:
            head = orjson.dumps({"kind": "PartialObjectMetadataList", "apiVersion": rep.api_version, "metadata": list_meta})[:-1] + b',"items":['
            _, encode = representation_encoder(info, rep, params)
        else:
            head = orjson.dumps({"kind": info.list_kind, "apiVersion": info.api_version, "metadata": list_meta})[:-1] + b',"items":['
            if conversion.needs_conversion(info):
                encode = encoder_for(info)
        if len(items) <= LIST_CHUNK_ITEMS:
            parts = [head]
            _append_items(parts, items, encode)
            parts.append(b"]}")
            return http.json_response(b"".join(parts), 200, headers)
        if encode is None and result.encoded is not None:
            return SizedListResponse(head, result.encoded(), headers)

        async def chunks() -> AsyncIterator[bytes]:
            # The head goes out before any item is joined: the client has its first byte while
            # the body is still being assembled, one chunk of items at a time.
            yield head
            for start in range(0, len(items), LIST_CHUNK_ITEMS):
                parts = [b","] if start else []
                _append_items(parts, items[start : start + LIST_CHUNK_ITEMS], encode)
                yield b"".join(parts)
            yield b"]}"

        return StreamingResponse(chunks(), media_type=http.JSON, headers=headers)

    def _watch(
        self, reader: ResourceReader, info: ResourceInfo, cluster: str | None, namespace: str, opts: ListOptions, rep: Representation,
        params: dict[str, str], headers: dict[str, str] | None, transitions: bool,
    ) -> Response:
        encoding, encode = representation_encoder(info, rep, params)
        bookmark_as = _bookmark_identity(info, rep)
        watcher = Watcher(cluster, namespace, opts.labels, opts.fields, encoding, encode, transitions=transitions)
        try:
            begin_watch(reader, watcher, opts, bookmark_as)
        except errors.StatusError as exc:
            if exc.code != 410:
                raise
            return watchstream.expired_watch(exc, headers)

        self._watching.add(watcher)
        if self._ending:
            watcher.close(SHUTDOWN_REASON)

        def stop() -> None:
            reader.remove_watcher(watcher)
            self._watching.discard(watcher)
            if watcher.closed == SLOW_WATCHER_REASON:
                self.slow_watchers_closed += 1

        return watchstream.stream_watch(watcher, opts, bookmark_as, lambda: reader.current_rv, stop, self.bookmark_interval, headers)
