"""The watch stream's response on its own, driven as raw ASGI: how a stream ends.

The HTTP tests (test_shard_api, test_python_client) show a stream's frames, bookmarks and a client
going away through uvicorn; these show the ends uvicorn does not produce on demand."""

from __future__ import annotations

import asyncio
from typing import Any

from vwproxy.core.watch import Watcher
from vwproxy.kube.listoptions import ListOptions
from vwproxy.kube.selectors import FieldSelector, LabelSelector
from vwproxy.server import watchstream


def _stream(timeout_seconds: int) -> tuple[Watcher, list[str], Any]:
    watcher = Watcher(None, "", LabelSelector(), FieldSelector(), "json", lambda obj: obj.raw)
    opts = ListOptions(labels=LabelSelector(), fields=FieldSelector(), watch=True, timeout_seconds=timeout_seconds)
    stopped: list[str] = []
    response = watchstream.stream_watch(watcher, opts, ("v1", "Widget"), lambda: 1, lambda: stopped.append("stop"), 3600.0)
    return watcher, stopped, response


def test_a_stream_whose_receive_fails_ends_and_unregisters() -> None:
    """A server whose `receive` raises has lost the client: the stream ends at once (not at its
    timeout), its watcher is unregistered, and nothing is left for the loop to complain about."""
    _, stopped, response = _stream(timeout_seconds=60)
    sent: list[dict[str, Any]] = []
    unhandled: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        raise RuntimeError("the connection's state is gone")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send), 5)

    asyncio.run(run())
    assert stopped == ["stop"]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert unhandled == []


def test_a_stream_ends_its_body_at_its_timeout_with_the_frames_it_had() -> None:
    """timeoutSeconds ends the stream: its frames, then the end of the body, then unregistered."""
    watcher, stopped, response = _stream(timeout_seconds=1)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        task = asyncio.ensure_future(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send))
        await asyncio.sleep(0.1)
        watcher.push(b'{"type":"ADDED","object":{}}\n')
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["body"] for m in bodies] == [b'{"type":"ADDED","object":{}}\n', b""]
    assert [m["more_body"] for m in bodies] == [True, False]
    assert stopped == ["stop"]
