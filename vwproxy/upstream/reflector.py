"""A reflector: list and watch one resource of one backend, resuming and relisting as needed.

It lists, hands the whole state to `replace`, then watches from the list's resourceVersion,
handing each change to `change`. A dropped watch resumes from the last RV seen (an event's or a
bookmark's); a 410 (as HTTP status or as an in-stream ERROR) means relist; any other failure is
retried with capped exponential backoff, and `health` says whether the backend is current.
A backend 404 for the resource means "no objects", never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from vwproxy.kube import errors
from vwproxy.upstream.client import BackendClient, UpstreamStream

log = logging.getLogger(__name__)

# Backoff after a failure: quick first retries (a restarting backend), capped so a long outage
# costs one request every few seconds.
INITIAL_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
# Server-side watch timeout asked for; the watch is simply resumed when it ends.
WATCH_TIMEOUT_SECONDS = 300
# While a watch is open the backend is probed this often (a cheap one-item list with a short
# timeout): a hung backend (a stopped process with its socket open) sends neither events nor
# errors, and TCP keepalive only catches a vanished host. So a hang is stale within seconds.
HEARTBEAT_SECONDS = 3.0
# Page size of the relists (kube's reflectors use 500).
LIST_PAGE = 500

Obj = dict[str, Any]
Replace = Callable[[list[tuple[Obj, str]]], None]
Change = Callable[[str, Obj, str], None]
Health = Callable[[bool, str], None]


class Expired(Exception):
    """The backend no longer has the RV we resume from."""


class Reflector:
    """Keeps `replace`/`change` in step with `<backend>/<path>` until cancelled."""

    def __init__(self, client: BackendClient, path: str, replace: Replace, change: Change, health: Health) -> None:
        self.client = client
        self.path = path
        self.replace = replace
        self.change = change
        self.health = health
        self.rv = ""
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    self.health(True, "")
                    self.synced.set()
                await self._watch()
                backoff = INITIAL_BACKOFF_SECONDS
            except Expired:
                need_list = True
            except errors.StatusError as exc:
                self.health(False, exc.message)
                need_list = need_list or exc.code in (410, 500)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except (ValueError, orjson.JSONDecodeError) as exc:
                self.health(False, f"the backend answered garbage: {exc}")
                need_list = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _list(self) -> None:
        listed = await list_all(self.client, self.path)
        if listed is None:
            self.replace([])
            self.rv = ""
            return
        items, self.rv = listed
        self.replace(items)

    async def _watch(self) -> None:
        if not self.rv:
            # The resource is not served (404 on list): look again later.
            await asyncio.sleep(MAX_BACKOFF_SECONDS)
            raise Expired()
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", self.rv), ("timeoutSeconds", str(WATCH_TIMEOUT_SECONDS))]
        stream = await self.client.stream("GET", self.path, query, {"accept": "application/json"}, b"")
        follow = asyncio.create_task(self._follow(stream), name=f"reflector-watch {self.path}")
        beat = asyncio.create_task(self._heartbeat(), name=f"reflector-heartbeat {self.path}")
        try:
            done, _ = await asyncio.wait({follow, beat}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the watch ended (resume), or its error, or the probe's
        finally:
            for task in (follow, beat):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await stream.aclose()

    async def _heartbeat(self) -> None:
        """Probe the backend while the watch is open; raise (ending the watch) when it hangs."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self.client.probe(self.path)

    async def _follow(self, stream: UpstreamStream) -> None:
        if stream.status == 410:
            raise Expired()
        if stream.status == 404:
            raise Expired()
        if stream.status != 200:
            raise errors.from_status({"code": stream.status, "message": f"watching {self.path} answered HTTP {stream.status}"})
        self.health(True, "")  # resumed: the backend is current again
        async for line in stream.lines():
            if not line.strip():
                continue
            event = orjson.loads(line)
            kind = event.get("type") if isinstance(event, dict) else None
            obj = event.get("object") if isinstance(event, dict) else None
            if not isinstance(obj, dict):
                raise ValueError("a watch event without an object")
            rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Expired()
                raise errors.from_status(obj, 500)
            if kind == "BOOKMARK":
                self.rv = rv or self.rv
                continue
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                raise ValueError(f"unknown watch event type {kind!r}")
            self.change(str(kind), obj, rv)
            self.rv = rv or self.rv


async def list_all(client: BackendClient, path: str) -> tuple[list[tuple[Obj, str]], str] | None:
    """Every object at `path`, page by page: ((object, its RV) in order, the list's RV), or None
    when the backend does not serve the resource (404). A continue token that expired (410) starts
    the list over; any other answer is a StatusError."""
    items: list[tuple[Obj, str]] = []
    token = ""
    while True:
        query = [("limit", str(LIST_PAGE))] + ([("continue", token)] if token else [])
        resp = await client.request("GET", path, query, {"accept": "application/json"}, b"")
        if resp.status == 404:
            return None
        if resp.status == 410 and token:
            token = ""
            items = []
            continue
        if resp.status != 200:
            raise errors.from_status({"code": resp.status, "message": f"listing {path} answered HTTP {resp.status}"})
        body = orjson.loads(resp.body)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ValueError("a list without items")
        for item in body["items"]:
            if isinstance(item, dict):
                items.append((item, str((item.get("metadata") or {}).get("resourceVersion", ""))))
        meta = body.get("metadata") or {}
        token = str(meta.get("continue") or "")
        if not token:
            return items, str(meta.get("resourceVersion") or "")


def stale_tracker(stale: dict[str, str], key: str, what: str) -> Health:
    """A reflector's `health` that keeps `stale[key]` (why `what` is not current) and logs each
    change of state once, not every retry."""
    def health(ok: bool, why: str) -> None:
        if ok:
            if stale.pop(key, None) is not None:
                log.info("%s is current again", what)
        else:
            if key not in stale:
                log.warning("%s is stale: %s", what, why)
            stale[key] = why

    return health
